"""The review page in headless Chromium with the network off: decide with mouse and keyboard, export
labels.csv through the page's own download, load a labels.csv back; page through and filter a couple
of thousand findings; below-threshold findings after the flagged ones, marked and filterable;
thumbnails are files beside the page, made once.

Cards are built from real photos (tuxpaint stamps) and generated images. The screenshot lands in
the test's tmp dir, and in docs/images/review_page.png with IMGCLASS_SAVE_SCREENSHOT=1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chromium import CHROMIUM, NO_NETWORK, Chromium, wait_for_file
from conftest import REPO, TUXPAINT, require, require_tuxpaint
from imgclass.review import review_page
from imgclass.review.review_page import ISSUES, THUMBNAIL_PX, write_review_page

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
         reason: str = "", flagged: bool = True) -> dict:
    if suggested and not reason:  # as the review stage explains a label issue
        reason = f"p({given}) = {1 - score:.2f} out of sample; looks like {suggested}"
    return {"sha256": sha256(image), "path": f"data/clean/{given}/{image.name}", "image": image, "class": given,
            "issue": issue, "score": score, "suggested_class": suggested, "auto_drop": auto_drop, "reason": reason,
            "flagged": flagged}


def noise_image(path: Path, seed: int, size: tuple[int, int] = (24, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def cards(tmp_path) -> dict[str, dict]:
    """Named cards in the order the review lists them (the page keeps it): label issues, an auto-dropped
    outlier, a near duplicate, a generated noisy image, an unreadable file; then two images below the
    thresholds."""
    require_tuxpaint()
    noise = noise_image(tmp_path / "noise.png", 0)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a JPEG after all")
    return {
        "tiger": card(MAMMALS / "cats" / "tiger.png", "cats", "label", 0.93, suggested="dogs"),
        "dog": card(MAMMALS / "dogs" / "dog.png", "cats", "label", 0.71, suggested="dogs"),
        "dog again": card(MAMMALS / "dogs" / "dog.png", "cats", "near_duplicate", 0.40),  # one image, two issues
        **{path.stem: card(path, given, "label", score, suggested=suggested) for path, given, score, suggested in (
            (MAMMALS / "dogs" / "dingo.png", "cats", 0.64, "dogs"),
            (MAMMALS / "cats" / "lion.png", "dogs", 0.58, "cats"),
            (MAMMALS / "bears" / "european-bear.png", "cats", 0.55, CLASSES[2]),
            (MAMMALS / "cats" / "tiger_sumatran.png", "dogs", 0.52, "cats"))},
        "bear": card(MAMMALS / "bears" / "bear.png", "dogs", "outlier", 0.88, auto_drop=True,
                     reason="outlier score > 0.8 <far from every class>"),
        "fox": card(MAMMALS / "dogs" / "fox.png", "dogs", "near_duplicate", 0.99, suggested=""),
        "noise": card(noise, "cats", "low_quality", 0.97, auto_drop=True, reason="blur & noise"),
        "broken": card(broken, "dogs", "low_quality", 0.10),
        "giraffe": card(MAMMALS / "giraffe.png", "dogs", "label", 0.45, suggested="cats", flagged=False),
        "elephant": card(MAMMALS / "elephant.png", "cats", "outlier", 0.4, flagged=False,
                         reason="below threshold: its distance to the 10 nearest images is 0.7 interquartile ranges "
                                "above the upper quartile"),
    }


SUMMARY = {"by_issue": {"label": 6, "outlier": 1, "near_duplicate": 1, "low_quality": 2},
           "by_class": {"cats": 5, "dogs": 5}, "class_imbalance": {"ratio": 1.5, "smallest": "dogs"}}


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


def requested(browser: Chromium) -> list[str]:
    browser.js("0")  # a round trip: events sent before it have arrived
    return [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]


def assert_offline(browser: Chromium, page: Path) -> None:
    """Only the page and its own thumbnails were requested (file:), and no script failed."""
    urls = requested(browser)
    assert page.as_uri() in urls
    thumbs = (page.parent / "thumbs").as_uri() + "/"
    assert [url for url in urls if url != page.as_uri() and not url.startswith((thumbs, "blob:"))] == []
    assert [e["params"] for e in browser.events if e["method"] == "Runtime.exceptionThrown"] == []
    links = browser.js("[...document.querySelectorAll('[src], [href]')].map(e => e.getAttribute('src') || "
                       "e.getAttribute('href'))")
    assert [link for link in links if not re.fullmatch(r"thumbs/[0-9a-f]{64}\.jpg", link)] == []
    assert re.findall(r"\w+://", page.read_text()) == []


def thumbnail_width(browser: Chromium, sha: str) -> int:
    """naturalWidth of the card's thumbnail once loaded (scrolled into view: they load lazily)."""
    return browser.wait_for(f"""(() => {{
        const img = document.querySelector('.card[data-sha256="{sha}"] img');
        img.scrollIntoView({{block: 'center'}});
        return img.complete && img.naturalWidth;
    }})()""", timeout=10)


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
    assert browser.js(f"document.querySelector('.card[data-sha256=\"{cards['broken']['sha256']}\"] .missing')"
                      ".textContent") == "image unreadable"
    # keyboard: j focuses the first card (the most suspicious), → the next, 3 relabels as the third class
    browser.press("j")
    assert focused_sha(browser) == tiger
    browser.press("ArrowRight")
    assert focused_sha(browser) == dog
    browser.press("3")
    assert state(browser, dog) == f"relabel → {CLASSES[2]}"
    assert browser.js(f"document.querySelectorAll('.card[data-sha256=\"{dog}\"]').length") == 2
    assert focused_sha(browser) == cards["dingo"]["sha256"]  # a decision moves on to the next image's card
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
        "3 decided in this review (1 drop, 1 relabel, 1 keep)")
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
    assert "1 rows of labels.csv about images not in this review" in browser.js(
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


def test_csp_loads_the_thumbnails_from_disk_and_blocks_the_network(page, cards, browser):
    browser.open(page.as_uri())
    assert thumbnail_width(browser, cards["tiger"]["sha256"]) == THUMBNAIL_PX  # from file://, beside the page
    # an image and a fetch from the web, as injected content would try: the policy refuses both
    violations = browser.js("""new Promise(resolve => {
        const seen = [];
        document.addEventListener('securitypolicyviolation', e => {
            seen.push(`${e.effectiveDirective} ${e.blockedURI}`);
            if (seen.length === 2) resolve(seen.sort());
        });
        setTimeout(() => resolve(seen), 5000);
        const img = new Image();
        img.src = 'http://example.com/tracker.png';
        document.body.append(img);
        fetch('https://example.com/data.json').catch(() => {});
    })""")
    assert violations == ["connect-src https://example.com/data.json", "img-src http://example.com/tracker.png"]
    assert browser.js("document.querySelector('img[src^=\"http\"]').naturalWidth") == 0
    requests = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in browser.events
                if e["method"] == "Network.requestWillBeSent" and e["params"]["request"]["url"].startswith("http")}
    failed = {e["params"]["requestId"]: e["params"].get("blockedReason") for e in browser.events
              if e["method"] == "Network.loadingFailed"}
    assert {url: failed.get(request) for request, url in requests.items()} == {  # stopped before the network
        "http://example.com/tracker.png": "csp"}


