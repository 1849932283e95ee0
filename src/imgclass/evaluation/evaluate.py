"""Evaluation on held-out data: predictions, the numbers people compare, and what to plot.

Nothing here chooses anything: metrics describe a model on a split. The validation split is for
choices (which model, which vote), the test split only for reporting.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    auc,
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

from imgclass import files
from imgclass.model.preprocess import Preprocessing, check_tta, tta_probabilities

if TYPE_CHECKING:
    import torch
    from torch import nn

TOP_K = 3
# Two classes: classes[1] is the positive class, predicted when its probability is above this, which
# is the argmax rule every other report uses. Fixed, not tuned: a tuned threshold would need the
# validation split and would have to travel with the model to predict and serve.
BINARY_THRESHOLD = 0.5
SCALAR_KEYS = ("accuracy", "val_accuracy", "macro_f1", "weighted_f1", "ece", "roc_auc", "average_precision",
               "threshold", "n")


@dataclass(frozen=True)
class Views:
    """One pass of a model over images: the probabilities of each image, of its mirror image (for the
    hflip test-time augmentation) and the penultimate features, each where it was asked for."""
    plain: np.ndarray
    mirrored: np.ndarray | None = None
    features: np.ndarray | None = None

    def probabilities(self, tta: str) -> np.ndarray:
        """preprocess.tta_probabilities on the saved views: hflip is the mean of the two."""
        if check_tta(tta) == "none":
            return self.plain
        if self.mirrored is None:
            raise ValueError("hflip needs the mirrored view: predict_views(..., mirrored=True)")
        return (self.plain + self.mirrored) / 2


def predict_views(model: nn.Module, prep: Preprocessing, images: np.ndarray, device: torch.device | str = "cpu",
                  batch_size: int = 256, mirrored: bool = False, features: bool = False) -> Views:
    """Class probabilities of uint8 N x H x W x 3 images through the model's saved preprocessing on both
    sides (normalised input; logits to probabilities as its loss trained them); with `mirrored` those
    of the mirror images too, with `features` what the classifier head receives. One pass over the
    images serves every test-time augmentation and the t-SNE map."""
    import torch  # here: the ensemble reads saved predictions (this module) without a network

    from imgclass.model import models

    model.eval()
    plain, flipped, head_inputs = [], [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.array(images[start:start + batch_size])).permute(0, 3, 1, 2).to(device)
            x = prep.normalize(batch)
            with models.head_inputs(model) if features else nullcontext([]) as seen:
                plain.append(tta_probabilities(model, prep, x, "none").cpu().numpy())
            head_inputs += seen  # the image's own features, not its mirror's
            if mirrored:
                flipped.append(tta_probabilities(model, prep, x.flip(-1), "none").cpu().numpy())
    return Views(_joined(plain), _joined(flipped) if mirrored else None,
                 models.stacked_head_inputs(model, head_inputs) if features else None)


def _joined(batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(batches) if batches else np.zeros((0, 0), dtype=np.float32)


def predict_probs(model: nn.Module, prep: Preprocessing, images: np.ndarray, device: torch.device | str = "cpu",
                  batch_size: int = 256, tta: str = "none") -> np.ndarray:
    """Class probabilities for uint8 N x H x W x 3 images with the test-time augmentation `tta`
    (preprocess.TTA)."""
    return predict_views(model, prep, images, device, batch_size, mirrored=check_tta(tta) == "hflip").probabilities(tta)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of N x C probabilities (0.0 for no images)."""
    return float((probs.argmax(axis=1) == labels).mean()) if len(labels) else 0.0


