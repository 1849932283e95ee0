"""Decisions about single images that the split stage obeys: a person's labels.csv and review's auto-drops.

labels.csv lives in git beside params.yaml, one row per image: sha256, action, new_class, note.
`drop` removes the image from every split, `relabel` moves it to new_class (test labels are cleaned
too: only a person changes a test label), `keep` overrides the review stage's auto-drop. A person's row
wins over the review stage. Review's auto-drops act on train and val only (see `imgclass.data.split`): the
review's backbone is also a pipeline member, and dropping what it doubts from test would make the test
easier for that member. A row about an image that is no longer in the data is reported, not an error:
images come and go between scrapes, and the decision should still hold if the image comes back.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from imgclass import files
from imgclass.config.params import SplitParams
from imgclass.data.split import assign_splits, drop_outside_test

LABELS_CSV = Path("labels.csv")
FIELDS = ["sha256", "action", "new_class", "note"]
ACTIONS = ("drop", "relabel", "keep")
APPLIED_FIELDS = ["sha256", "path", "class", "action", "new_class", "source"]
_SHA256 = re.compile(r"[0-9a-f]{64}")


class DecisionsError(ValueError):
    """labels.csv cannot be applied; the message names the row and what to do."""


@dataclass(frozen=True)
class Decision:
    sha256: str
    action: str           # drop | relabel | keep
    new_class: str = ""   # for relabel
    source: str = ""      # "labels.csv row 3: <note>" or "review: outlier 0.93 ..."


def read_decisions(path: str | Path, classes: list[str]) -> dict[str, Decision]:
    """sha256 -> Decision from a person's labels.csv; {} when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets add a BOM
        reader = csv.DictReader(f)
        missing = [c for c in ("sha256", "action") if c not in (reader.fieldnames or [])]
        if missing:
            raise DecisionsError(f"{path}: missing column(s) {', '.join(missing)}; "
                                 f"the header must be {','.join(FIELDS)}")
        decisions, first_row = {}, {}
        for number, row in enumerate(reader, start=2):  # row 1 is the header
            decision = _parse_row(row, f"{path} row {number}", classes)
            if decision is None:
                continue
            if decision.sha256 in first_row:
                raise DecisionsError(f"{path} rows {first_row[decision.sha256]} and {number} both decide about "
                                     f"image {decision.sha256[:12]}…; keep one of them")
            first_row[decision.sha256] = number
            decisions[decision.sha256] = decision
    return decisions


def _parse_row(row: dict, where: str, classes: list[str]) -> Decision | None:
    sha = (row.get("sha256") or "").strip().lower()
    action = (row.get("action") or "").strip().lower()
    new_class = (row.get("new_class") or "").strip()
    note = (row.get("note") or "").strip()
    if not sha and not action:
        return None  # a blank line
    if not _SHA256.fullmatch(sha):
        raise DecisionsError(f"{where}: sha256 {sha!r} is not 64 hex digits; copy it from data/review/issues.csv")
    if action not in ACTIONS:
        raise DecisionsError(f"{where}: action {action!r} is unknown; use one of {', '.join(ACTIONS)}")
    if action == "relabel" and new_class not in classes:
        raise DecisionsError(f"{where}: new_class {new_class!r} is not one of the classes ({', '.join(classes)}); "
                             "fix the row or add the class to params.yaml")
    if action != "relabel" and new_class:
        raise DecisionsError(f"{where}: new_class {new_class!r} is only for action relabel; clear it or relabel")
    return Decision(sha, action, new_class, f"{where.split(' ', 1)[-1]}" + (f": {note}" if note else ""))


def read_auto_drops(path: str | Path) -> dict[str, Decision]:
    """sha256 -> drop Decision from the review stage's auto_drop.csv (sha256, path, class, issue, score, reason)."""
    path = Path(path)
    if not path.exists():
        return {}
    return {r["sha256"]: Decision(r["sha256"], "drop", "", f"review: {r['issue']} {float(r['score']):.2f} {r['reason']}".strip())
            for r in files.read_csv(path)}


def apply_decisions(rows: list[dict], person: dict[str, Decision],
                    auto: dict[str, Decision]) -> tuple[list[dict], list[dict], dict]:
    """A person's decisions applied to split rows (path, label, sha256, group), in every split.

    Returns (rows kept, with relabelled labels and `original_label`; one APPLIED_FIELDS row per decision
    applied; counts, and the person's rows about images not in the data). Review's auto-drops are not
    applied here (`auto_drop_candidates`: the split applies them outside test); `auto` only counts the
    person's keeps that overrule one."""
    kept, applied = [], []
    counts = dict.fromkeys(("dropped", "relabelled", "kept_over_auto"), 0)
    for row in rows:
        row = {**row, "original_label": row.get("original_label") or row["label"]}
        decision = person.get(row["sha256"])
        if decision is None:
            kept.append(row)
            continue
        applied.append(applied_row(row, decision))
        if decision.action == "drop":
            counts["dropped"] += 1
            continue
        if decision.action == "relabel" and decision.new_class != row["label"]:
            row = {**row, "label": decision.new_class}
            counts["relabelled"] += 1
        elif decision.action == "keep" and row["sha256"] in auto:
            counts["kept_over_auto"] += 1
        kept.append(row)
    present = {row["sha256"] for row in rows}
    not_found = sorted(sha for sha in person if sha not in present)
    return kept, applied, {**counts, "not_found": len(not_found), "not_found_sha256": not_found}


def auto_drop_candidates(auto: dict[str, Decision], person: dict[str, Decision]) -> dict[str, Decision]:
    """Review's auto-drops that no row of the person's overrules."""
    return {sha: decision for sha, decision in auto.items() if sha not in person}


def applied_row(row: dict, decision: Decision) -> dict:
    """reports/decisions.csv's row for one decision applied to one image."""
    return {"sha256": row["sha256"], "path": row["path"], "class": row.get("original_label") or row["label"],
            "action": decision.action, "new_class": decision.new_class, "source": decision.source}


def split_with_decisions(rows: list[dict], person: dict[str, Decision], auto: dict[str, Decision],
                         cfg: SplitParams, seed: int, previous: dict[str, str] | None = None
                         ) -> tuple[dict[str, list[dict]], list[dict], dict]:
    """The split stage's whole decision: a person's rows applied to every split, review's auto-drops
    outside test, then assign_splits with relabelled and spared images moved last. Returns (splits,
    reports/decisions.csv rows, counts)."""
    rows, applied, decided = apply_decisions(rows, person, auto)
    candidates = auto_drop_candidates(auto, person)
    rows, dropped, spared = drop_outside_test(rows, set(candidates), cfg, seed, previous)
    relabelled = {r["sha256"] for r in rows if r["label"] != r["original_label"]}
    splits = assign_splits(rows, cfg, seed, previous, keep_last=frozenset(relabelled | {r["sha256"] for r in spared}))
    applied += [applied_row(r, candidates[r["sha256"]]) for r in dropped]
    return splits, applied, decided | {"auto_dropped": len(dropped), "auto_drops_spared_in_test": len(spared)}
