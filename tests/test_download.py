"""The HTTP client against a real local server: every fault maps to one manifest status and reason."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from httpserver import (LocalServer, distinct_jpegs, dropped, image, jpeg_bytes, oversized, redirect, send, sequence,
                        stall, status, trickle)
from imgclass.config.params import Download
from imgclass.data.sources.download import (Job, Journal, download_all, download_class, fetch_image, remove_temp_files,
                                       retry_after_seconds)
from imgclass.data.sources.retry import backoff_delay
from odd_images import encode, photo, png_bomb, webp_bomb

# Bomb files legitimately make Pillow warn before we reject them.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

FAST = Download(workers=8, timeout=0.5, max_bytes=100_000, retries=1, backoff=0.01, max_retry_after=1.0)


def png_bytes(color="green") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (30, 20), color).save(out, format="PNG")
    return out.getvalue()


def assert_clean_store(class_dir: Path) -> None:
    """Only complete images named by their content hash; no temp files of interrupted writes."""
    for path in class_dir.rglob("*"):
        assert not path.name.startswith("."), f"temp file left: {path}"
        assert path.stem == hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_fault_gets_its_status_and_reason(tmp_path):
    a, b, c, d, e, f = distinct_jpegs(6)
    with LocalServer() as server:
        routes = {
            "/a.jpg": image(a),
            "/same-as-a.jpg": image(a),
            "/b.png": image(png_bytes(), "image/png"),
            "/flaky.jpg": sequence(status(500), image(b)),
            "/broken.jpg": status(500),
            "/gone.jpg": status(404),
            "/retry-after.jpg": sequence(status(429, {"Retry-After": "1"}), image(c)),
            "/rate-limited.jpg": status(429, {"Retry-After": "3600"}),  # capped by max_retry_after
            "/slow.jpg": stall(3.0),
            # Each piece well within the 0.5 s socket timeout, the whole body 5 s: only a deadline
            # checked while the body arrives ends an attempt at 0.5 s.
            "/trickle.jpg": trickle(d, pieces=20, interval=0.25),
            "/big.jpg": oversized(300_000),
            "/big-stream.jpg": oversized(300_000, content_length=False),
            "/page.jpg": lambda h, hit: send(h, 200, b"<html><body>Not found</body></html>", "image/jpeg"),
            "/moved.jpg": redirect("/e.jpg"),
            "/e.jpg": image(e),
            "/loop.jpg": redirect("/loop.jpg"),
            "/to-ftp.jpg": redirect("ftp://127.0.0.1/x.jpg"),
            "/dropped.jpg": dropped(f, after=100),
        }
        for path, responder in routes.items():
            server.route(path, responder)
        expected = {
            server.url("/b.png"): ("ok", ""),
            server.url("/flaky.jpg"): ("ok", ""),
            server.url("/broken.jpg"): ("failed", "http_500"),
            server.url("/gone.jpg"): ("failed", "http_404"),
            server.url("/retry-after.jpg"): ("ok", ""),
            server.url("/rate-limited.jpg"): ("failed", "rate_limited"),
            server.url("/slow.jpg"): ("failed", "timeout"),
            server.url("/trickle.jpg"): ("failed", "timeout"),
            server.url("/big.jpg"): ("failed", "too_large"),
            server.url("/big-stream.jpg"): ("failed", "too_large"),
            server.url("/page.jpg"): ("failed", "not_image"),
            server.url("/moved.jpg"): ("ok", ""),
            server.url("/loop.jpg"): ("failed", "too_many_redirects"),
            server.url("/to-ftp.jpg"): ("failed", "bad_scheme"),
            server.url("/dropped.jpg"): ("failed", "connection_error"),
            "ftp://127.0.0.1/a.jpg": ("failed", "bad_scheme"),
            "data:image/png;base64,AAAA": ("failed", "bad_scheme"),
        }
        jobs = [Job("cat", server.url("/a.jpg")), Job("cat", server.url("/same-as-a.jpg"))]
        jobs += [Job("cat", url, query="cat photo") for url in expected]

        started = time.monotonic()
        finished = {}  # seconds from the start to each job's row
        rows = download_all(jobs, tmp_path, FAST, Journal(tmp_path),
                            on_row=lambda row: finished.setdefault(row["url"], time.monotonic() - started))
        elapsed = time.monotonic() - started

        by_url = {row["url"]: row for row in rows}
        assert [row["url"] for row in rows] == [job.url for job in jobs]  # job order kept
        assert {url: (by_url[url]["status"], by_url[url]["reason"]) for url in expected} == expected
        # The same bytes from two URLs: stored once; whichever thread stored it, the earlier job is
        # credited and the later one says which URL it duplicates.
        first, second = by_url[server.url("/a.jpg")], by_url[server.url("/same-as-a.jpg")]
        assert (first["status"], first["reason"]) == ("ok", "")
        assert (second["status"], second["reason"]) == ("exists", f"duplicate_of:{first['url']}")
        assert first["path"] == second["path"] and first["sha256"] == second["sha256"]

        # Retries: 5xx, timeouts, 429 and dropped connections; never 4xx, oversize or HTML.
        assert server.hits["/flaky.jpg"] == 2 and server.hits["/broken.jpg"] == 2
        assert server.hits["/retry-after.jpg"] == 2 and server.hits["/rate-limited.jpg"] == 2
        assert server.hits["/dropped.jpg"] == 2 and server.hits["/slow.jpg"] == 2
        assert server.hits["/gone.jpg"] == 1 and server.hits["/big.jpg"] == 1 and server.hits["/page.jpg"] == 1
        assert server.hits["/loop.jpg"] > 5
        # Two attempts of the trickle, each cut at its 0.5 s deadline mid-body: about 1 s, where a
        # deadline checked only once the body is in (or a read waiting for a whole chunk) takes 10 s.
        trickled = finished[server.url("/trickle.jpg")]
        assert server.hits["/trickle.jpg"] == 2 and trickled < 3.0, f"the trickle took {trickled:.1f} s"
        assert 0.9 < elapsed < 10, "Retry-After: 1 is honoured, Retry-After: 3600 is capped"

    ok = by_url[server.url("/b.png")]
    assert ok["path"] == f"cat/{ok['sha256']}.png" and (ok["width"], ok["height"]) == (30, 20)
    assert ok["bytes"] == len(png_bytes()) and ok["query"] == "cat photo"
    stored = {row["path"] for row in rows if row["status"] == "ok"}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "cat").iterdir()) == sorted(stored)
    assert_clean_store(tmp_path / "cat")
    journal = Journal(tmp_path)
    assert [journal.lookup("cat", job.url) for job in jobs] == rows, "the journal agrees with the manifest"


def test_journal_skips_stored_and_permanently_failed_urls(tmp_path):
    a, b = distinct_jpegs(2)
    with LocalServer({"/a.jpg": image(a), "/gone.jpg": status(404), "/flaky.jpg": sequence(status(503), image(b))}) as server:
        jobs = [Job("dog", server.url(p)) for p in ("/a.jpg", "/gone.jpg", "/flaky.jpg")]
        first = download_all(jobs, tmp_path, FAST.model_copy(update={"retries": 0}), Journal(tmp_path))
        assert [r["status"] for r in first] == ["ok", "failed", "failed"]

        second = download_all(jobs, tmp_path, FAST, Journal(tmp_path))
        assert [(r["status"], r["reason"]) for r in second] == [("exists", "earlier_run"), ("failed", "http_404"),
                                                                 ("ok", "")]
        assert second[0]["path"] == first[0]["path"] and second[0]["sha256"] == first[0]["sha256"]
        # Stored and 4xx URLs are not requested again; the transient 503 is.
        assert dict(server.hits) == {"/a.jpg": 1, "/gone.jpg": 1, "/flaky.jpg": 2}


def test_a_deleted_file_is_downloaded_again(tmp_path):
    (a,) = distinct_jpegs(1)
    with LocalServer({"/a.jpg": image(a)}) as server:
        job = Job("dog", server.url("/a.jpg"))
        (row,) = download_all([job], tmp_path, FAST, Journal(tmp_path))
        (tmp_path / row["path"]).unlink()
        (again,) = download_all([job], tmp_path, FAST, Journal(tmp_path))
        assert again["status"] == "ok" and (tmp_path / again["path"]).read_bytes() == a
        assert server.hits["/a.jpg"] == 2


def test_download_class_stops_at_the_limit_without_requesting_the_rest(tmp_path):
    images = distinct_jpegs(6)
    with LocalServer() as server:
        paths = ["/404-1", "/0.jpg", "/1.jpg", "/404-2", "/2.jpg", "/3.jpg", "/4.jpg", "/5.jpg"]
        for path in paths:
            if not path.startswith("/404"):
                server.route(path, image(images[int(path[1])]))
        jobs = [Job("cow", server.url(p)) for p in paths]
        rows = download_class(jobs, tmp_path, FAST.model_copy(update={"workers": 2}), limit=3)

    assert [r["url"] for r in rows] == [server.url(p) for p in paths[:5]]
    assert sum(r["status"] == "ok" for r in rows) == 3
    assert len(list((tmp_path / "cow").iterdir())) == 3
    assert all(server.hits[p] == 0 for p in paths[5:])


def test_a_trickle_of_single_bytes_is_cut_at_the_deadline():
    """A host sending 1 byte a second (each socket read well under the timeout) for 6 seconds: the
    download stops at its 1.5-second deadline, not when the body ends."""
    data = png_bytes() + bytes(2000)
    settings = FAST.model_copy(update={"timeout": 1.5, "retries": 0})
    with LocalServer({"/drip.png": trickle(data[:6], pieces=6, interval=1.0)}) as server:
        started = time.monotonic()
        result = fetch_image(server.url("/drip.png"), settings)
        elapsed = time.monotonic() - started
    assert result.reason == "timeout" and 1.5 <= elapsed < 3.0, (result.reason, elapsed)


def test_fetch_image_reports_instead_of_raising():
    assert fetch_image("file:///etc/passwd").reason == "bad_scheme"
    assert fetch_image("no scheme at all").reason == "bad_scheme"
    assert fetch_image("http://[invalid/x.jpg").reason == "bad_url"
    with LocalServer({"/a.jpg": image(png_bytes("red"), "image/png")}) as server:
        result = fetch_image(server.url("/a.jpg"), FAST)
    assert result.ok and (result.ext, result.width, result.height) == ("png", 30, 20)


def test_retry_after_and_backoff_are_bounded():
    assert retry_after_seconds("3", cap=30) == 3
    assert retry_after_seconds("3600", cap=30) == 30
    assert retry_after_seconds(None, cap=30) is None and retry_after_seconds("soon", cap=30) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", cap=30) == 0  # a date in the past
    for attempt in range(8):
        assert 0.5 * min(4.0, 0.1 * 2**attempt) <= backoff_delay(attempt, 0.1, 4.0) <= min(4.0, 0.1 * 2**attempt)


def test_journal_survives_a_torn_last_line(tmp_path):
    journal_file = tmp_path / ".journal" / "downloads.jsonl"
    journal_file.parent.mkdir()
    good = {"class": "cat", "url": "http://x/a.jpg", "status": "failed", "reason": "http_404"}
    journal_file.write_text(json.dumps(good) + '\n{"class": "cat", "url": "http://x/b.j')  # killed mid-write

    journal = Journal(tmp_path)
    assert journal.lookup("cat", "http://x/a.jpg") == good and journal.lookup("cat", "http://x/b.jpg") is None
    journal.record({**good, "url": "http://x/c.jpg"})
    assert Journal(tmp_path).lookup("cat", "http://x/c.jpg")["reason"] == "http_404"


def test_journal_linked_into_a_dvc_cache_is_never_appended_in_place(tmp_path):
    """With cache.type hardlink, data/raw's journal shares its bytes with DVC's cache: a rerun must
    write its own copy, leaving the cached file as DVC stored it."""
    journal_file = tmp_path / ".journal" / "downloads.jsonl"
    journal_file.parent.mkdir()
    old = {"class": "cat", "url": "http://x/a.jpg", "status": "failed", "reason": "http_404"}
    journal_file.write_text(json.dumps(old) + "\n")
    cached = tmp_path / "cache-object"
    os.link(journal_file, cached)
    Journal(tmp_path).record({**old, "url": "http://x/b.jpg"})
    assert cached.read_text() == json.dumps(old) + "\n"
    assert Journal(tmp_path).lookup("cat", "http://x/b.jpg") is not None and journal_file.stat().st_nlink == 1


def test_temp_files_of_a_killed_write_are_removed(tmp_path):
    (tmp_path / "cat").mkdir()
    leftover = tmp_path / "cat" / ".abc.jpg.x1y2.tmp"
    leftover.write_bytes(b"half")
    kept = tmp_path / "cat" / "abc.jpg"
    kept.write_bytes(b"whole")
    remove_temp_files(tmp_path)
    assert not leftover.exists() and kept.exists()


@pytest.mark.parametrize("data, reason", [(b"", "not_image"), (b"GIF89a-but-not-really", "corrupt"),
                                          (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt"),
                                          (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not_image")])
def test_magic_bytes_alone_are_not_enough(tmp_path, data, reason):
    with LocalServer({"/x": lambda h, hit: send(h, 200, data, "image/png")}) as server:
        assert fetch_image(server.url("/x"), FAST).reason == reason


def test_downloads_are_checked_as_validate_checks_them(tmp_path):
    """Half a JPEG served whole (HTTP 200, matching Content-Length) and bombs that declare more pixels
    than validate.max_pixels are not stored; the same file whole is."""
    whole = encode(photo(7), "JPEG")  # 160x120: half the bytes keeps the whole header
    with LocalServer() as server:
        server.route("/half.jpg", image(whole[: len(whole) // 2]))
        server.route("/whole.jpg", image(whole))
        server.route("/bomb.png", image(png_bomb(), "image/png"))  # 100 M pixels in 12 KB
        server.route("/bomb.webp", image(webp_bomb(), "image/webp"))  # canvas Pillow would allocate on open
        server.route("/small-limit.jpg", image(jpeg_bytes("navy", (64, 48))))
        jobs = [Job("cat", server.url(p)) for p in ("/half.jpg", "/whole.jpg", "/bomb.png", "/bomb.webp")]
        rows = download_all(jobs, tmp_path, FAST, Journal(tmp_path))
        limited = fetch_image(server.url("/small-limit.jpg"), FAST, max_pixels=64 * 48 - 1)
        again = download_all(jobs, tmp_path, FAST, Journal(tmp_path))
        hits = dict(server.hits)

    assert [(r["status"], r["reason"]) for r in rows] == [
        ("failed", "truncated"), ("ok", ""), ("failed", "decompression_bomb"), ("failed", "decompression_bomb")]
    assert [p.name for p in (tmp_path / "cat").iterdir()] == [f"{rows[1]['sha256']}.jpg"]
    assert limited.reason == "decompression_bomb"
    # A truncated file stays truncated; a bomb depends on validate.max_pixels, so a rerun asks again.
    assert [r["status"] for r in again] == ["failed", "exists", "failed", "failed"]
    assert hits == {"/half.jpg": 1, "/whole.jpg": 1, "/bomb.png": 2, "/bomb.webp": 2, "/small-limit.jpg": 1}
