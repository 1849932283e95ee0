"""A DVC remote end to end: run and push in one repository, clone it elsewhere with an empty cache, pull."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from conftest import FASHION, require_fashion, tiny_params_dict
from scratch_repo import make_repo, ran_stages, run

pytestmark = pytest.mark.slow


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """(origin, store, fashion link): the tiny pipeline run, committed and pushed to a local-folder remote.
    The dataset is read through a link that the test removes, as a machine without it would lack it."""
    require_fashion()
    base = tmp_path_factory.mktemp("remote")
    link = base / "fashion-mnist"
    link.symlink_to(FASHION)
    raw = tiny_params_dict()
    raw["scrape"]["fashion_mnist"]["root"] = str(link)
    origin = make_repo(base / "origin", raw)
    store = base / "store"
    run(["dvc", "remote", "add", "-d", "store", str(store)], origin)
    run(["dvc", "repro"], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "first run"], origin)
    run(["dvc", "push"], origin)
    return origin, store, link


def test_a_clone_pulls_everything_and_reruns_only_the_machine_stage(pushed, tmp_path):
    origin, store, _ = pushed
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / ".dvc" / "cache").exists() and not (clone / "models").exists()
    run(["dvc", "pull"], clone)
    assert tree_digest(clone / "models") == tree_digest(origin / "models")
    assert tree_digest(clone / "data" / "raw") == tree_digest(origin / "data" / "raw")

    # The same machine: machine rewrites the same reports/machine.json, so benchmark is skipped too.
    # The review page and its thumbnails are pulled like the data. Nothing that trains, scrapes,
    # reviews or benchmarks runs again.
    repro = run(["dvc", "repro"], clone)
    assert ran_stages(repro.stdout) == {"machine"}, repro.stdout[-3000:]
    assert "Stage 'benchmark' didn't change, skipping" in repro.stdout

    images = clone / "some images"
    images.mkdir()
    test_rows = list(csv.DictReader((clone / "data" / "split" / "test.csv").open()))[:8]
    for row in test_rows:
        (images / Path(row["path"]).name).write_bytes((clone / "data" / "clean" / row["path"]).read_bytes())
    run(["imgclass", "predict", str(images), "--out", str(tmp_path / "preds.csv")], clone)
    preds = list(csv.DictReader((tmp_path / "preds.csv").open()))
    assert len(preds) == len(test_rows) and all(p["prediction"] in tiny_params_dict()["classes"] for p in preds)


def test_scrape_without_its_source_keeps_the_pulled_images(pushed, tmp_path):
    origin, _, link = pushed
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    pulled = tree_digest(clone / "data" / "raw")
    link.unlink()  # this machine has no Fashion-MNIST files
    try:
        forced = run(["dvc", "repro", "--force", "--single-item", "scrape"], clone, check=False)
    finally:
        link.symlink_to(FASHION)
    assert forced.returncode != 0
    assert f"scrape: Fashion-MNIST not found in {link}" in forced.stderr
    assert tree_digest(clone / "data" / "raw") == pulled  # persist: true, and the stage stops before pruning
    # DVC removes a stage's other outputs before running it; those small ones are in git.
    deleted = run(["git", "status", "--porcelain"], clone).stdout.split("\n")
    assert sorted(line.split()[-1] for line in deleted if line) == [
        "metrics/scrape.json", "plots/scrape/samples.png", "reports/scrape.json"]
    run(["git", "checkout", "--", "."], clone)
    assert "scrape" not in run(["dvc", "status", "scrape"], clone).stdout
