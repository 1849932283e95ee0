"""Stage review: out-of-sample checks of data/clean (wrong labels, off-topic, near-duplicates, low
quality) -> data/review/{issues,auto_drop}.csv, metrics/review.json, plots/review/{index.html,summary.png}."""

import sys
import time
from pathlib import Path

from imgclass import files
from imgclass.config.params import load_params
from imgclass.devices import resolve_device
from imgclass.model.models import WeightsUnavailable
from imgclass.review import review_report, scoring

CLEAN = Path("data/clean")


def accepted_images(report_csv: Path) -> list[dict]:
    """validate's accepted rows: `out` is the image's path relative to data/clean."""
    return [row for row in files.read_csv(report_csv) if row["status"] == "ok"]


def main() -> int:
    params = load_params()
    start = time.perf_counter()
    if not (CLEAN / "report.csv").exists():
        print(f"review: {CLEAN / 'report.csv'} not found; run the validate stage first", file=sys.stderr)
        return 1
    rows = accepted_images(CLEAN / "report.csv")
    paths = [row["out"] for row in rows]
    labels = [row["class"] for row in rows]
    sha256s = [row["sha256"] for row in rows]
    groups = [row["group"] or row["sha256"] for row in rows]  # validate's near-duplicate group; empty: alone
    images = [CLEAN / p for p in paths]
    try:
        result = scoring.find_issues(images, labels, sha256s, params.classes, params.review,
                                    Path("data/embeddings"), resolve_device(params.device).type, params.seed,
                                    groups)
    except (WeightsUnavailable, ValueError, RuntimeError) as exc:  # offline weights, bad data, device
        print(f"review: {exc}", file=sys.stderr)
        return 1
    review_report.write_tables(Path("data/review"), result, paths, labels, sha256s)
    files.write_json("metrics/review.json", review_report.metrics(result))  # images flagged
    files.write_json("reports/review.json", review_report.report(result))  # by issue, by class, auto-dropped
    review_report.write_page(Path("plots/review/index.html"), result, images, paths, params.classes)
    review_report.summary_png(result, params.classes, Path("plots/review/summary.png"))
    print(summary_line(result, params.review.auto_drop, time.perf_counter() - start))
    return 0


def summary_line(result: scoring.ReviewResult, auto_drop_mode: str, total_seconds: float) -> str:
    """review: 2000 images; issues: label 12, outlier 3, ...; 20 more below threshold; auto_drop (none) 0;
    embedded 2000; embed 30.1 s, ..."""
    summary = result.summary
    issues = ", ".join(f"{kind} {count}" for kind, count in summary["issues"].items())
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in summary["seconds"].items())
    return (f"review: {summary['images']} images; issues: {issues}; {len(result.below_threshold)} more below "
            f"threshold; auto_drop ({auto_drop_mode}) "
            f"{len(result.auto_drop)}; embedded {summary['embedded']}; {steps}; total {total_seconds:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
