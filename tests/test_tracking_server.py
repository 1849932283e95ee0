"""A team's tracking server: training runs of several machines write to one `mlflow server` at once.

The server is the README's command on a free port of 127.0.0.1, with a temporary sqlite store and
artifact directory. Two clones of one repository, at the same commit with the same params, stand for
two machines; each runs a training run and the ensemble's result through imgclass.tracking.mlflow_runs, in its own
process, at the same time, with MLFLOW_TRACKING_URI pointing at the server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from chromium import free_port
from imgclass.tracking import mlflow_runs

pytestmark = pytest.mark.slow  # a real server and client processes: about a minute and a half

EPOCHS = 5
TEAM_HOST = "mlflow.example.org"  # the name the README's clients use; allowed by --allowed-hosts

CLIENT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    import torch
    from imgclass.tracking import mlflow_runs

    barrier, me, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    (barrier / me).touch()
    while len(list(barrier.iterdir())) < 2:  # both machines create their pipeline's parent at once
        time.sleep(0.02)
    tracker = mlflow_runs.Tracker("cnn", {"lr": 0.1}, Path("dvclive/cnn"), split_dir=Path("data/split"))
    for epoch in range(epochs):
        tracker.log_epoch(epoch, {"val_accuracy": epoch / epochs, "train_loss": 1 - epoch / epochs})
    tracker.log_summary({"val_accuracy": 1.0})
    Path("curves.png").write_bytes(b"png bytes of " + me.encode())
    tracker.log_artifact(Path("curves.png"), "plots")
    tracker.log_model(torch.nn.Linear(4, 2).eval(), np.zeros((1, 4), dtype=np.float32),
                      {"classes": ["bag", "dress"], "preprocessing": {"size": 4}})
    tracker.close()
    mlflow_runs.log_to_run(tracker.run.info.run_id, {"test_accuracy": 0.75}, [])
    mlflow_runs.log_pipeline_result({"accuracy": 0.75, "test_accuracy": {"soft_vote": 0.75}}, [Path("curves.png")])
    print(tracker.run.info.run_id)
""")


def server_command(store: str, artifacts: Path, port: int) -> list[str]:
    """The README's team server, on 127.0.0.1 (the README binds 0.0.0.0)."""
    return [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", store,
            "--artifacts-destination", str(artifacts), "--serve-artifacts", "--host", "127.0.0.1",
            "--port", str(port), "--allowed-hosts", f"{TEAM_HOST}:{port},127.0.0.1:{port}", "--workers", "2"]


def wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        time.sleep(0.3)
    raise AssertionError(f"mlflow server did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(URL, artifact directory) of a team server with an empty store."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    log = root / "server.log"
    proc = subprocess.Popen(server_command(f"sqlite:///{root / 'server.db'}", root / "artifacts", port),
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc, log)
        yield url, root / "artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", *args], cwd=cwd, check=True,
                   capture_output=True)


def two_machines(root: Path) -> list[Path]:
    """Two clones of one committed project (same commit, same params.yaml), each with a split."""
    origin = root / "origin"
    origin.mkdir()
    (origin / "params.yaml").write_text(yaml.safe_dump({"seed": 1, "models": {"cnn": {"lr": 0.1}}}))
    git(origin, "init", "-q")
    git(origin, "add", "params.yaml")
    git(origin, "commit", "-qm", "baseline")
    clones = []
    for name in ("alice", "bob"):
        git(root, "clone", "-q", str(origin), name)
        split = root / name / "data" / "split"
        split.mkdir(parents=True)
        (root / name / "tmp").mkdir()
        for part in ("train", "val"):
            (split / f"{part}.csv").write_text("path,label,sha256,group\nb/1.png,bag,b1,b1\nd/1.png,dress,d1,d1\n")
        clones.append(root / name)
    return clones