def test_page_lists_every_finding_once_as_escaped_json_with_thumbnail_files(tmp_path, cards):
    many = [{**cards["dog"], "sha256": f"{i:064x}", "score": i / 100, "path": f"<script>alert({i})</script>.png"}
            for i in range(130)]
    out = tmp_path / "index.html"
    write_review_page(out, many + [cards["noise"], cards["tiger"]], CLASSES, SUMMARY)
    html = out.read_text()
    findings = page_findings(out)
    assert len(findings) == 132  # no cap: every finding is on the page
    given = [*many, cards["noise"], cards["tiger"]]
    assert [f["sha256"] for f in findings] == [c["sha256"] for c in given]  # in the review's order, not re-sorted
    assert findings[129]["path"] == "<script>alert(129)</script>.png" and findings[129]["note"] == "review: label 1.29"
    assert "<script>alert" not in html and "</script>.png" not in html  # the JSON cannot end its <script>
    assert "bears, &quot;big&quot; &amp; &lt;small&gt;" in html and CLASSES[2] not in html
    assert [(f["auto_drop"], f["reason"]) for f in findings if f["auto_drop"]] == [(1, "blur & noise")]
    assert "data:image" not in html  # thumbnails are files: the page is its code and a few hundred bytes a finding
    assert out.stat().st_size < 20_000 + 250 * len(findings)
    thumbs = sorted((tmp_path / "thumbs").iterdir())
    assert len(thumbs) == 132 and all(t.stat().st_size < 12_000 for t in thumbs)
    with Image.open(tmp_path / "thumbs" / f"{cards['tiger']['sha256']}.jpg") as tiger:
        assert tiger.format == "JPEG" and max(tiger.size) == THUMBNAIL_PX
        assert min(tiger.convert("RGB").getpixel((0, 0))) > 245  # transparency on white
    with pytest.raises(ValueError, match="not a sha256"):
        write_review_page(out, [{**cards["dog"], "sha256": "../../etc/passwd"}], CLASSES, SUMMARY)


