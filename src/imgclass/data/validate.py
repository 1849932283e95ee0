"""Validate a tree of class folders: every file through `images.load_rgb`, then what only the whole
tree shows, namely exact duplicates, the same picture in two classes, and near-duplicate groups.

`validate_tree(SRC, DEST, params, working_size=S)` decodes each file once and writes its working copy,
DEST/<class>/<sha256>.<png|jpg>, which every later stage reads instead of the original (see
`working_copy`); it copies rejected files to DEST/_rejected/<class>/..., and writes DEST/report.csv last.
The sha256 is that of the original's decoded pixels, so an image keeps its identity (labels.csv rows,
embedding caches, splits) whatever the working size.

Near-duplicate groups are the connected components of the graph that joins two accepted images when
their 64-bit perceptual hashes differ in at most `near_duplicate_distance` bits: A~B and B~C put A,
B and C in one group even when A and C are further apart. A group is named by the smallest sha256 of
its members, so the name does not depend on file order; adding an image can merge groups (and
rename the merged group).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from imgclass.config.params import ValidateParams
from imgclass.data.images import ImageRejected, load_rgb, perceptual_hash, sha256_of_pixels
from imgclass.devices import usable_cpus
from imgclass.files import atomic_path, write_csv
from imgclass.progress import Progress

log = logging.getLogger(__name__)

REJECTED_DIR = "_rejected"
REPORT_NAME = "report.csv"
REPORT_COLUMNS = ["path", "class", "status", "reason", "sha256", "phash", "group", "width", "height", "out"]

_HASH_BITS = 64
_WORKING_COPY_NAME = re.compile(r"[0-9a-f]{64}\.(png|jpg)")
_PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~4x faster than Pillow's default 6, files ~5% larger
# Downscaled photos: JPEG at quality 95 without chroma subsampling is a quarter of a PNG's bytes at a
# mean error under one grey level (measured on upscaled tuxpaint photos at 224 px); WebP is 12x slower.
_JPEG_OPTIONS = {"format": "JPEG", "quality": 95, "subsampling": 0}


class NoImagesAccepted(ValueError):
    """validate_tree accepted no image at all."""


def validate_tree(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    params: ValidateParams,
    classes: Optional[list[str]] = None,
    workers: Optional[int] = None,
    working_size: Optional[int] = None,
) -> dict:
    """Validate SRC/<class>/** into DEST (see the module docstring); return a summary dict.

    `classes` limits and orders the class folders (default: every visible folder in SRC);
    `workers` is the number of decoding threads (default: one per CPU); `working_size` is the
    working copies' shorter side (None: full size).
    """
    src, dest = Path(src), Path(dest)
    class_names = _class_folders(src, classes)
    _check_separate(src, dest)
    jobs = _list_files(src, class_names)

    dest.mkdir(parents=True, exist_ok=True)
    (dest / REPORT_NAME).unlink(missing_ok=True)  # no report while DEST is being changed
    rows = _examine_all(jobs, dest, params, workers or usable_cpus(), working_size)
    _reject_ambiguous_labels(rows)
    _mark_exact_duplicates(rows)
    _group_near_duplicates(rows, params.near_duplicate_distance)
    _quarantine_rejected(rows, src, dest)
    _remove_stale_outputs(dest, rows)
    write_csv(dest / REPORT_NAME, rows, REPORT_COLUMNS)

    summary = _summarise(rows, class_names)
    if summary["by_status"]["ok"] == 0:
        raise NoImagesAccepted(_nothing_accepted_message(src, dest, summary))
    return summary


def _class_folders(src: Path, classes: Optional[list[str]]) -> list[str]:
    if not src.exists():
        raise FileNotFoundError(
            f"{src}: source folder not found; run the scrape stage first or pass the folder that holds one "
            "sub-folder per class")
    if not src.is_dir():  # FileNotFoundError too: for a caller it is the same mistake as a missing SRC
        raise FileNotFoundError(f"{src}: is a file, not a folder; pass the folder that holds one sub-folder "
                                "per class")
    if classes is None:
        classes = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise NoImagesAccepted(f"{src}: no class folders found; expected {src}/<class>/<images>")
    missing = [name for name in classes if not (src / name).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{src}: no folder for class {', '.join(map(repr, missing))}; scrape it or remove it from `classes`")
    if REJECTED_DIR in classes:
        raise ValueError(
            f"{src}: class name {REJECTED_DIR!r} is reserved for quarantined files (is SRC a validated DEST?)")
    return list(classes)


def _check_separate(src: Path, dest: Path) -> None:
    """DEST inside SRC would be validated as input next time; SRC inside DEST could be cleaned away."""
    s, d = src.resolve(), dest.resolve()
    if s == d or s in d.parents or d in s.parents:
        raise ValueError(f"DEST {dest} and SRC {src} must not contain each other; use sibling folders")


def _list_files(src: Path, class_names: list[str]) -> list[tuple[Path, str, str]]:
    """(file, path relative to SRC, class) for every visible file, sorted by relative path."""
    jobs = []
    for name in class_names:
        for folder, subdirs, files in os.walk(src / name):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            for file in files:
                if not file.startswith("."):
                    path = Path(folder, file)
                    jobs.append((path, path.relative_to(src).as_posix(), name))
    return sorted(jobs, key=lambda job: job[1])


def _examine_all(jobs: list, dest: Path, params: ValidateParams, workers: int,
                 working_size: Optional[int]) -> list[dict]:
    """Threads, not processes: decoding, resizing, encoding and hashing release the GIL, so threads
    scale on large photos without pickling, fork hazards or a __main__ guard in the caller."""
    examine = partial(_examine, dest=dest, params=params, working_size=working_size)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="validate") if workers > 1 else nullcontext()
    with pool, Progress(len(jobs), "validate", unit="file") as progress:
        rows = []
        for row in pool.map(examine, jobs) if workers > 1 else map(examine, jobs):
            rows.append(row)
            progress.update()
    return rows


def _examine(job: tuple[Path, str, str], dest: Path, params: ValidateParams, working_size: Optional[int]) -> dict:
    """Decode one file; write its working copy (named by content, so idempotent) and return its report row."""
    path, rel, cls = job
    row = dict.fromkeys(REPORT_COLUMNS, "") | {"path": rel, "class": cls, "status": "ok"}
    try:
        img = load_rgb(path, params)
    except ImageRejected as exc:
        log.info("%s: rejected (%s): %s", rel, exc.reason, exc)
        width, height = exc.size or ("", "")
        return row | {"status": "rejected", "reason": exc.reason, "width": width, "height": height}
    except OSError as exc:  # vanished or unreadable: nothing to decode or to quarantine
        log.info("%s: rejected (unreadable): %s", rel, exc)
        return row | {"status": "rejected", "reason": "unreadable"}
    sha = sha256_of_pixels(img)
    width, height = img.size
    copy = working_copy(img, working_size)
    del img  # a 12-megapixel original is 36 MB a thread: let it go before encoding the copy
    out = f"{cls}/{sha}.{'png' if copy.size == (width, height) else 'jpg'}"
    _write_once(copy, dest / out)
    # The perceptual hash squashes to 32 x 32 pixels first: the working copy gives the same bits.
    return row | {"sha256": sha, "phash": f"{perceptual_hash(copy):016x}", "width": width, "height": height,
                  "out": out}


def working_copy(img: Image.Image, working_size: Optional[int]) -> Image.Image:
    """The image downscaled so that its shorter side is `working_size` (bicubic after a box reduction),
    or the image itself when it is that small already or `working_size` is None. Stages squash images
    to a square of at most working_size, so the shorter side is the one that must keep its pixels."""
    shorter = min(img.size)
    if working_size is None or shorter <= working_size:
        return img
    scale = working_size / shorter
    size = (max(working_size, round(img.width * scale)), max(working_size, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _write_once(img: Image.Image, path: Path) -> None:
    """Originals kept at full size stay lossless (PNG); downscaled photos become JPEG (see _JPEG_OPTIONS).
    An existing copy of the same pixels' hash at the same size is kept (a resumed run); one of another
    working size is replaced."""
    if path.exists() and _stored_size(path) == img.size:
        return
    options = {"format": "PNG", "compress_level": _PNG_COMPRESS_LEVEL} if path.suffix == ".png" else _JPEG_OPTIONS
    with atomic_path(path) as tmp:
        img.save(tmp, **options)


def _stored_size(path: Path) -> Optional[tuple[int, int]]:
    try:
        with Image.open(path) as stored:  # the header only
            return stored.size
    except (OSError, ValueError):
        return None


def _reject_ambiguous_labels(rows: list[dict]) -> None:
    """The same pixels filed under two classes: the label is unknowable, so every copy is rejected."""
    classes_by_sha = defaultdict(set)
    for row in _accepted(rows):
        classes_by_sha[row["sha256"]].add(row["class"])
    for row in _accepted(rows):
        classes = classes_by_sha[row["sha256"]]
        if len(classes) > 1:
            row.update(status="rejected", reason="in_two_classes:" + ",".join(sorted(classes)), out="")


def _mark_exact_duplicates(rows: list[dict]) -> None:
    """Rows are in path order, so the first copy is kept and the others point at it."""
    kept: dict[str, dict] = {}
    for row in _accepted(rows):
        first = kept.setdefault(row["sha256"], row)
        if first is not row:
            row.update(status="duplicate", reason=f"duplicate_of:{first['path']}", out="")


# --- near-duplicate groups -----------------------------------------------------------------

def near_duplicate_components(hashes: Sequence[int], max_distance: Optional[int]) -> np.ndarray:
    """For each 64-bit hash, the index of its connected component in the graph whose edges join
    hashes at most `max_distance` bits apart (so groups chain: A~B and B~C join A, B and C).

    Component indexes are 0..k-1 with no meaning beyond equality. None turns grouping off (every
    hash is its own component).
    """
    n = len(hashes)
    if max_distance is None or n == 0:
        return np.arange(n)
    if max_distance >= _HASH_BITS:  # every pair is within 64 bits
        return np.zeros(n, dtype=np.int64)
    values, index = np.unique(np.asarray(hashes, dtype=np.uint64), return_inverse=True)  # equal hashes: one node
    first, second = _close_pairs(values, max_distance)
    graph = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(len(values), len(values)))
    _, component = connected_components(graph, directed=False)
    return component[index.reshape(-1)]


def group_names(sha256s: Sequence[str], hashes: Sequence[int], max_distance: Optional[int]) -> list[str]:
    """Each image's near-duplicate group, named by the smallest sha256 among its members."""
    components = near_duplicate_components(hashes, max_distance)
    smallest: dict[int, str] = {}
    for component, sha in zip(components.tolist(), sha256s):
        if component not in smallest or sha < smallest[component]:
            smallest[component] = sha
    return [smallest[component] for component in components.tolist()]


def _close_pairs(values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs of the (distinct) `values` at most `max_distance` bits apart.

    Pigeonhole: cut the 64 bits into max_distance + 1 blocks; two hashes that differ in at most
    max_distance bits agree exactly on at least one block. So per block only hashes sharing the
    block's value are compared: ~n * (n / 2**block_bits) pairs instead of n**2. A pair found in
    two blocks is listed twice, which the components do not mind.
    """
    firsts, seconds = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for shift, width in _blocks(max_distance + 1):
        keys = (values >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        run_end = _run_ends(keys[order])
        active = np.arange(len(values))  # positions (in key order) that still have a partner ahead
        offset = 1
        while True:
            active = active[active + offset < run_end[active]]
            if not active.size:
                break
            a, b = order[active], order[active + offset]
            close = np.bitwise_count(values[a] ^ values[b]) <= max_distance
            firsts.append(a[close])
            seconds.append(b[close])
            offset += 1
    return np.concatenate(firsts), np.concatenate(seconds)


def _blocks(count: int) -> list[tuple[int, int]]:
    """(shift, width) of `count` blocks of near-equal width covering the 64 bits."""
    base, extra = divmod(_HASH_BITS, count)
    widths = [base + 1] * extra + [base] * (count - extra)
    shifts = np.cumsum([0] + widths[:-1]).tolist()
    return list(zip(shifts, widths))


def _run_ends(sorted_keys: np.ndarray) -> np.ndarray:
    """For each position of a sorted array, the index just past its run of equal keys."""
    n = len(sorted_keys)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], n]
    return np.repeat(ends, ends - starts)


def _group_near_duplicates(rows: list[dict], max_distance: Optional[int]) -> None:
    """Accepted rows get their group's name; duplicates take their kept copy's group."""
    accepted = list(_accepted(rows))
    names = group_names([row["sha256"] for row in accepted], [int(row["phash"], 16) for row in accepted],
                        max_distance)
    for row, name in zip(accepted, names):
        row["group"] = name
    group_of = {row["path"]: row["group"] for row in accepted}
    for row in rows:
        if row["status"] == "duplicate":
            row["group"] = group_of[row["reason"].removeprefix("duplicate_of:")]


def _accepted(rows: list[dict]) -> Iterator[dict]:
    return (row for row in rows if row["status"] == "ok")


def _quarantine_rejected(rows: list[dict], src: Path, dest: Path) -> None:
    for row in rows:
        if row["status"] == "rejected" and row["reason"] != "unreadable":
            row["out"] = f"{REJECTED_DIR}/{row['path']}"
            _copy_once(src / row["path"], dest / row["out"])


def _copy_once(source: Path, target: Path) -> None:
    """Copy with mtime; an existing copy with the same size and mtime is kept (rsync's quick check)."""
    stat = source.stat()
    if target.exists():
        existing = target.stat()
        if existing.st_size == stat.st_size and existing.st_mtime_ns == stat.st_mtime_ns:
            return
    with atomic_path(target) as tmp:
        shutil.copy2(source, tmp)


def _remove_stale_outputs(dest: Path, rows: list[dict]) -> None:
    """Delete what earlier runs wrote and this report does not list: <64 hex>.png or .jpg in DEST's
    class folders, anything under DEST/_rejected. Other files in DEST are not ours and are left alone."""
    keep = {dest / row["out"] for row in rows if row["out"]}
    for folder in (p for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name == REJECTED_DIR:
            ours = [p for p in folder.rglob("*") if p.is_file()]
        else:
            ours = [p for p in folder.iterdir() if p.is_file() and _WORKING_COPY_NAME.fullmatch(p.name)]
        for path in ours:
            if path not in keep:
                path.unlink()
        if ours:
            _remove_empty_dirs(folder)


def _remove_empty_dirs(folder: Path) -> None:
    """Deepest first, so that a folder holding only empty folders goes too."""
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def _summarise(rows: list[dict], class_names: list[str]) -> dict:
    by_status = Counter({"ok": 0, "rejected": 0, "duplicate": 0})
    by_status.update(row["status"] for row in rows)
    by_reason = Counter(row["reason"].split(":", 1)[0] for row in rows if row["reason"])
    per_class = Counter(dict.fromkeys(class_names, 0))
    per_class.update(row["class"] for row in _accepted(rows))
    group_sizes = Counter(row["group"] for row in _accepted(rows))
    return {
        "files": len(rows),
        "accepted": by_status["ok"],
        "by_status": dict(by_status),
        "by_reason": dict(sorted(by_reason.items())),
        "accepted_per_class": {name: per_class[name] for name in class_names},
        "near_duplicate_groups": sum(1 for size in group_sizes.values() if size > 1),
    }


def _nothing_accepted_message(src: Path, dest: Path, summary: dict) -> str:
    if not summary["files"]:
        return f"{src}: the class folders hold no files; nothing to validate"
    reasons = ", ".join(f"{reason} {count}" for reason, count in summary["by_reason"].items())
    return (f"{src}: none of the {summary['files']} files was accepted ({reasons}); "
            f"see {dest / REPORT_NAME} and {dest / REJECTED_DIR}")


def summary_line(summary: dict, working_size: Optional[int]) -> str:
    """The stage's closing line: accepted per class, what was turned away and why, the copies' size."""
    per_class = ", ".join(f"{name} {count}" for name, count in summary["accepted_per_class"].items())
    reasons = ", ".join(f"{reason} {count}" for reason, count in summary["by_reason"].items()) or "none"
    size = f"shorter side {working_size} px" if working_size else "full size"
    return (f"validate: {summary['accepted']} of {summary['files']} files accepted ({per_class}); "
            f"{summary['by_status']['rejected']} rejected, {summary['by_status']['duplicate']} duplicates "
            f"(reasons: {reasons}); {summary['near_duplicate_groups']} near-duplicate groups; "
            f"working copies at {size}")
