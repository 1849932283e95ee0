"""Two classes end to end: a Fashion-MNIST pair (sneaker, bag) through evaluate, explain, ensemble,
predict, export and the registry. Binary used to crash evaluate (top-k with k=1 on 2 columns)."""

from __future__ import annotations

import base64
import runpy

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from conftest import REPO, make_split, require_fashion, tiny_params_dict
from evaluation_checks import assert_png_figure, assert_report_matches_predictions, average_precision
from imgclass import cli, files
from imgclass.evaluation import explain
from imgclass.model.checkpoint import load_trained
from imgclass.evaluation.evaluate import classification_metrics, predict_probs
from imgclass.data.image_cache import load_split

pytestmark = pytest.mark.slow  # two members trained and the evaluate, ensemble stages run: not `make test-fast`

PAIR = ["sneaker", "bag"]  # classes[1] = "bag" is the positive class
# min_steps 0: the epochs written (the default 100 steps made each member train 25 epochs on 4 batches)
MEMBERS = {"a": {"arch": "cnn_simple", "epochs": 8, "min_steps": 0, "batch_size": 16, "lr": 0.01},
           "b": {"arch": "cnn_simple", "epochs": 3, "min_steps": 0, "batch_size": 16, "lr": 0.005}}


def binary_params_dict() -> dict:
    raw = tiny_params_dict(classes=PAIR, models=MEMBERS)
    raw["scrape"]["max_per_class"] = 40
    return raw