def test_below_threshold_findings_follow_the_flagged_ones_marked_and_filterable(page, cards, browser, tmp_path):
    below = [cards[name]["sha256"] for name in ("giraffe", "elephant")]
    listed = [c["sha256"] for c in cards.values()]
    findings = page_findings(page)
    assert [f["sha256"] for f in findings] == listed and [f["flagged"] for f in findings] == [1] * 11 + [0, 0]
    browser.open(page.as_uri())
    assert browser.js("document.title") == "imgclass review: 11 findings flagged, 2 below threshold"
    assert shown_shas(browser) == listed
    assert browser.js("[...document.querySelectorAll('main h2')].map(h => h.textContent)") == [
        "flagged 11 findings, most suspicious first",
        "below threshold 2 findings, the next most suspicious images, not flagged: a look at what the "
        "thresholds leave out"]
    marks = browser.js("Object.fromEntries([...document.querySelectorAll('.card')].map(c => [c.dataset.sha256, "
                       "[c.querySelector('.badge.below')?.textContent, getComputedStyle(c).borderTopStyle, "
                       "c.querySelector('.score').textContent]]))")
    assert marks[below[0]] == ["below threshold", "dotted", "label 0.45"]
    assert marks[below[1]] == ["below threshold", "dotted", "outlier 0.4"]
    assert marks[cards["tiger"]["sha256"]] == [None, "solid", "label 0.93"]
    choose(browser, "flagged", "below threshold")
    assert shown_shas(browser) == below
    assert text(browser, "showing") == "showing 1–2 of 2 findings (flagged: below threshold)"
    choose(browser, "flagged", "flagged")
    assert shown_shas(browser) == listed[:11]
    choose(browser, "flagged", None)
    # a decision on a below-threshold image is exported like any other
    browser.click(f'.card[data-sha256="{below[0]}"] button[data-act="drop"]')
    assert export(browser, tmp_path / "downloads") == HEADER + f"{below[0]},drop,,review: label 0.45\n"
    assert_offline(browser, page)


def page_findings(page: Path) -> list[dict]:
    """The findings the page's JSON lists, as dicts, in the page's order."""
    text = re.search(r'<script type="application/json" id="findings">(.*?)</script>', page.read_text(), re.S)[1]
    data = json.loads(text)
    return [dict(zip(data["fields"], row)) for row in data["findings"]]


