import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from imgclass.tracking import mlflow_runs
from imgclass.tracking.mlflow_runs import flatten, main_repo_root, tracking_uri


def test_experiment_copies_resolve_to_the_main_repository(tmp_path):
    (tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc123").mkdir(parents=True)
    assert main_repo_root(tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc123") == tmp_path
    assert main_repo_root(tmp_path / ".dvc" / "tmp" / "exps" / "tmpxyz" / "sub") == tmp_path


def test_workspace_resolves_to_the_nearest_repository(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "stages").mkdir()
    assert main_repo_root(tmp_path / "stages") == tmp_path
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path / "stages") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_flatten_nested_params():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


# ---------------------------------------------------------------- MLflow: experiment, pipeline run, dataset


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", *args], cwd=repo, check=True,
                   capture_output=True)


def write_split(split_dir: Path, counts: dict[str, dict[str, int]]) -> None:
    """data/split/<split>.csv with `counts[split][class]` rows each."""
    split_dir.mkdir(parents=True, exist_ok=True)
    for split, per_class in counts.items():
        rows = [f"{c}/{i}.png,{c},{c}{i},{c}{i}" for c, n in per_class.items() for i in range(n)]
        (split_dir / f"{split}.csv").write_text("\n".join(["path,label,sha256,group", *rows]) + "\n")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A committed repository with params.yaml and a split, as the cwd of a stage; the default store."""
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"seed": 1, "models": {"a": {"lr": 0.1}, "b": {"lr": 0.2}}}))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "params.yaml")
    git(tmp_path, "commit", "-qm", "baseline")
    write_split(tmp_path / "data" / "split", {"train": {"bag": 3, "dress": 2}, "val": {"bag": 1, "dress": 1}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def client():
    import mlflow

    mlflow.set_tracking_uri(mlflow_runs.tracking_uri())
    return mlflow.MlflowClient()


def train_runs(models: list[str], epochs: int = 2) -> list[str]:
    ids = []
    for name in models:
        tracker = mlflow_runs.Tracker(name, {"lr": 0.1}, Path("dvclive") / name, split_dir=Path("data/split"))
        for epoch in range(epochs):
            tracker.log_epoch(epoch, {"val_accuracy": 0.5 + epoch / 10})
        tracker.close()
        ids.append(tracker.run.info.run_id)
    return ids


def test_the_experiment_is_created_and_marked_as_model_training(project):
    mlflow_runs.use_experiment()
    c = client()
    assert c.get_experiment_by_name("imgclass").tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_experiment_created_by_another_client_since_the_lookup_is_used(project):
    """Two machines starting at once on one tracking server: both find no experiment, one creates it,
    and the other's create is refused (RESOURCE_ALREADY_EXISTS); the other then uses it."""
    mlflow_runs.connect()
    theirs = client().create_experiment("imgclass", tags={"mlflow.experimentKind": "custom_model_development"})
    assert mlflow_runs._create_training_experiment() == theirs


def test_an_existing_experiment_without_a_kind_gets_the_training_kind(project):
    c = client()
    c.create_experiment("imgclass")
    assert "mlflow.experimentKind" not in c.get_experiment_by_name("imgclass").tags
    mlflow_runs.use_experiment()
    assert c.get_experiment_by_name("imgclass").tags["mlflow.experimentKind"] == "custom_model_development"


