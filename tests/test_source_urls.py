"""The urls source: rebuild a dataset from a URL list or a collaborator's manifest, and resume after
a kill -9 without duplicates or repeated requests."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from httpserver import LocalServer, distinct_jpegs, image, make_params, send
from imgclass import files
from imgclass.data.sources import MANIFEST_FIELDS, SourceError
from imgclass.data.sources import urls

TESTS_DIR = Path(__file__).parent
FAST_DOWNLOAD = {"workers": 4, "timeout": 2.0, "retries": 0, "backoff": 0.01}


def urls_params(csv: Path, classes=("cat", "dog"), **scrape):
    return make_params(list(classes), source="urls", urls={"csv": str(csv)},
                       download=scrape.pop("download", FAST_DOWNLOAD), **scrape)


def stored_files(raw_dir: Path) -> list[Path]:
    return sorted(p for p in raw_dir.rglob("*") if p.is_file() and ".journal" not in p.parts)


def test_collaborator_manifest_rebuilds_the_same_dataset(tmp_path):
    *images, other = distinct_jpegs(5)
    with LocalServer() as server:
        for i, data in enumerate(images):
            server.route(f"/{i}.jpg", image(data))
        server.route("/changed.jpg", image(other))  # the image behind the URL changed since
        sha = [hashlib.sha256(data).hexdigest() for data in images]
        manifest = [
            {"class": "cat", "query": "cat photo", "url": server.url("/0.jpg"), "status": "ok", "sha256": sha[0]},
            {"class": "cat", "query": "cat photo", "url": server.url("/1.jpg"), "status": "exists", "sha256": sha[1]},
            {"class": "cat", "query": "cat photo", "url": server.url("/2.jpg"), "status": "failed", "reason": "timeout"},
            {"class": "dog", "query": "dog photo", "url": server.url("/3.jpg"), "status": "ok", "sha256": sha[3]},
            {"class": "dog", "query": "dog photo", "url": server.url("/changed.jpg"), "status": "ok", "sha256": sha[2]},
            {"class": "bird", "query": "bird photo", "url": server.url("/0.jpg"), "status": "ok", "sha256": sha[0]},
        ]
        csv = tmp_path / "manifest.csv"
        files.write_csv(csv, manifest, MANIFEST_FIELDS)
        rows = urls.collect(urls_params(csv), tmp_path / "raw")

    got = [(r["class"], r["query"], r["url"].rsplit("/", 1)[1], r["status"], r["reason"]) for r in rows]
    assert got == [("cat", "cat photo", "0.jpg", "ok", ""), ("cat", "cat photo", "1.jpg", "ok", ""),
                   ("dog", "dog photo", "3.jpg", "ok", ""), ("dog", "dog photo", "changed.jpg", "failed", "sha256_mismatch")]
    assert server.hits["/2.jpg"] == 0, "a URL that failed for the collaborator is not fetched"
    assert sorted(p.name for p in stored_files(tmp_path / "raw")) == sorted(f"{s}.jpg" for s in (sha[0], sha[1], sha[3]))
    assert all(set(row) == set(MANIFEST_FIELDS) for row in rows)


def test_plain_url_list_with_extra_columns_and_header_quirks(tmp_path):
    (a,) = distinct_jpegs(1)
    with LocalServer({"/a.jpg": image(a)}) as server:
        csv = tmp_path / "urls.csv"
        csv.write_text(f"\ufeffClass,URL,note\ncat,{server.url('/a.jpg')},first\ncat,{server.url('/a.jpg')},again\n"
                       f"dog,{server.url('/404.jpg')},\n", encoding="utf-8")
        rows = urls.collect(urls_params(csv), tmp_path / "raw")
    assert [(r["class"], r["status"], r["reason"]) for r in rows] == [("cat", "ok", ""), ("dog", "failed", "http_404")]


def test_max_per_class_caps_each_class(tmp_path):
    images = distinct_jpegs(5)
    with LocalServer({f"/{i}.jpg": image(d) for i, d in enumerate(images)}) as server:
        csv = tmp_path / "urls.csv"
        files.write_csv(csv, [{"class": "cat", "url": server.url(f"/{i}.jpg")} for i in range(5)], ["class", "url"])
        rows = urls.collect(urls_params(csv, max_per_class=2), tmp_path / "raw")
    assert [r["status"] for r in rows] == ["ok", "ok"] and len(stored_files(tmp_path / "raw")) == 2


def test_missing_or_malformed_list_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        urls.collect(urls_params(tmp_path / "nope.csv"), tmp_path / "raw")
    bad = tmp_path / "bad.csv"
    bad.write_text("label,link\ncat,http://x/a.jpg\n")
    with pytest.raises(SourceError, match="needs columns class and url"):
        urls.collect(urls_params(bad), tmp_path / "raw")


# The first run, as a real process that the test kills with SIGKILL.
RUN_URLS_SOURCE = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from httpserver import make_params
from imgclass.data.sources import urls
params = make_params(["cat", "dog"], source="urls", urls={"csv": sys.argv[2]},
                     download={"workers": 2, "timeout": 5, "retries": 0})
urls.collect(params, Path(sys.argv[3]))
"""