def choose_tta(configured: str, val_accuracy: dict[str, float]) -> str:
    """The configured test-time augmentation; `auto`: hflip only when it is more accurate on the
    validation split (a tie keeps the cheaper none). The test split chooses nothing."""
    if configured != "auto":
        return check_tta(configured)
    return "hflip" if val_accuracy["hflip"] > val_accuracy["none"] else "none"


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> tuple[float, list[dict]]:
    """ECE over equal-width confidence bins, and the bins for a reliability diagram."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == y_true
    edges = np.linspace(0, 1, bins + 1)
    ece, table = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            acc, conf = correct[inside].mean(), confidence[inside].mean()
            ece += inside.mean() * abs(acc - conf)
            table.append({"bin_low": round(float(lo), 4), "bin_high": round(float(hi), 4), "count": int(inside.sum()),
                          "accuracy": float(acc), "confidence": float(conf)})
    return float(ece), table


def most_confused(cm: np.ndarray, classes: list[str], n: int = 5) -> list[dict]:
    off = cm.copy()
    np.fill_diagonal(off, 0)
    pairs = sorted(((off[i, j], i, j) for i in range(len(classes)) for j in range(len(classes)) if off[i, j]),
                   reverse=True)[:n]
    return [{"true": classes[i], "predicted": classes[j], "count": int(c)} for c, i, j in pairs]


def top_k_metrics(y_true: np.ndarray, probs: np.ndarray, n_classes: int, top_k: int = TOP_K) -> dict:
    """{"topK_accuracy": ...} for K = min(top_k, classes - 1) when K >= 2; nothing otherwise: with K
    equal to the number of classes every image is right, and top-1 is the accuracy."""
    k = min(top_k, n_classes - 1)
    if k < 2:
        return {}
    return {f"top{k}_accuracy": float(top_k_accuracy_score(y_true, probs, k=k, labels=list(range(n_classes))))}


def _both_classes_present(y_true: np.ndarray) -> bool:
    return len(np.unique(y_true)) == 2


def binary_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Two classes: ROC AUC and average precision of p(classes[1]), the positive class and the
    threshold used. AUC and AP are None when the labels hold one class only (they are undefined)."""
    score = probs[:, 1]
    defined = _both_classes_present(y_true)
    return {
        "positive_class": classes[1],
        "threshold": BINARY_THRESHOLD,
        "roc_auc": float(roc_auc_score(y_true, score)) if defined else None,
        "average_precision": float(average_precision_score(y_true, score)) if defined else None,
    }


def roc_pr_curves(y_true: np.ndarray, probs: np.ndarray) -> dict[str, list[dict]]:
    """ROC (fpr, tpr) and precision-recall (recall, precision) points. Two classes: p(classes[1])
    against "is classes[1]". More classes: the one-vs-rest micro-average (every image x class pair is
    one score), so every project has both curves. Empty lists when the labels leave nothing to rank."""
    if probs.shape[1] == 2:
        truth, score = y_true == 1, probs[:, 1]
    else:
        truth, score = (y_true[:, None] == np.arange(probs.shape[1])).ravel(), probs.ravel()
    if truth.all() or not truth.any():
        return {"roc": [], "pr": []}
    fpr, tpr, _ = roc_curve(truth, score)
    precision, recall, _ = precision_recall_curve(truth, score)
    return {"roc": [{"fpr": float(f), "tpr": float(t)} for f, t in zip(fpr, tpr)],
            "pr": [{"recall": float(r), "precision": float(p)} for r, p in zip(recall, precision)]}


def curve_area(points: list[dict], x: str, y: str) -> float | None:
    """Trapezoidal area under a curve of points (the ROC AUC for fpr/tpr); None for no points."""
    return float(auc([p[x] for p in points], [p[y] for p in points])) if points else None


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], top_k: int = TOP_K) -> dict:
    """Accuracy, top-k, macro/weighted F1, per-class report, mean bias error, confusion, calibration;
    with two classes also ROC AUC, average precision, the positive class and the threshold."""
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    report = classification_report(y_true, y_pred, labels=labels, target_names=classes, output_dict=True,
                                   zero_division=0)
    true_share = np.bincount(y_true, minlength=len(classes)) / max(len(y_true), 1)
    pred_share = np.bincount(y_pred, minlength=len(classes)) / max(len(y_pred), 1)
    ece, reliability = expected_calibration_error(y_true, probs)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        **top_k_metrics(y_true, probs, len(classes), top_k),
        **(binary_metrics(y_true, probs, classes) if len(classes) == 2 else {}),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "ece": ece,
        "n": int(len(y_true)),
        "per_class": {c: {m: float(report[c][m]) for m in ("precision", "recall", "f1-score", "support")}
                      | {"mean_bias_error": float(pred_share[i] - true_share[i])} for i, c in enumerate(classes)},
        "confusion": cm.tolist(),
        "most_confused": most_confused(cm, classes),
        "reliability": reliability,
    }


