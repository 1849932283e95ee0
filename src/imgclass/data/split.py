"""Stable, stratified, group-aware train/val/test split (`imgclass.data.image_cache.load_split` reads one back).

- A near-duplicate group (see `imgclass.data.validate`; its images may be filed under several classes, or
  relabelled into another) always goes to one split as a whole.
- First run: a group's place comes from a hash of (group name, seed) in [0, 1): test below split.test,
  val below split.test + split.val, train above. It depends on neither the group's label nor the other
  images.
- Later runs start from the previous assignment (data/split persists; see `previous_assignment`): an
  image keeps its split whatever happened to its label; a new group takes its hash's place; a group that
  merged images from several splits goes where most of them were (`moved_by_merge`).
- Then each class is re-balanced only where its test or val count is more than one image off its target
  (round(n * share), at least one image each): the groups nearest that boundary move (`moved`), images a
  person relabelled last of all. A class whose near-duplicate groups are too few to give train, val and
  test an image each stops the split with one line naming it.

`split_changes` counts every move against the previous assignment with its reason.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from pathlib import Path

from imgclass import files
from imgclass.config.params import SplitParams

SPLITS = ("train", "val", "test")
SPLIT_FIELDS = ["path", "label", "sha256", "group", "original_label"]  # original_label: before labels.csv
ASSIGNMENT = "assignment.json"  # the seed and shares the CSVs beside it were made with


class SplitError(ValueError):
    """The data cannot be split as asked; the message names the class."""


def unit_hash(group: str, seed: int) -> float:
    """A number in [0, 1) fixed by (group, seed)."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(rows: list[dict], cfg: SplitParams, seed: int, previous: dict[str, str] | None = None,
                  keep_last: frozenset[str] = frozenset()) -> dict[str, list[dict]]:
    """rows: dicts with path, label, sha256, group. previous: sha256 -> split of an earlier run made with
    the same seed and shares. keep_last: sha256s that re-balancing moves only when nothing else will do
    (the images a person relabelled, review's auto-drops spared in test). Returns {split: rows}, every
    class in every split."""
    counts = Counter(r["label"] for r in rows)
    for label, n in sorted(counts.items()):
        if n < cfg.min_per_class:
            raise SplitError(f"class {label!r} has {n} images, fewer than split.min_per_class="
                             f"{cfg.min_per_class}; collect more images or lower split.min_per_class")
    groups = _by_group(rows)
    place = {g: _starting_place(members, unit_hash(g, seed), cfg, previous or {}) for g, members in groups.items()}
    homes = defaultdict(list)
    for g, members in groups.items():
        homes[_home(members)].append(g)
    for label in sorted(counts):
        _rebalance(label, {g: groups[g] for g in homes[label]}, rows, place,
                   class_targets(counts[label], cfg), seed, keep_last)
    return {s: sorted((r for g, members in groups.items() if place[g] == s for r in members),
                      key=lambda r: (r["label"], r["sha256"])) for s in SPLITS}


