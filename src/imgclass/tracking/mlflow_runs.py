"""The one place that talks to MLflow and DVCLive.

MLflow's store defaults to `sqlite:///<main repo>/mlflow.db` with artifacts in `<main repo>/mlartifacts`.
"Main repo" matters: `dvc exp run --queue` / `--temp` run stages in a copy under
`<repo>/.dvc/tmp/exps/...`, and their runs must land in the store the user opens with `make ui`.
MLFLOW_TRACKING_URI, when set, wins.

One pipeline run (a `dvc repro` or one DVC experiment) is one parent MLflow run; the training runs of
its `train@M` stages are nested under it and the ensemble stage logs the headline numbers to it. The
stages are separate processes, so they find the parent by a tag (`imgclass.pipeline_run`) whose value
names the experiment (or the workspace), the commit and the params.yaml they ran with.

Writes from several processes (`dvc queue start -j 2`) go through `store_lock()`: an exclusive
file lock beside mlflow.db, so parallel experiments take turns instead of failing with
"database is locked", plus a retry with backoff for writers outside this module (the UI, the registry).

With a tracking server (MLFLOW_TRACKING_URI=http://...) the server's database orders the writes of
every machine, so writes take no lock; only creating a pipeline's parent run does, per machine, and
the parent's key then names the machine and clone: two people running the same commit and params get
a parent run each instead of sharing (or racing to create) one. The one race the server lets through,
two machines inserting the same split's dataset row at once, is retried (`is_lost_dataset_race`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import getpass
import hashlib
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

EXPERIMENT = "imgclass"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"  # the UI opens the experiment on its runs, not on traces
PIPELINE_TAG = "imgclass.pipeline_run"
_EXPS_MARKER = (".dvc", "tmp", "exps")
T = TypeVar("T")

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def main_repo_root(start: Path | None = None) -> Path:
    """The user's repository, also from inside a DVC experiment's temporary copy."""
    path = (start or Path.cwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - len(_EXPS_MARKER) + 1):
        if parts[i:i + len(_EXPS_MARKER)] == _EXPS_MARKER:
            return Path(*parts[:i])
    for candidate in (path, *path.parents):
        if (candidate / ".dvc").is_dir() or (candidate / ".git").exists():
            return candidate
    return path


def tracking_uri(start: Path | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{main_repo_root(start) / 'mlflow.db'}"


def is_server(uri: str | None = None) -> bool:
    """A tracking server: it orders every client's writes in its own database."""
    return (uri or tracking_uri()).startswith(("http://", "https://"))


def artifact_root(start: Path | None = None) -> str:
    return (main_repo_root(start) / "mlartifacts").as_uri()


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, for MLflow params."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------- one writer at a time

_held = threading.local()


