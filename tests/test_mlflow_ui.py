"""`make ui` in a browser: the runs page lists each pipeline run with its ensemble accuracy.

The store is built by the real tracking code (two training runs, their test accuracy as the evaluate
stage attaches it, the ensemble's result on the pipeline run); the UI is `make ui` on a free port; the
page is driven like a user would, in headless Chromium over the DevTools protocol (on a pipe: no
extra package, no port). The screenshot lands in the test's tmp dir and in /tmp/mlflow_ui.png.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from PIL import Image

from chromium import CHROMIUM, Chromium, free_port
from conftest import REPO, require
from imgclass.tracking import mlflow_runs

SCREENSHOT_COPY = Path("/tmp/mlflow_ui.png")
ENSEMBLE = {"accuracy": 0.875, "chosen_vote": "soft_vote",
            "test_accuracy": {"cnn_a": 0.8125, "cnn_b": 0.75, "hard_vote": 0.8125, "soft_vote": 0.875,
                              "weighted_vote": 0.875, "oracle": 0.9375}}

pytestmark = pytest.mark.slow


def build_store(project: Path) -> tuple[str, str]:
    """A committed project, two training runs with their test accuracy, the ensemble on their
    pipeline run, in the store tracking resolves. Returns (experiment id, pipeline run name)."""
    (project / ".dvc").mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump({"seed": 0, "models": {"cnn_a": {"lr": 0.01},
                                                                              "cnn_b": {"lr": 0.02}}}))
    for cmd in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "baseline"]):
        subprocess.run(["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", *cmd], cwd=project, check=True)
    split = project / "data" / "split"
    split.mkdir(parents=True)
    for name, n in (("train", 12), ("val", 4), ("test", 4)):
        rows = [f"{c}/{i}.png,{c},{c}{i},{c}{i}" for c in ("bag", "dress") for i in range(n)]
        (split / f"{name}.csv").write_text("\n".join(["path,label,sha256,group", *rows]) + "\n")
    for model in ("cnn_a", "cnn_b"):
        tracker = mlflow_runs.Tracker(model, {"lr": 0.01}, project / "dvclive" / model, split_dir=split)
        for epoch in range(3):
            tracker.log_epoch(epoch, {"train_loss": 1 / (epoch + 1), "val_accuracy": 0.5 + epoch / 10})
        tracker.close()
        mlflow_runs.log_to_run(tracker.run.info.run_id, {"test_accuracy": ENSEMBLE["test_accuracy"][model]}, [])
    plot = project / "comparison.png"
    Image.new("RGB", (64, 32), "white").save(plot)
    parent_id = mlflow_runs.log_pipeline_result(ENSEMBLE, [plot])
    import mlflow

    parent = mlflow.MlflowClient().get_run(parent_id)
    return parent.info.experiment_id, parent.info.run_name


@contextlib.contextmanager
def make_ui(store_uri: str, artifacts: Path, log: Path):
    """`make ui` serving `store_uri` on a free port; yields its base URL."""
    port = free_port()
    # -o setup: the venv is there already; the recipe itself is what `make ui` runs.
    server = subprocess.Popen(["make", "-s", "-C", str(REPO), "-o", "setup", "ui", f"UI_PORT={port}",
                               f"UI_STORE={store_uri}", f"UI_ARTIFACTS={artifacts}"], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):  # it exited already: wait_until_up says why
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def enter_project(project: Path, monkeypatch) -> None:
    """`project` as the cwd of a stage, with no tracking settings from the caller's environment."""
    project.mkdir()
    monkeypatch.chdir(project)
    for name in ("MLFLOW_TRACKING_URI", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def needs_tools():
    require(CHROMIUM.exists(), "/usr/bin/chromium (Debian's chromium)")
    require(shutil.which("make") is not None, "make")


@pytest.fixture
def ui(tmp_path, monkeypatch, needs_tools):
    """(base URL, experiment id, pipeline run name): `make ui` serving a store built in a project."""
    enter_project(tmp_path / "project", monkeypatch)
    experiment_id, run_name = build_store(tmp_path / "project")
    with make_ui(mlflow_runs.tracking_uri(), tmp_path / "served-artifacts", tmp_path / "ui.log") as url:
        yield url, experiment_id, run_name


def wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"make ui exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"make ui did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def row_cells_js(run_name: str) -> str:
    """JS for {column id: text} of the runs-table row of `run_name` (ag-grid splits a row into pinned
    and scrolling parts that share a row-index); {} while the row is not drawn."""
    return f"""(() => {{
        const link = [...document.querySelectorAll('.ag-row a')].find(a => a.innerText.trim() === {json.dumps(run_name)});
        if (!link) return {{}};
        const index = link.closest('.ag-row').getAttribute('row-index');
        const cells = document.querySelectorAll(`.ag-row[row-index="${{index}}"] .ag-cell`);
        return Object.fromEntries([...cells].map(c => [c.getAttribute('col-id'), c.innerText.trim()]));
    }})()"""


def metric_cell(cells: dict[str, str], metric: str) -> list[str]:
    return [text for column, text in cells.items() if column and column.startswith("metrics.") and metric in column]


def test_runs_page_lists_the_pipeline_run_with_its_ensemble_accuracy(ui, tmp_path):
    url, experiment_id, run_name = ui
    browser = Chromium(tmp_path / "chromium-profile", 1800, 900)
    try:
        browser.call("Page.navigate", url=f"{url}/#/experiments/{experiment_id}/runs")
        browser.wait_for(f"document.querySelector('.ag-row') && document.body.innerText.includes({json.dumps(run_name)})")
        assert "Training runs" in browser.js("document.body.innerText")  # the experiment opens as model training
        # As a user would: close the assistant panel, add the metric column, unfold the pipeline run.
        browser.click("button[aria-label='Close']")
        browser.click("button", "Columns")
        browser.click("[role=dialog] span", "test_accuracy")
        browser.press_escape()
        browser.click(".ag-row [col-id='attributes.`Run Name`'] button")
        browser.wait_for(f"Object.values({row_cells_js('cnn_b')}).includes('0.75')")
        parent = browser.wait_for(f"(r => Object.values(r).includes('0.875') && r)({row_cells_js(run_name)})")
        members = {name: browser.js(row_cells_js(name)) for name in ("cnn_a", "cnn_b")}
        shot = tmp_path / "mlflow_ui.png"
        browser.screenshot(shot)
        shutil.copy(shot, SCREENSHOT_COPY)
    finally:
        browser.close()
    assert metric_cell(parent, "test_accuracy") == ["0.875"], parent
    assert metric_cell(members["cnn_a"], "test_accuracy") == ["0.8125"], members
    assert members["cnn_a"]["attributes.`Dataset`"].startswith("data/split"), members  # the input dataset
    assert shot.stat().st_size > 20_000


def test_with_MLFLOW_TRACKING_URI_every_run_goes_to_the_shared_server(tmp_path, monkeypatch, needs_tools):
    """The README's team setup: a server (here `make ui` on an empty store) and MLFLOW_TRACKING_URI."""
    import mlflow

    served_artifacts = tmp_path / "served-artifacts"
    with make_ui(f"sqlite:///{tmp_path / 'server.db'}", served_artifacts, tmp_path / "ui.log") as url:
        enter_project(tmp_path / "clone", monkeypatch)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        experiment_id, run_name = build_store(tmp_path / "clone")
        client = mlflow.MlflowClient(url)
        parent = client.search_runs([experiment_id], f"attributes.run_name = '{run_name}'")[0]
        children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert sorted(r.info.run_name for r in children) == ["cnn_a", "cnn_b"]
        assert parent.data.metrics["test_accuracy"] == 0.875
        assert parent.info.artifact_uri.startswith("mlflow-artifacts:")  # stored by the server, for everyone
        assert [f.path for f in client.list_artifacts(parent.info.run_id, "ensemble")] == ["ensemble/comparison.png"]
    assert list(served_artifacts.rglob("comparison.png"))
    assert not (tmp_path / "clone" / "mlflow.db").exists() and not (tmp_path / "clone" / "mlartifacts").exists()