def client_env(uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")}
    return {**env, "MLFLOW_TRACKING_URI": uri}


def test_two_machines_train_at_once_into_one_server(server, tmp_path):
    import mlflow

    url, served = server
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    clones = two_machines(tmp_path)
    # Each machine has its own temp dir, so its own lock: nothing but the server orders their writes.
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, str(barrier), clone.name, str(EPOCHS)], cwd=clone,
                              env={**client_env(url), "TMPDIR": str(clone / "tmp")}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for clone in clones]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(err[-3000:] for _, err in outputs)

    client = mlflow.MlflowClient(url)
    experiment = client.get_experiment_by_name("imgclass")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    children = [runs[out.strip().splitlines()[-1]] for out, _ in outputs]
    parents = [runs[child.data.tags["mlflow.parentRunId"]] for child in children]
    # Same commit and params on two machines: two pipeline runs, each with its own parent and child.
    assert [p.data.tags["origin"].split(":", 1)[1] for p in parents] == [str(c) for c in clones]
    mine = [r for r in runs.values() if str(tmp_path) in r.data.tags.get("origin", "")]
    assert sorted(r.info.run_id for r in mine) == sorted(p.info.run_id for p in parents)
    assert [[r.info.run_id for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
            for p in parents] == [[c.info.run_id] for c in children]
    for child, parent in zip(children, parents):
        assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
        for metric in ("val_accuracy", "train_loss"):
            assert [m.step for m in client.get_metric_history(child.info.run_id, metric)] == list(range(EPOCHS))
        assert child.data.metrics["best_val_accuracy"] == 1.0 and child.data.metrics["test_accuracy"] == 0.75
        assert parent.data.metrics["test_accuracy"] == 0.75
        assert child.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server
        assert [f.path for f in client.list_artifacts(child.info.run_id, "plots")] == ["plots/curves.png"]

    # Every byte is in the server's artifact directory, nothing stays on the machines.
    uploaded = sorted(p.read_bytes() for p in served.rglob("curves.png"))  # each run's plots/ and ensemble/
    assert uploaded == [b"png bytes of alice"] * 2 + [b"png bytes of bob"] * 2
    assert len(list(served.rglob("MLmodel"))) == 2
    for clone in clones:
        leftovers = [p for p in clone.rglob("*") if p.name in ("mlflow.db", "mlruns", "mlartifacts", "MLmodel")]
        assert leftovers == []


HOLD_MACHINE_LOCK = textwrap.dedent("""
    import time
    from imgclass.tracking import mlflow_runs

    with mlflow_runs.machine_lock():
        print("held", flush=True)
        time.sleep(60)
""")


def test_writes_to_a_server_do_not_wait_for_this_machines_lock(server, tmp_path, monkeypatch):
    """The server orders writes; a local lock would stall every training here while one uploads."""
    import mlflow

    url, _ = server
    clone, _ = two_machines(tmp_path)
    monkeypatch.chdir(clone)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    for name in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(clone / "tmp"))  # the lock file, here and in the holder
    tracker = mlflow_runs.Tracker("cnn", {"lr": 0.1}, Path("dvclive/cnn"))
    # Another stage of this machine holds the lock (as while it creates its pipeline's parent run).
    holder = subprocess.Popen([sys.executable, "-c", HOLD_MACHINE_LOCK],
                              env={**client_env(url), "TMPDIR": str(clone / "tmp")},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        started = time.monotonic()
        tracker.log_epoch(0, {"val_accuracy": 0.5})
        tracker.close()
        assert time.monotonic() - started < 30, "a write to the server waited for this machine's lock"
    finally:
        holder.kill()
        holder.wait()
        mlflow.end_run()  # on failure too: MLflow would end it at exit, retrying for minutes on a stopped server
    run = mlflow.MlflowClient(url).get_run(tracker.run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["val_accuracy"] == 0.5


def run_client(uri: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", "from pathlib import Path; from imgclass.tracking import mlflow_runs; "
                           "mlflow_runs.Tracker('cnn', {}, Path('dvclive/cnn'))"],
                          cwd=cwd, env=client_env(uri), capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - started


def test_an_unreachable_server_stops_the_stage_with_one_line(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc, seconds = run_client(uri, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"MLflow server {uri} does not answer ([Errno 111] Connection refused): start it, or unset "
        "MLFLOW_TRACKING_URI to log to this repository's mlflow.db"]
    assert seconds < 30  # not MLflow's minutes of retries


def test_a_host_name_the_server_does_not_allow_is_named_with_the_flag_to_fix_it(server, tmp_path):
    url, _ = server
    port = url.rsplit(":", 1)[1]
    proc, _ = run_client(f"http://localhost:{port}", tmp_path)  # not in the server's --allowed-hosts
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"MLflow server http://localhost:{port} refuses the host name localhost:{port}: start it with "
        f"--allowed-hosts localhost:{port} (or use a name it allows)"]
    # The README's clients use the server's name, which --allowed-hosts lets in.
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    with urllib.request.urlopen(urllib.request.Request(api, headers={"Host": f"{TEAM_HOST}:{port}"}), timeout=10) as r:
        assert r.status == 200
