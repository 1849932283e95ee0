"""The review page at scale (issue 20): 20,000 findings, every one on the page, thumbnails as files.

    .venv/bin/python benchmarks/review_page.py [--findings 20000] [--work DIR] [--loads 3]

Images: one per finding, 224 x 224 JPEGs (quality 90) that compress like photos: a two-colour gradient
at a random angle, blotches of noise at three scales and a little grain, ~17 KB a file and ~4 KB a
thumbnail (the project measured ~5 KB on real photos). Deterministic; made once by worker processes
into --work/images-<n> (default under the system's temp folder) and reused.

Findings: the issues in the stage's proportions of a noisy scrape (label 40%, outlier 25%,
near_duplicate 20%, low_quality 15%) over ten classes, with paths, reasons and suggested classes worded
as review.py words them (a near duplicate names its twin), 5% auto-dropped.

Measured:
- thumbnails: `review_page.write_thumbnails` into an empty thumbs/ (every thumbnail made), then the
  whole `write_review_page` again (a rerun: thumbnails all there, so the HTML and the folder check);
- bytes: the HTML, the thumbs folder (file sizes; and blocks on disk), and what inlining the
  thumbnails as base64 would have made the one file (HTML + 4/3 of the thumbnails);
- Chromium (headless, network off) opening the page from file://, each load in a fresh browser, the
  files in the OS page cache. Times are the page's own clock (ms since navigation start), read from a
  recorder that DevTools adds before the page's scripts run, so polling adds nothing:
  `script_done` = DOMContentLoaded (the page's script has run: JSON parsed, filters counted, the first
  60 cards in the DOM); `first_frame` = the first frame drawn after it (requestAnimationFrame, then a
  task); `thumbs_in_view` = the last load event of the thumbnails inside the window (1280 x 900);
- jumping: choosing the last issue in the issue filter, then the "last" page button, timed inside the
  page: each step's script (the event handler) and to the next frame drawn; then to the thumbnails in
  view decoded. Twice: the first jump after opening runs cold (not yet optimised) code, the second
  is what every later filter costs.

Prints a table; writes benchmarks/results/review_page.json. Other jobs on the cores inflate the
times: the load average is recorded at start and end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from chromium import CHROMIUM, NO_NETWORK, Chromium  # noqa: E402

from imgclass.review import review_page  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "review_page.json"
CLASSES = ["cats", "dogs", "birds", "fish", "horses", "cars", "bikes", "boats", "trees", "flowers"]
ISSUE_SHARES = {"label": 0.40, "outlier": 0.25, "near_duplicate": 0.20, "low_quality": 0.15}
SIZE = 224
WINDOW = (1280, 900)

# Added by DevTools before the page's own scripts: timestamps on the page's clock.
RECORDER = """
window.__bench = {loaded: {}};
document.addEventListener('DOMContentLoaded', () => {
  __bench.script_done = performance.now();
  requestAnimationFrame(() => setTimeout(() => { __bench.first_frame = performance.now(); }));
});
document.addEventListener('load', e => {
  if (e.target.tagName === 'IMG') __bench.loaded[e.target.src] = performance.now();
}, true);
"""
IN_VIEW = """[...document.querySelectorAll('.card img')].filter(img => {
  const r = img.getBoundingClientRect();
  return r.bottom > 0 && r.top < innerHeight;
})"""
JUMP = """(async () => {
  const frame = () => new Promise(done => requestAnimationFrame(() => setTimeout(done)));
  const select = document.getElementById('filter-issue');
  const start = performance.now();
  select.value = String(select.options.length - 2);  // the last issue ('any' comes first)
  select.dispatchEvent(new Event('change'));
  const filterScript = performance.now();
  await frame();
  const filtered = performance.now();
  document.getElementById('last').click();
  const lastScript = performance.now();
  await frame();
  const paged = performance.now();
  await Promise.all(%s.map(img => img.decode().catch(() => null)));
  return {filter_script_ms: filterScript - start, filter_frame_ms: filtered - start,
          last_script_ms: lastScript - filtered, last_frame_ms: paged - filtered,
          thumbs_in_view_ms: performance.now() - paged, showing: document.getElementById('showing').textContent};
})()""" % IN_VIEW


def make_image(index: int, path: Path) -> str:
    """One photo-like JPEG; returns the sha256 of its bytes (the page's key)."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    angle = rng.uniform(0, 2 * math.pi)
    t = (np.cos(angle) * x + np.sin(angle) * y)[..., None]
    t = (t - t.min()) / (t.max() - t.min())
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = (1 - t) * a + t * b + rng.normal(0, 5, (SIZE, SIZE, 3))
    for cells in (6, 24, 56):  # blotches from large to small: the detail that makes photos cost bytes
        grid = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        blotches = np.asarray(Image.fromarray(grid).resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float64)
        pixels += 0.25 * (blotches - 128)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_images(start: int, stop: int, folder: str) -> list[str]:
    return [make_image(i, Path(folder) / f"{i:05d}.jpg") for i in range(start, stop)]


def cached_images(work: Path, n: int) -> tuple[list[Path], list[str], float]:
    """(paths, sha256s, seconds spent making them now: 0 when cached)."""
    folder = work / f"images-{n}"
    manifest = folder / "sha256.json"  # written last: its presence says the set is complete
    if manifest.exists():
        shas = json.loads(manifest.read_text())
        return [folder / f"{i:05d}.jpg" for i in range(n)], shas, 0.0
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    chunks = [(lo, min(lo + 500, n)) for lo in range(0, n, 500)]
    with ProcessPoolExecutor() as pool:
        shas = [sha for part in pool.map(make_images, *zip(*chunks), [str(folder)] * len(chunks)) for sha in part]
    manifest.write_text(json.dumps(shas))
    return [folder / f"{i:05d}.jpg" for i in range(n)], shas, time.perf_counter() - start


def findings(images: list[Path], shas: list[str]) -> list[dict]:
    """One finding per image, worded as the review stage words them."""
    rng = np.random.default_rng(0)
    issues = rng.choice(list(ISSUE_SHARES), size=len(images), p=list(ISSUE_SHARES.values()))
    given = rng.integers(0, len(CLASSES), len(images))
    cards = []
    for i, (image, sha, issue) in enumerate(zip(images, shas, issues)):
        cls = CLASSES[given[i]]
        score = float(rng.uniform(0.5, 1.0))
        suggested = CLASSES[(given[i] + 1 + rng.integers(0, len(CLASSES) - 1)) % len(CLASSES)]
        twin = shas[(i + 1) % len(shas)]
        reason = {"label": f"p({cls}) = {1 - score:.2f} out of sample; looks like {suggested} (p = {score:.2f})",
                  "outlier": f"far from every class: its distance to the 10 nearest images is {score * 4:.1f} "
                             "interquartile ranges above the upper quartile",
                  "near_duplicate": f"cosine distance {1 - score:.4f} to an image in the same class ({cls}): "
                                    f"{cls}/{twin}.png",
                  "low_quality": "dark"}[issue]
        cards.append({"sha256": sha, "path": f"{cls}/{sha}.png", "image": image, "class": cls, "issue": str(issue),
                      "score": score, "suggested_class": suggested if issue == "label" else "",
                      "auto_drop": bool(rng.random() < 0.05), "reason": reason})
    return cards


def folder_bytes(folder: Path) -> tuple[int, int, int]:
    """(files, bytes, bytes allocated on disk)."""
    stats = [p.stat() for p in folder.iterdir() if p.is_file()]
    return len(stats), sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats)


