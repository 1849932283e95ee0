"""imgclass.data.images: decoding one file (load_rgb, decoded), the sniffer and bomb guard, hashing."""

from __future__ import annotations

import hashlib
import io
from functools import partial

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFile

from imgclass.data.images import (
    REASONS, ImageRejected, check_pixel_count, decoded, load_rgb, perceptual_hash, sha256_of_file, sha256_of_pixels,
    sniff_format,
)
from imgclass.config.params import ValidateParams
from odd_images import FIRST, LATER, WHITE, cut, encode, encoder_missing, odd_files, photo, png_bomb, webp_bomb

# Bomb files legitimately make Pillow warn before we reject them.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

PARAMS = ValidateParams()
KINDS = {kind.name: kind for kind in odd_files()}


def decode(name: str, params: ValidateParams = PARAMS) -> Image.Image:
    kind = KINDS[name]
    if kind.needs and encoder_missing(kind.needs):
        pytest.skip(encoder_missing(kind.needs))
    return load_rgb(io.BytesIO(kind.build()), params)


def pixel(img: Image.Image, x: float, y: float) -> tuple[int, ...]:
    """The pixel at a fraction of the width and height."""
    return img.getpixel((int(x * (img.width - 1)), int(y * (img.height - 1))))


def close(a, b, tolerance: int) -> bool:
    return all(abs(int(p) - int(q)) <= tolerance for p, q in zip(a, b))


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b.convert("RGB"), dtype=float)).mean())


# --- load_rgb: every kind of odd file ---------------------------------------------------------

@pytest.mark.parametrize("kind", odd_files(), ids=lambda kind: kind.name)
def test_each_odd_kind_is_accepted_as_rgb_or_rejected_with_its_reason(kind):
    if kind.status == "ok":
        img = decode(kind.name)
        assert img.mode == "RGB" and min(img.size) >= PARAMS.min_size
    else:
        with pytest.raises(ImageRejected) as caught:
            decode(kind.name)
        assert caught.value.reason == kind.reason
        assert kind.reason in REASONS and str(caught.value)  # a human message too


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp", "animated.png", "pages.tiff"])
def test_first_frame_or_page_is_used(name):
    img = decode(name)
    assert pixel(img, 0.5, 0.5) == FIRST
    assert pixel(img, 0.1, 0.9) == FIRST
    if name == "pages.tiff":
        assert img.size == (70, 50)  # page 2 is 90x90


def test_transparency_is_composited_on_white():
    palette = decode("palette_transparent.png")
    assert pixel(palette, 0.1, 0.5) == WHITE  # transparent index is black underneath
    assert pixel(palette, 0.9, 0.5) == FIRST
    rgba = decode("rgba.png")
    assert pixel(rgba, 0.1, 0.5) == WHITE
    assert close(pixel(rgba, 0.5, 0.5), (127, 127, 127), 1)  # half-transparent black over white
    assert pixel(rgba, 0.9, 0.5) == LATER
    grey = decode("grey_alpha.png")
    assert pixel(grey, 0.1, 0.5) == WHITE and pixel(grey, 0.9, 0.5) == (90, 90, 90)


def test_sixteen_bit_is_scaled_not_clipped_to_white():
    grey = np.asarray(decode("sixteen_bit.png"))[..., 0]
    assert (grey < 250).mean() > 0.9, "16-bit values were clipped to white"
    assert grey.min() == 0 and grey.max() == 255
    assert np.all(np.diff(grey[0].astype(int)) >= 0)  # the ramp survives
    assert abs(int(grey[0, 64]) - 128) <= 2


def test_sixteen_bit_rgb_keeps_its_colours():
    img = decode("sixteen_bit_rgb.png")
    assert pixel(img, 0, 0.5) == (0, 128, 255) and pixel(img, 1, 0.5) == (255, 128, 255)


def test_exif_orientation_is_applied():
    img = decode("rotated.jpg")
    assert img.size == (120, 160)  # stored 160x120, orientation 6
    assert close(pixel(img, 0.95, 0.05), (255, 0, 0), 40)  # top-left red block is now top-right
    assert not close(pixel(img, 0.05, 0.05), (255, 0, 0), 40)


def test_cmyk_and_greyscale_become_faithful_rgb():
    assert mean_abs_diff(decode("cmyk.jpg"), photo(5)) < 10
    grey = np.asarray(decode("grey.jpg"))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])


@pytest.mark.parametrize("name, seed", [("photo.webp", 8), ("photo.avif", 9), ("photo.heic", 10),
                                        ("photo.bmp", 11), ("png_named.jpg", 13)])
def test_modern_and_legacy_formats_decode_to_the_picture(name, seed):
    assert mean_abs_diff(decode(name), photo(seed)) < 12


