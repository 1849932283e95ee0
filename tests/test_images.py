"""imgclass.images: decoding one file (load_rgb), hashing, and validating a tree of class folders."""

from __future__ import annotations

import hashlib
import io
import time

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFile

from imgclass.files import read_csv
from imgclass.images import (
    REASONS, REPORT_COLUMNS, ImageRejected, NoImagesAccepted, leader_groups, load_rgb, perceptual_hash,
    sha256_of_file, sha256_of_pixels, validate_tree,
)
from imgclass.params import ValidateParams
from odd_images import (
    FIRST, LATER, WHITE, cut, encode, encoder_missing, odd_files, photo, png_bomb, webp_bomb, write_corpus,
)

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


# --- hashes and grouping ----------------------------------------------------------------------

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


def test_leader_groups_do_not_chain():
    a, b, c = 0, 0b111, 0b111111  # a~b (3 bits), b~c (3 bits), a and c 6 bits apart
    assert leader_groups([a, b, c], 4) == [0, 0, 2]
    assert leader_groups([a, b, c], 6) == [0, 0, 0]
    assert leader_groups([a, a, (1 << 63) | 1], 0) == [0, 0, 2]  # top bit: unsigned 64-bit
    assert leader_groups([a, b, c], None) == [0, 1, 2]


def test_leader_groups_on_10k_hashes_is_fast():
    hashes = np.random.default_rng(0).integers(0, 2**63, 10_000, dtype=np.uint64).tolist()
    start = time.perf_counter()
    groups = leader_groups(hashes, 4)
    assert time.perf_counter() - start < 3
    assert len(groups) == 10_000


# --- validate_tree ----------------------------------------------------------------------------

def report(dest) -> dict[str, dict]:
    rows = read_csv(dest / "report.csv")
    assert rows and list(rows[0]) == REPORT_COLUMNS
    return {row["path"]: row for row in rows}