def lock_path(uri: str | None = None) -> Path:
    """Beside the sqlite file; otherwise one lock per user and URI in the temp dir (the user's own:
    a shared /tmp refuses to reopen another user's file)."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///") + ".lock")
    digest = hashlib.sha1(uri.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"imgclass-mlflow-{os.getuid()}-{digest}.lock"


@contextlib.contextmanager
def store_lock() -> Iterator[None]:
    """Every write to a local store. None for a server: its database already orders writes, and a
    lock here would stall this machine's other trainings while one uploads a model."""
    if is_server():
        yield
        return
    with machine_lock():
        yield


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Exclusive across this machine's processes; re-entrant within one thread (flock would deadlock
    on itself)."""
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_lost_dataset_race(message: str) -> bool:
    """MLflow logs a dataset by finding its row (experiment, name, digest) or inserting it. Two
    machines logging the same split into one server at once can both find it missing; the second
    insert then breaks the unique key (sqlite, PostgreSQL and MySQL word it differently), and a retry
    finds the first machine's row and links the run to it."""
    return "INSERT INTO datasets" in message and any(
        phrase in message for phrase in ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry"))


def is_retryable_write_error(exc: BaseException) -> bool:
    """sqlite's busy error or a lost dataset race, however MLflow, SQLAlchemy or a server's reply
    wrapped it: a later attempt of the same write succeeds."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        message = str(exc)
        if "database is locked" in message or "database table is locked" in message or is_lost_dataset_race(message):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def locked_write(action: Callable[[], T], attempts: int = 8, first_wait: float = 0.2,
                 lock: Callable[[], contextlib.AbstractContextManager] = store_lock) -> T:
    """`action` under `lock`, retried with jittered backoff while sqlite reports a lock held by a
    process that does not take ours (mlflow ui, imgclass register; or a server's own sqlite), or
    after another machine won the race to insert the same dataset (`is_lost_dataset_race`)."""
    for attempt in range(attempts):
        try:
            with lock():
                return action()
        except Exception as exc:
            if attempt == attempts - 1 or not is_retryable_write_error(exc):
                raise
            time.sleep(first_wait * 2 ** attempt * (1 + random.random()))
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- the store or server

class TrackingUnavailable(SystemExit):
    """The tracking server cannot be used. A SystemExit, so a stage ends on this one line instead of
    MLflow retrying for minutes and then printing a long traceback."""


SERVER_CHECK_TIMEOUT = 10.0  # seconds: a server that answers at all answers this simple call at once


def connect() -> str:
    """Point MLflow at the store; a server is asked once per process whether it answers."""
    import mlflow

    uri = tracking_uri()
    if is_server(uri):
        check_server(uri)
    mlflow.set_tracking_uri(uri)
    return uri


@functools.cache
def check_server(uri: str) -> None:
    """Raise TrackingUnavailable, naming `uri` and what to do, when the server does not answer or
    refuses the host name the client uses. Not /health: the server answers that for any host name."""
    probe = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
    try:
        with urllib.request.urlopen(probe, timeout=SERVER_CHECK_TIMEOUT):
            return
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        if exc.code == 403 and "host" in body.lower():
            host = urllib.parse.urlsplit(uri).netloc
            raise TrackingUnavailable(
                f"MLflow server {uri} refuses the host name {host}: start it with "
                f"--allowed-hosts {host} (or use a name it allows)") from None
        return  # it answered: 404 (no experiment yet), 401 (credentials, which MLflow's own calls send)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnavailable(
            f"MLflow server {uri} does not answer ({reason}): start it, or unset MLFLOW_TRACKING_URI "
            f"to log to this repository's mlflow.db") from None


# ---------------------------------------------------------------- the experiment

def use_experiment() -> str:
    """Point MLflow at the project's store and experiment (artifacts beside the store), created as
    a model-training experiment; returns its id."""
    connect()
    return locked_write(_ensure_training_experiment)


def _ensure_training_experiment() -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(EXPERIMENT)  # the first call creates the sqlite schema
    if experiment is None:
        experiment_id = _create_training_experiment()
    else:
        experiment_id = experiment.experiment_id
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # a store made before the tag: keep the user's choice if set
            mlflow.MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _create_training_experiment() -> str:
    """The experiment, created; or, when another client created it since we looked (two machines
    starting at once on one tracking server), theirs."""
    import mlflow
    from mlflow.exceptions import MlflowException

    # Artifacts beside a local store; a tracking server keeps its own (every client can reach them).
    local = tracking_uri().startswith("sqlite:")
    try:
        return mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root() if local else None,
                                        tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow.get_experiment_by_name(EXPERIMENT).experiment_id


# ---------------------------------------------------------------- the pipeline run (parent)

def git_commit(cwd: Path | None = None) -> str | None:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def pipeline_commit() -> str:
    """The commit the pipeline runs on: an experiment's baseline (DVC sets it), else HEAD."""
    return os.environ.get("DVC_EXP_BASELINE_REV") or git_commit() or "nocommit"


def pipeline_run_name() -> str:
    """`<experiment>@<commit>`, or `workspace@<commit>` for a plain `dvc repro`."""
    return f"{os.environ.get('DVC_EXP_NAME') or 'workspace'}@{pipeline_commit()[:7]}"


def pipeline_run_key(params_file: Path = Path("params.yaml")) -> str:
    """What every stage process of one pipeline run shares. The params digest separates two
    `dvc repro` runs with different uncommitted params on one commit (MLflow params are write-once).
    On a server, the origin separates two clones (two people, CI) running the same commit and params."""
    content = params_file.read_bytes() if params_file.exists() else b""
    key = f"{pipeline_run_name()}/{pipeline_commit()}/{hashlib.sha256(content).hexdigest()[:12]}"
    return f"{key}/{pipeline_origin()}" if is_server() else key


def pipeline_origin() -> str:
    """`user@host:/path/to/clone`: where a pipeline runs, for the runs of a shared server."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no passwd entry
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}:{main_repo_root()}"


def pipeline_parent_id(experiment_id: str) -> str:
    """The parent run of this pipeline run: found by its key tag, or created. Under this machine's
    lock, also for a server, so two stages of one run never both create it (the key is per machine
    on a server, so no other machine creates it)."""
    import mlflow

    key = pipeline_run_key()
    client = mlflow.MlflowClient()

    def find_or_create() -> str:
        found = client.search_runs([experiment_id], f"tags.`{PIPELINE_TAG}` = '{key}'",
                                   order_by=["attributes.start_time ASC"], max_results=1)
        if found:
            return found[0].info.run_id
        origin = {"origin": pipeline_origin()} if is_server() else {}  # whose run, in a team's UI
        run = client.create_run(experiment_id, run_name=pipeline_run_name(),
                                tags={PIPELINE_TAG: key, "dvc_exp": os.environ.get("DVC_EXP_NAME") or "workspace",
                                      "git_commit": pipeline_commit(), **origin, "mlflow.note.content":
                                      "One pipeline run: the training runs are nested below; "
                                      "the ensemble's result is logged here."})
        # FINISHED from the start: a pipeline that stops early leaves no run 'running' forever.
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    return locked_write(find_or_create, lock=machine_lock)


def numeric_leaves(metrics: dict) -> dict[str, float]:
    """Numbers of a metrics JSON, flattened: {'test_accuracy': {'soft_vote': .9}} -> test_accuracy.soft_vote."""
    return {k: float(v) for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def headline_metrics(metrics: dict) -> dict[str, float]:
    """The ensemble's test accuracy as `test_accuracy`, the name the evaluate stage gives each model's:
    one column of the runs table then compares the pipeline run with its models."""
    table = metrics.get("test_accuracy")
    if isinstance(table, dict) and metrics.get("chosen_vote") in table:
        return {"test_accuracy": float(table[metrics["chosen_vote"]])}
    if isinstance(metrics.get("accuracy"), (int, float)):
        return {"test_accuracy": float(metrics["accuracy"])}
    return {}


def committed_params(params_file: Path = Path("params.yaml")) -> dict | None:
    """params.yaml as committed at the pipeline's commit; None when git cannot say."""
    import yaml

    for cwd in (Path.cwd(), main_repo_root()):  # an experiment's temp copy, else the user's repository
        proc = subprocess.run(["git", "show", f"{pipeline_commit()}:{params_file.as_posix()}"], cwd=cwd,
                              capture_output=True, text=True)
        if proc.returncode == 0:
            return yaml.safe_load(proc.stdout) or {}
    return None


_MISSING = object()


def changed_params(current: dict, committed: dict | None) -> dict[str, str]:
    """Flattened params that differ from the committed ones (all of them when nothing is committed)."""
    now, before = flatten(current), flatten(committed or {})
    return {k: str(v) for k, v in now.items() if committed is None or before.get(k, _MISSING) != v}


def log_pipeline_result(metrics: dict, artifacts: list[Path], params: dict | None = None) -> str:
    """The ensemble's result on this pipeline run's parent: every number of `metrics` (flattened),
    the chosen vote's test accuracy as `test_accuracy`, its strings as tags, the artifacts under `ensemble/`, and the params that differ from the
    committed params.yaml (`params` defaults to ./params.yaml). Returns the parent's run id."""
    import mlflow
    import yaml
    from mlflow.entities import Metric, Param, RunTag

    experiment_id = use_experiment()
    parent = pipeline_parent_id(experiment_id)
    if params is None:
        params = yaml.safe_load(Path("params.yaml").read_text()) if Path("params.yaml").exists() else {}
    changed = changed_params(params, committed_params())
    client = mlflow.MlflowClient()

    tags = {f"ensemble.{k}": v for k, v in metrics.items() if isinstance(v, str)}  # e.g. the chosen vote
    tags["changed_params"] = ", ".join(f"{k}={v}" for k, v in changed.items()) or "none"

    def log() -> None:
        now = int(time.time() * 1000)
        values = {**numeric_leaves(metrics), **headline_metrics(metrics)}
        client.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in values.items()],
                         params=[Param(k, v[:6000]) for k, v in changed.items()],
                         tags=[RunTag(k, v[:5000]) for k, v in tags.items()])
        for path in artifacts:
            client.log_artifact(parent, str(path), artifact_path="ensemble")
        client.set_terminated(parent, "FINISHED")  # end_time: when the pipeline's last result came

    locked_write(log)
    return parent