def test_geometry_limits_come_from_params():
    img = photo(1)  # 160x120
    data = encode(img, "PNG")
    assert load_rgb(io.BytesIO(data), PARAMS).size == (160, 120)
    for params, reason in [(ValidateParams(max_pixels=10_000), "decompression_bomb"),
                           (ValidateParams(min_size=121), "too_small"),
                           (ValidateParams(max_aspect=1.3), "extreme_aspect")]:
        with pytest.raises(ImageRejected) as caught:
            load_rgb(io.BytesIO(data), params)
        assert caught.value.reason == reason and caught.value.size == (160, 120)


def test_bombs_are_rejected_before_any_pixel_is_allocated(monkeypatch):
    def no_decoding(self):
        raise AssertionError("a bomb reached the decoder")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageRejected, match="10000x10000") as caught:
        load_rgb(io.BytesIO(png_bomb()), PARAMS)  # 12 KB file, 100 M pixels
    assert caught.value.reason == "decompression_bomb"

    def no_open(*args, **kwargs):
        raise AssertionError("Pillow's WebP plugin allocates the canvas inside Image.open")

    monkeypatch.setattr(Image, "open", no_open)
    with pytest.raises(ImageRejected) as caught:
        load_rgb(io.BytesIO(webp_bomb()), PARAMS)
    assert caught.value.reason == "decompression_bomb"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF"])
def test_every_truncation_is_rejected_cleanly_or_still_complete(fmt):
    """An interrupted download at any byte is an ImageRejected, never another exception."""
    if encoder_missing(fmt):
        pytest.skip(encoder_missing(fmt))
    data = encode(photo(40, (64, 48)), fmt)
    reasons = set()
    for fraction in np.linspace(0.02, 0.98, 25):
        try:
            load_rgb(io.BytesIO(cut(data, fraction)), PARAMS)
        except ImageRejected as exc:
            reasons.add(exc.reason)
    assert reasons and reasons <= {"truncated", "corrupt", "not_an_image"}


def test_sources_paths_and_unseekable_streams(tmp_path):
    data = encode(photo(2), "JPEG")
    path = tmp_path / "a.jpg"
    path.write_bytes(data)

    class Pipe(io.RawIOBase):  # like a socket or an HTTP response body
        def __init__(self):
            self.inner = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            return self.inner.readinto(buffer)

    sizes = {load_rgb(source, PARAMS).size for source in (path, str(path), io.BytesIO(data), Pipe())}
    assert sizes == {(160, 120)}
    with pytest.raises(FileNotFoundError):  # a missing path is the caller's error, not a rejection
        load_rgb(tmp_path / "missing.jpg", PARAMS)


def test_truncated_images_are_never_padded(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some training scripts do
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode("cut.png")


# --- hashes ----------------------------------------------------------------------------

def test_hashes(tmp_path):
    img = photo(3)
    path = tmp_path / "a.png"
    path.write_bytes(encode(img, "PNG"))
    assert sha256_of_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    as_bmp = load_rgb(io.BytesIO(encode(img, "BMP")), PARAMS)
    assert sha256_of_pixels(load_rgb(path, PARAMS)) == sha256_of_pixels(as_bmp)  # same pixels, same id
    assert sha256_of_pixels(img) != sha256_of_pixels(photo(4))
    value = perceptual_hash(img)
    assert 0 <= value < 2**64 and value == int(str(imagehash.phash(img)), 16)


# --- the pieces the downloader shares --------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF"])
def test_sniff_format_names_what_the_file_is(fmt):
    if encoder_missing(fmt):
        pytest.skip(encoder_missing(fmt))
    assert sniff_format(encode(photo(5, (40, 40)), fmt)) == fmt
    assert sniff_format(b"<html><body>404</body></html>") is None and sniff_format(b"") is None


def test_decoded_keeps_the_format_and_checks_only_what_it_is_asked():
    small = encode(photo(6, (20, 10)), "PNG")  # too small and too wide for validate, fine for a download
    with decoded(io.BytesIO(small), partial(check_pixel_count, max_pixels=1000)) as img:
        assert (img.format, img.size) == ("PNG", (20, 10))
    with pytest.raises(ImageRejected) as caught:
        load_rgb(io.BytesIO(small), PARAMS)
    assert caught.value.reason == "too_small"
    with pytest.raises(ImageRejected) as caught:
        with decoded(io.BytesIO(small), partial(check_pixel_count, max_pixels=199)):
            pass
    assert caught.value.reason == "decompression_bomb" and caught.value.size == (20, 10)
    with pytest.raises(ImageRejected) as caught:
        with decoded(io.BytesIO(cut(encode(photo(7), "JPEG"), 0.5)), partial(check_pixel_count, max_pixels=10**6)):
            pass
    assert caught.value.reason == "truncated"