def test_training_runs_of_one_pipeline_run_nest_under_a_parent_that_holds_the_ensemble(project, monkeypatch):
    (project / "params.yaml").write_text(yaml.safe_dump({"seed": 1, "models": {"a": {"lr": 0.1}, "b": {"lr": 0.3}}}))
    (project / "comparison.png").write_bytes(b"\x89PNG fake bytes")
    children = train_runs(["a", "b"])  # two stage processes in a real pipeline; the same key either way
    metrics = {"accuracy": 0.875, "chosen_vote": "soft_vote",
               "test_accuracy": {"a": 0.75, "b": 0.8, "hard_vote": 0.8, "soft_vote": 0.875, "oracle": 0.95}}
    parent_id = mlflow_runs.log_pipeline_result(metrics, [project / "comparison.png"])

    c = client()
    parent = c.get_run(parent_id)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert parent.info.run_name == f"workspace@{commit[:7]}"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test_accuracy.soft_vote"] == 0.875 and parent.data.metrics["test_accuracy.oracle"] == 0.95
    assert parent.data.metrics["accuracy"] == 0.875
    assert parent.data.metrics["test_accuracy"] == 0.875  # the chosen vote, in the models' column
    assert parent.data.tags["ensemble.chosen_vote"] == "soft_vote"
    assert parent.data.params == {"models.b.lr": "0.3"}  # only what differs from the committed params.yaml
    assert [f.path for f in c.list_artifacts(parent_id, "ensemble")] == ["ensemble/comparison.png"]
    assert [c.get_run(i).data.tags["mlflow.parentRunId"] for i in children] == [parent_id, parent_id]
    runs = c.search_runs([parent.info.experiment_id])
    assert len(runs) == 3  # one parent, two children: the second stage found the parent


def test_a_dvc_experiment_gets_its_own_parent_named_after_it(project, monkeypatch):
    baseline = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    workspace_child, = train_runs(["a"])
    monkeypatch.setenv("DVC_EXP_NAME", "sunny-mole")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", baseline)
    exp_child, = train_runs(["a"])
    c = client()
    parents = [c.get_run(c.get_run(i).data.tags["mlflow.parentRunId"]) for i in (workspace_child, exp_child)]
    assert [p.info.run_name for p in parents] == [f"workspace@{baseline[:7]}", f"sunny-mole@{baseline[:7]}"]
    assert c.get_run(exp_child).info.run_name == "a@sunny-mole"


def test_a_training_run_records_its_split_as_input_dataset(project):
    run_id, = train_runs(["a"])
    inputs = client().get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "data/split"
    assert dataset.digest == mlflow_runs.split_digest(Path("data/split"))
    assert json.loads(dataset.profile) == {"images": 7, "train.bag": 3, "train.dress": 2, "val.bag": 1, "val.dress": 1}
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"


def test_the_split_digest_changes_with_any_split_file(tmp_path):
    write_split(tmp_path, {"train": {"bag": 3}, "val": {"bag": 1}})
    before = mlflow_runs.split_digest(tmp_path)
    write_split(tmp_path, {"train": {"bag": 3}, "val": {"bag": 2}})
    assert mlflow_runs.split_digest(tmp_path) != before


# ---------------------------------------------------------------- parallel experiments, one sqlite store

WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from imgclass.tracking import mlflow_runs

    exp, epochs = sys.argv[1], int(sys.argv[2])
    for model in ("a", "b"):
        tracker = mlflow_runs.Tracker(model, {"lr": 0.1}, Path("dvclive") / exp / model, split_dir=Path("data/split"))
        for epoch in range(epochs):
            tracker.log_epoch(epoch, {"val_accuracy": epoch / epochs, "train_loss": 1 - epoch / epochs})
        tracker.log_summary({"val_accuracy": 1.0})
        tracker.close()
    mlflow_runs.log_pipeline_result({"accuracy": 0.5, "test_accuracy": {"soft_vote": 0.5}}, [])
