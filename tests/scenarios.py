"""Scenario repositories: every shape of dataset the README allows, through the real stages (`dvc
repro` on a scratch copy). The helpers the test_scenario_*.py modules share.

Each scenario writes only the params sections a user would write, lets `imgclass check-params
--fill` add what dvc.yaml declares, runs the whole DAG and asserts the metrics and plots it must
produce, with values in range. Images are small and training short: this is about shapes, not scores.

Seven scenarios in four repositories, since each `dvc repro` pays for a dozen stage processes: two
classes (+ predict, export and the benchmark stage); colour photos, pretrained + scratch (bce on one
logit), as grey, colour, tiny and huge files in one tree; 10:1 imbalance with the rare class exactly at
min_per_class and a single model (then one image fewer fails); 22 classes. One module per repository,
so that the test workers build them side by side. Each repository's wall time and the test accuracy of
every member and vote go to scenario_matrix.json in pytest's base temporary folder (one per worker).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from evaluation_checks import assert_png_figure, assert_report_matches_predictions
from scratch_repo import make_repo, run

TINY_BENCHMARK = {"archs": ["cnn_simple"], "batch_sizes": [16], "images": 32, "repeats": 1, "warmup": 0,
                  "devices": ["cpu"]}
VOTES = ("hard_vote", "soft_vote", "weighted_vote")


def cnn(epochs: int = 3, **extra) -> dict:
    # min_steps 30: the default 100 makes tiny sets train dozens of epochs; these tests are about shapes
    return {"arch": "cnn_simple", "epochs": epochs, "min_steps": 30, "batch_size": 32, "lr": 0.01} | extra


def fashion_params(classes: list[str], per_class: int, models: dict, **extra) -> dict:
    return {"classes": classes, "image_size": 28, "scrape": {"source": "fashion_mnist", "max_per_class": per_class},
            "validate": {"min_size": 28}, "models": models, "benchmark": TINY_BENCHMARK} | extra


def folder_params(root: Path, mapping: dict[str, list[str]], models: dict, image_size: int, **extra) -> dict:
    return {"classes": list(mapping), "image_size": image_size,
            "scrape": {"source": "folder", "max_per_class": 1000, "folder": {"root": str(root), "mapping": mapping}},
            "models": models, "benchmark": TINY_BENCHMARK} | extra


def repro(tmp_path_factory, name: str, params: dict, target: str | None = None) -> Path:
    """A scratch repository with `params`, completed by check-params --fill, after `dvc repro` (of
    `target` and what it needs: `ensemble` leaves out the benchmark, which no data changes), timed
    into scenario_matrix.json with the test accuracy of each member and vote."""
    started, cpu_started = time.perf_counter(), children_cpu_seconds()
    repo = make_repo(tmp_path_factory.mktemp(name), params)
    run(["imgclass", "check-params", "--fill"], repo)
    run(["dvc", "repro", *([target] if target else [])], repo)
    record(tmp_path_factory, name, {"seconds": round(time.perf_counter() - started, 1),
                                    "cpu_seconds": round(children_cpu_seconds() - cpu_started, 1),
                                    "test_accuracy": read_json(repo, "reports/ensemble.json")["test_accuracy"]})
    return repo


def children_cpu_seconds() -> float:
    """CPU seconds of the finished commands this process ran (dvc and every stage it started): on
    shared cores, what the scenario costs apart from the other jobs' load."""
    times = os.times()
    return times.children_user + times.children_system


def record(tmp_path_factory, scenario: str, row: dict) -> None:
    """Adds a scenario's row to scenario_matrix.json in pytest's base temporary folder."""
    path = tmp_path_factory.getbasetemp() / "scenario_matrix.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    table[scenario] = table.get(scenario, {}) | row
    path.write_text(json.dumps(table, indent=1))


def read_json(repo: Path, path: str) -> dict:
    return json.loads((repo / path).read_text())


def assert_model_outputs(repo: Path, model: str, classes: list[str]) -> dict:
    """The evaluate@model outputs every scenario must have, every number recomputed from the saved
    probabilities (data/preds/MODEL.npz) of this checkpoint and the split's labels; returns report.json."""
    report = assert_report_matches_predictions(
        repo / "plots" / "eval" / model, repo / "data" / "preds" / f"{model}.npz", repo / "data" / "split", classes,
        checkpoint=repo / "models" / model / "model.pt", headline=repo / "metrics" / "eval" / f"{model}.json")
    for png in ("confusion.png", "confusion_normalized.png", "reliability.png", "tsne.png", "gradcam.png",
                "top_losses.png"):
        assert_png_figure(repo / "plots" / "eval" / model / png)
    # top-k only where it says something: k >= 2 and k < number of classes
    top_k = {int(k[3:-9]) for k in report if k.startswith("top") and k.endswith("_accuracy")}
    assert top_k == ({min(3, len(classes) - 1)} if len(classes) > 2 else set()), top_k
    return report


def assert_ensemble(repo: Path, members: list[str]) -> dict:
    """reports/ensemble.json's test accuracies, recomputed from the members' saved probabilities."""
    record = read_json(repo, "reports/ensemble.json")
    table = record["test_accuracy"]
    assert set(members) | set(VOTES) | {"oracle"} <= set(table)
    saved = [np.load(repo / "data" / "preds" / f"{m}.npz") for m in members]
    probs, y = np.stack([s["test_probs"] for s in saved]), saved[0]["test_labels"]
    val_accuracy = [float((s["val_probs"].argmax(axis=1) == s["val_labels"]).mean()) for s in saved]
    right = probs.argmax(axis=2) == y  # members x images
    assert [table[m] for m in members] == pytest.approx(right.mean(axis=1).tolist())
    assert table["oracle"] == pytest.approx(right.any(axis=0).mean())  # right when any member is
    assert table["soft_vote"] == pytest.approx((probs.mean(axis=0).argmax(axis=1) == y).mean())
    weighted = np.tensordot(np.array(val_accuracy) / sum(val_accuracy), probs, axes=1)
    assert table["weighted_vote"] == pytest.approx((weighted.argmax(axis=1) == y).mean())
    assert table["oracle"] >= max(table[m] for m in members)
    return table


def fashion_pngs(tmp_path: Path, classes: list[str], per_class: int) -> dict[str, list[Path]]:
    """Real Fashion-MNIST PNGs per class, through the fashion_mnist source."""
    from imgclass.config.params import parse_params
    from imgclass.data import sources

    params = parse_params({"classes": classes, "scrape": {"max_per_class": per_class},
                           "models": {"m": {"arch": "cnn_simple"}}})
    rows = sources.collect(params, tmp_path)
    return {c: sorted(tmp_path / r["path"] for r in rows if r["class"] == c) for c in classes}


def copy_tree(files_by_class: dict[str, list[Path]], root: Path) -> Path:
    for name, paths in files_by_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copy2(path, root / name / path.name)
    return root


