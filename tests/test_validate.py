"""imgclass.data.validate: a tree of class folders, exact duplicates, transitive near-duplicate groups,
quarantine and the report."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from scipy.sparse.csgraph import connected_components

from imgclass.files import read_csv
from imgclass.data.images import perceptual_hash, sha256_of_pixels
from imgclass.config.params import ValidateParams
from imgclass.data.validate import (
    REPORT_COLUMNS, NoImagesAccepted, group_names, near_duplicate_components, validate_tree,
)
from odd_images import cut, encode, odd_files, photo, write_corpus

# Bomb files legitimately make Pillow warn before we reject them.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

PARAMS = ValidateParams()
KINDS = {kind.name: kind for kind in odd_files()}


def bits_apart(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


# --- near-duplicate groups --------------------------------------------------------------------

def test_near_duplicate_groups_chain():
    a, b, c = 0, 0b1111, 0b11111111  # a~b (4 bits), b~c (4 bits), a and c 8 bits apart
    assert (bits_apart(a, b), bits_apart(b, c), bits_apart(a, c)) == (4, 4, 8)
    for order in ([a, b, c], [a, c, b], [c, a, b]):  # leader clustering split [a, c, b] into two
        assert len(set(near_duplicate_components(order, 4).tolist())) == 1
    assert len(set(near_duplicate_components([a, b, c], 3).tolist())) == 3
    assert near_duplicate_components([a, a, (1 << 63) | 1], 0).tolist()[:2] == [0, 0]  # unsigned 64-bit
    assert len(set(near_duplicate_components([a, a, (1 << 63) | 1], 0).tolist())) == 2
    assert near_duplicate_components([a, b, c], None).tolist() == [0, 1, 2]


def test_groups_are_named_by_their_smallest_sha256_whatever_the_order():
    hashes = {"f00": 0, "a00": 0b1111, "c00": 0b11111111, "b00": 0xFFFF << 48, "e00": (0xFFFF << 48) | 1}
    names = dict(zip(hashes, group_names(list(hashes), list(hashes.values()), 4)))
    assert names == {"f00": "a00", "a00": "a00", "c00": "a00", "b00": "b00", "e00": "b00"}
    reversed_order = list(hashes)[::-1]
    assert group_names(reversed_order, [hashes[s] for s in reversed_order], 4) == [names[s] for s in reversed_order]


def test_components_match_brute_force_on_dense_hashes():
    rng = np.random.default_rng(1)
    low = rng.integers(0, 2**12, 600).astype(np.uint64)
    values = (low | (low << np.uint64(50))).tolist()  # few distinct bits: many close pairs and chains
    for distance in (1, 3, 4, 6):
        got = near_duplicate_components(values, distance)
        close = np.bitwise_count(np.array(values, np.uint64)[:, None] ^ np.array(values, np.uint64)[None, :]) <= distance
        _, expected = connected_components(close, directed=False)
        same_got = got[:, None] == got[None, :]
        assert np.array_equal(same_got, expected[:, None] == expected[None, :]), distance


def test_grouping_100k_hashes_is_fast():
    hashes = np.random.default_rng(0).integers(0, 2**64 - 1, 100_000, dtype=np.uint64, endpoint=True).tolist()
    shas = [f"{i:064x}" for i in range(len(hashes))]
    start = time.perf_counter()
    names = group_names(shas, hashes, 4)
    assert time.perf_counter() - start < 5  # ~0.2 s on 2 cores; leader clustering was O(n * groups)
    assert len(names) == 100_000


def test_validate_tree_chains_near_duplicates_into_one_group(tmp_path):
    """Real pictures 4, 4 and 8 bits apart: a.png~c.png~b.png is one group, though a and b are 8 apart.
    Leader clustering (in path order) made a the leader, b a second leader and c a member of a's group."""
    base, other = photo(31), photo(32)
    near, far = Image.blend(base, other, 0.1), Image.blend(base, other, 0.2)
    a, b, c = (perceptual_hash(img) for img in (base, far, near))
    assert (bits_apart(a, c), bits_apart(c, b), bits_apart(a, b)) == (4, 4, 8)
    (tmp_path / "src/cat").mkdir(parents=True)
    for name, img in (("a.png", base), ("b.png", far), ("c.png", near)):
        (tmp_path / "src/cat" / name).write_bytes(encode(img, "PNG"))
    summary = validate_tree(tmp_path / "src", tmp_path / "dest", ValidateParams(near_duplicate_distance=4))
    rows = report(tmp_path / "dest")
    assert len({row["group"] for row in rows.values()}) == 1
    assert rows["cat/a.png"]["group"] == min(row["sha256"] for row in rows.values())
    assert summary["near_duplicate_groups"] == 1