def time_writing(page: Path, cards: list[dict]) -> dict:
    shutil.rmtree(page.parent, ignore_errors=True)
    start = time.perf_counter()
    review_page.write_thumbnails(page.parent / review_page.THUMBS, cards)
    thumbnails = time.perf_counter() - start
    start = time.perf_counter()
    review_page.write_review_page(page, cards, CLASSES, {"images": len(cards)})
    rerun = time.perf_counter() - start
    count, size, disk = folder_bytes(page.parent / review_page.THUMBS)
    html = page.stat().st_size
    return {"thumbnails_s": round(thumbnails, 2), "thumbnails_per_s": round(count / thumbnails),
            "rerun_s": round(rerun, 2), "html_bytes": html, "thumbs": count, "thumbs_bytes": size,
            "thumbs_disk_bytes": disk, "inline_estimate_bytes": html + math.ceil(size / 3) * 4}


def time_browser(page: Path, work: Path) -> dict:
    """One load in a fresh headless Chromium: the page's own timestamps, then the filtered jump."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=work))
    browser = Chromium(profile, *WINDOW, *NO_NETWORK)
    try:
        browser.run_before_page_scripts(RECORDER)
        browser.open(page.as_uri(), ready="window.__bench && window.__bench.first_frame")
        browser.wait_for(f"{IN_VIEW}.every(img => img.complete)", timeout=60)
        load = browser.js(f"""(() => ({{
            script_done_ms: __bench.script_done, first_frame_ms: __bench.first_frame,
            thumbs_in_view_ms: Math.max(...{IN_VIEW}.map(img => __bench.loaded[img.src])),
            thumbs_in_view: {IN_VIEW}.length,
            js_heap_mb: performance.memory.usedJSHeapSize / 2 ** 20}}))()""")
        jumps = {"jump_first": browser.js(JUMP), "jump_again": browser.js(JUMP)}  # the first runs cold code
        version = browser.call("Browser.getVersion")["product"]
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
    return {**{k: round(v, 1) for k, v in load.items()},
            **{f"{jump}_{k}": (round(v, 1) if isinstance(v, float) else v)
               for jump, measured in jumps.items() for k, v in measured.items()},
            "chromium": version}


def median_of(loads: list[dict]) -> dict:
    return {key: round(statistics.median(load[key] for load in loads), 1)
            for key, value in loads[0].items() if isinstance(value, (int, float))}


def print_table(result: dict) -> None:
    w, b = result["writing"], result["browser"]["median"]
    mb = 1 / 2 ** 20
    rows = [
        ("findings (= images)", f"{result['findings']:,}"),
        ("thumbnails made, s", f"{w['thumbnails_s']} ({w['thumbnails_per_s']}/s, {result['machine']['cores']} cores)"),
        ("rerun (all thumbnails there), s", w["rerun_s"]),
        ("HTML, MB", f"{w['html_bytes'] * mb:.1f}"),
        ("thumbs/, MB (on disk)",
         f"{w['thumbs_bytes'] * mb:.1f} ({w['thumbs_disk_bytes'] * mb:.1f}), {w['thumbs']:,} files"),
        ("inlined as base64 instead, MB", f"{w['inline_estimate_bytes'] * mb:.1f}"),
        ("open: script done (first page in DOM), ms", b["script_done_ms"]),
        ("open: first frame drawn, ms", b["first_frame_ms"]),
        ("open: thumbnails in view loaded, ms", f"{b['thumbs_in_view_ms']} ({b['thumbs_in_view']:.0f} in view)"),
        ("JS heap after opening, MB", b["js_heap_mb"]),
    ]
    for jump in ("jump_first", "jump_again"):
        rows += [(f"{jump}: issue filter, script / to frame, ms",
                  f"{b[f'{jump}_filter_script_ms']} / {b[f'{jump}_filter_frame_ms']}"),
                 (f"{jump}: last page, script / to frame, ms",
                  f"{b[f'{jump}_last_script_ms']} / {b[f'{jump}_last_frame_ms']}"),
                 (f"{jump}: then thumbnails in view, ms", b[f"{jump}_thumbs_in_view_ms"])]
    width = max(len(name) for name, _ in rows)
    print(f"review page, median of {len(result['browser']['loads'])} loads; load average "
          f"{result['machine']['load_average_start']} at start, {result['machine']['load_average_end']} at end")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--findings", type=int, default=20000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "imgclass-review-page-bench")
    parser.add_argument("--loads", type=int, default=3, help="page loads in Chromium (median reported)")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: Debian's chromium package", file=sys.stderr)
        return 1
    load_start = os.getloadavg()
    images, shas, made_s = cached_images(args.work, args.findings)
    cards = findings(images, shas)
    page = args.work / "review" / "index.html"
    writing = time_writing(page, cards)
    loads = [time_browser(page, args.work) for _ in range(args.loads)]
    result = {
        "benchmark": "review_page", "findings": len(cards), "page_size": review_page.PAGE_SIZE,
        "images": {"size_px": SIZE, "bytes": sum(p.stat().st_size for p in images), "made_now_s": round(made_s, 1)},
        "writing": writing,
        "browser": {"window": list(WINDOW), "median": median_of(loads), "loads": loads,
                    "showing_after_jump": loads[0]["jump_first_showing"]},
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "chromium": loads[0]["chromium"],
                    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                             text=True).stdout.strip(),
                    "load_average_start": [round(v, 2) for v in load_start],
                    "load_average_end": [round(v, 2) for v in os.getloadavg()]},
    }
    print_table(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