def test_a_rerun_makes_only_new_thumbnails_and_removes_stale_ones(tmp_path, monkeypatch):
    images = [noise_image(tmp_path / "images" / f"{name}.png", seed) for seed, name in enumerate("abcd")]
    broken = tmp_path / "images" / "broken.png"
    broken.write_bytes(b"not an image")
    a, b, c, d, e = (card(path, "cats", "outlier", 0.9) for path in (*images, broken))
    out = tmp_path / "review" / "index.html"
    thumbs = out.parent / "thumbs"
    write_review_page(out, [a, b, c, e], CLASSES, {})
    kept = {name: (thumbs / f"{name}.jpg").stat() for name in (b["sha256"], c["sha256"])}
    (thumbs / f".{d['sha256']}.jpg.x1y2.tmp").write_bytes(b"a killed run's leftover")
    made = []
    thumbnail_jpeg = review_page._thumbnail_jpeg
    monkeypatch.setattr(review_page, "_thumbnail_jpeg", lambda image: made.append(image) or thumbnail_jpeg(image))

    write_review_page(out, [b, c, d, e], CLASSES, {})

    assert sorted(made) == sorted([d["image"], broken])  # the unreadable image has no file: it is tried again
    assert sorted(p.name for p in thumbs.iterdir()) == sorted(f"{x['sha256']}.jpg" for x in (b, c, d))
    for name, before in kept.items():
        after = (thumbs / f"{name}.jpg").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert {f["sha256"]: f["thumbnail"] for f in page_findings(out)} == {
        b["sha256"]: 1, c["sha256"]: 1, d["sha256"]: 1, e["sha256"]: 0}


# --- a couple of thousand findings: pages and filters ------------------------------------------------

MANY_CLASSES = ["cats", "dogs", "birds", "cars", "boats"]
MANY = 2000
NEEDLE = 1234  # the finding the test looks for through the filters


