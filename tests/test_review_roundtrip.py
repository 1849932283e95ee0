"""Issue #14's round trip through the real pipeline: `dvc repro split` writes the review page; a person
drops one image and relabels another on it (headless Chromium, network off), exports labels.csv and
puts it at the repository root; the next `dvc repro split` reruns split alone, and the split obeys
the decisions; the page, opened again with that labels.csv loaded, shows both. (The target is split:
training, evaluation and the ensemble after it would add two minutes and say nothing about the
decisions.)

The data are tuxpaint photos in two classes, a few filed under the wrong one, so the review has
label issues to show. The screenshot lands in the test's tmp dir.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from chromium import CHROMIUM, NO_NETWORK, Chromium, wait_for_file
from conftest import TUXPAINT, require, require_tuxpaint
from imgclass.files import read_csv
from scratch_repo import make_repo, ran_stages, run

pytestmark = pytest.mark.slow

CLASSES = ["mammals", "vehicles"]
HEADER = "sha256,action,new_class,note\n"


def photo_tree(root: Path) -> None:
    """Tuxpaint cut-outs flattened onto white at <= 96 px; every ninth filed under the other class,
    so that the review has several label issues to show whatever its thresholds."""
    sources = {"mammals": sorted((TUXPAINT / "animals" / "mammals").rglob("*.png")),
               "vehicles": sorted((TUXPAINT / "vehicles").rglob("*.png"))}
    for name, paths in sources.items():
        other = next(c for c in CLASSES if c != name)
        for i, path in enumerate(paths):
            folder = root / (other if i % 9 == 0 else name)
            folder.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as im:
                rgba = im.convert("RGBA")
            rgba.thumbnail((96, 96))
            flat = Image.new("RGB", rgba.size, "white")
            flat.paste(rgba, mask=rgba.getchannel("A"))
            flat.save(folder / f"{name}_{i}.png")


def params(root: Path) -> dict:
    """Only what a user would write; check-params --fill adds the rest."""
    return {"classes": CLASSES, "image_size": 32,
            "scrape": {"source": "folder", "max_per_class": 1000,
                       "folder": {"root": str(root), "mapping": {c: [f"{c}/*.png"] for c in CLASSES}}},
            "validate": {"min_size": 32}, "split": {"min_per_class": 10},
            "models": {"cnn_simple": {"arch": "cnn_simple", "epochs": 1, "min_steps": 0, "batch_size": 32,
                                      "lr": 0.01}},
            "benchmark": {"archs": ["cnn_simple"], "batch_sizes": [16], "images": 32, "repeats": 1, "warmup": 0,
                          "devices": ["cpu"]}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A scratch repository after its first `dvc repro split`: the review page is there, labels.csv empty."""
    require_tuxpaint()
    root = tmp_path_factory.mktemp("photos")
    photo_tree(root)
    repo = make_repo(tmp_path_factory.mktemp("repo"), params(root))
    run(["imgclass", "check-params", "--fill"], repo)
    run(["dvc", "repro", "split"], repo)
    return repo


def split_labels(repo: Path) -> dict[str, str]:
    """sha256 -> label over data/split/{train,val,test}.csv."""
    return {row["sha256"]: row["label"] for name in ("train", "val", "test")
            for row in read_csv(repo / "data" / "split" / f"{name}.csv")}


def first_two_images(browser: Chromium) -> list[dict]:
    """sha256, given class and default note of the first card and of the first card of another image."""
    return browser.js("""(() => {
        const cards = [...document.querySelectorAll('.card')];
        const second = cards.find(c => c.dataset.sha256 !== cards[0].dataset.sha256);
        if (!second) return document.body.innerText;
        return [cards[0], second].map(c => ({sha256: c.dataset.sha256, given: c.dataset.class, note: c.dataset.note}));
    })()""")


def focused_sha(browser: Chromium) -> str | None:
    return browser.js("document.activeElement.dataset.sha256 || null")


@contextlib.contextmanager
def browser_on(page: Path, profile: Path):
    """Headless Chromium, network off and its requests recorded, showing `page`."""
    require(CHROMIUM.exists(), "/usr/bin/chromium (Debian's chromium)")
    browser = Chromium(profile, 1280, 900, *NO_NETWORK)
    try:
        browser.call("Network.enable")
        browser.open(page.as_uri())
        yield browser
    finally:
        browser.close()


def requested_urls(browser: Chromium) -> list[str]:
    browser.js("0")  # a round trip: the network events sent before it have arrived
    return [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]


def card_state(browser: Chromium, sha: str) -> str:
    return browser.js(f"document.querySelector('.card[data-sha256=\"{sha}\"] .state').textContent")


def test_page_decisions_exported_as_labels_csv_change_the_split_and_nothing_before_it(repo, tmp_path):
    page = repo / "plots" / "review" / "index.html"
    before = split_labels(repo)
    with browser_on(page, tmp_path / "chromium-profile") as browser:
        browser.allow_downloads(tmp_path / "downloads")
        images = first_two_images(browser)
        assert isinstance(images, list), f"the page shows fewer than two images:\n{images}"
        dropped, relabelled = images
        new_class = next(c for c in CLASSES if c != relabelled["given"])
        # keyboard: j focuses the first card; → until the second image; its class number relabels it
        browser.press("j")
        while focused_sha(browser) != relabelled["sha256"]:
            browser.press("ArrowRight")
        browser.press(str(CLASSES.index(new_class) + 1))
        # mouse: drop the first image
        browser.click(f'.card[data-sha256="{dropped["sha256"]}"] button[data-act="drop"]')
        browser.screenshot(tmp_path / "review_roundtrip.png")
        browser.click("#export")
        labels = wait_for_file(tmp_path / "downloads" / "labels.csv").read_text(encoding="utf-8")
        assert [url for url in requested_urls(browser) if not url.startswith(("file:", "data:", "blob:"))] == []

    assert labels == (HEADER + f"{dropped['sha256']},drop,,{dropped['note']}\n"
                      f"{relabelled['sha256']},relabel,{new_class},{relabelled['note']}\n")
    assert dropped["note"].startswith("review: ") and relabelled["note"].startswith("review: ")
    assert dropped["sha256"] in before and before[relabelled["sha256"]] == relabelled["given"]

    shutil.copy(tmp_path / "downloads" / "labels.csv", repo / "labels.csv")
    second = run(["dvc", "repro", "split"], repo).stdout

    after = split_labels(repo)
    assert dropped["sha256"] not in after
    assert after[relabelled["sha256"]] == new_class
    assert ran_stages(second) == {"split"}  # scrape, validate and review are not rerun
    applied = json.loads((repo / "reports" / "split.json").read_text())["decisions"]
    assert applied["dropped"] == 1 and applied["relabelled"] == 1, applied
    assert (tmp_path / "review_roundtrip.png").stat().st_size > 20_000
    # what follows split trains on the decided labels (the relabelled image counts under its new class)
    run(["dvc", "repro", "evaluate@cnn_simple"], repo)
    report = json.loads((repo / "plots" / "eval" / "cnn_simple" / "report.json").read_text())
    assert report["n"] == len((repo / "data" / "split" / "test.csv").read_text().splitlines()) - 1

    # the next review session starts from the committed decisions
    with browser_on(page, tmp_path / "chromium-profile-2") as browser:
        browser.set_files("#load", repo / "labels.csv")
        browser.wait_for("document.getElementById('load-status').textContent.startsWith('loaded 2 rows')")
        assert card_state(browser, dropped["sha256"]) == "drop"
        assert card_state(browser, relabelled["sha256"]) == f"relabel → {new_class}"