def run_stage(script: str, *args: str) -> int:
    """A stage's main() in this process (the working directory is the project)."""
    return runpy.run_path(str(REPO / "stages" / script))["main"](*args)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder after train@a, train@b, evaluate@a, evaluate@b and ensemble on sneaker vs bag;
    the working directory stays inside it."""
    require_fashion()
    from imgclass.config.params import parse_params
    from imgclass.training.train import train

    root = tmp_path_factory.mktemp("binary")
    raw = binary_params_dict()
    params = parse_params(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    split_dir = make_split(params, root / "data")
    for name in MEMBERS:
        train(name, params, split_dir, root / "models" / name, root / "work" / name / "resume",
              root / "work" / name / "live", track=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        for name in MEMBERS:
            assert run_stage("evaluate.py", name) == 0
        assert run_stage("ensemble.py") == 0
        yield root


def test_binary_metrics_have_auc_ap_threshold_and_no_redundant_top_k(project):
    model, meta, prep = load_trained(project / "models" / "a" / "model.pt")
    x, y = load_split(project / "data" / "split", "test", meta["classes"], prep.image_size)
    probs = predict_probs(model, prep, x)
    metrics = classification_metrics(y, probs, meta["classes"])
    assert meta["classes"] == PAIR and metrics["positive_class"] == "bag" and metrics["threshold"] == 0.5
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
    assert metrics["average_precision"] == pytest.approx(average_precision(y, probs[:, 1]))
    assert not [k for k in metrics if k.startswith("top")]  # top-1 is the accuracy; top-2 of 2 is always 1
    # the threshold reported is the one the predictions use: p(bag) > 0.5 <=> argmax
    assert ((probs[:, 1] > 0.5) == (probs.argmax(axis=1) == 1)).all()


def test_evaluate_stage_writes_binary_metrics_curves_and_explanations(project):
    assert set(files.read_json(project / "metrics" / "eval" / "a.json")) == {"accuracy", "macro_f1", "ece",
                                                                            "train_seconds"}
    out = project / "plots" / "eval" / "a"
    report = scalars = files.read_json(out / "report.json")
    for name in MEMBERS:  # every number, recomputed from the saved probabilities and the split's labels
        assert_report_matches_predictions(
            project / "plots" / "eval" / name, project / "data" / "preds" / f"{name}.npz", project / "data" / "split",
            PAIR, checkpoint=project / "models" / name / "model.pt",
            headline=project / "metrics" / "eval" / f"{name}.json")
    assert {"accuracy", "val_accuracy", "roc_auc", "average_precision", "threshold"} <= set(scalars)
    assert not [k for k in scalars if k.startswith("top")]
    assert scalars["accuracy"] > 0.8  # sneaker vs bag is easy; chance is 0.5
    assert report["positive_class"] == "bag" and "positive class 'bag'" in (out / "report.txt").read_text()
    roc = files.read_csv(out / "roc.csv")
    assert list(roc[0]) == ["fpr", "tpr"]
    fpr, tpr = np.array([[float(r["fpr"]), float(r["tpr"])] for r in roc]).T
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    pr = files.read_csv(out / "pr.csv")
    assert list(pr[0]) == ["recall", "precision"] and float(pr[0]["recall"]) == 1
    # the curve CSVs agree with the AUC reported beside them
    assert np.trapezoid(tpr, fpr) == pytest.approx(scalars["roc_auc"], abs=1e-6)
    for png in ("roc", "pr", "confusion", "reliability", "tsne", "gradcam", "top_losses"):
        assert_png_figure(out / f"{png}.png")


def test_explanations_work_with_two_classes_and_six_images(project, tmp_path):
    model, meta, prep = load_trained(project / "models" / "a" / "model.pt")
    x, y = load_split(project / "data" / "split", "test", meta["classes"], prep.image_size)
    x, y = np.array(x[:6]), y[:6]
    probs = predict_probs(model, prep, x)
    written = [explain.tsne_png(explain.penultimate_features(model, prep, x), y, PAIR, tmp_path / "tsne.png"),
               explain.gradcam_png(model, prep, x, y, probs, PAIR, tmp_path / "gradcam.png"),
               explain.top_losses_png(x, y, probs, PAIR, tmp_path / "top_losses.png"),
               explain.tsne_png(explain.penultimate_features(model, prep, x[:1]), y[:1], PAIR, tmp_path / "one.png")]
    for path in written:
        assert_png_figure(path)


def test_ensemble_stage_chooses_the_vote_on_validation(project):
    result = files.read_json(project / "reports" / "ensemble.json")
    assert set(result["members"]) == {"a", "b"} and result["chosen_vote"] in ("soft_vote", "weighted_vote", "hard_vote")
    best_on_val = max(result["val_accuracy"][v] for v in ("soft_vote", "weighted_vote", "hard_vote"))
    assert result["val_accuracy"][result["chosen_vote"]] == best_on_val
    assert result["accuracy"] == result["test_accuracy"][result["chosen_vote"]]
    assert set(result["checkpoints"]) == {"a", "b"}
    rows = files.read_csv(project / "plots" / "ensemble" / "comparison.csv")
    assert [r["method"] for r in rows] == ["a", "b", "soft_vote", "weighted_vote", "hard_vote", "oracle"]


def test_predict_and_export_with_two_classes(project, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from imgclass.serving.export import export_model

    rows = files.read_csv(project / "data" / "split" / "test.csv")[:4]
    pngs = [project / "data" / "clean" / r["path"] for r in rows]
    assert cli.main(["predict", *map(str, pngs), "--top-k", "5", "--out", str(tmp_path / "p.json")]) == 0
    predicted = files.read_json(tmp_path / "p.json")
    assert all(r["status"] == "ok" and len(r["top_k"]) == 2 for r in predicted)
    assert sum(r["prediction"] == label for r, label in zip(predicted, [r["label"] for r in rows])) >= 3

    model, _, prep = load_trained(project / "models" / "a" / "model.pt")
    images, _ = load_split(project / "data" / "split", "test", PAIR, 28)
    images = np.array(images[:5])
    expected = predict_probs(model, prep, images)
    onnx_file = export_model(project / "models" / "a" / "model.pt", "onnx", tmp_path / "a.onnx")
    x = prep.normalize(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    got = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert got.shape == (5, 2)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_registered_binary_ensemble_predicts_like_the_evaluated_vote(project):
    import mlflow

    from imgclass.evaluation import ensemble

    from imgclass.serving import registry
    from imgclass.evaluation.evaluate import SavedPredictions

    version = registry.register("ensemble", "binary-test")
    loaded = mlflow.pyfunc.load_model(registry.registered_uri(version))
    rows = files.read_csv(project / "data" / "split" / "test.csv")
    images = [base64.b64encode((project / "data" / "clean" / r["path"]).read_bytes()).decode() for r in rows]
    out = loaded.predict(pd.DataFrame({"image": images}))
    spec = ensemble.read_spec(project / "reports" / "ensemble.json")
    saved = [SavedPredictions.load(project / "data" / "preds" / f"{m}.npz") for m in spec.members]
    _, voted = spec.apply(np.stack([s.test_probs for s in saved]))
    assert list(out["status"]) == ["ok"] * len(rows)
    assert list(out["class"]) == [PAIR[i] for i in voted]
    assert all(set(p) == set(PAIR) for p in out["probabilities"])


def test_benchmark_and_lr_find_run_with_two_classes(project, tmp_path):
    from imgclass.benchmarking import benchmark
    from imgclass.training.lr_find import suggest
    from imgclass.config.params import load_params

    params = load_params(project / "params.yaml")
    images, labels = load_split(project / "data" / "split", "train", PAIR, params.image_size)
    row = benchmark.measure("cnn_simple", benchmark.Preprocessing(28, 28), images, labels, 2, 8,
                            torch.device("cpu"), n_images=16, warmup=0, repeats=1)
    assert row["train_images_per_s"] > 0 and row["infer_images_per_s"] > 0
    assert cli.main(["lr-find", "a", "--params", str(project / "params.yaml"), "--steps", "12",
                     "--split-dir", str(project / "data" / "split"), "--out", str(tmp_path / "lr.png")]) == 0
    found = files.read_json(tmp_path / "lr.json")  # beside the plot: the rates, the losses, the suggestion
    assert len(found["lrs"]) == len(found["losses"]) and found["suggestion"] in found["lrs"]
    assert found["suggestion"] == suggest(found["lrs"], found["losses"])
    assert params.classes == PAIR
