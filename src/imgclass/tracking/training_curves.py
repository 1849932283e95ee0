"""Every model's training history in one long table (epoch, model, val_accuracy, val_loss, lr, ...),
so that one DVC plot draws a line per model: DVC's top-level plots cannot glob the models' own
DVCLive folders, and the list of models changes with params.yaml.

Reads what DVCLive wrote during training (dvclive/M/plots/metrics/**/*.tsv, one `step<TAB>value`
file per metric; `val/accuracy.tsv` becomes the column val_accuracy), so training itself is untouched.
"""

from __future__ import annotations

import csv
from pathlib import Path

from imgclass import files

FIRST_COLUMNS = ["epoch", "model", "val_accuracy", "val_loss", "train_accuracy", "train_loss", "lr"]


def read_history(metrics_dir: Path) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} from one model's DVCLive TSVs; {} when the model logged nothing."""
    history: dict[int, dict[str, float]] = {}
    for tsv in sorted(metrics_dir.rglob("*.tsv")):
        metric = tsv.relative_to(metrics_dir).with_suffix("").as_posix().replace("/", "_")
        with tsv.open(newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                value = row[tsv.stem]
                history.setdefault(int(row["step"]), {})[metric] = float(value)
    return history


def long_rows(models: list[str], dvclive_dir: Path) -> list[dict]:
    """One row per model and epoch (1-based, as training prints it), models in params order."""
    rows = []
    for model in models:
        history = read_history(dvclive_dir / model / "plots" / "metrics")
        rows += [{"epoch": step + 1, "model": model, **values} for step, values in sorted(history.items())]
    return rows


def write_curves(models: list[str], dvclive_dir: Path, out: Path) -> list[dict]:
    """out: the long table (header only when no model has a history, e.g. trained without tracking)."""
    rows = long_rows(models, dvclive_dir)
    extra = sorted({k for r in rows for k in r} - set(FIRST_COLUMNS))
    files.write_csv(out, rows, FIRST_COLUMNS + extra)
    return rows
