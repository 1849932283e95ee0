"""Decode, normalise, validate and hash images; validate a whole tree of class folders.

`load_rgb` is the single way an image file becomes pixels, at validate time and at predict time:
it rejects what is not a usable image with `ImageRejected(reason)` and returns every usable one as
an 8-bit RGB image (EXIF orientation applied, transparency on white, first frame or page only).

`validate_tree` runs it over SRC/<class>/... and writes DEST/<class>/<sha256>.png for accepted
images, copies rejected files to DEST/_rejected/<class>/..., and writes DEST/report.csv last.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Sequence, Union

import imagehash
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from imgclass.files import atomic_path, write_csv
from imgclass.params import ValidateParams

try:  # HEIC/HEIF decoding; without it such files are rejected as unsupported_format
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
    pass

log = logging.getLogger(__name__)

Source = Union[str, os.PathLike, BinaryIO]

REJECTED_DIR = "_rejected"
REPORT_NAME = "report.csv"
REPORT_COLUMNS = ["path", "class", "status", "reason", "sha256", "phash", "group", "width", "height", "out"]

# Reasons a single file is rejected by load_rgb. validate_tree adds `unreadable` (an OSError reading
# the file) and `in_two_classes:<a>,<b>`, and marks exact copies `duplicate` with `duplicate_of:<path>`.
REASONS = (
    "empty_file", "svg_not_supported", "html_not_image", "not_an_image", "unsupported_format",
    "corrupt", "truncated", "decompression_bomb", "too_small", "extreme_aspect",
)

_SNIFF_BYTES = 1024
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # Pillow's "I" holds 16-bit PNG/PPM data
_SHA256_PNG = re.compile(r"[0-9a-f]{64}\.png")
_PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~4x faster than Pillow's default 6, files ~5% larger


class ImageRejected(ValueError):
    """A file that is not a usable image: `.reason` is a short code (see REASONS), str() says why."""

    def __init__(self, reason: str, message: str, size: Optional[tuple[int, int]] = None):
        super().__init__(message)
        self.reason = reason
        self.size = size  # (width, height) when the header was readable


class NoImagesAccepted(ValueError):
    """validate_tree accepted no image at all."""


# --- one image --------------------------------------------------------------------------------

def load_rgb(source: Source, params: ValidateParams) -> Image.Image:
    """Decode one image file (path or binary file object) into a normalised 8-bit RGB image.

    Raises ImageRejected for anything that is not a usable image; other errors (a missing path,
    a permission problem) are the caller's and propagate unchanged.
    """
    with _binary_stream(source) as fp:
        head = fp.read(_SNIFF_BYTES)
        fp.seek(0)
        _reject_empty_or_markup(head)
        _check_webp_canvas(head, params)
        with _open_image(fp, head) as img:
            _check_geometry(img.size, params)  # header only: a bomb never allocates its pixels
            _decode_fully(img)
            _apply_exif_orientation(img)
            return _to_rgb(img)  # always a new image, detached from the file


def sha256_of_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_pixels(img: Image.Image) -> str:
    """Identity of an image as the model sees it: the same pixels re-saved in another format or with
    other metadata hash the same. The size is included so that a reshaped buffer differs."""
    digest = hashlib.sha256(f"{img.mode} {img.width}x{img.height}\n".encode())
    digest.update(img.tobytes())
    return digest.hexdigest()


def perceptual_hash(img: Image.Image) -> int:
    """64-bit imagehash.phash as an unsigned int (bit distance = near-duplicate distance)."""
    return int(str(imagehash.phash(img)), 16)


@contextmanager
def _binary_stream(source: Source) -> Iterator[BinaryIO]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            yield f
    elif source.seekable():
        yield source
    else:  # sockets, pipes: Pillow and our sniffing both need to seek
        yield io.BytesIO(source.read())


def _reject_empty_or_markup(head: bytes) -> None:
    """Empty files, SVG and HTML (a scraper's error page saved as .jpg) are named, not guessed at."""
    if not head:
        raise ImageRejected("empty_file", "file is empty (0 bytes)")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not text.startswith(b"<"):
        return
    if b"<html" in text or b"<!doctype html" in text or text.startswith((b"<head", b"<body")):
        raise ImageRejected("html_not_image", "file is an HTML page, not an image")
    if b"<svg" in text:
        raise ImageRejected("svg_not_supported", "SVG is a vector format; rasterise it to PNG first")
    raise ImageRejected("not_an_image", "file is XML/markup text, not an image")


def _open_image(fp: BinaryIO, head: bytes) -> Image.Image:
    """Image.open (reads the header only), with its failures turned into ImageRejected."""
    try:
        return Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise ImageRejected("decompression_bomb", f"exceeds Pillow's hard pixel limit: {exc}") from None
    except UnidentifiedImageError:
        raise _unidentified(head) from None
    except MemoryError:
        raise
    except Exception as exc:  # a plugin recognised the format and then failed on its header
        raise _decode_error(exc, _format_by_signature(head)) from None


def _check_webp_canvas(head: bytes, params: ValidateParams) -> None:
    """Pillow's WebP plugin allocates the whole canvas inside Image.open, before any size check of
    ours could run, so check the size the WebP header declares first."""
    size = _webp_declared_size(head)
    if size is not None:
        _check_geometry(size, params)


def _webp_declared_size(head: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from a VP8X, VP8L or VP8 header (the three WebP bitstreams), else None."""
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP" or len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":  # 24-bit canvas width-1 and height-1
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8L" and head[20] == 0x2F:  # 14-bit width-1 and height-1, packed
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # 14-bit width and height after the start code
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    return None


# Signatures of image formats, used only after Pillow failed: a recognised signature means the file is
# a damaged or unsupported image rather than "not an image".
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"),
    (b"%PDF-", "PDF"), (b"\xff\x0a", "JXL"), (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JXL"),
)
_FTYP_BRANDS = {b"heic": "HEIF", b"heix": "HEIF", b"hevc": "HEIF", b"heim": "HEIF", b"heis": "HEIF",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def _format_by_signature(head: bytes) -> Optional[str]:
    for magic, fmt in _SIGNATURES:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":  # BMP reserved fields are zero
        return "BMP"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12])
    return None


def _unidentified(head: bytes) -> ImageRejected:
    fmt = _format_by_signature(head)
    if fmt is None:
        kind = "text" if b"\x00" not in head and _is_utf8(head) else "unrecognised binary data"
        return ImageRejected("not_an_image", f"file is {kind}, not an image")
    Image.init()
    if fmt not in Image.OPEN:
        return ImageRejected("unsupported_format", f"{fmt} files cannot be decoded here; convert to PNG or JPEG")
    return ImageRejected("corrupt", f"{fmt} signature but the header cannot be parsed (truncated or damaged)")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(data) - 3  # a multi-byte character cut by the sniff window
    return True


def _decode_error(exc: Exception, fmt: Optional[str]) -> ImageRejected:
    fmt = fmt or "image"
    detail = f"{type(exc).__name__}: {exc}".strip()
    lowered = detail.lower()
    if isinstance(exc, EOFError) or "truncated" in lowered or "end of file" in lowered:
        return ImageRejected("truncated", f"{fmt} data ends early ({detail})")
    if "not available" in lowered or "ghostscript" in lowered or "not supported" in lowered:
        return ImageRejected("unsupported_format", f"{fmt} variant cannot be decoded here ({detail})")
    return ImageRejected("corrupt", f"{fmt} data cannot be decoded ({detail})")


def _check_geometry(size: tuple[int, int], params: ValidateParams) -> None:
    width, height = size
    if width * height > params.max_pixels:
        raise ImageRejected("decompression_bomb", f"{width}x{height} = {width * height} pixels exceeds "
                            f"max_pixels {params.max_pixels}", size)
    if min(width, height) < params.min_size:
        raise ImageRejected("too_small", f"{width}x{height} is below min_size {params.min_size}", size)
    aspect = max(width, height) / min(width, height)
    if aspect > params.max_aspect:
        raise ImageRejected("extreme_aspect",
                            f"{width}x{height} has aspect {aspect:.1f} > max_aspect {params.max_aspect}", size)


def _decode_fully(img: Image.Image) -> None:
    """Decode every pixel of the current (first) frame so that truncation surfaces here."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # Pillow would pad a half image with grey instead of failing
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was set to True in this process; truncated "
                           "files would pass as images. Leave it False.")
    try:
        img.load()
    except Image.DecompressionBombError as exc:  # a later frame or tile larger than the header said
        raise ImageRejected("decompression_bomb", str(exc), img.size) from None
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, EOFError, zlib.error...
        raise _decode_error(exc, img.format) from None


def _apply_exif_orientation(img: Image.Image) -> None:
    try:
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an already-upright image
    except Exception as exc:  # malformed EXIF must not cost an otherwise good image
        log.debug("ignoring unreadable EXIF orientation: %s", exc)


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    try:
        if mode in _SIXTEEN_BIT_MODES or mode == "F":
            img = _to_8bit_grey(img)
        if img.mode in _ALPHA_MODES or "transparency" in img.info:
            return _composite_on_white(img)
        return img.convert("RGB")
    except ValueError as exc:  # e.g. LAB or an exotic raw mode Pillow cannot convert
        raise ImageRejected("unsupported_format", f"colour mode {mode} cannot be converted to RGB ({exc})",
                            img.size) from None


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    """Scale 16-bit (and float) greyscale to 0..255; Pillow's convert('L') clips, turning it white."""
    values = np.asarray(img)
    if img.mode == "F":
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        scaled = (np.nan_to_num(values, nan=lo) - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
        return Image.fromarray(np.rint(scaled).astype(np.uint8))
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


# --- a tree of class folders ------------------------------------------------------------------

def validate_tree(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    params: ValidateParams,
    classes: Optional[list[str]] = None,
    workers: Optional[int] = None,
) -> dict:
    """Validate SRC/<class>/** into DEST (see the module docstring); return a summary dict.

    `classes` limits and orders the class folders (default: every visible folder in SRC);
    `workers` is the number of decoding threads (default: one per CPU).
    """
    src, dest = Path(src), Path(dest)
    class_names = _class_folders(src, classes)
    _check_separate(src, dest)
    jobs = _list_files(src, class_names)

    dest.mkdir(parents=True, exist_ok=True)
    (dest / REPORT_NAME).unlink(missing_ok=True)  # no report while DEST is being changed
    rows = _examine_all(jobs, dest, params, workers or _available_cpus())
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


def _examine_all(jobs: list, dest: Path, params: ValidateParams, workers: int) -> list[dict]:
    """Threads, not processes: decoding, PNG/zlib encoding and hashing release the GIL, so threads
    scale on large photos without pickling, fork hazards or a __main__ guard in the caller."""
    examine = partial(_examine, dest=dest, params=params)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="validate") if workers > 1 else nullcontext()
    with pool, tqdm(total=len(jobs), desc="validate", unit="file", disable=None) as bar:
        rows = []
        for row in pool.map(examine, jobs) if workers > 1 else map(examine, jobs):
            rows.append(row)
            bar.update()
    return rows


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _examine(job: tuple[Path, str, str], dest: Path, params: ValidateParams) -> dict:
    """Decode one file; write its PNG (content-addressed, so idempotent) and return its report row."""
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
    out = f"{cls}/{sha}.png"
    _write_png_once(img, dest / out)
    return row | {"sha256": sha, "phash": f"{perceptual_hash(img):016x}", "width": img.width,
                  "height": img.height, "out": out}


def _write_png_once(img: Image.Image, path: Path) -> None:
    if path.exists():  # named by its pixels' hash, so an existing file already holds these pixels
        return
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)


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


