"""One image file: sniff, guard, decode, normalise and hash it.

`load_rgb` is the single way an image file becomes pixels, at validate time and at predict time:
it rejects what is not a usable image with `ImageRejected(reason)` and returns every usable one as
an 8-bit RGB image (EXIF orientation applied, transparency on white, first frame or page only).

`decoded` is its first half, shared with the downloader: the one format sniffer (`sniff_format`),
the one decompression-bomb guard (`check_pixel_count`, also on the size a WebP header declares) and
a full decode of the first frame, so a truncated file is caught wherever it enters.

Validating a whole tree of class folders is `imgclass.data.validate`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from contextlib import contextmanager
from functools import partial
from typing import BinaryIO, Callable, Iterator, Optional, Union

import imagehash
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from imgclass.config.params import ValidateParams

try:  # HEIC/HEIF decoding; without it such files are rejected as unsupported_format
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
    pass

log = logging.getLogger(__name__)

Source = Union[str, os.PathLike, BinaryIO]
SizeCheck = Callable[[tuple[int, int]], None]

# Reasons a single file is rejected by load_rgb. validate_tree adds `unreadable` (an OSError reading
# the file) and `in_two_classes:<a>,<b>`, and marks exact copies `duplicate` with `duplicate_of:<path>`.
REASONS = (
    "empty_file", "svg_not_supported", "html_not_image", "not_an_image", "unsupported_format",
    "corrupt", "truncated", "decompression_bomb", "too_small", "extreme_aspect",
)

SNIFF_BYTES = 1024  # enough for every signature and WebP header we read
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_ANY_GEOMETRY = ValidateParams(min_size=1, max_aspect=1e9)
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # Pillow's "I" holds 16-bit PNG/PPM data


class ImageRejected(ValueError):
    """A file that is not a usable image: `.reason` is a short code (see REASONS), str() says why."""

    def __init__(self, reason: str, message: str, size: Optional[tuple[int, int]] = None):
        super().__init__(message)
        self.reason = reason
        self.size = size  # (width, height) when the header was readable


# --- one image --------------------------------------------------------------------------------

def load_rgb(source: Source, params: ValidateParams) -> Image.Image:
    """Decode one image file (path or binary file object) into a normalised 8-bit RGB image.

    Raises ImageRejected for anything that is not a usable image; other errors (a missing path,
    a permission problem) are the caller's and propagate unchanged.
    """
    with decoded(source, partial(_check_geometry, params=params)) as img:
        _apply_exif_orientation(img)
        return _to_rgb(img)  # always a new image, detached from the file


def decode_rgb(source: Source) -> Image.Image:
    """`load_rgb` without validate's size and aspect limits: how the later stages read images they do not
    judge (working copies, a raw folder given to `imgclass review`). Raises ImageRejected for non-images."""
    return load_rgb(source, _ANY_GEOMETRY)


@contextmanager
def decoded(source: Source, check_size: SizeCheck) -> Iterator[Image.Image]:
    """The file's first frame, fully decoded, as Pillow opened it (format and mode untouched).

    `check_size((width, height))` runs on every size the file declares before any pixel is
    allocated (the WebP canvas, then the header) and rejects by raising ImageRejected; pass
    `partial(check_pixel_count, max_pixels=N)` for the bomb guard alone. Raises ImageRejected for
    anything that is not a usable image; a missing path or a permission problem propagates.
    """
    with _binary_stream(source) as fp:
        head = fp.read(SNIFF_BYTES)
        fp.seek(0)
        _reject_empty_or_markup(head)
        canvas = webp_declared_size(head)  # Pillow's WebP plugin allocates it inside Image.open
        if canvas is not None:
            check_size(canvas)
        with _open_image(fp, head) as img:
            check_size(img.size)  # header only: a bomb never allocates its pixels
            _decode_fully(img)
            yield img


def check_pixel_count(size: tuple[int, int], max_pixels: int) -> None:
    """The decompression-bomb guard: reject a declared size above `max_pixels` pixels."""
    width, height = size
    if width * height > max_pixels:
        raise ImageRejected("decompression_bomb", f"{width}x{height} = {width * height} pixels exceeds "
                            f"max_pixels {max_pixels}", size)


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
        raise _decode_error(exc, sniff_format(head)) from None


def webp_declared_size(head: bytes) -> Optional[tuple[int, int]]:
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


# Signatures of image formats. After Pillow failed, a recognised signature means the file is a
# damaged or unsupported image rather than "not an image".
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"),
    (b"%PDF-", "PDF"), (b"\xff\x0a", "JXL"), (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JXL"),
)
_FTYP_BRANDS = {b"heic": "HEIF", b"heix": "HEIF", b"hevc": "HEIF", b"heim": "HEIF", b"heis": "HEIF",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def sniff_format(head: bytes) -> Optional[str]:
    """The image format the first bytes announce ("PNG", "JPEG", "WEBP", "HEIF", ...), or None: the
    one sniffer, for validate, download and predict alike. A signature is a claim, not a proof."""
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
    fmt = sniff_format(head)
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
    check_pixel_count(size, params.max_pixels)
    width, height = size
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
