"""Evaluation on held-out data: predictions, the numbers people compare, and what to plot."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, top_k_accuracy_score
from torch import nn

from imgclass.preprocess import Preprocessing


@torch.no_grad()
def predict_probs(model: nn.Module, prep: Preprocessing, images: np.ndarray, device: torch.device | str = "cpu",
                  batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities for uint8 N x H x W x 3 images, through the model's saved preprocessing."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start:start + batch_size])).permute(0, 3, 1, 2).to(device)
        out.append(model(prep.normalize(batch)).float().softmax(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


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


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], top_k: int = 3) -> dict:
    """Accuracy, top-k, macro/weighted F1, per-class report, mean bias error, confusion, calibration."""
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    k = min(top_k, len(classes) - 1)
    report = classification_report(y_true, y_pred, labels=labels, target_names=classes, output_dict=True,
                                   zero_division=0)
    true_share = np.bincount(y_true, minlength=len(classes)) / max(len(y_true), 1)
    pred_share = np.bincount(y_pred, minlength=len(classes)) / max(len(y_pred), 1)
    ece, reliability = expected_calibration_error(y_true, probs)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        f"top{k}_accuracy": float(top_k_accuracy_score(y_true, probs, k=k, labels=labels)),
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


def report_table(metrics: dict, classes: list[str]) -> str:
    """The per-class report as a plain-text table."""
    lines = [f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}{'bias':>9}"]
    for c in classes:
        r = metrics["per_class"][c]
        lines.append(f"{c:<16}{r['precision']:>10.3f}{r['recall']:>10.3f}{r['f1-score']:>10.3f}"
                     f"{int(r['support']):>9d}{r['mean_bias_error']:>+9.3f}")
    lines.append(f"{'accuracy':<16}{metrics['accuracy']:>40.3f}")
    lines.append(f"{'macro f1':<16}{metrics['macro_f1']:>40.3f}")
    return "\n".join(lines) + "\n"
