"""Data-parallel training: the train stage under torchrun with 2 gloo processes on the CPU against one process."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml

from conftest import REPO, tiny_params_dict
from imgclass.training.distributed import World, backend_for
from imgclass.config.params import ParamsError, parse_params

GLOBAL_BATCH = 32


def project(root: Path, split_dir: Path, model: dict, processes: int) -> Path:
    """A project folder holding params.yaml and data/split, with the training set cut to whole global
    batches: then every process's share of every batch has the same size and the averages agree."""
    shutil.copytree(split_dir, root / "data" / "split")
    (root / "data" / "clean").symlink_to(split_dir.parent / "clean")
    train_csv = root / "data" / "split" / "train.csv"
    rows = list(csv.DictReader(train_csv.open()))
    keep = len(rows) // GLOBAL_BATCH * GLOBAL_BATCH
    with train_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:keep])
    raw = tiny_params_dict(distributed={"nproc_per_node": processes, "backend": "gloo"})
    raw["device"] = "cpu"
    raw["models"] = {"m": {"min_steps": 0, "head_steps": 0, **model, "batch_size": GLOBAL_BATCH}}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root


def run_train_stage(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "m"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def epoch_metric(root: Path, name: str) -> list[float]:
    """Per-epoch values DVCLive recorded, e.g. name='val/loss'."""
    rows = list(csv.DictReader((root / "dvclive" / "m" / "plots" / "metrics" / f"{name}.tsv").open(), delimiter="\t"))
    return [float(row[name.split("/")[-1]]) for row in rows]


def train_both(tmp_path, split_dir, model: dict) -> tuple[Path, Path, subprocess.CompletedProcess]:
    single = project(tmp_path / "single", split_dir, model, processes=1)
    double = project(tmp_path / "double", split_dir, model, processes=2)
    run_train_stage(single)
    return single, double, run_train_stage(double)


@pytest.mark.slow  # torchrun: several processes that each import torch
def test_two_gloo_processes_train_a_scratch_cnn_like_one_process(fashion_split, tmp_path):
    _, split_dir = fashion_split
    model = {"arch": "cnn_simple", "epochs": 3, "lr": 0.01, "dropout": 0.0}
    single, double, proc = train_both(tmp_path, split_dir, model)

    # Rank 0 alone reports and writes: one line per epoch, one set of outputs, no resume file left.
    assert proc.stdout.count("m 1/3 unfrozen:") == 1
    summary = json.loads((double / "metrics" / "train" / "m.json").read_text())
    assert summary["processes"] == 2 and summary["epochs_run"] == 3
    assert (double / "plots" / "train" / "m.png").exists()
    assert not (double / "data" / "checkpoints" / "m" / "last.pt").exists()
    assert len(epoch_metric(double, "val/loss")) == 3

    # Same global batches, gradients averaged: only BatchNorm statistics (per process) differ.
    for name in ("train/loss", "val/loss"):
        np.testing.assert_allclose(epoch_metric(double, name), epoch_metric(single, name), atol=0.05)
    assert abs(epoch_metric(double, "val/accuracy")[-1] - epoch_metric(single, "val/accuracy")[-1]) <= 0.1
    one = torch.load(single / "models" / "m" / "model.pt", weights_only=True)["state_dict"]
    two = torch.load(double / "models" / "m" / "model.pt", weights_only=True)["state_dict"]
    assert one.keys() == two.keys()
    head_change = (two["head.weight"] - one["head.weight"]).norm() / one["head.weight"].norm()
    assert head_change < 0.15


@pytest.mark.slow  # torchrun: several processes that each import torch
def test_without_batchnorm_two_processes_take_the_same_steps_as_one(fashion_split, tmp_path):
    """The frozen phase trains the pretrained network's head alone on cached features (no BatchNorm):
    here DDP must reproduce the single-process run up to the order of floating-point sums."""
    _, split_dir = fashion_split
    model = {"arch": "efficientnet_lite0", "weights": "imagenet", "input_size": 32, "freeze_epochs": 2,
             "epochs": 1, "lr": 0.01, "dropout": 0.0}
    single, double, _ = train_both(tmp_path, split_dir, model)
    for name in ("train/loss", "val/loss", "train/accuracy", "val/accuracy"):
        np.testing.assert_allclose(epoch_metric(double, name)[:2], epoch_metric(single, name)[:2], atol=1e-5)
    # The unfrozen epoch trains BatchNorm on half batches per process: close, not equal.
    np.testing.assert_allclose(epoch_metric(double, "val/loss")[2], epoch_metric(single, "val/loss")[2], atol=0.3)


def test_a_batch_that_does_not_split_over_the_processes_is_a_params_error():
    raw = tiny_params_dict(distributed={"nproc_per_node": 3})
    with pytest.raises(ParamsError, match=r"models\.cnn_simple\.batch_size: 32 cannot be split over .*=3"):
        parse_params(raw)
    with pytest.raises(ValueError, match=r"models\.m\.batch_size: 30 cannot be split over 4 processes"):
        World(rank=0, local_rank=0, size=4).local_batch_size(30, "models.m.batch_size")
    assert World(size=4).local_batch_size(32, "k") == 8


def test_distributed_params_and_devices_are_checked():
    with pytest.raises(ParamsError, match="distributed.backend"):
        parse_params(tiny_params_dict(distributed={"backend": "mpi"}))
    with pytest.raises(ParamsError, match=r"distributed\.nproc_per_nod: unknown key; did you mean 'nproc_per_node'"):
        parse_params(tiny_params_dict(distributed={"nproc_per_nod": 2}))
    assert backend_for(torch.device("cpu")) == "gloo" and backend_for(torch.device("cuda")) == "nccl"
    with pytest.raises(RuntimeError, match="distributed training runs on cuda or cpu, not mps"):
        World(size=2).local_device(torch.device("mps"))
    assert World(rank=1, local_rank=1, size=2).local_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert World().local_device(torch.device("mps")) == torch.device("mps")  # one process: anything goes



@pytest.mark.slow  # torchrun: several processes that each import torch
def test_killing_torchrun_stops_its_workers_and_the_rerun_resumes(fashion_split, tmp_path):
    _, split_dir = fashion_split
    root = project(tmp_path / "killed", split_dir, {"arch": "cnn_simple", "epochs": 40, "lr": 0.01}, processes=2)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    stage = subprocess.Popen([sys.executable, str(REPO / "stages" / "train.py"), "m"], cwd=root, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = root / "data" / "checkpoints" / "m" / "last.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and stage.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert checkpoint.exists(), "no epoch finished"
    os.killpg(stage.pid, signal.SIGKILL)  # the stage and torchrun; the workers live in their own sessions
    stage.wait()

    def workers() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline", "cwd"])
                if p.info["cwd"] == str(root) and p.pid != os.getpid()]
    deadline = time.monotonic() + 15
    while workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not workers(), "workers kept training after torchrun was killed"

    done = torch.load(checkpoint, weights_only=True)["history"]
    assert 1 <= len(done) < 40
    proc = run_train_stage(root)
    assert f"m: resuming after epoch {len(done)}" in proc.stdout
    assert json.loads((root / "metrics" / "train" / "m.json").read_text())["epochs_run"] == 40
