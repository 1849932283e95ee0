"""Stage split: the people's and the review's decisions applied, then stable stratified train/val/test
lists of working copies (data/split/<split>.csv; training and evaluation decode them)."""

import sys
from pathlib import Path

from imgclass import files
from imgclass.decisions import (APPLIED_FIELDS, LABELS_CSV, DecisionsError, apply_decisions, read_auto_drops,
                                read_decisions)
from imgclass.params import load_params
from imgclass.split import (SPLIT_FIELDS, SPLITS, SplitError, assign_splits, previous_assignment, split_changes,
                            split_counts)

CLEAN, OUT = Path("data/clean"), Path("data/split")
AUTO_DROPS = Path("data/review/auto_drop.csv")


def main() -> int:
    params = load_params()
    accepted = [r for r in files.read_csv(CLEAN / "report.csv") if r["status"] == "ok"]
    rows = [{"path": r["out"], "label": r["class"], "sha256": r["sha256"], "group": r["group"] or r["sha256"]}
            for r in accepted]
    try:
        rows, applied, decided = apply_decisions(rows, read_decisions(LABELS_CSV, params.classes),
                                                 read_auto_drops(AUTO_DROPS))
        splits = assign_splits(rows, params.split, params.seed)
    except (DecisionsError, SplitError) as exc:
        print(f"split: {exc}", file=sys.stderr)
        return 1
    changes = split_changes(previous_assignment(OUT), splits)  # read before the CSVs are overwritten
    for stale in OUT.glob("*.npy"):  # uint8 caches that earlier versions kept here (data/split persists)
        stale.unlink()
    for name in SPLITS:
        files.write_csv(OUT / f"{name}.csv", splits[name], SPLIT_FIELDS)
    counts = split_counts(splits)
    totals = {s: counts[s]["total"] for s in SPLITS}
    files.write_json("metrics/split.json", {**totals, "moved": changes["moved"]})  # moved_by_merge: reports
    files.write_json("reports/split.json", {**totals, **changes, "decisions": decided})  # + previous, added, removed
    files.write_json(OUT / "counts.json", counts)
    files.write_csv("reports/decisions.csv", applied, APPLIED_FIELDS)  # every image dropped or relabelled, and why
    if decided["not_found"]:
        print(f"split: {decided['not_found']} rows of {LABELS_CSV} name images that are not in data/clean "
              "(kept for when they return): " + ", ".join(s[:12] for s in decided["not_found_sha256"][:5]))
    print("split: " + ", ".join(f"{s} {counts[s]['total']}" for s in SPLITS)
          + f"; of {changes['previous']} earlier images {changes['moved']} moved at class boundaries, "
            f"{changes['moved_by_merge']} with a merged near-duplicate group; decisions: "
            f"{decided['dropped']} dropped, {decided['relabelled']} relabelled, {decided['auto_dropped']} "
            f"auto-dropped by review, {decided['kept_over_auto']} kept against review")
    return 0


if __name__ == "__main__":
    sys.exit(main())
