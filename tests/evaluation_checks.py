"""Checks of the evaluate stage's outputs against numbers computed here, independently, from what
they are about: the saved probabilities (data/preds/NAME.npz) and the labels of the split CSVs.

    assert_report_matches_predictions(plots/eval/NAME, data/preds/NAME.npz, data/split, classes,
                                      checkpoint=models/NAME/model.pt, headline=metrics/eval/NAME.json)

Nothing here calls imgclass.evaluation.evaluate or sklearn: a wrong formula there cannot agree with itself here.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ECE_BINS = 15  # evaluate.expected_calibration_error's default


def split_labels(split_dir: Path, split: str, classes: list[str]) -> np.ndarray:
    with (Path(split_dir) / f"{split}.csv").open(newline="") as f:
        return np.array([classes.index(row["label"]) for row in csv.DictReader(f)], dtype=np.int64)


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    return cm


def rank_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the chance that a positive outranks a negative (ties count half)."""
    pos, neg = score[y == 1][:, None], score[y == 0][None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Sum over the distinct thresholds, highest first, of (recall gained) x (precision there)."""
    ap, last_recall = 0.0, 0.0
    for t in np.unique(score)[::-1]:
        chosen = score >= t
        tp = int((chosen & (y == 1)).sum())
        recall = tp / int((y == 1).sum())
        ap += (recall - last_recall) * tp / int(chosen.sum())
        last_recall = recall
    return ap


def calibration_bins(y: np.ndarray, probs: np.ndarray) -> tuple[float, list[tuple[int, float, float]]]:
    """ECE and (count, accuracy, mean confidence) of the non-empty bins (lo, hi] of the top probability."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    index = np.searchsorted(np.linspace(0, 1, ECE_BINS + 1), confidence, side="left") - 1
    bins = [(int(inside.sum()), float(correct[inside].mean()), float(confidence[inside].mean()))
            for inside in (index == b for b in range(ECE_BINS)) if inside.any()]
    return sum(count / len(y) * abs(acc - conf) for count, acc, conf in bins), bins


def assert_report_matches_predictions(plots_dir: Path, preds: Path, split_dir: Path, classes: list[str],
                                      checkpoint: Path | None = None, headline: Path | None = None) -> dict:
    """report.json, report.txt and confusion.csv of one evaluated model agree with its saved
    probabilities and the split's labels; returns report.json."""
    report = json.loads((Path(plots_dir) / "report.json").read_text())
    with np.load(preds) as saved:
        assert [str(c) for c in saved["classes"]] == classes
        probs, y = saved["test_probs"], saved["test_labels"]
        val_probs, val_y = saved["val_probs"], saved["val_labels"]
        saved_sha = str(saved["checkpoint_sha256"])
    # The predictions are of the split's images in its order, one probability row per image.
    assert y.tolist() == split_labels(split_dir, "test", classes).tolist()
    assert val_y.tolist() == split_labels(split_dir, "val", classes).tolist()
    assert probs.shape == (len(y), len(classes)) and val_probs.shape == (len(val_y), len(classes))
    assert (probs >= 0).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    if checkpoint is not None:
        assert saved_sha == report["checkpoint_sha256"] == hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()

    n, pred = len(y), probs.argmax(axis=1)
    cm = confusion(y, pred, len(classes))
    assert report["n"] == n == cm.sum() > 0
    assert report["confusion"] == cm.tolist()
    assert report["accuracy"] == approx(np.trace(cm) / n)
    assert report["val_accuracy"] == approx((val_probs.argmax(axis=1) == val_y).mean())

    support, predicted, right = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    precision = np.divide(right, predicted, out=np.zeros(len(classes)), where=predicted > 0)
    recall = np.divide(right, support, out=np.zeros(len(classes)), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(classes)),
                   where=precision + recall > 0)
    assert list(report["per_class"]) == classes
    for i, c in enumerate(classes):
        row = report["per_class"][c]
        assert row["support"] == support[i], c
        assert (row["precision"], row["recall"], row["f1-score"]) == \
            (approx(precision[i]), approx(recall[i]), approx(f1[i])), c
        # predicted share minus true share: positive when the model over-predicts the class
        assert row["mean_bias_error"] == approx((predicted[i] - support[i]) / n), c
    assert sum(row["mean_bias_error"] for row in report["per_class"].values()) == approx(0)
    assert report["macro_f1"] == approx(f1.mean())
    assert report["weighted_f1"] == approx((f1 * support).sum() / n)

    for key in (k for k in report if k.startswith("top") and k.endswith("_accuracy")):
        k = int(key[3:-9])
        in_top_k = (np.argsort(-probs, axis=1)[:, :k] == y[:, None]).any(axis=1)
        assert report[key] == approx(in_top_k.mean()) and report[key] >= report["accuracy"], key

    ece, bins = calibration_bins(y, probs)
    assert report["ece"] == approx(ece)
    assert [(b["count"], approx(b["accuracy"]), approx(b["confidence"])) for b in report["reliability"]] == bins
    assert sum(b["count"] for b in report["reliability"]) == n  # every image has a top probability above 0
    assert all(b["bin_low"] < b["confidence"] <= b["bin_high"] + 1e-4 for b in report["reliability"])

    if len(classes) == 2:
        assert (report["positive_class"], report["threshold"]) == (classes[1], 0.5)
        if len(set(y.tolist())) == 2:
            assert report["roc_auc"] == approx(rank_auc(y, probs[:, 1]))
            assert report["average_precision"] == approx(average_precision(y, probs[:, 1]))

    with (Path(plots_dir) / "confusion.csv").open(newline="") as f:  # what DVC draws its confusion from
        assert [(r["actual"], r["predicted"]) for r in csv.DictReader(f)] == [(classes[t], classes[p])
                                                                           for t, p in zip(y, pred)]
    table = {line.split()[0]: line.split()[1:] for line in (Path(plots_dir) / "report.txt").read_text().splitlines()
             if line.split() and line.split()[0] in classes}
    assert list(table) == classes
    for i, c in enumerate(classes):
        assert table[c] == [f"{precision[i]:.3f}", f"{recall[i]:.3f}", f"{f1[i]:.3f}", str(support[i]),
                            f"{(predicted[i] - support[i]) / n:+.3f}"], c
    if headline is not None:
        assert {k: v for k, v in json.loads(Path(headline).read_text()).items() if k != "train_seconds"} == \
            {k: report[k] for k in ("accuracy", "macro_f1", "ece")}
    return report


def approx(value: float):
    return pytest.approx(float(value), abs=1e-6)


def assert_png_figure(path: Path, min_side: int = 150) -> None:
    """A PNG that decodes, of a figure's size, with something drawn on it (not one flat colour)."""
    with Image.open(path) as image:
        assert image.format == "PNG", path
        image.load()
        assert min(image.size) >= min_side, (path, image.size)
        grey = np.asarray(image.convert("L"))
    assert (grey < 128).mean() > 0.002 and grey.std() > 5, f"{path} is blank"
