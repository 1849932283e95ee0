"""Stable, stratified, group-aware train/val/test split (`imgclass.image_cache.load_split` reads one back).

Within each class, groups (near-duplicates share one; see `imgclass.validate`) are ranked by a hash
of (group name, seed). The lowest ranks fill test up to round(n * split.test) images, the next ranks
fill val up to round(n * split.val), the rest is train. So:

- each class's val and test counts are within one image of their target (within half a group when
  groups hold several images), and a group never straddles two splits;
- adding images moves an old image only where a class's boundary ranks shift (a few images per
  class), or where its near-duplicate group changed (merged with another group, or took in a new
  image). `split_changes` counts both (`moved`, `moved_by_merge`) against the previous assignment.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from pathlib import Path

from imgclass import files
from imgclass.params import SplitParams

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
    order = sorted(groups, key=lambda g: (unit_hash(g, seed), g))
    targets = class_targets(len(members), cfg)
    filled = dict.fromkeys(targets, 0)
    chosen = {}
    for group in order:  # test takes the lowest ranks, val the next, train the rest
        size = len(groups[group])
        chosen[group] = next((s for s in ("test", "val") if _wants(targets[s] - filled[s], size)), "train")
        if chosen[group] != "train":
            filled[chosen[group]] += size
    _fill_empty_splits(order, chosen)
    return {s: [r for g in order if chosen[g] == s for r in groups[g]] for s in SPLITS}


def class_targets(n: int, cfg: SplitParams) -> dict[str, int]:
    """Images wanted in test and val for a class of n: round(n * share), at least 1, leaving train one."""
    test, val = (max(1, math.floor(n * share + 0.5)) for share in (cfg.test, cfg.val))
    while test + val >= n and max(test, val) > 1:  # tiny classes with large shares
        test, val = (test - 1, val) if test >= val else (test, val - 1)
    return {"test": test, "val": val}


def _wants(missing: int, size: int) -> bool:
    """A group joins a split when that brings the split nearer its target (or as near): with single
    images, exactly up to the target."""
    return missing > 0 and 2 * missing >= size


def _fill_empty_splits(order: list[str], chosen: dict[str, str]) -> None:
    """Groups larger than twice a tiny target fit nowhere; then the lowest-ranked training group
    goes to the empty split, so every class is in val and test."""
    for split in ("test", "val"):
        if split not in chosen.values():
            spare = [g for g in order if chosen[g] == "train"]
            if len(spare) > 1:
                chosen[spare[0]] = split


# --- what changed since the previous split ----------------------------------------------------

def previous_assignment(split_dir: Path) -> dict[str, tuple[str, str]]:
    """sha256 -> (split, group) from the CSVs of the last run in split_dir; {} when there are none."""
    previous = {}
    for split in SPLITS:
        path = Path(split_dir) / f"{split}.csv"
        if path.exists():
            previous.update({r["sha256"]: (split, r["group"]) for r in files.read_csv(path)})
    return previous


def split_changes(previous: dict[str, tuple[str, str]], splits: dict[str, list[dict]]) -> dict[str, int]:
    """How this split differs from `previous` (see previous_assignment).

    moved: old images now in another split although their near-duplicate group holds the same images
    as before (a class boundary shifted); moved_by_merge: old images now in another split whose group
    changed (merged with another group or took in a new image); added / removed: new / gone images.
    """
    old_members = _members({sha: group for sha, (_, group) in previous.items()})
    new_group = {r["sha256"]: r["group"] for rows in splits.values() for r in rows}
    new_members = _members(new_group)
    counts = Counter(previous=len(previous), added=len(new_group.keys() - previous.keys()),
                     removed=len(previous.keys() - new_group.keys()), moved=0, moved_by_merge=0)
    for split, rows in splits.items():
        for row in rows:
            old_split, old_group = previous.get(row["sha256"], (split, ""))
            if old_split != split:
                regrouped = old_members[old_group] != new_members[row["group"]]
                counts["moved_by_merge" if regrouped else "moved"] += 1
    return dict(counts)


def _members(group_of: dict[str, str]) -> dict[str, frozenset]:
    members = defaultdict(set)
    for sha, group in group_of.items():
        members[group].add(sha)
    return {group: frozenset(shas) for group, shas in members.items()}


def split_counts(splits: dict[str, list[dict]]) -> dict:
    return {s: {"total": len(rows), "per_class": dict(sorted(Counter(r["label"] for r in rows).items()))}
            for s, rows in splits.items()}
