"""End to end: a copy of the repository, tiny params, the real `dvc repro`, experiments and MLflow."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import FOUR_CLASSES, PIPELINE_MODELS
from evaluation_checks import assert_png_figure, assert_report_matches_predictions
from scratch_repo import copy_finished, ran_stages, run
from test_plots_offline import chromium, drawn_charts, needs_chromium, needs_node_modules, offline_page
from test_plots_offline import chromium_installed, node_modules  # noqa: F401  (the fixtures those marks use)

MODELS = PIPELINE_MODELS  # conftest.finished_pipeline trains these
VOTES = ("soft_vote", "weighted_vote", "hard_vote", "oracle")
# Metric columns of `dvc exp show`: scrape (downloaded), validate (accepted), split (train, val, test,
# moved), review (flagged), ensemble (three votes, the oracle, chosen_vote), benchmark (best throughput),
# and per model metrics/eval/M.json (accuracy, macro_f1, ece, train_seconds).
FIXED_METRIC_COLUMNS, METRIC_COLUMNS_PER_MODEL = 13, 4
DEFAULT_MODELS = 3  # params.yaml
# `dvc plots show`: vega charts, namely the four training curves and the two throughputs (a line per model,
# per arch@device), the ensemble's bars, and per model its confusion, ROC and PR; images: the scrape's
# samples, and per model confusion_normalized, reliability, t-SNE, Grad-CAM and top losses.
COMBINED_CURVES = ("validation accuracy by epoch", "validation loss by epoch", "training loss by epoch",
                   "learning rate at the end of each epoch")
THROUGHPUTS = ("training throughput by batch size", "inference throughput by batch size")
FIXED_CHARTS, CHARTS_PER_MODEL = len(COMBINED_CURVES) + len(THROUGHPUTS) + 1, 3
FIXED_IMAGES, IMAGES_PER_MODEL = 1, 5

pytestmark = pytest.mark.slow


def mlflow_runs(repo: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(repo / "mlflow.db") as db:
        return db.execute("select name, status from runs").fetchall()


@pytest.fixture(scope="module")
def repo(finished_pipeline, tmp_path_factory):
    """This module's copy of conftest's finished_pipeline: the real `dvc repro` of MODELS, committed.
    The tests here add experiments to it (an_experiment reuses one or runs its own)."""
    return copy_finished(finished_pipeline, tmp_path_factory.mktemp("pipeline") / "repo")


def test_repro_produces_every_declared_output(repo):
    for model in MODELS:
        evaluation = json.loads((repo / "metrics" / "eval" / f"{model}.json").read_text())
        assert evaluation["accuracy"] > 0.4 and evaluation["train_seconds"] > 0  # 4 classes: chance is 0.25
        # models/M/model.pt is the checkpoint evaluated; every number of its report is recomputed from
        # its saved predictions and the split's labels (the metrics file's among them)
        report = assert_report_matches_predictions(
            repo / "plots" / "eval" / model, repo / "data" / "preds" / f"{model}.npz", repo / "data" / "split",
            FOUR_CLASSES, checkpoint=repo / "models" / model / "model.pt",
            headline=repo / "metrics" / "eval" / f"{model}.json")
        assert "top3_accuracy" in report
        assert_png_figure(repo / "plots" / "eval" / model / "confusion.png")
        # DVCLive's validation curve: a row per epoch trained
        tsv = (repo / "dvclive" / model / "plots" / "metrics" / "val" / "accuracy.tsv").read_text().splitlines()
        epochs_run = json.loads((repo / "metrics" / "train" / f"{model}.json").read_text())["epochs_run"]
        assert tsv[0].split("\t")[-1] == "accuracy" and len(tsv) == 1 + epochs_run
    ensemble = json.loads((repo / "metrics" / "ensemble.json").read_text())
    record = json.loads((repo / "reports" / "ensemble.json").read_text())  # what predict serves
    assert list(ensemble) == [*VOTES, "chosen_vote"] and ensemble["chosen_vote"] == record["chosen_vote"]
    assert ensemble["oracle"] == record["test_accuracy"]["oracle"] >= max(record["test_accuracy"][m] for m in MODELS)
    bench = json.loads((repo / "reports" / "benchmark.json").read_text())
    assert bench["devices"]["cpu"].startswith("CPU") and {r["batch_size"] for r in bench["rows"]} == {16, 32}
    assert json.loads((repo / "metrics" / "benchmark.json").read_text()) == {
        "best_train_images_per_s": max(r["train_images_per_s"] for r in bench["rows"])}
    curves = (repo / "plots" / "compare" / "curves.csv").read_text().splitlines()
    assert curves[0].startswith("epoch,model,val_accuracy,val_loss,train_accuracy,train_loss,lr")
    epochs = sum(json.loads((repo / "metrics" / "train" / f"{m}.json").read_text())["epochs_run"] for m in MODELS)
    assert len(curves) == 1 + epochs  # a row per model and epoch
    manifest = (repo / "data" / "raw" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 4 * 60
    split = json.loads((repo / "metrics" / "split.json").read_text())
    assert split["train"] + split["val"] + split["test"] == 4 * 60
    assert json.loads((repo / "reports" / "split.json").read_text())["added"] == 4 * 60
    assert json.loads((repo / "reports" / "scrape.json").read_text())["per_class"] == dict.fromkeys(
        sorted(FOUR_CLASSES), 60)
    assert json.loads((repo / "reports" / "validate.json").read_text())["accepted_per_class"] == dict.fromkeys(
        FOUR_CLASSES, 60)


def test_second_repro_is_a_no_op(repo):
    started = time.perf_counter()
    proc = run(["dvc", "repro"], repo)
    out = proc.stdout + proc.stderr
    # only the machine stage runs (always_changed); it rewrites the same file, so benchmark is skipped
    assert ran_stages(out) == {"machine"}
    assert "Stage 'benchmark' didn't change, skipping" in out
    assert run(["git", "status", "--porcelain"], repo).stdout.strip() == ""
    assert time.perf_counter() - started < 30


def test_changing_one_model_reruns_only_what_depends_on_it(repo):
    # `+` adds a key the file leaves to its default, as the README says
    proc = run(["dvc", "exp", "run", "-S", "models.cnn_simple.lr=0.02",
                "-S", "+models.cnn_simple.label_smoothing=0.05"], repo)
    out = proc.stdout + proc.stderr
    assert ran_stages(out) == {"machine", "train@cnn_simple", "evaluate@cnn_simple", "ensemble"}
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    experiment = shown[1]["experiments"][0]["revs"][0]["data"]
    changed = experiment["params"]["params.yaml"]["data"]["models"]["cnn_simple"]
    assert changed["lr"] == 0.02 and changed["label_smoothing"] == 0.05
    for metrics_file in ("metrics/eval/cnn_simple.json", "metrics/ensemble.json", "metrics/eval/cnn_medium.json"):
        assert metrics_file in experiment["metrics"]


def test_queued_experiment_is_tracked_in_the_main_mlflow_store(repo):
    before = mlflow_runs(repo)
    run(["dvc", "exp", "run", "--queue", "-S", "models.cnn_medium.epochs=2"], repo)
    run(["dvc", "exp", "run", "--run-all"], repo)
    after = mlflow_runs(repo)
    new = [r for r in after if r not in before]
    assert any(name.startswith("cnn_medium@") and status == "FINISHED" for name, status in new), after
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))


def metric_columns(data: dict) -> set[str]:
    """`path:key` (nested keys joined by dots) of every value in the metrics files of one
    `dvc exp show --json` revision: the metric columns of `dvc exp show`."""
    def leaves(value, name: str) -> set[str]:
        if isinstance(value, dict):
            return set().union(*(leaves(v, f"{name}.{k}") for k, v in value.items()))
        return {name}
    return set().union(*(leaves(v, f"{path}:{k}") for path, entry in (data.get("metrics") or {}).items()
                         for k, v in ((entry or {}).get("data") or {}).items()))


def test_exp_show_has_a_column_per_headline_number_only(repo):
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    revisions = [entry["data"] for entry in shown] + \
                [e["revs"][0]["data"] for entry in shown for e in entry.get("experiments") or []]
    columns = set().union(*map(metric_columns, revisions))
    assert len(columns) == FIXED_METRIC_COLUMNS + METRIC_COLUMNS_PER_MODEL * len(MODELS), sorted(columns)
    assert {f"metrics/eval/{m}.json:{k}" for m in MODELS for k in ("accuracy", "macro_f1", "ece", "train_seconds")} \
        <= columns
    assert FIXED_METRIC_COLUMNS + METRIC_COLUMNS_PER_MODEL * DEFAULT_MODELS <= 25


def plots_json(repo: Path, *command: str) -> dict:
    """`dvc plots ... --json`, refusing DVC's warning about plots it could not load."""
    proc = run(["dvc", "plots", *command, "--json"], repo)
    assert "failed to load" not in proc.stdout + proc.stderr, proc.stderr
    shown = json.loads(proc.stdout)
    assert not shown.get("errors"), shown["errors"]
    return shown["data"]