def test_validate_tree_sorts_every_odd_file(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    written = write_corpus(src / "odd")
    summary = validate_tree(src, dest, PARAMS, workers=2)
    rows = report(dest)

    assert set(rows) == {f"odd/{kind.name}" for kind in written}
    for kind in written:
        row = rows[f"odd/{kind.name}"]
        assert (row["status"], row["reason"]) == (kind.status, kind.reason), kind.name
        source = src / row["path"]
        assert source.exists()  # SRC is never modified
        if kind.status == "ok":
            with Image.open(dest / row["out"]) as out:
                assert out.format == "PNG" and out.mode == "RGB"
                assert out.size == (int(row["width"]), int(row["height"]))
                assert sha256_of_pixels(out) == row["sha256"]  # named by its pixels
            assert row["group"]
            assert row["out"] == f"odd/{row['sha256']}.png"
        else:
            assert (dest / row["out"]).read_bytes() == source.read_bytes()  # quarantined copy
            assert row["out"] == f"_rejected/{row['path']}"
    accepted = sum(kind.status == "ok" for kind in written)
    assert summary["by_status"] == {"ok": accepted, "rejected": len(written) - accepted, "duplicate": 0}
    assert summary["accepted_per_class"] == {"odd": accepted}
    assert summary["by_reason"]["decompression_bomb"] == 3


def make_labelled_tree(src):
    """cat and dog folders with exact, near and cross-class duplicates, plus files to be ignored."""
    (src / "cat").mkdir(parents=True)
    (src / "dog").mkdir()
    base = photo(31)
    (src / "cat/a.png").write_bytes(encode(base, "PNG"))
    (src / "cat/b.png").write_bytes(encode(base, "PNG"))  # byte-identical copy
    (src / "cat/c.bmp").write_bytes(encode(base, "BMP"))  # the same pixels in another format
    (src / "cat/d.jpg").write_bytes(encode(base.resize((112, 84), Image.LANCZOS), "JPEG", quality=70))
    (src / "cat/e.png").write_bytes(encode(photo(32), "PNG"))
    (src / "cat/nested").mkdir()
    (src / "cat/nested/f.webp").write_bytes(encode(photo(33), "WEBP"))
    (src / "dog/x.png").write_bytes(encode(photo(34), "PNG"))
    (src / "cat/y.png").write_bytes(encode(photo(35), "PNG"))
    (src / "dog/y.jpg").write_bytes(encode(photo(35), "PNG"))  # same image, other class
    # never validated: hidden files and folders, top-level files, folders that are not classes
    (src / ".journal").mkdir()
    (src / ".journal/log.png").write_bytes(encode(photo(36), "PNG"))
    (src / "cat/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (src / "manifest.csv").write_text("path,class\n")
    (src / "bird").mkdir()
    (src / "bird/z.png").write_bytes(encode(photo(37), "PNG"))


def test_duplicates_near_duplicates_and_ambiguous_labels(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_labelled_tree(src)
    summary = validate_tree(src, dest, PARAMS, classes=["cat", "dog"], workers=1)
    rows = report(dest)

    assert sorted(rows) == ["cat/a.png", "cat/b.png", "cat/c.bmp", "cat/d.jpg", "cat/e.png",
                            "cat/nested/f.webp", "cat/y.png", "dog/x.png", "dog/y.jpg"]
    status = {path: (row["status"], row["reason"]) for path, row in rows.items()}
    assert status["cat/a.png"] == ("ok", "")
    assert status["cat/b.png"] == ("duplicate", "duplicate_of:cat/a.png")
    assert status["cat/c.bmp"] == ("duplicate", "duplicate_of:cat/a.png")
    assert status["cat/y.png"] == status["dog/y.jpg"] == ("rejected", "in_two_classes:cat,dog")
    assert (dest / "_rejected/cat/y.png").exists() and (dest / "_rejected/dog/y.jpg").exists()
    assert not list((dest / "dog").glob(f"{rows['dog/y.jpg']['sha256']}.png"))

    group = {path: row["group"] for path, row in rows.items()}
    assert group["cat/a.png"] == rows["cat/a.png"]["sha256"]  # a leader's group is its own sha256
    assert group["cat/d.jpg"] == group["cat/a.png"]  # resized + recompressed: same group
    assert group["cat/b.png"] == group["cat/a.png"]
    assert len({group["cat/a.png"], group["cat/e.png"], group["cat/nested/f.webp"], group["dog/x.png"]}) == 4
    assert all(row["group"] for row in rows.values() if row["status"] == "ok")

    assert summary["by_status"] == {"ok": 5, "rejected": 2, "duplicate": 2}
    assert summary["by_reason"] == {"duplicate_of": 2, "in_two_classes": 2}
    assert summary["accepted_per_class"] == {"cat": 4, "dog": 1}
    assert summary["near_duplicate_groups"] == 1
    assert sorted(p.name for p in dest.iterdir()) == ["_rejected", "cat", "dog", "report.csv"]
    assert len(list((dest / "cat").iterdir())) == 4  # a (kept for b, c), d, e, f

    validate_tree(src, tmp_path / "all", PARAMS)  # classes=None: every visible folder is a class
    assert {row["class"] for row in report(tmp_path / "all").values()} == {"bird", "cat", "dog"}


def test_near_duplicate_grouping_can_be_turned_off(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_labelled_tree(src)
    validate_tree(src, dest, ValidateParams(near_duplicate_distance=None), classes=["cat"])
    rows = report(dest)
    assert rows["cat/d.jpg"]["group"] == rows["cat/d.jpg"]["sha256"] != rows["cat/a.png"]["group"]


def test_rerun_is_idempotent_and_removes_stale_outputs(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_labelled_tree(src)
    (src / "cat/cut.jpg").write_bytes(cut(encode(photo(38), "JPEG")))
    validate_tree(src, dest, PARAMS, classes=["cat", "dog"])
    first_report = (dest / "report.csv").read_bytes()
    written = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file() and p.name != "report.csv"}

    validate_tree(src, dest, PARAMS, classes=["cat", "dog"])
    assert (dest / "report.csv").read_bytes() == first_report
    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing re-encoded or re-copied

    stale_png = dest / report(dest)["cat/e.png"]["out"]
    (src / "cat/e.png").unlink()
    (src / "cat/cut.jpg").unlink()
    (src / "dog/y.jpg").unlink()  # cat/y.png is no longer ambiguous
    validate_tree(src, dest, PARAMS, classes=["cat", "dog"])
    rows = report(dest)
    assert "cat/e.png" not in rows and not stale_png.exists()
    assert not (dest / "_rejected/cat/cut.jpg").exists() and not (dest / "_rejected/dog").exists()
    assert rows["cat/y.png"]["status"] == "ok" and (dest / rows["cat/y.png"]["out"]).exists()
    listed = {dest / row["out"] for row in rows.values() if row["out"]}
    assert {p for p in dest.rglob("*") if p.is_file() and p.name != "report.csv"} == listed


def test_workers_do_not_change_the_result(tmp_path):
    src = tmp_path / "src"
    for i in range(120):  # Fashion-MNIST-sized, with some repeats
        folder = src / ("shirt" if i % 2 else "shoe")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.png").write_bytes(encode(photo(100 + i % 100, (28, 28)), "PNG"))
    small = ValidateParams(min_size=28)
    serial = validate_tree(src, tmp_path / "one", small, workers=1)
    threaded = validate_tree(src, tmp_path / "two", small, workers=4)
    assert serial == threaded
    assert (tmp_path / "one/report.csv").read_bytes() == (tmp_path / "two/report.csv").read_bytes()
    assert serial["by_status"]["duplicate"] == 20


def test_missing_src_or_class_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*source folder not found"):
        validate_tree(tmp_path / "nowhere", tmp_path / "dest", PARAMS)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError, match="is a file"):
        validate_tree(tmp_path / "file", tmp_path / "dest", PARAMS)
    src = tmp_path / "src"
    make_labelled_tree(src)
    with pytest.raises(FileNotFoundError, match="'fish'"):
        validate_tree(src, tmp_path / "dest", PARAMS, classes=["cat", "fish"])
    with pytest.raises(ValueError, match="must not contain each other"):
        validate_tree(src, src / "clean", PARAMS)
    assert not (tmp_path / "dest").exists()  # nothing written before the checks pass


def test_nothing_accepted_raises_after_writing_the_report(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "cat").mkdir(parents=True)
    (src / "cat/page.jpg").write_bytes(KINDS["error_page.jpg"].build())
    (src / "cat/tiny.png").write_bytes(encode(photo(3, (20, 20)), "PNG"))
    with pytest.raises(NoImagesAccepted, match="none of the 2 files was accepted") as caught:
        validate_tree(src, dest, PARAMS)
    assert "\n" not in str(caught.value)
    assert {row["reason"] for row in report(dest).values()} == {"html_not_image", "too_small"}

    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    with pytest.raises(NoImagesAccepted, match="hold no files"):
        validate_tree(empty, tmp_path / "dest2", PARAMS)
    with pytest.raises(NoImagesAccepted, match="no class folders"):
        validate_tree(tmp_path / "empty/cat", tmp_path / "dest3", PARAMS)
