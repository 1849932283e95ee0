"""A corpus of odd, broken and awkward image files, made with numpy + Pillow (no downloads).

`odd_files()` lists each kind with the status and reason `imgclass.data.images` must give it;
`write_corpus(folder)` writes them; `photo(seed)` draws a real-looking picture (gradient sky,
shapes, texture) so that perceptual hashes behave as they do on photographs.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

try:
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:
    pass

# Solid colours whose frame or page must (or must not) reach the output.
FIRST = (200, 30, 40)
LATER = (30, 60, 200)
WHITE = (255, 255, 255)


# --- content ----------------------------------------------------------------------------------

def photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A gradient background with random shapes and texture; different seeds look unrelated."""
    rng = np.random.default_rng(seed)
    width, height = size
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    sky = (top * (1 - ramp) + bottom * ramp) * np.ones((1, width, 1))
    img = Image.fromarray(sky.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x0, x1 = sorted(rng.integers(0, width, 2))
        y0, y1 = sorted(rng.integers(0, height, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1 + width // 8, y1 + height // 8), fill=colour)
    noise = rng.normal(0, 6, (height, width, 3))
    textured = np.clip(np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), dtype=float) + noise, 0, 255)
    return Image.fromarray(textured.astype(np.uint8))


def solid(colour: tuple[int, ...], size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def encode(img: Image.Image, fmt: str, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def cut(data: bytes, fraction: float = 0.6) -> bytes:
    """The first `fraction` of a file: an interrupted download."""
    return data[: int(len(data) * fraction)]


@lru_cache(maxsize=None)
def encoder_missing(fmt: str) -> Optional[str]:
    """Why this Pillow/pillow-heif cannot write `fmt`, or None when it can (and read it back)."""
    try:
        Image.open(io.BytesIO(encode(photo(0, (64, 64)), fmt))).load()
    except Exception as exc:  # KeyError for unknown formats, OSError for a missing codec
        return f"{fmt} encoding unavailable here: {type(exc).__name__}: {exc}"
    return None


# --- the odd kinds ----------------------------------------------------------------------------

def animated(fmt: str, size: tuple[int, int], **save_kwargs) -> bytes:
    """Three solid frames, FIRST first: the output must be FIRST, not a later frame or a blend."""
    frames = [solid(FIRST, size), solid(LATER, size), solid((40, 180, 60), size)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **save_kwargs)


def multipage_tiff() -> bytes:
    """Page 1 is FIRST at 70x50; page 2 is larger and LATER, and must not be used."""
    return encode(solid(FIRST, (70, 50)), "TIFF", save_all=True, append_images=[solid(LATER, (90, 90))])


def cmyk_jpeg(seed: int) -> bytes:
    return encode(photo(seed).convert("CMYK"), "JPEG", quality=95)


def sixteen_bit_png() -> bytes:
    """Greyscale 16-bit with a full 0..65535 ramp: clipping to 8 bits would make it almost all white."""
    ramp = np.linspace(0, 65535, 128, dtype=np.float64)
    return encode(Image.fromarray(np.tile(ramp, (96, 1)).astype(np.uint16)), "PNG")


def sixteen_bit_rgb_png() -> bytes:
    """RGB at 16 bits per sample (Pillow has no such mode, so the PNG is assembled by hand):
    red ramps 0..65535 left to right, green is 0x8000, blue 0xFFFF."""
    width, height = 96, 64
    pixels = np.empty((height, width, 3), dtype=">u2")
    pixels[..., 0] = np.linspace(0, 65535, width, dtype=np.float64).astype(np.uint16)
    pixels[..., 1], pixels[..., 2] = 0x8000, 0xFFFF
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter byte 0 before each row
    return png_chunks(width, height, bit_depth=16, colour_type=2, idat=zlib.compress(rows))


def palette_png_with_transparency() -> bytes:
    """Left half palette index 0 (transparent, and black underneath), right half index 1 (FIRST)."""
    img = Image.new("P", (80, 60), 0)
    img.putpalette([0, 0, 0, *FIRST] + [0, 0, 0] * 254)
    img.paste(1, (40, 0, 80, 60))
    return encode(img, "PNG", transparency=0)


def rgba_png() -> bytes:
    """Left third fully transparent black, middle third half-transparent black, right third opaque LATER."""
    img = Image.new("RGBA", (90, 60), (0, 0, 0, 0))
    img.paste((0, 0, 0, 128), (30, 0, 60, 60))
    img.paste((*LATER, 255), (60, 0, 90, 60))
    return encode(img, "PNG")


def grey_alpha_png() -> bytes:
    img = Image.new("LA", (64, 40), (0, 0))
    img.paste((90, 255), (32, 0, 64, 40))
    return encode(img, "PNG")


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """160x120 pixels stored sideways with a red block top-left; orientation 6 means rotate 90° clockwise
    to display, so the output is 120x160 with the red block top-right."""
    img = photo(21)
    img.paste((255, 0, 0), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=95, exif=exif)


def png_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A valid 1-bit PNG of zeros: ~12 KB on disk, `width*height` pixels (100 M by default) decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return png_chunks(width, height, bit_depth=1, colour_type=0, idat=body)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds one empty IDAT: the smallest possible bomb."""
    return png_chunks(width, height, bit_depth=8, colour_type=2, idat=zlib.compress(b""))


def png_chunks(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def webp_bomb(width: int = 12_000, height: int = 9_000) -> bytes:
    """An animated (VP8X) WebP whose header declares a huge canvas; Pillow would allocate it on open."""
    data = bytearray(animated("WEBP", (64, 64), lossless=True))
    assert data[12:16] == b"VP8X"
    data[24:27] = (width - 1).to_bytes(3, "little")
    data[27:30] = (height - 1).to_bytes(3, "little")
    return bytes(data)


HTML_PAGE = b"""<!DOCTYPE html>
<html><head><title>403 Forbidden</title></head>
<body><h1>Forbidden</h1><p>You don't have permission to access this resource.</p></body></html>
"""
SVG_IMAGE = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">
  <circle cx="50" cy="50" r="40" fill="red"/>
</svg>
"""
PLAIN_TEXT = b"Access denied.\nThe requested image could not be served; please retry later.\n"
PDF_DOCUMENT = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def random_bytes(n: int = 4096) -> bytes:
    data = np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes()
    return b"\x13\x37" + data  # no image signature starts like this


@dataclass(frozen=True)
class OddFile:
    name: str                  # with the extension a scraper might have given it
    build: Callable[[], bytes]
    status: str                # expected: ok or rejected
    reason: str = ""           # expected reason code when rejected
    needs: Optional[str] = None  # the Pillow format that must be encodable to build it


def odd_files() -> list[OddFile]:
    """Every kind, each with distinct pixels so that none is a duplicate of another."""
    return [
        # not images at all
        OddFile("zero_bytes.jpg", lambda: b"", "rejected", "empty_file"),
        OddFile("error_page.jpg", lambda: HTML_PAGE, "rejected", "html_not_image"),
        OddFile("message.png", lambda: PLAIN_TEXT, "rejected", "not_an_image"),
        OddFile("vector.svg", lambda: SVG_IMAGE, "rejected", "svg_not_supported"),
        OddFile("noise.jpg", random_bytes, "rejected", "not_an_image"),
        OddFile("document.jpg", lambda: PDF_DOCUMENT, "rejected", "unsupported_format"),
        # damaged images
        OddFile("cut.jpg", lambda: cut(encode(photo(1), "JPEG", quality=90)), "rejected", "truncated"),
        OddFile("cut.png", lambda: cut(encode(photo(2), "PNG")), "rejected", "truncated"),
        OddFile("garbage.png", lambda: b"\x89PNG\r\n\x1a\n" + random_bytes(200), "rejected", "corrupt"),
        # outside the accepted geometry
        OddFile("tiny.png", lambda: encode(photo(3, (20, 20)), "PNG"), "rejected", "too_small"),
        OddFile("banner.png", lambda: encode(photo(4, (400, 40)), "PNG"), "rejected", "extreme_aspect"),
        OddFile("bomb.png", png_bomb, "rejected", "decompression_bomb"),
        OddFile("huge_header.png", lambda: png_header_only(100_000, 100_000), "rejected", "decompression_bomb"),
        OddFile("bomb.webp", webp_bomb, "rejected", "decompression_bomb"),
        # awkward but usable
        OddFile("animated.gif", lambda: animated("GIF", (64, 48)), "ok"),
        OddFile("animated.webp", lambda: animated("WEBP", (72, 56), lossless=True), "ok"),
        OddFile("animated.png", lambda: animated("PNG", (80, 60)), "ok"),
        OddFile("cmyk.jpg", lambda: cmyk_jpeg(5), "ok"),
        OddFile("sixteen_bit.png", sixteen_bit_png, "ok"),
        OddFile("sixteen_bit_rgb.png", sixteen_bit_rgb_png, "ok"),
        OddFile("palette_transparent.png", palette_png_with_transparency, "ok"),
        OddFile("rgba.png", rgba_png, "ok"),
        OddFile("grey_alpha.png", grey_alpha_png, "ok"),
        OddFile("grey.jpg", lambda: encode(photo(6).convert("L"), "JPEG"), "ok"),
        OddFile("one_bit.png", lambda: encode(photo(7).convert("1"), "PNG"), "ok"),
        OddFile("photo.webp", lambda: encode(photo(8), "WEBP", quality=80), "ok"),
        OddFile("photo.avif", lambda: encode(photo(9), "AVIF", quality=70), "ok", needs="AVIF"),
        OddFile("photo.heic", lambda: encode(photo(10), "HEIF", quality=70), "ok", needs="HEIF"),
        OddFile("pages.tiff", multipage_tiff, "ok"),
        OddFile("photo.bmp", lambda: encode(photo(11), "BMP"), "ok"),
        OddFile("icon.ico", lambda: encode(photo(12, (64, 64)), "ICO", sizes=[(64, 64)]), "ok"),
        OddFile("rotated.jpg", exif_rotated_jpeg, "ok"),
        OddFile("png_named.jpg", lambda: encode(photo(13), "PNG"), "ok"),
    ]


def write_corpus(folder: Path, kinds: Optional[list[OddFile]] = None) -> list[OddFile]:
    """Write the kinds whose encoders exist into `folder`; return those written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [kind for kind in (kinds or odd_files()) if not (kind.needs and encoder_missing(kind.needs))]
    for kind in written:
        (folder / kind.name).write_bytes(kind.build())
    return written
