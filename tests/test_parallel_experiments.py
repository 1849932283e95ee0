"""Two queued experiments run at once (`dvc queue start -j 2`) in a scratch copy of the project: both
finish, both land complete in the main repository's mlflow.db, and `imgclass compare` puts them
side by side within 120 columns."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scratch_repo import copy_finished, run

pytestmark = pytest.mark.slow
EXPERIMENTS = {"fast-lr": "models.cnn_simple.lr=0.03", "medium-2ep": "models.cnn_medium.epochs=2"}


def wait_for_queue(repo: Path, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not any(state in status for state in ("Queued", "Running")):
            return status
        time.sleep(3)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


@pytest.fixture(scope="module")
def repo(finished_pipeline, tmp_path_factory):
    """A copy of conftest's finished_pipeline (the committed baseline of cnn_simple and cnn_medium, shared
    with test_pipeline) with both EXPERIMENTS run at once from the queue."""
    repo = copy_finished(finished_pipeline, tmp_path_factory.mktemp("parallel") / "repo")
    for name, change in EXPERIMENTS.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", change], repo)
    run(["dvc", "queue", "start", "-j", "2"], repo)
    status = wait_for_queue(repo)
    logs = {name: run(["dvc", "queue", "logs", name], repo, check=False).stdout[-3000:] for name in EXPERIMENTS}
    assert status.count("Success") == len(EXPERIMENTS), f"{status}\n" + "\n".join(logs.values())
    return repo


def store(repo: Path) -> sqlite3.Connection:
    return sqlite3.connect(repo / "mlflow.db")


def runs_by_name(db: sqlite3.Connection) -> dict[str, dict]:
    rows = db.execute("""select r.name, r.run_uuid, r.status,
                                (select value from tags t where t.run_uuid = r.run_uuid and t.key = 'mlflow.parentRunId')
                         from runs r""").fetchall()
    return {name: {"id": run_id, "status": status, "parent": parent} for name, run_id, status, parent in rows}


def test_both_queued_experiments_land_complete_in_the_main_store(repo):
    baseline = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    experiments = {e["name"]: e["revs"][0]["rev"] for e in shown[1]["experiments"]}
    with store(repo) as db:
        runs = runs_by_name(db)
        for name, model in (("fast-lr", "cnn_simple"), ("medium-2ep", "cnn_medium")):
            parent, child = runs[f"{name}@{baseline[:7]}"], runs[f"{model}@{name}"]
            assert child["parent"] == parent["id"] and child["status"] == "FINISHED", runs
            # the training summary is an ordinary output (not a metric), committed with the experiment
            summary = run(["git", "show", f"{experiments[name]}:metrics/train/{model}.json"], repo).stdout
            epochs = json.loads(summary)["epochs_run"]
            steps = db.execute("select step from metrics where run_uuid = ? and key = 'val_accuracy' order by step",
                               (child["id"],)).fetchall()
            assert [s for (s,) in steps] == list(range(epochs))  # every epoch of both parallel runs landed
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))  # nothing stranded in the temp copies


def test_compare_prints_both_experiments_within_120_columns(repo):
    proc = subprocess.run([sys.executable, "-m", "imgclass.tracking.compare"], cwd=repo, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(map(len, lines)) <= 120, proc.stdout
    assert lines[0].split() == ["experiment", "changed", "params", "cnn_simple", "cnn_medium", "hard", "soft",
                                "weighted", "oracle", "time"], proc.stdout
    for name, change in EXPERIMENTS.items():
        row = next(line for line in lines if line.strip().startswith(name))
        assert change.removeprefix("models.") in row
        cells = row.split()[-7:]
        assert all(0 < float(c.rstrip("*")) <= 1 for c in cells[:-1]), row  # members, votes, oracle
        assert cells[-1].endswith("s"), row                                 # training time
    assert sum("*" in line for line in lines[2:]) >= 3  # the chosen vote, in every finished row
