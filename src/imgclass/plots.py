"""Static figures (PNG) that DVC shows beside its vega plots and MLflow attaches to runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from imgclass import files  # noqa: E402


def save_png(fig, path: Path) -> Path:
    """Write a matplotlib figure atomically as PNG and close it."""
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_png(cm: np.ndarray, classes: list[str], path: Path, normalize: bool = False, title: str = "") -> Path:
    data = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = max(4.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion (row-normalised)" if normalize else "confusion (counts)"))
    threshold = data.max() / 2 if data.size else 0
    for i in range(len(classes)):
        for j in range(len(classes)):
            text = f"{data[i, j]:.2f}" if normalize else str(int(data[i, j]))
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if data[i, j] > threshold else "black")
    return save_png(fig, path)


def reliability_png(bins: list[dict], ece: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    if bins:
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label="model")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left")
    return save_png(fig, path)


def training_curves_png(history: list[dict], path: Path, title: str = "") -> Path:
    epochs = [h["epoch"] + 1 for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split in ("train", "val"):
        loss_ax.plot(epochs, [h[f"{split}_loss"] for h in history], "o-", label=split)
        acc_ax.plot(epochs, [h[f"{split}_accuracy"] for h in history], "o-", label=split)
    loss_ax.set_title("loss")
    acc_ax.set_title("accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(title)
    return save_png(fig, path)


def bar_png(values: dict[str, float], path: Path, title: str, xlabel: str = "test accuracy") -> Path:
    names = list(values)
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(values[n], i, f" {values[n]:.3f}", va="center")
    ax.set_xlim(0, 1.08)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return save_png(fig, path)


def roc_png(points: list[dict], auc: float | None, subject: str, path: Path) -> Path:
    """ROC curve from [{fpr, tpr}], with the chance diagonal; `subject` says of what (which class)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    if points:
        ax.plot([p["fpr"] for p in points], [p["tpr"] for p in points], label="model")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, {subject}" + (f" (AUC {auc:.3f})" if auc is not None else ""))
    ax.legend(loc="lower right")
    return save_png(fig, path)


def precision_recall_png(points: list[dict], average_precision: float | None, subject: str, path: Path) -> Path:
    """Precision-recall curve from [{recall, precision}], drawn as the step function AP sums."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if points:
        ax.step([p["recall"] for p in points], [p["precision"] for p in points], where="post", label="model")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ap = f" (AP {average_precision:.3f})" if average_precision is not None else ""
    ax.set_title(f"precision-recall, {subject}{ap}")
    return save_png(fig, path)
