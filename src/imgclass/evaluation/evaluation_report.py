"""The evaluate stage's outputs: compute with evaluate and explain, write every file dvc.yaml declares
for evaluate@NAME (metrics JSON, report, CSV plots, PNGs, saved predictions). The stage passes paths.

The metrics file holds only the numbers experiments are compared on (HEADLINE_KEYS and the training
time from the checkpoint, so that one file per model is one row of `dvc exp show`); every other number
is in plots/eval/NAME/report.json and in the model's MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgclass import files, plots
from imgclass.data.image_cache import load_split
from imgclass.evaluation import explain
from imgclass.evaluation.evaluate import (
    SavedPredictions,
    accuracy,
    choose_tta,
    classification_metrics,
    curve_area,
    file_sha256,
    predict_views,
    report_table,
    roc_pr_curves,
    scalar_metrics,
)
from imgclass.model.checkpoint import load_trained
from imgclass.model.preprocess import TTA

HEADLINE_KEYS = ("accuracy", "macro_f1", "ece")


@dataclass(frozen=True)
class ModelReport:
    name: str
    scalars: dict            # every test scalar and the validation accuracy: what MLflow gets
    artifacts: list[Path]    # what to attach to the model's MLflow run
    mlflow_run_id: str | None

    def tracked_metrics(self) -> dict:
        """Test metrics as test_*, validation accuracies as eval_val_* (a name the training curves do not use)."""
        return {(f"eval_{k}" if k.startswith("val_") else f"test_{k}"): v for k, v in self.scalars.items()}

    def summary_line(self) -> str:
        shown = " ".join(f"{k}={v:.4g}" for k, v in self.scalars.items() if isinstance(v, (int, float)))
        return f"evaluate {self.name}: {shown}"


def evaluate_model(name: str, checkpoint: Path, split_dir: Path, plots_dir: Path, preds_path: Path,
                   metrics_path: Path, device: torch.device | str = "cpu", seed: int = 0,
                   tta: str = "none") -> ModelReport:
    """The model on the test split (reported) and the validation split (saved for later choices),
    with the test-time augmentation `tta` (none, hflip, or auto: chosen on validation)."""
    model, meta, prep = load_trained(checkpoint, device)
    classes = meta["classes"]
    test_x, test_y = load_split(split_dir, "test", classes, prep.image_size)
    val_x, val_y = load_split(split_dir, "val", classes, prep.image_size)
    val = predict_views(model, prep, val_x, device, mirrored=True)  # every test-time augmentation is reported
    val_by_tta = {t: accuracy(val.probabilities(t), val_y) for t in TTA}
    chosen = choose_tta(tta, val_by_tta)
    test = predict_views(model, prep, test_x, device, mirrored=chosen == "hflip", features=True)
    saved = SavedPredictions(classes, val.probabilities(chosen), val_y, test.probabilities(chosen), test_y,
                             file_sha256(checkpoint), chosen)
    metrics = classification_metrics(test_y, saved.test_probs, classes)
    scalars = {**scalar_metrics(metrics), "val_accuracy": saved.val_accuracy,
               **{f"val_accuracy_tta_{t}": a for t, a in val_by_tta.items()}}
    files.write_json(metrics_path, headline(scalars, meta))
    files.write_json(plots_dir / "report.json", {
        **metrics, "val_accuracy": saved.val_accuracy, "checkpoint_sha256": saved.checkpoint_sha256,
        "tta": {"configured": tta, "applied": chosen, "val_accuracy": val_by_tta},
        "test_decisions": decisions_on_test(split_dir, classes, saved.test_probs)})
    files.write_text(plots_dir / "report.txt", report_table(metrics, classes))
    # Grad-CAM, t-SNE and top losses explain the network on the image as it is (probabilities: with TTA).
    pngs = [*metric_plots(name, metrics, test_y, saved.test_probs, classes, plots_dir),
            *explain_plots(model, prep, test_x, test_y, saved.test_probs, test.features, classes, plots_dir, device,
                           seed)]
    saved.save(preds_path)
    return ModelReport(name, scalars, [plots_dir / "report.json", plots_dir / "report.txt", *pngs],
                       meta.get("mlflow_run_id"))


def decisions_on_test(split_dir: Path, classes: list[str], test_probs: np.ndarray) -> dict:
    """How a person's labels.csv changed the test split, and the accuracy on the labels before it: test
    numbers before and after a relabel are then compared on the same images."""
    rows = files.read_csv(Path(split_dir) / "test.csv")
    decided = [r["label"] for r in rows]
    original = [r.get("original_label") or r["label"] for r in rows]
    predicted = [classes[i] for i in test_probs.argmax(axis=1)]
    return {"relabelled": sum(d != o for d, o in zip(decided, original)),
            "accuracy": float(np.mean([p == d for p, d in zip(predicted, decided)])) if rows else None,
            "accuracy_on_original_labels": float(np.mean([p == o for p, o in zip(predicted, original)])) if rows else None}


def headline(scalars: dict, meta: dict) -> dict:
    """metrics/eval/NAME.json: test accuracy, macro F1, ECE and the checkpoint's training seconds."""
    train_seconds = (meta.get("summary") or {}).get("train_seconds")
    return {**{k: scalars[k] for k in HEADLINE_KEYS},
            **({"train_seconds": train_seconds} if train_seconds is not None else {})}


def metric_plots(name: str, metrics: dict, y_true: np.ndarray, probs: np.ndarray, classes: list[str],
                 out: Path) -> list[Path]:
    """Confusion (CSV for DVC, PNGs), reliability, ROC (roc.csv: fpr,tpr) and precision-recall
    (pr.csv: recall,precision): of the positive class classes[1] with two classes, else micro-averaged."""
    files.write_csv(out / "confusion.csv", [{"actual": classes[t], "predicted": classes[p]}
                                            for t, p in zip(y_true, probs.argmax(axis=1))], ["actual", "predicted"])
    cm = np.array(metrics["confusion"])
    curves = roc_pr_curves(y_true, probs)
    files.write_csv(out / "roc.csv", curves["roc"], ["fpr", "tpr"])
    files.write_csv(out / "pr.csv", curves["pr"], ["recall", "precision"])
    if len(classes) == 2:
        subject, auc, ap = f"positive class {classes[1]!r}", metrics["roc_auc"], metrics["average_precision"]
    else:
        subject, auc, ap = f"micro-average of {len(classes)} classes", curve_area(curves["roc"], "fpr", "tpr"), None
    return [plots.confusion_png(cm, classes, out / "confusion.png", title=f"{name}: confusion (counts)"),
            plots.confusion_png(cm, classes, out / "confusion_normalized.png", normalize=True),
            plots.reliability_png(metrics["reliability"], metrics["ece"], out / "reliability.png"),
            plots.roc_png(curves["roc"], auc, subject, out / "roc.png"),
            plots.precision_recall_png(curves["pr"], ap, subject, out / "pr.png")]


def explain_plots(model, prep, images: np.ndarray, labels: np.ndarray, probs: np.ndarray, features: np.ndarray,
                  classes: list[str], out: Path, device: torch.device | str, seed: int) -> list[Path]:
    """t-SNE of the penultimate features, Grad-CAM of a right/wrong sample, the top losses."""
    return [explain.tsne_png(features, labels, classes, out / "tsne.png", seed=seed),
            explain.gradcam_png(model, prep, images, labels, probs, classes, out / "gradcam.png", seed=seed),
            explain.top_losses_png(images, labels, probs, classes, out / "top_losses.png")]
