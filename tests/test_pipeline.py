"""End to end: a copy of the repository, tiny params, the real `dvc repro`, experiments and MLflow."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import require_fashion, tiny_params_dict
from scratch_repo import make_repo, ran_stages, run

pytestmark = pytest.mark.slow


def mlflow_runs(repo: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(repo / "mlflow.db") as db:
        return db.execute("select name, status from runs").fetchall()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    require_fashion()
    raw = tiny_params_dict()
    raw["models"] = {"cnn_simple": {"arch": "cnn_simple", "epochs": 3, "batch_size": 32, "lr": 0.01},
                     "cnn_medium": {"arch": "cnn_medium", "epochs": 3, "batch_size": 32, "lr": 0.01}}
    repo = make_repo(tmp_path_factory.mktemp("pipeline"), raw)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "first run"], repo)
    return repo


def test_repro_produces_every_declared_output(repo):
    for model in ("cnn_simple", "cnn_medium"):
        assert (repo / "models" / model / "model.pt").exists()
        evaluation = json.loads((repo / "metrics" / "eval" / f"{model}.json").read_text())
        assert evaluation["n"] > 0 and evaluation["accuracy"] > 0.4  # 4 classes: chance is 0.25
        assert (repo / "plots" / "eval" / model / "confusion.png").stat().st_size > 1000
        assert (repo / "dvclive" / model / "plots" / "metrics" / "val" / "accuracy.tsv").exists()
    ensemble = json.loads((repo / "metrics" / "ensemble.json").read_text())
    assert set(ensemble["test_accuracy"]) >= {"hard_vote", "soft_vote", "weighted_vote", "oracle"}
    assert ensemble["test_accuracy"]["oracle"] >= max(ensemble["test_accuracy"][m] for m in ("cnn_simple", "cnn_medium"))
    bench = json.loads((repo / "metrics" / "benchmark.json").read_text())
    assert bench["devices"]["cpu"].startswith("CPU") and {r["batch_size"] for r in bench["rows"]} == {16, 32}
    manifest = (repo / "data" / "raw" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 4 * 60
    split = json.loads((repo / "metrics" / "split.json").read_text())
    assert split["train"] + split["val"] + split["test"] == 4 * 60


def test_second_repro_is_a_no_op(repo):
    started = time.perf_counter()
    proc = run(["dvc", "repro"], repo)
    out = proc.stdout + proc.stderr
    assert "Data and pipelines are up to date" in out
    assert "Running stage" not in out
    assert time.perf_counter() - started < 30


def test_changing_one_model_reruns_only_what_depends_on_it(repo):
    # `+` adds a key the file leaves to its default, as the README says
    proc = run(["dvc", "exp", "run", "-S", "models.cnn_simple.lr=0.02",
                "-S", "+models.cnn_simple.label_smoothing=0.05"], repo)
    out = proc.stdout + proc.stderr
    assert ran_stages(out) == {"train@cnn_simple", "evaluate@cnn_simple", "ensemble"}
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    experiment = shown[1]["experiments"][0]["revs"][0]["data"]
    changed = experiment["params"]["params.yaml"]["data"]["models"]["cnn_simple"]
    assert changed["lr"] == 0.02 and changed["label_smoothing"] == 0.05
    for metrics_file in ("metrics/eval/cnn_simple.json", "metrics/ensemble.json", "metrics/train/cnn_medium.json"):
        assert metrics_file in experiment["metrics"]


def test_queued_experiment_is_tracked_in_the_main_mlflow_store(repo):
    before = mlflow_runs(repo)
    run(["dvc", "exp", "run", "--queue", "-S", "models.cnn_medium.epochs=2"], repo)
    run(["dvc", "exp", "run", "--run-all"], repo)
    after = mlflow_runs(repo)
    new = [r for r in after if r not in before]
    assert any(name.startswith("cnn_medium@") and status == "FINISHED" for name, status in new), after
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))