""")


@pytest.mark.slow  # four real processes racing on one sqlite store: about a minute on 2 cores
def test_parallel_pipeline_runs_all_land_complete_in_one_sqlite_store(project):
    """Real processes on a fresh store (schema creation races too), as `dvc queue start -j N` runs them."""
    experiments, epochs = [f"exp-{i}" for i in range(4)], 15
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, exp, str(epochs)], cwd=project,
                              env={**env, "DVC_EXP_NAME": exp}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for exp in experiments]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), "\n".join(o[-2000:] for o in outputs)

    c = client()
    runs = c.search_runs([c.get_experiment_by_name("imgclass").experiment_id], max_results=1000)
    parents = {r.info.run_name.split("@")[0]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(parents) == experiments
    for exp, parent in parents.items():
        assert parent.data.metrics["test_accuracy.soft_vote"] == 0.5
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.info.run_name for r in children) == [f"a@{exp}", f"b@{exp}"]
        for child in children:
            assert child.info.status == "FINISHED"
            for metric in ("val_accuracy", "train_loss"):
                assert [m.step for m in c.get_metric_history(child.info.run_id, metric)] == list(range(epochs))
            assert child.data.metrics["best_val_accuracy"] == 1.0
            assert len(child.inputs.dataset_inputs) == 1


def test_a_write_refused_by_a_foreign_sqlite_lock_is_retried_until_it_lands(tmp_path, monkeypatch):
    """Another program (the UI, the registry) holds sqlite's write lock; our write waits it out."""
    import sqlite3
    import threading

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    sqlite3.connect(tmp_path / "store.db").execute("create table t (x)").connection.commit()
    holder = sqlite3.connect(tmp_path / "store.db", check_same_thread=False)
    holder.execute("begin exclusive")
    threading.Timer(1.0, holder.commit).start()
    attempts = []

    def write() -> None:
        attempts.append(time.monotonic())
        with sqlite3.connect(tmp_path / "store.db", timeout=0) as db:  # fail at once, as a busy store would
            db.execute("insert into t values (1)")

    mlflow_runs.locked_write(write, first_wait=0.1)
    assert len(attempts) > 1  # refused at first, then retried
    assert sqlite3.connect(tmp_path / "store.db").execute("select count(*) from t").fetchone() == (1,)


# What a tracking server answered the machine that lost the race (test_tracking_server's two machines).
LOST_RACE = ("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, "
             "datasets.digest\n[SQL: INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, "
             "dataset_source_type, dataset_source, dataset_schema, dataset_profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?)]")


def test_a_dataset_another_machine_inserted_first_is_linked_on_the_retry(tmp_path, monkeypatch):
    """Two machines log the same split into one server at once: the loser's insert breaks the unique
    key; the retry finds the winner's dataset and links its own run to it."""
    import mlflow
    from mlflow.exceptions import RestException

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    split = tmp_path / "split"
    split.mkdir()
    for name, rows in {"train": 3, "val": 1, "test": 1}.items():
        (split / f"{name}.csv").write_text("path,label\n" + "".join(f"a/{name}{i}.png,a\n" for i in range(rows)))
    mlflow.set_experiment("race")
    with mlflow.start_run() as winner:
        mlflow_runs.log_dataset_input(mlflow_runs.split_dataset(split))
    attempts = []

    def log_as_the_loser() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RestException({"error_code": "BAD_REQUEST", "message": LOST_RACE})
        mlflow_runs.log_dataset_input(mlflow_runs.split_dataset(split))

    with mlflow.start_run() as loser:
        mlflow_runs.locked_write(log_as_the_loser, first_wait=0.01)
    assert len(attempts) == 2
    client = mlflow.MlflowClient()
    digests = [[d.dataset.digest for d in client.get_run(r.info.run_id).inputs.dataset_inputs] for r in (winner, loser)]
    assert digests[0] == digests[1] and len(digests[0]) == 1  # one dataset row, both runs linked to it


def test_a_unique_key_broken_elsewhere_is_a_real_conflict_not_a_race():
    assert mlflow_runs.is_retryable_write_error(RuntimeError(LOST_RACE))
    other = LOST_RACE.replace("INSERT INTO datasets", "INSERT INTO experiments")
    assert not mlflow_runs.is_retryable_write_error(RuntimeError(other))
    postgres = 'duplicate key value violates unique constraint "uq_dataset"\n[SQL: INSERT INTO datasets (...)]'
    assert mlflow_runs.is_retryable_write_error(ValueError("wrapped")) is False
    wrapped = ValueError("wrapped")
    wrapped.__cause__ = RuntimeError(postgres)
    assert mlflow_runs.is_retryable_write_error(wrapped)


def test_errors_other_than_a_locked_store_are_not_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    attempts = []

    def broken() -> None:
        attempts.append(1)
        raise ValueError("bad metric")

    with pytest.raises(ValueError):
        mlflow_runs.locked_write(broken)
    assert attempts == [1]
