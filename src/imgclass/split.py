"""Stable, stratified, group-aware train/val/test split, and the uint8 cache training memory-maps.

An image's split is a function of its group id (its own sha256, or the id its near-duplicates
share) and the seed: adding images never moves existing ones, and near-duplicates never straddle
train and test. Hash-uniform assignment within each class keeps the classes stratified.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from imgclass import files
from imgclass.params import SplitParams
from imgclass.preprocess import Preprocessing

SPLITS = ("train", "val", "test")
SPLIT_FIELDS = ["path", "label", "sha256", "group"]


class SplitError(ValueError):
    """The data cannot be split as asked; the message names the class."""


def unit_hash(group: str, seed: int) -> float:
    """A number in [0, 1) fixed by (group, seed)."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(rows: list[dict], cfg: SplitParams, seed: int) -> dict[str, list[dict]]:
    """rows: dicts with path, label, sha256, group. Returns {split: rows}, each class in every split."""
    by_label = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    out = {s: [] for s in SPLITS}
    for label, members in sorted(by_label.items()):
        if len(members) < cfg.min_per_class:
            raise SplitError(f"class {label!r} has {len(members)} images, fewer than split.min_per_class="
                             f"{cfg.min_per_class}; collect more images or lower split.min_per_class")
        for split, split_rows in _split_class(members, cfg, seed).items():
            out[split].extend(split_rows)
    for split in SPLITS:
        out[split].sort(key=lambda r: (r["label"], r["sha256"]))
    return out


def _split_class(members: list[dict], cfg: SplitParams, seed: int) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for row in members:
        groups[row["group"]].append(row)
    order = sorted(groups, key=lambda g: unit_hash(g, seed))
    chosen = {g: _split_of(unit_hash(g, seed), cfg) for g in order}
    # Tiny classes: make sure test and val are not empty, taking the lowest-hash training groups.
    for split in ("test", "val"):
        if split not in chosen.values():
            spare = [g for g in order if chosen[g] == "train"]
            if len(spare) > 1:
                chosen[spare[0]] = split
    return {s: [r for g in order if chosen[g] == s for r in groups[g]] for s in SPLITS}


def _split_of(u: float, cfg: SplitParams) -> str:
    if u < cfg.test:
        return "test"
    if u < cfg.test + cfg.val:
        return "val"
    return "train"


def build_cache(paths: list[Path], prep: Preprocessing, workers: int = 2) -> np.ndarray:
    """Decode and resize every image once: uint8 N x H x W x 3 at prep.image_size."""
    def load(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return prep.to_uint8(image)

    out = np.empty((len(paths), prep.image_size, prep.image_size, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL releases the GIL while decoding
        for i, array in enumerate(pool.map(load, paths)):
            out[i] = array
    return out


def save_array(path: Path, array: np.ndarray) -> None:
    with files.atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, array)


def load_split(split_dir: Path, split: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x H x W x 3, memory-mapped; int64 labels) of one split."""
    rows = files.read_csv(split_dir / f"{split}.csv")
    index = {name: i for i, name in enumerate(classes)}
    unknown = {r["label"] for r in rows} - set(index)
    if unknown:
        raise SplitError(f"{split_dir / split}.csv: labels {sorted(unknown)} are not in params classes; rerun split")
    labels = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    images = np.load(split_dir / f"{split}.npy", mmap_mode="r")
    if len(images) != len(labels):
        raise SplitError(f"{split_dir}: {split}.npy and {split}.csv disagree; rerun the split stage")
    return images, labels


def split_counts(splits: dict[str, list[dict]]) -> dict:
    return {s: {"total": len(rows), "per_class": dict(sorted(Counter(r["label"] for r in rows).items()))}
            for s, rows in splits.items()}