def series(plot: list[dict], field: str) -> dict[str, set[str]]:
    """{revision: values of `field`} in a rendered vega plot's data."""
    out: dict[str, set[str]] = {}
    for row in plot[0]["content"]["data"]["values"]:
        out.setdefault(row["rev"], set()).add(row[field])
    return out


def test_plots_show_draws_a_line_per_model_without_warnings(repo):
    plots = plots_json(repo, "show")
    vega = {name for name, items in plots.items() if items[0]["type"] == "vega"}
    images = {name for name, items in plots.items() if items[0]["type"] == "image"}
    assert len(vega) == FIXED_CHARTS + CHARTS_PER_MODEL * len(MODELS), sorted(vega)
    assert len(images) == FIXED_IMAGES + IMAGES_PER_MODEL * len(MODELS), sorted(images)
    for name in COMBINED_CURVES:
        assert list(series(plots[name], "model").values()) == [set(MODELS)], name  # one chart, a line per model
    for name in THROUGHPUTS:
        assert list(series(plots[name], "arch_device").values()) == [{"cnn_simple@cpu"}], name


def an_experiment(repo: Path) -> str:
    """The name of an experiment of HEAD (the module's earlier tests run some); one is run if none is."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    names = [e["name"] for entry in shown for e in entry.get("experiments") or [] if e.get("name")]
    if not names:
        run(["dvc", "exp", "run", "-n", "plots-lr", "-S", "models.cnn_simple.lr=0.02"], repo)
        return "plots-lr"
    return names[0]


def test_plots_diff_shows_both_revisions_in_the_combined_charts(repo):
    experiment = an_experiment(repo)
    plots = plots_json(repo, "diff", "HEAD", experiment)
    for name in COMBINED_CURVES:
        by_rev = series(plots[name], "model")
        assert len(by_rev) == 2 and all(models == set(MODELS) for models in by_rev.values()), (name, by_rev)


@needs_chromium
@needs_node_modules
def test_the_plots_page_draws_every_chart_offline(repo, tmp_path):
    """The real dvc.yaml's page in headless Chromium with no network; screenshots for people to look at."""
    page = offline_page(repo, "plots_page")
    dom = chromium(page, tmp_path, "--dump-dom")
    assert drawn_charts(dom) == FIXED_CHARTS + CHARTS_PER_MODEL * len(MODELS)
    assert all(f">{m}</text>" in dom for m in MODELS)  # legend entries (and the ensemble's bars)
    chromium(page, tmp_path, "--screenshot=/tmp/dvc_plots.png", "--window-size=1400,5200")
    diff = offline_page(repo, "plots_diff", "diff", "HEAD", an_experiment(repo))
    assert drawn_charts(chromium(diff, tmp_path, "--dump-dom")) == FIXED_CHARTS + CHARTS_PER_MODEL * len(MODELS)
    chromium(diff, tmp_path, "--screenshot=/tmp/dvc_plots_diff.png", "--window-size=1400,5200")