def drop_outside_test(rows: list[dict], candidates: set[str], cfg: SplitParams, seed: int,
                      previous: dict[str, str] | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """(rows kept, candidates dropped, candidates spared): a candidate (review's auto-drop) goes unless its
    group starts in test (see assign_splits), where only a person changes labels. Pass the spared ones
    to assign_splits' keep_last, so that re-balancing moves them out of test only when nothing else will do."""
    in_test = {g for g, members in _by_group(rows).items()
               if _starting_place(members, unit_hash(g, seed), cfg, previous or {}) == "test"}
    kept, dropped, spared = [], [], []
    for row in rows:
        if row["sha256"] not in candidates:
            kept.append(row)
        elif row["group"] in in_test:
            kept.append(row)
            spared.append(row)
        else:
            dropped.append(row)
    return kept, dropped, spared


def _by_group(rows: list[dict]) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    return groups


def _starting_place(members: list[dict], u: float, cfg: SplitParams, previous: dict[str, str]) -> str:
    """Where most of the group's images were last time (ties: test, then val), else where its hash falls."""
    before = Counter(previous[r["sha256"]] for r in members if r["sha256"] in previous)
    if before:
        return max(("test", "val", "train"), key=lambda s: before[s])
    return "test" if u < cfg.test else "val" if u < cfg.test + cfg.val else "train"


def class_targets(n: int, cfg: SplitParams) -> dict[str, int]:
    """Images wanted in test and val for a class of n: round(n * share), at least 1, leaving train one."""
    test, val = (max(1, math.floor(n * share + 0.5)) for share in (cfg.test, cfg.val))
    while test + val >= n and max(test, val) > 1:  # tiny classes with large shares
        test, val = (test - 1, val) if test >= val else (test, val - 1)
    return {"test": test, "val": val}


def _home(members: list[dict]) -> str:
    """The class a group is balanced in: its most common label (ties: the first by name)."""
    counts = Counter(r["label"] for r in members)
    return min(counts, key=lambda label: (-counts[label], label))


def _rebalance(label: str, own: dict[str, list[dict]], rows: list[dict], place: dict[str, str],
               targets: dict[str, int], seed: int, keep_last: frozenset[str]) -> None:
    """Move the groups whose home is this class across the test|val and val|train boundaries until its
    test and val are within one image of their targets, with at least one image in every split."""
    size = {g: sum(r["label"] == label for r in members) for g, members in own.items()}
    count = Counter(place[r["group"]] for r in rows if r["label"] == label)
    last = {g for g, members in own.items() if any(r["sha256"] in keep_last for r in members)}

    def move(group: str, to: str) -> None:
        count[place[group]] -= size[group]
        count[to] += size[group]
        place[group] = to

    def spare(split: str) -> int:  # images a split can give up and stay within its band ("train": any)
        return count[split] - 1 if split == "train" else count[split] - max(1, targets[split] - 1)

    for split, later in (("test", ("val", "train")), ("val", ("train", "test"))):
        target = targets[split]
        # Out of the band [target - 1, target + 1] (at least 1): back to the target itself, so that the next
        # relabel or new image does not push it out again.
        surplus = count[split] > target + 1
        while surplus and count[split] > target:  # too many: groups move to the next split with room, else train
            have = count[split]
            to = "val" if split == "test" and count["val"] < targets["val"] + 1 else "train"
            better = [g for g in own if place[g] == split and abs(have - size[g] - target) < have - target]
            if not better:
                break
            move(min(better, key=lambda g: (g in last, -unit_hash(g, seed))), to)
        deficit = count[split] < max(1, target - 1)
        while deficit and count[split] < target:  # too few: groups come from a later split with some to spare
            have = count[split]
            better = [g for g in own if place[g] in later and spare(place[g]) >= size[g]
                      and (have == 0 or abs(have + size[g] - target) < target - have)]
            if not better:
                break
            move(min(better, key=lambda g: (later.index(place[g]), g in last, unit_hash(g, seed))), split)
    empty = [s for s in SPLITS if count[s] == 0]
    if empty:
        sizes = sorted(size.values(), reverse=True)
        raise SplitError(f"class {label!r}: its {sum(sizes)} images form {len(sizes)} near-duplicate group(s) "
                         f"(the largest holds {sizes[0] if sizes else 0}), so {' and '.join(empty)} would get none "
                         f"of them; add images of {label!r} unlike these, or lower validate.near_duplicate_distance "
                         "so that fewer images count as near-duplicates")


# --- the previous split, and what changed since --------------------------------------------------

def previous_assignment(split_dir: Path) -> dict[str, tuple[str, str]]:
    """sha256 -> (split, group) from the CSVs of the last run in split_dir; {} when there are none."""
    previous = {}
    for split in SPLITS:
        path = Path(split_dir) / f"{split}.csv"
        if path.exists():
            previous.update({r["sha256"]: (split, r["group"]) for r in files.read_csv(path)})
    return previous


def assignment_record(cfg: SplitParams, seed: int) -> dict:
    """What split_dir/assignment.json keeps: a split made with other values is not a starting point."""
    return {"seed": seed, "val": cfg.val, "test": cfg.test}


def why_not_resume(split_dir: Path, cfg: SplitParams, seed: int) -> str | None:
    """None when the CSVs in split_dir were made with this seed and these shares; else why the split
    starts afresh (a changed seed must give a new split, not the old one kept in place)."""
    path = Path(split_dir) / ASSIGNMENT
    if not path.exists():
        return f"{path} is missing (the split was made by an older imgclass)"
    made = files.read_json(path)
    changed = [f"{'seed' if key == 'seed' else 'split.' + key} {made.get(key)} -> {now}"
               for key, now in assignment_record(cfg, seed).items() if made.get(key) != now]
    return ("changed: " + ", ".join(changed)) if changed else None


def split_changes(previous: dict[str, tuple[str, str]], splits: dict[str, list[dict]],
                  restarted: str | None = None) -> dict:
    """How this split differs from `previous` (see previous_assignment), each move counted by its reason.

    moved: old images now in another split although their near-duplicate group holds the same images as
    before (their class was re-balanced); moved_by_merge: old images now in another split whose group
    changed (merged with another group, or took in a new image); moved_by_restart: every move when the
    previous split was not the starting point (`restarted` says why); added / removed: new / gone images.
    """
    old_members = _members({sha: group for sha, (_, group) in previous.items()})
    new_group = {r["sha256"]: r["group"] for rows in splits.values() for r in rows}
    new_members = _members(new_group)
    counts = Counter(previous=len(previous), added=len(new_group.keys() - previous.keys()),
                     removed=len(previous.keys() - new_group.keys()), moved=0, moved_by_merge=0, moved_by_restart=0)
    for split, rows in splits.items():
        for row in rows:
            old_split, old_group = previous.get(row["sha256"], (split, ""))
            if old_split == split:
                continue
            if restarted:
                counts["moved_by_restart"] += 1
            else:
                regrouped = old_members[old_group] != new_members[row["group"]]
                counts["moved_by_merge" if regrouped else "moved"] += 1
    return {**counts, "restarted": restarted}


def _members(group_of: dict[str, str]) -> dict[str, frozenset]:
    members = defaultdict(set)
    for sha, group in group_of.items():
        members[group].add(sha)
    return {group: frozenset(shas) for group, shas in members.items()}


def split_counts(splits: dict[str, list[dict]]) -> dict:
    return {s: {"total": len(rows), "per_class": dict(sorted(Counter(r["label"] for r in rows).items()))}
            for s, rows in splits.items()}
