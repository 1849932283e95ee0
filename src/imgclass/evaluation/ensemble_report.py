"""The ensemble stage's outputs: votes chosen on validation and compared with every member on test,
written as the files dvc.yaml declares (metrics/ensemble.json: the numbers experiments are compared
on; reports/ensemble.json: the whole record, which predict and serve read; the comparison CSV and PNG).
Reads only the saved predictions: no model is loaded.
"""

from __future__ import annotations

from pathlib import Path

from imgclass import files, plots
from imgclass.evaluation import ensemble


def write_report(members: list[str], preds_dir: Path, metrics_path: Path, record_path: Path, plots_dir: Path,
                 tie_break: str | None = None) -> ensemble.EnsembleResult:
    """Votes chosen on validation, compared with every member on test: metrics, record, CSV and PNG."""
    saved = ensemble.load_member_predictions(members, preds_dir)
    result = ensemble.evaluate_ensemble(members, saved, tie_break)
    files.write_json(metrics_path, result.metrics())
    files.write_json(record_path, result.record())
    files.write_csv(plots_dir / "comparison.csv", result.comparison_rows(), ["method", "val_accuracy", "test_accuracy"])
    plots.bar_png(result.test_accuracy, plots_dir / "comparison.png",
                  title=f"members, votes and the oracle (chosen on validation: {result.spec.vote})")
    return result


def table(result: ensemble.EnsembleResult) -> str:
    """Validation and test accuracy of every member, vote and the oracle; the chosen vote marked."""
    width = max(map(len, result.test_accuracy))
    lines = [f"{'':<{width}}  {'val':>6}  {'test':>6}"]
    for method, test in result.test_accuracy.items():
        chosen = "  <- chosen on validation" if method == result.spec.vote else ""
        lines.append(f"{method:<{width}}  {result.val_accuracy[method]:>6.4f}  {test:>6.4f}{chosen}")
    return "\n".join(lines)