def leader_groups(hashes: Sequence[int], max_distance: Optional[int]) -> list[int]:
    """For each 64-bit hash, the index of its group's leader (leader clustering, in input order).

    Each hash joins the first earlier leader within `max_distance` differing bits, else leads its own
    group. Comparing with leaders only means A~B and B~C do not chain A and C into one giant group.
    None turns grouping off (every hash leads itself).
    """
    if max_distance is None:
        return list(range(len(hashes)))
    values = np.array(hashes, dtype=np.uint64)
    leaders = np.empty_like(values)  # the hashes of the leaders so far, in order
    leader_index: list[int] = []
    groups = []
    for i, value in enumerate(values):
        distances = np.bitwise_count(leaders[: len(leader_index)] ^ value)
        within = np.flatnonzero(distances <= max_distance)
        if within.size:
            groups.append(leader_index[within[0]])
        else:
            leaders[len(leader_index)] = value
            leader_index.append(i)
            groups.append(i)
    return groups


def _group_near_duplicates(rows: list[dict], max_distance: Optional[int]) -> None:
    """A group is named by its leader's sha256; duplicates take their kept copy's group."""
    accepted = list(_accepted(rows))
    leaders = leader_groups([int(row["phash"], 16) for row in accepted], max_distance)
    for row, leader in zip(accepted, leaders):
        row["group"] = accepted[leader]["sha256"]
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
    """Delete what earlier runs wrote and this report does not list: <64 hex>.png in DEST's class
    folders, anything under DEST/_rejected. Other files in DEST are not ours and are left alone."""
    keep = {dest / row["out"] for row in rows if row["out"]}
    for folder in (p for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name == REJECTED_DIR:
            ours = [p for p in folder.rglob("*") if p.is_file()]
        else:
            ours = [p for p in folder.glob("*.png") if _SHA256_PNG.fullmatch(p.name)]
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