def scalar_metrics(metrics: dict) -> dict:
    """The numbers MLflow gets (and plots/eval/NAME/report.json holds): SCALAR_KEYS and any topK_accuracy."""
    return {k: v for k, v in metrics.items()
            if k in SCALAR_KEYS or (k.startswith("top") and k.endswith("_accuracy"))}


def report_table(metrics: dict, classes: list[str]) -> str:
    """The per-class report as a plain-text table."""
    width = max(16, *(len(c) + 2 for c in classes))  # long class names widen the column, not shift it
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}{'bias':>9}"]
    for c in classes:
        r = metrics["per_class"][c]
        lines.append(f"{c:<{width}}{r['precision']:>10.3f}{r['recall']:>10.3f}{r['f1-score']:>10.3f}"
                     f"{int(r['support']):>9d}{r['mean_bias_error']:>+9.3f}")
    lines.append(f"{'accuracy':<{width}}{metrics['accuracy']:>40.3f}")
    lines.append(f"{'macro f1':<{width}}{metrics['macro_f1']:>40.3f}")
    if "positive_class" in metrics:
        lines.append(f"positive class {metrics['positive_class']!r}: predicted when p > {metrics['threshold']}; "
                     f"ROC AUC {_maybe(metrics['roc_auc'])}, average precision {_maybe(metrics['average_precision'])}")
    return "\n".join(lines) + "\n"


def _maybe(value: float | None) -> str:
    return "undefined (one class in the labels)" if value is None else f"{value:.3f}"


# --- saved predictions: what the ensemble and the registry read ----------------------------------

def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes: which checkpoint a prediction file belongs to."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class SavedPredictions:
    """One model's probabilities on the validation and test splits (data/preds/NAME.npz), and the
    sha256 of the checkpoint that produced them."""
    classes: list[str]
    val_probs: np.ndarray
    val_labels: np.ndarray
    test_probs: np.ndarray
    test_labels: np.ndarray
    checkpoint_sha256: str
    tta: str = "none"  # the test-time augmentation these probabilities were computed with

    @property
    def val_accuracy(self) -> float:
        return accuracy(self.val_probs, self.val_labels)

    def save(self, path: Path | str) -> None:
        with files.atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(f, test_probs=self.test_probs, test_labels=self.test_labels, val_probs=self.val_probs,
                     val_labels=self.val_labels, classes=np.array(self.classes),
                     checkpoint_sha256=np.array(self.checkpoint_sha256), tta=np.array(self.tta))

    @classmethod
    def load(cls, path: Path | str) -> "SavedPredictions":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no saved predictions; run `dvc repro` (the evaluate stage) first")
        with np.load(path) as saved:
            if "checkpoint_sha256" not in saved:
                raise ValueError(f"{path}: written by an older evaluate stage (no checkpoint_sha256); "
                                 "run `dvc repro --force evaluate`")
            return cls([str(c) for c in saved["classes"]], saved["val_probs"], saved["val_labels"],
                       saved["test_probs"], saved["test_labels"], str(saved["checkpoint_sha256"]),
                       str(saved["tta"]) if "tta" in saved else "none")


def evaluated_tta(preds_path: Path | str, checkpoint: Path | str) -> str:
    """The test-time augmentation evaluate chose for this checkpoint (saved beside its predictions);
    none when the checkpoint was not evaluated as it is now."""
    preds_path, checkpoint = Path(preds_path), Path(checkpoint)
    if not (preds_path.exists() and checkpoint.exists()):
        return "none"
    try:
        saved = SavedPredictions.load(preds_path)
    except ValueError:
        return "none"
    return saved.tta if saved.checkpoint_sha256 == file_sha256(checkpoint) else "none"
