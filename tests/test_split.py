import numpy as np
import pytest

from imgclass.params import SplitParams
from imgclass.split import SplitError, assign_splits, build_cache, load_split


def rows_for(n_per_class: int, classes=("a", "b", "c"), start: int = 0) -> list[dict]:
    return [{"path": f"{c}/{i}.png", "label": c, "sha256": f"{c}{i:05d}", "group": f"{c}{i:05d}"}
            for c in classes for i in range(start, start + n_per_class)]


def where(splits: dict) -> dict[str, str]:
    return {r["sha256"]: s for s, rows in splits.items() for r in rows}


def test_every_class_in_every_split_with_roughly_the_asked_shares():
    splits = assign_splits(rows_for(400), SplitParams(val=0.2, test=0.1), seed=1)
    for label in "abc":
        counts = {s: sum(r["label"] == label for r in rows) for s, rows in splits.items()}
        assert 0.05 * 400 < counts["test"] < 0.15 * 400
        assert 0.15 * 400 < counts["val"] < 0.25 * 400


def test_adding_images_never_moves_existing_ones():
    cfg = SplitParams()
    before = where(assign_splits(rows_for(100), cfg, seed=7))
    after = where(assign_splits(rows_for(100) + rows_for(50, start=100), cfg, seed=7))
    assert all(after[sha] == split for sha, split in before.items())


def test_seed_changes_the_split():
    cfg = SplitParams()
    assert where(assign_splits(rows_for(100), cfg, 1)) != where(assign_splits(rows_for(100), cfg, 2))


def test_near_duplicate_groups_stay_together():
    rows = rows_for(100)
    for i in range(0, 60, 3):  # groups of three near-duplicates
        for j in (i, i + 1, i + 2):
            rows[j]["group"] = f"g{i}"
    placed = where(assign_splits(rows, SplitParams(), seed=3))
    for i in range(0, 60, 3):
        assert len({placed[rows[j]["sha256"]] for j in (i, i + 1, i + 2)}) == 1


def test_small_class_still_gets_val_and_test():
    rows = rows_for(100, classes=("big",)) + rows_for(10, classes=("small",))
    splits = assign_splits(rows, SplitParams(val=0.05, test=0.05, min_per_class=10), seed=0)
    for split in ("val", "test"):
        assert any(r["label"] == "small" for r in splits[split])


def test_too_few_images_names_the_class():
    rows = rows_for(100, classes=("big",)) + rows_for(4, classes=("tiny",))
    with pytest.raises(SplitError, match="class 'tiny' has 4 images"):
        assign_splits(rows, SplitParams(), seed=0)


def test_cache_holds_every_image_once_at_the_asked_size(fashion_split, tmp_path):
    params, split_dir = fashion_split
    images, labels = load_split(split_dir, "train", params.classes)
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 3)
    assert isinstance(images, np.memmap)
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3]


def test_load_split_rejects_labels_outside_the_classes(fashion_split):
    params, split_dir = fashion_split
    with pytest.raises(SplitError, match="not in params classes"):
        load_split(split_dir, "train", ["trouser", "bag"])


def test_build_cache_resizes_photos(tmp_path):
    from PIL import Image

    from imgclass.preprocess import Preprocessing

    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path)
    cache = build_cache([path, path], Preprocessing(64, 64))
    assert cache.shape == (2, 64, 64, 3) and (cache[0] == cache[1]).all()