# ---------------------------------------------------------------- the dataset of a training run

def split_counts(split_dir: Path) -> list[dict]:
    """Images per split and class, from data/split/{train,val,test}.csv."""
    import csv
    from collections import Counter

    rows = []
    for path in sorted(split_dir.glob("*.csv")):
        with path.open(newline="") as handle:
            counts = Counter(row["label"] for row in csv.DictReader(handle))
        rows += [{"split": path.stem, "class": label, "images": n} for label, n in sorted(counts.items())]
    return rows


def split_digest(split_dir: Path) -> str:
    """Content digest of the split's CSVs (paths carry content hashes, so this names the images too)."""
    digest = hashlib.sha256()
    for path in sorted(split_dir.glob("*.csv")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def split_dataset(split_dir: Path, name: str | None = None):
    """The split as an MLflow dataset: the count table, named and digested by the split files; its
    profile (shown in the UI's dataset view) is the count per split and class."""
    import pandas as pd
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    counts = pd.DataFrame(split_counts(split_dir), columns=["split", "class", "images"])
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both readings are the local path
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(Path(split_dir).resolve()))
    return _split_dataset_class()(df=counts, source=source, name=name or repo_relative(split_dir),
                                  digest=split_digest(split_dir))


def repo_relative(path: Path) -> str:
    """`data/split` also when given as an absolute path or from an experiment's temp copy."""
    resolved = Path(path).resolve()
    return resolved.relative_to(Path.cwd().resolve()).as_posix() if resolved.is_relative_to(Path.cwd().resolve()) \
        else Path(path).as_posix()