@pytest.fixture
def many_findings(tmp_path) -> list[dict]:
    """MANY findings over every issue, five classes and suggested classes (or none), each its own small
    image; in the order the page lists them (by issue, worst first)."""
    rng = np.random.default_rng(7)
    findings = []
    for i in range(MANY):
        given = MANY_CLASSES[i // 4 % 5]
        suggested = "" if i % 3 == 0 else MANY_CLASSES[i // 7 % 5]
        found = card(noise_image(tmp_path / "images" / f"{i}.png", i, (12, 16)), given, ISSUES[i % 4],
                     round(float(rng.random()), 6), suggested="" if suggested == given else suggested)
        findings.append(found)
    findings[NEEDLE]["path"] = "data/clean/x/</script><b>not bold</b>.png"
    return sorted(findings, key=lambda f: (ISSUES.index(f["issue"]), -f["score"]))


def choose(browser: Chromium, field: str, value: str | None) -> None:
    """Pick a filter's choice by what it shows (None: any), as a person would: its change event fires."""
    shown = "any" if value is None else value or "none"
    browser.js(f"""(() => {{
        const select = document.getElementById('filter-{field}');
        select.value = [...select.options].find(o => o.text.startsWith({json.dumps(shown + ' (')})).value;
        select.dispatchEvent(new Event('change'));
    }})()""")


def text(browser: Chromium, element_id: str) -> str:
    return browser.js(f"document.getElementById('{element_id}').textContent")


def shown_shas(browser: Chromium) -> list[str]:
    return browser.js("[...document.querySelectorAll('.card')].map(c => c.dataset.sha256)")


@pytest.mark.slow  # thousands of cards in headless Chromium
def test_thousands_of_findings_page_and_filter_and_decisions_span_pages(many_findings, browser, tmp_path):
    page = tmp_path / "review" / "index.html"
    write_review_page(page, many_findings, MANY_CLASSES, {"images": MANY})
    order = [f["sha256"] for f in many_findings]
    browser.open(page.as_uri())
    assert text(browser, "showing") == "showing 1–60 of 2,000 findings" and text(browser, "page-of") == "page 1 of 34"
    assert shown_shas(browser) == order[:60]

    browser.click("#last")
    assert text(browser, "showing") == "showing 1,981–2,000 of 2,000 findings"
    assert text(browser, "page-of") == "page 34 of 34" and shown_shas(browser) == order[1980:]
    # keyboard: past the last card of a page is the next page's first card, and back
    browser.click("#first")
    browser.js(f"document.querySelector('.card[data-sha256=\"{order[59]}\"]').focus()")
    browser.press("d")  # drops the 60th finding and moves on: to page 2
    assert text(browser, "page-of") == "page 2 of 34" and focused_sha(browser) == order[60]
    browser.press("ArrowLeft")
    assert text(browser, "page-of") == "page 1 of 34" and focused_sha(browser) == order[59]
    assert state(browser, order[59]) == "drop"

    # issue + class + suggested class narrow 2,000 findings to a few, among them the needle
    needle = next(f for f in many_findings if f["path"].endswith("<b>not bold</b>.png"))
    choose(browser, "issue", needle["issue"])
    assert text(browser, "showing") == f"showing 1–60 of 500 findings (issue: {needle['issue']})"
    assert f"{needle['class']} (100)" in browser.js(  # the other filters count within this one
        "[...document.getElementById('filter-class').options].map(o => o.text)")
    choose(browser, "class", needle["class"])
    choose(browser, "suggested", needle["suggested_class"])
    expected = [f["sha256"] for f in many_findings if (f["issue"], f["class"], f["suggested_class"]) ==
                (needle["issue"], needle["class"], needle["suggested_class"])]
    assert 2 < len(expected) < 60 and shown_shas(browser) == expected  # still by issue, worst first
    assert text(browser, "showing") == (f"showing 1–{len(expected)} of {len(expected)} findings (issue: "
                                        f"{needle['issue']}, class: {needle['class']}, suggested: "
                                        f"{needle['suggested_class'] or 'none'})")
    sha = needle["sha256"]
    assert browser.js(f"document.querySelector('.card[data-sha256=\"{sha}\"] .path').textContent") == needle["path"]
    assert thumbnail_width(browser, sha) == 16  # its 16 x 12 px image, from thumbs/ beside the page
    browser.click(f'.card[data-sha256="{sha}"] button[data-act="keep"]')

    # back to every finding: the decision made under the filter is there, and the last page gets one
    for field in ("issue", "class", "suggested"):
        choose(browser, field, None)
    assert text(browser, "showing") == "showing 1–60 of 2,000 findings" and state(browser, order[59]) == "drop"
    choose(browser, "suggested", "")  # no suggested class
    unsuggested = sum(not f["suggested_class"] for f in many_findings)
    assert text(browser, "showing") == f"showing 1–60 of {unsuggested:,} findings (suggested: none)"
    choose(browser, "suggested", None)
    browser.click("#last")
    browser.js(f"document.querySelector('.card[data-sha256=\"{order[-1]}\"]').focus()")
    new_class = "birds" if many_findings[-1]["class"] != "birds" else "cars"
    browser.press(str(MANY_CLASSES.index(new_class) + 1))

    labels = export(browser, tmp_path / "downloads")

    note = {f["sha256"]: f"review: {f['issue']} {f['score']:.2f}" for f in many_findings}
    assert labels == (HEADER + f"{order[59]},drop,,{note[order[59]]}\n"  # in the page's order
                      f"{sha},keep,,{note[sha]}\n"
                      f"{order[-1]},relabel,{new_class},{note[order[-1]]}\n")
    assert len(requested(browser)) < 400  # only the thumbnails of the pages shown, not 2,000
    assert_offline(browser, page)
