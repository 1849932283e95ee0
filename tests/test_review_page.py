"""The review page in headless Chromium with the network off: decide with mouse and keyboard, export
labels.csv through the page's own download, load a labels.csv back.

Cards are built from real photos (tuxpaint stamps) and one generated image. The screenshot lands in
the test's tmp dir, and in docs/images/review_page.png with IMGCLASS_SAVE_SCREENSHOT=1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chromium import CHROMIUM, NO_NETWORK, Chromium, wait_for_file
from conftest import REPO, TUXPAINT, require, require_tuxpaint
from imgclass.review_page import write_review_page

MAMMALS = TUXPAINT / "animals" / "mammals"
# A class name that needs quoting in CSV and escaping in HTML.
CLASSES = ["cats", "dogs", 'bears, "big" & <small>']
HEADER = "sha256,action,new_class,note\n"
README_SCREENSHOT = REPO / "docs" / "images" / "review_page.png"


@pytest.fixture
def chromium_installed():
    require(CHROMIUM.exists(), "/usr/bin/chromium (Debian's chromium)")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def card(image: Path, given: str, issue: str, score: float, suggested: str = "", auto_drop: bool = False,
         reason: str = "") -> dict:
    if suggested and not reason:  # as the review stage explains a label issue
        reason = f"p({given}) = {1 - score:.2f} out of sample; looks like {suggested}"
    return {"sha256": sha256(image), "path": f"data/clean/{given}/{image.name}", "image": image, "class": given,
            "issue": issue, "score": score, "suggested_class": suggested, "auto_drop": auto_drop, "reason": reason}


@pytest.fixture
def cards(tmp_path) -> dict[str, dict]:
    """Named cards: label issues, an auto-dropped outlier, a near duplicate, a generated noisy image."""
    require_tuxpaint()
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(noise)
    return {
        "tiger": card(MAMMALS / "cats" / "tiger.png", "cats", "label", 0.93, suggested="dogs"),
        "dog": card(MAMMALS / "dogs" / "dog.png", "cats", "label", 0.71, suggested="dogs"),
        "bear": card(MAMMALS / "bears" / "bear.png", "dogs", "outlier", 0.88, auto_drop=True,
                     reason="outlier score > 0.8 <far from every class>"),
        "fox": card(MAMMALS / "dogs" / "fox.png", "dogs", "near_duplicate", 0.99, suggested=""),
        "dog again": card(MAMMALS / "dogs" / "dog.png", "cats", "near_duplicate", 0.40),  # one image, two issues
        "noise": card(noise, "cats", "low_quality", 0.97, auto_drop=True, reason="blur & noise"),
        **{path.stem: card(path, given, "label", score, suggested=suggested) for path, given, score, suggested in (
            (MAMMALS / "dogs" / "dingo.png", "cats", 0.64, "dogs"),
            (MAMMALS / "cats" / "lion.png", "dogs", 0.58, "cats"),
            (MAMMALS / "bears" / "european-bear.png", "cats", 0.55, CLASSES[2]),
            (MAMMALS / "cats" / "tiger_sumatran.png", "dogs", 0.52, "cats"))},
    }


SUMMARY = {"by_issue": {"label": 6, "outlier": 1, "near_duplicate": 1, "low_quality": 1},
           "by_class": {"cats": 5, "dogs": 4}, "class_imbalance": {"ratio": 1.5, "smallest": "dogs"}}


@pytest.fixture
def page(tmp_path, cards) -> Path:
    out = tmp_path / "review" / "index.html"
    write_review_page(out, list(cards.values()), CLASSES, SUMMARY)
    return out


@pytest.fixture
def browser(tmp_path, chromium_installed):
    browser = Chromium(tmp_path / "chromium-profile", 1280, 900, *NO_NETWORK)
    browser.call("Network.enable")
    browser.call("Runtime.enable")
    browser.allow_downloads(tmp_path / "downloads")
    yield browser
    browser.close()


def state(browser: Chromium, sha: str) -> str:
    """The state every card of the image shows (an image under two issues is one decision)."""
    shown = set(browser.js(f"[...document.querySelectorAll('.card[data-sha256=\"{sha}\"] .state')]"
                           ".map(e => e.textContent)"))
    assert len(shown) == 1, shown
    return shown.pop()


def focused_sha(browser: Chromium) -> str | None:
    return browser.js("document.activeElement.dataset.sha256 || null")


def export(browser: Chromium, downloads: Path) -> str:
    """Click Export decisions; the text of the labels.csv Chromium saved."""
    target = downloads / "labels.csv"
    target.unlink(missing_ok=True)
    browser.click("#export")
    return wait_for_file(target).read_text(encoding="utf-8")


def assert_offline(browser: Chromium, page: Path) -> None:
    """Only the page itself was requested (file:), its images are inline (data:), and no script failed."""
    browser.js("0")  # a round trip: events sent before it have arrived
    requested = [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]
    assert page.as_uri() in requested
    assert [url for url in requested if not url.startswith(("file:", "data:", "blob:"))] == []
    assert [e["params"] for e in browser.events if e["method"] == "Runtime.exceptionThrown"] == []
    external = browser.js("[...document.querySelectorAll('[src], [href]')].map(e => e.getAttribute('src') || "
                          "e.getAttribute('href')).filter(v => !v.startsWith('data:'))")
    assert external == []
    assert re.findall(r"""\b(?:src|href)\s*=\s*(?!["']?data:)""", page.read_text()) == []


def save_screenshot(browser: Chromium, path: Path) -> None:
    browser.js("window.scrollTo(0, 0)")
    browser.screenshot(path)
    if os.environ.get("IMGCLASS_SAVE_SCREENSHOT") == "1":
        shutil.copy(path, README_SCREENSHOT)
        assert README_SCREENSHOT.stat().st_size < 300_000


def test_decisions_by_mouse_and_keyboard_export_as_labels_csv(page, cards, browser, tmp_path):
    tiger, dog, bear, noise = (cards[n]["sha256"] for n in ("tiger", "dog", "bear", "noise"))
    browser.open(page.as_uri())
    assert state(browser, tiger) == "undecided" and state(browser, bear) == "drop (auto)"
    # keyboard: j focuses the first card (the worst label issue), → the next, 3 relabels as the third class
    browser.press("j")
    assert focused_sha(browser) == tiger
    browser.press("ArrowRight")
    assert focused_sha(browser) == dog
    browser.press("3")
    assert state(browser, dog) == f"relabel → {CLASSES[2]}"
    assert browser.js(f"document.querySelectorAll('.card[data-sha256=\"{dog}\"]').length") == 2
    assert focused_sha(browser) == cards["dingo"]["sha256"]  # a decision moves on to the next card
    # mouse: drop the tiger, keep the auto-dropped bear, and a note with a comma and quotes
    browser.click(f'.card[data-sha256="{tiger}"] button[data-act="drop"]')
    browser.click(f'.card[data-sha256="{bear}"] button[data-act="keep"]')
    browser.click(f'.card[data-sha256="{bear}"] .note')
    browser.call("Input.insertText", text='a real bear, "big"')
    assert state(browser, tiger) == "drop" and state(browser, bear) == "keep"
    assert state(browser, noise) == "drop (auto)"  # not decided by a person: the stage drops it, not labels.csv

    shot = tmp_path / "review_page.png"
    save_screenshot(browser, shot)
    labels = export(browser, tmp_path / "downloads")

    assert labels == (HEADER + f"{tiger},drop,,review: label 0.93\n"
                      f'{dog},relabel,"bears, ""big"" & <small>",review: label 0.71\n'
                      f'{bear},keep,,"a real bear, ""big"""\n')
    rows = list(csv.DictReader(io.StringIO(labels)))
    assert rows[1]["new_class"] == CLASSES[2] and rows[2]["note"] == 'a real bear, "big"'
    assert browser.js("document.getElementById('counts').textContent").startswith(
        "3 decided on this page (1 drop, 1 relabel, 1 keep)")
    assert_offline(browser, page)
    assert shot.stat().st_size > 20_000


def test_loaded_labels_csv_prefills_the_cards_and_export_keeps_rows_not_on_the_page(page, cards, browser, tmp_path):
    tiger, dog, bear, fox = (cards[n]["sha256"] for n in ("tiger", "dog", "bear", "fox"))
    elsewhere = "f" * 64
    committed = tmp_path / "committed" / "labels.csv"
    committed.parent.mkdir()
    with committed.open("w", newline="", encoding="utf-8-sig") as f:  # CRLF and a BOM, as a spreadsheet saves
        writer = csv.writer(f)
        writer.writerow(["sha256", "action", "new_class", "note"])
        writer.writerow([elsewhere, "relabel", CLASSES[2], "from last week,\nchecked twice"])
        writer.writerow([dog, "relabel", "dogs", "review: label 0.71"])
        writer.writerow([bear, "keep", "", "a bear"])
        writer.writerow([fox, "drop", "", "blurry"])
    browser.open(page.as_uri())
    browser.set_files("#load", committed)
    browser.wait_for("document.getElementById('load-status').textContent.startsWith('loaded 4 rows')")

    assert state(browser, dog) == "relabel → dogs"
    assert browser.js(f"document.querySelector('.card[data-sha256=\"{dog}\"] select').value") == "dogs"
    assert state(browser, bear) == "keep" and state(browser, fox) == "drop" and state(browser, tiger) == "undecided"
    assert browser.js(f"document.querySelector('.card[data-sha256=\"{bear}\"] .note').value") == "a bear"
    assert "1 rows of labels.csv about images not on this page" in browser.js(
        "document.getElementById('counts').textContent")
    # this session: the fox goes back to undecided (u), the tiger is dropped (d), both by keyboard
    browser.js(f"document.querySelector('.card[data-sha256=\"{fox}\"]').focus()")
    browser.press("u")
    browser.js(f"document.querySelector('.card[data-sha256=\"{tiger}\"]').focus()")
    browser.press("d")
    # the relabel select, from the keyboard: ↓ on a closed select picks the next class
    lion = cards["lion"]["sha256"]
    browser.js(f"document.querySelector('.card[data-sha256=\"{lion}\"] select').focus()")
    browser.press("ArrowDown")
    assert state(browser, lion) == "relabel → cats"

    labels = export(browser, tmp_path / "downloads")

    assert labels == (HEADER + f'{elsewhere},relabel,"bears, ""big"" & <small>","from last week,\nchecked twice"\n'
                      f"{dog},relabel,dogs,review: label 0.71\n"
                      f"{bear},keep,,a bear\n"
                      f"{tiger},drop,,review: label 0.93\n"
                      f"{lion},relabel,cats,review: label 0.58\n")
    assert_offline(browser, page)


def test_page_escapes_text_caps_each_issue_and_says_how_many_were_left_out(tmp_path, cards):
    many = [{**cards["dog"], "sha256": f"{i:064x}", "score": i / 100, "path": f"<script>alert({i})</script>.png"}
            for i in range(30)]
    out = tmp_path / "index.html"
    write_review_page(out, many + [cards["noise"]], CLASSES, SUMMARY, max_per_issue=10)
    html = out.read_text()
    assert html.count('<article class="card"') == 11
    assert "10 shown, worst first, 20 less suspicious left out (max_per_issue=10)" in html
    shown = re.findall(r'data-sha256="([0-9a-f]{64})"', html)
    assert shown[:10] == [f"{i:064x}" for i in range(29, 19, -1)]  # the worst ten, worst first
    assert "<script>alert" not in html and "&lt;script&gt;alert(29)&lt;/script&gt;.png" in html
    assert "bears, &quot;big&quot; &amp; &lt;small&gt;" in html and CLASSES[2] not in html
    assert html.count('<div class="badge">auto-drop</div>') == 1 and ">blur &amp; noise</div>" in html
    assert html.count("data:image/jpeg;base64,") == 11
    assert out.stat().st_size < 11 * 12_000  # thumbnails, not the photos