@functools.cache
def _split_dataset_class():
    from mlflow.data.pandas_dataset import PandasDataset

    class SplitDataset(PandasDataset):
        @property
        def profile(self) -> dict:
            rows = self.df.to_dict("records")
            return {"images": int(sum(r["images"] for r in rows)),
                    **{f"{r['split']}.{r['class']}": int(r["images"]) for r in rows}}

    return SplitDataset


def log_dataset_input(dataset) -> None:
    import mlflow

    with warnings.catch_warnings():  # MLflow's hint about integer columns is for model signatures
        warnings.simplefilter("ignore", UserWarning)
        mlflow.log_input(dataset, context="training")


# ---------------------------------------------------------------- one training run

class Tracker:
    """One training run: MLflow run (nested under its pipeline run) + DVCLive directory, logged to in
    step with the epochs. With `split_dir`, the run records the split it trained on as its input."""

    def __init__(self, run_name: str, params: dict, dvclive_dir: Path, enabled: bool = True,
                 split_dir: Path | None = None):
        self.enabled = enabled
        self.live = None
        self.run = None
        if not enabled:
            return
        import mlflow

        from dvclive import Live

        experiment_id = use_experiment()
        parent = pipeline_parent_id(experiment_id)
        exp_name = os.environ.get("DVC_EXP_NAME")

        # One write per call: a retry after "database is locked" must not start a second run.
        self.run = locked_write(lambda: mlflow.start_run(
            run_name=f"{run_name}" + (f"@{exp_name}" if exp_name else ""), parent_run_id=parent,
            tags={"model": run_name, "dvc_exp": exp_name or "workspace"}))
        locked_write(lambda: mlflow.log_params({k: str(v) for k, v in flatten(params).items()}))
        if split_dir is not None:
            locked_write(lambda: log_dataset_input(split_dataset(split_dir)))
        self.live = Live(dir=str(dvclive_dir), dvcyaml=False, save_dvc_exp=False, report=None)

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        import mlflow

        locked_write(lambda: mlflow.log_metrics(metrics, step=step))
        for name, value in metrics.items():
            self.live.log_metric(name.replace("_", "/", 1), value)
        self.live.next_step()

    def log_summary(self, metrics: dict[str, float]) -> None:
        if self.enabled:
            import mlflow

            locked_write(lambda: mlflow.log_metrics({f"best_{k}": v for k, v in metrics.items()
                                                     if isinstance(v, (int, float))}))

    def log_model(self, model, example, meta: dict) -> None:
        """The model with its class names and preprocessing, so MLflow alone can serve it."""
        if not self.enabled:
            return
        import mlflow
        import torch

        def log() -> None:
            mlflow.log_dict(meta, "imgclass_meta.json")
            mlflow.pytorch.log_model(
                model, name="model", input_example=example,
                # Listing requirements explicitly skips MLflow's ~15 s environment inference.
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchvision", "timm"],
                metadata={"classes": meta["classes"], "preprocessing": meta["preprocessing"]},
                # MLflow would load the saved model again and run the example through it: 2-5 s a
                # run; test_train checks once that the logged model loads and predicts like ours.
                validate_serving_input=False,
            )

        locked_write(log)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.enabled:
            import mlflow

            locked_write(lambda: mlflow.log_artifact(str(path), artifact_path=folder))

    def close(self, status: str = "FINISHED") -> None:
        if not self.enabled:
            return
        import mlflow

        self.live.end()
        locked_write(lambda: mlflow.end_run(status=status))


def log_to_run(run_id: str | None, metrics: dict[str, float], artifacts: list[Path]) -> None:
    """Attach evaluation results to the training run recorded in the model's checkpoint."""
    if not run_id:
        return
    import mlflow
    from mlflow.entities import Metric

    connect()
    client = mlflow.MlflowClient()

    def log() -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                                          if isinstance(v, (int, float)) and not isinstance(v, bool)])
        for path in artifacts:
            client.log_artifact(run_id, str(path), artifact_path="evaluation")

    locked_write(log)
