"""Stage split: a person's decisions applied, review's auto-drops outside test, then stable stratified
train/val/test lists of working copies (data/split/<split>.csv; training and evaluation decode them)."""

import sys
from pathlib import Path

from imgclass import files
from imgclass.config.params import load_params
from imgclass.data.decisions import (
    APPLIED_FIELDS,
    LABELS_CSV,
    DecisionsError,
    read_auto_drops,
    read_decisions,
    split_with_decisions,
)
from imgclass.data.split import (
    ASSIGNMENT,
    SPLIT_FIELDS,
    SPLITS,
    SplitError,
    assignment_record,
    previous_assignment,
    split_changes,
    split_counts,
    why_not_resume,
)

CLEAN, OUT = Path("data/clean"), Path("data/split")
AUTO_DROPS = Path("data/review/auto_drop.csv")


def main() -> int:
    params = load_params()
    accepted = [r for r in files.read_csv(CLEAN / "report.csv") if r["status"] == "ok"]
    rows = [{"path": r["out"], "label": r["class"], "sha256": r["sha256"], "group": r["group"] or r["sha256"]}
            for r in accepted]
    previous = previous_assignment(OUT)  # read before the CSVs are overwritten
    restarted = why_not_resume(OUT, params.split, params.seed) if previous else None
    start = {} if restarted else {sha: split for sha, (split, _) in previous.items()}
    try:
        splits, applied, decided = split_with_decisions(
            rows, read_decisions(LABELS_CSV, params.classes), read_auto_drops(AUTO_DROPS), params.split,
            params.seed, start)
    except (DecisionsError, SplitError) as exc:
        print(f"split: {exc}", file=sys.stderr)
        return 1
    changes = split_changes(previous, splits, restarted)
    for stale in OUT.glob("*.npy"):  # uint8 caches that earlier versions kept here (data/split persists)
        stale.unlink()
    for name in SPLITS:
        files.write_csv(OUT / f"{name}.csv", splits[name], SPLIT_FIELDS)
    files.write_json(OUT / ASSIGNMENT, assignment_record(params.split, params.seed))
    counts = split_counts(splits)
    totals = {s: counts[s]["total"] for s in SPLITS}
    files.write_json("metrics/split.json", {**totals, "moved": changes["moved"]})  # the other moves: reports
    files.write_json("reports/split.json", {**totals, **changes, "decisions": decided})
    files.write_json(OUT / "counts.json", counts)
    files.write_csv("reports/decisions.csv", applied, APPLIED_FIELDS)  # every image dropped or relabelled, and why
    print(summary(counts, changes, decided))
    return 0


def summary(counts: dict, changes: dict, decided: dict) -> str:
    lines = []
    if decided["not_found"]:
        lines.append(f"split: {decided['not_found']} rows of {LABELS_CSV} name images that are not in data/clean "
                     "(kept for when they return): " + ", ".join(s[:12] for s in decided["not_found_sha256"][:5]))
    if changes["restarted"]:
        lines.append(f"split: started afresh, not from the previous split: {changes['restarted']}")
    lines.append("split: " + ", ".join(f"{s} {counts[s]['total']}" for s in SPLITS)
                 + f"; of {changes['previous']} earlier images {changes['moved']} moved to re-balance a class, "
                   f"{changes['moved_by_merge']} with a merged near-duplicate group"
                 + (f", {changes['moved_by_restart']} by starting afresh" if changes["restarted"] else "")
                 + f"; decisions: {decided['dropped']} dropped, {decided['relabelled']} relabelled, "
                   f"{decided['auto_dropped']} auto-dropped by review (outside test; "
                   f"{decided['auto_drops_spared_in_test']} spared in test), {decided['kept_over_auto']} kept "
                   "against review")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
