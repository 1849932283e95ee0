"""Scenario 1: two classes, the "is it a bird?" case; predict and export on the result (tests/scenarios.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require_fashion
from scenarios import assert_ensemble, assert_model_outputs, cnn, fashion_params, read_json, repro
from scratch_repo import run

from imgclass.files import read_csv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    require_fashion()
    return repro(tmp_path_factory, "binary", fashion_params(["sneaker", "bag"], 60, {"cnn_simple": cnn(4)}))


def test_binary_evaluation_reports_roc_and_pr(binary):
    for model in ("cnn_simple",):
        scalars = assert_model_outputs(binary, model, ["sneaker", "bag"])
        assert scalars["accuracy"] > 0.8  # sneaker vs bag is easy
        assert 0.8 < scalars["roc_auc"] <= 1 and 0.5 < scalars["average_precision"] <= 1
        report = read_json(binary, f"plots/eval/{model}/report.json")
        assert report["positive_class"] == "bag" and report["threshold"] == 0.5
        # the curves DVC draws are those of the numbers reported beside them
        roc = read_csv(binary / "plots" / "eval" / model / "roc.csv")
        fpr, tpr = np.array([[float(r["fpr"]), float(r["tpr"])] for r in roc]).T
        assert list(roc[0]) == ["fpr", "tpr"] and (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
        assert np.trapezoid(tpr, fpr) == pytest.approx(scalars["roc_auc"], abs=1e-6)
        pr = read_csv(binary / "plots" / "eval" / model / "pr.csv")
        recall, precision = np.array([[float(r["recall"]), float(r["precision"])] for r in pr]).T
        assert list(pr[0]) == ["recall", "precision"] and (recall[0], recall[-1]) == (1, 0)
        # average precision is the step sum of the curve: precision times each drop of recall
        assert -(np.diff(recall) * precision[:-1]).sum() == pytest.approx(scalars["average_precision"], abs=1e-6)
    assert_ensemble(binary, ["cnn_simple"])
    assert read_json(binary, "metrics/benchmark.json")  # the whole DAG, benchmark included


def test_binary_predict_and_export(binary):
    folder = binary / "data" / "clean" / "bag"
    out = binary / "preds.json"
    run(["imgclass", "predict", str(folder), "--out", str(out)], binary)
    rows = json.loads(out.read_text())
    predicted = [r["prediction"] for r in rows]
    assert len(rows) == len(list(folder.glob("*.png"))) and predicted.count("bag") / len(rows) > 0.8
    run(["imgclass", "export", "cnn_simple", "--format", "onnx"], binary)
    meta = json.loads((binary / "exports" / "cnn_simple.json").read_text())
    assert meta["classes"] == ["sneaker", "bag"] and meta["output"]["shape"] == ["batch", 2]