# --- validate_tree --------------------------------------------------------------------------------

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
    # a, b, c and d are one group, named by its smallest member sha256 (a's pixels, or d's)
    assert group["cat/a.png"] == min(rows["cat/a.png"]["sha256"], rows["cat/d.jpg"]["sha256"])
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


# --- working copies -----------------------------------------------------------------------------

def write_camera_photos(src, sizes: dict[str, tuple[int, int]]) -> dict[str, Image.Image]:
    """src/a/<name>.jpg at camera sizes (and one small PNG drawing); returns each decoded original."""
    (src / "a").mkdir(parents=True)
    originals = {}
    for i, (name, size) in enumerate(sizes.items()):
        path = src / "a" / name
        photo(i, size).save(path, **({"quality": 92} if path.suffix == ".jpg" else {}))
        with Image.open(path) as img:
            originals[name] = img.convert("RGB")
    return originals


@pytest.mark.slow
def test_working_copies_keep_the_originals_identity_at_the_working_size(tmp_path):
    """A 12-megapixel and a 2-megapixel photo become JPEGs whose shorter side is the working size;
    a drawing already smaller stays a lossless PNG; the sha256 is the original's decoded pixels'."""
    sizes = {"phone.jpg": (4000, 3000), "portrait.jpg": (1200, 1600), "small.png": (200, 150)}
    originals = write_camera_photos(tmp_path / "src", sizes)
    validate_tree(tmp_path / "src", tmp_path / "clean", PARAMS, working_size=224)
    rows = {row["path"].removeprefix("a/"): row for row in read_csv(tmp_path / "clean" / "report.csv")}
    expected = {"phone.jpg": ((299, 224), "jpg"), "portrait.jpg": ((224, 299), "jpg"), "small.png": ((200, 150), "png")}
    for name, (size, suffix) in expected.items():
        row = rows[name]
        assert row["sha256"] == sha256_of_pixels(originals[name])  # the original's identity, not the copy's
        assert (int(row["width"]), int(row["height"])) == sizes[name]  # the original's size is reported
        assert row["out"] == f"a/{row['sha256']}.{suffix}"
        with Image.open(tmp_path / "clean" / row["out"]) as copy:
            assert copy.size == size and copy.mode == "RGB"
            squashed = np.asarray(copy.convert("RGB").resize((32, 32)), float)
        reference = np.asarray(originals[name].resize((32, 32)), float)
        assert np.abs(squashed - reference).mean() < 3  # the same picture, within JPEG's error
    with Image.open(tmp_path / "clean" / rows["small.png"]["out"]) as copy:
        assert (np.asarray(copy) == np.asarray(originals["small.png"])).all()  # lossless when not resized
    assert sum(p.stat().st_size for p in (tmp_path / "clean" / "a").iterdir()) < 0.1 * sum(
        p.stat().st_size for p in (tmp_path / "src" / "a").iterdir())


def test_a_new_working_size_replaces_the_copies_and_keeps_the_identity(tmp_path):
    write_camera_photos(tmp_path / "src", {"phone.jpg": (1600, 1200)})
    validate_tree(tmp_path / "src", tmp_path / "clean", PARAMS, working_size=128)
    first = read_csv(tmp_path / "clean" / "report.csv")[0]
    validate_tree(tmp_path / "src", tmp_path / "clean", PARAMS, working_size=300)
    second = read_csv(tmp_path / "clean" / "report.csv")[0]
    assert first["sha256"] == second["sha256"] and first["out"] == second["out"]
    with Image.open(tmp_path / "clean" / second["out"]) as copy:
        assert copy.size == (400, 300)  # not the 128-px copy of the earlier run, resumed by name
    validate_tree(tmp_path / "src", tmp_path / "clean", PARAMS, working_size=None)
    full = read_csv(tmp_path / "clean" / "report.csv")[0]
    assert full["out"].endswith(".png") and not (tmp_path / "clean" / second["out"]).exists()
    with Image.open(tmp_path / "clean" / full["out"]) as copy:
        assert copy.size == (1600, 1200)


def test_validate_reports_progress_in_plain_lines_when_not_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMGCLASS_PROGRESS_SECONDS", "0")
    write_camera_photos(tmp_path / "src", {f"{i}.jpg": (640, 480) for i in range(5)})
    validate_tree(tmp_path / "src", tmp_path / "clean", PARAMS, working_size=64, workers=1)
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("validate: 2/5 files (40%), ") and " files/s, ETA " in line for line in lines), lines
    assert lines[-1].startswith("validate: 5/5 files in ")