def journaled_urls(raw_dir: Path) -> set[str]:
    path = raw_dir / ".journal" / "downloads.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {json.loads(line)["url"] for line in lines if line.endswith("}")}


def test_resume_after_kill_9_stores_each_image_once_without_new_requests(tmp_path):
    images = distinct_jpegs(16)
    raw = tmp_path / "raw"
    with LocalServer() as server:
        for i, data in enumerate(images):
            server.route(f"/{i}.jpg", image(data, delay=0.25))  # slow, so the kill lands mid-run
        csv = tmp_path / "urls.csv"
        files.write_csv(csv, [{"class": "cat" if i % 2 else "dog", "url": server.url(f"/{i}.jpg")}
                              for i in range(16)], ["class", "url"])

        process = subprocess.Popen([sys.executable, "-c", RUN_URLS_SOURCE, str(TESTS_DIR), str(csv), str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while len(journaled_urls(raw)) < 4 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, f"the first run ended before the kill: {process.stderr.read().decode()}"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
        done_before_kill = journaled_urls(raw)
        assert 4 <= len(done_before_kill) < 16

        hits_before = dict(server.hits)
        rows = urls.collect(urls_params(csv), raw)
        hits_after_rerun = dict(server.hits)
        again = urls.collect(urls_params(csv), raw)

    assert len(rows) == 16 and {r["status"] for r in rows} <= {"ok", "exists"}
    for row in rows:
        path = "/" + row["url"].rsplit("/", 1)[1]
        if row["url"] in done_before_kill:
            assert (row["status"], row["reason"]) == ("exists", "earlier_run")
            assert hits_after_rerun[path] == hits_before[path] == 1, f"{path} was requested again"
    assert any(row["status"] == "ok" for row in rows), "the rerun finished what the kill interrupted"

    # Each image stored exactly once, in its class, complete; no temp files.
    expected = sorted(f"{'cat' if i % 2 else 'dog'}/{hashlib.sha256(d).hexdigest()}.jpg" for i, d in enumerate(images))
    assert [p.relative_to(raw).as_posix() for p in stored_files(raw)] == expected
    assert not [p for p in raw.rglob("*") if p.name.endswith(".tmp")]

    # A third run requests nothing at all.
    assert dict(server.hits) == hits_after_rerun
    assert {r["status"] for r in again} == {"exists"}


def test_unknown_url_classes_are_skipped_not_fatal(tmp_path, caplog):
    (a,) = distinct_jpegs(1)
    with LocalServer({"/a.jpg": image(a), "/teapot": lambda h, hit: send(h, 418, b"", "text/plain")}) as server:
        csv = tmp_path / "urls.csv"
        files.write_csv(csv, [{"class": "cat", "url": server.url("/a.jpg")}, {"class": "eel", "url": server.url("/a.jpg")},
                              {"class": "dog", "url": server.url("/teapot")}], ["class", "url"])
        rows = urls.collect(urls_params(csv), tmp_path / "raw")
    assert [(r["class"], r["reason"]) for r in rows] == [("cat", ""), ("dog", "http_418")]
    assert "eel" in caplog.text
