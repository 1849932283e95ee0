"""Training across machines: two torchrun "nodes" on 127.0.0.1 (c10d rendezvous, gloo) against one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, tiny_params_dict
from imgclass.training.distributed import World, torchrun_command
from imgclass.config.params import ParamsError, parse_params
from test_distributed import epoch_metric, project, run_train_stage

MODEL = {"arch": "cnn_simple", "epochs": 2, "lr": 0.01, "dropout": 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_node_of_two(root: Path, endpoint: str) -> Path:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["distributed"] = {"nproc_per_node": 1, "nnodes": 2, "rdzv_endpoint": endpoint, "backend": "gloo"}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def start_node(root: Path, node_rank: str | None) -> subprocess.Popen:
    """The train stage as a person starts it on one machine (it launches torchrun itself)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "IMGCLASS_NODE_RANK"):
        env.pop(name, None)
    if node_rank is not None:
        env["IMGCLASS_NODE_RANK"] = node_rank
    return subprocess.Popen([sys.executable, str(REPO / "stages" / "train.py"), "m"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(nodes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    """(returncode, output) per node; a node left waiting at the rendezvous is killed, not waited on for 10 minutes."""
    results = []
    for node in nodes:
        try:
            out, err = node.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, 9)
            out, err = node.communicate()
        results.append((node.returncode, out + err))
    return results


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


@pytest.mark.slow  # torchrun: several processes that each import torch
def test_two_nodes_train_like_one_process_and_only_node_0_writes(fashion_split, tmp_path):
    _, split_dir = fashion_split
    single = project(tmp_path / "single", split_dir, MODEL, processes=1)
    endpoint = f"127.0.0.1:{free_port()}"
    node0 = as_node_of_two(project(tmp_path / "node0", split_dir, MODEL, processes=1), endpoint)
    node1 = as_node_of_two(project(tmp_path / "node1", split_dir, MODEL, processes=1), endpoint)
    before = listing(node1)
    # Node 1 starts first: c10d numbers machines by host name and pid, so its process is likely global
    # rank 0, and the outputs must still go to the machine that says IMGCLASS_NODE_RANK=0.
    nodes = [start_node(node1, "1"), start_node(node0, "0")]
    (rc1, out1), (rc0, out0) = finish(nodes)
    assert rc0 == 0 and rc1 == 0, out0[-3000:] + out1[-3000:]
    run_train_stage(single)

    assert listing(node1) == before, "a non-main machine wrote into its workspace"
    assert out0.count("m 1/2 unfrozen:") == 1 and "m 1/2 unfrozen:" not in out1
    summary = json.loads((node0 / "metrics" / "train" / "m.json").read_text())
    assert summary["processes"] == 2 and summary["epochs_run"] == 2
    assert (node0 / "plots" / "train" / "m.png").exists()
    assert not (node0 / "data" / "checkpoints").exists()

    # As two processes on one machine (test_distributed.py): the same global batches, averaged gradients.
    for name in ("train/loss", "val/loss"):
        np.testing.assert_allclose(epoch_metric(node0, name), epoch_metric(single, name), atol=0.05)
    one = torch.load(single / "models" / "m" / "model.pt", weights_only=True)["state_dict"]
    two = torch.load(node0 / "models" / "m" / "model.pt", weights_only=True)["state_dict"]
    assert (two["head.weight"] - one["head.weight"]).norm() / one["head.weight"].norm() < 0.15


@pytest.mark.slow  # torchrun: several processes that each import torch
def test_two_machines_that_both_say_node_0_stop_with_one_line(fashion_split, tmp_path):
    _, split_dir = fashion_split
    endpoint = f"127.0.0.1:{free_port()}"
    roots = [as_node_of_two(project(tmp_path / f"n{i}", split_dir, MODEL, processes=1), endpoint) for i in (0, 1)]
    results = finish([start_node(root, None) for root in roots])  # IMGCLASS_NODE_RANK forgotten: both default to 0
    for rc, out in results:
        assert rc != 0
        assert "IMGCLASS_NODE_RANK: 2 of 2 machines have 0; set 0 on the machine that writes the outputs" in out
    assert not any((root / "models").exists() for root in roots)


def test_node_rank_and_rendezvous_settings_are_checked(monkeypatch):
    with pytest.raises(ParamsError, match=r"distributed: rdzv_endpoint is required with nnodes: 2"):
        parse_params(tiny_params_dict(distributed={"nnodes": 2}))
    with pytest.raises(ParamsError, match=r"distributed\.rdzv_endpoint: must be host:port"):
        parse_params(tiny_params_dict(distributed={"nnodes": 2, "rdzv_endpoint": "10.0.0.1"}))
    with pytest.raises(ParamsError, match=r"over distributed.nproc_per_node=2 x distributed.nnodes=3 processes; "
                                          r"use a multiple of 6"):
        parse_params(tiny_params_dict(distributed={"nproc_per_node": 2, "nnodes": 3, "rdzv_endpoint": "h:1"}))

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("IMGCLASS_NODE_RANK", "2")
    with pytest.raises(ValueError, match=r"IMGCLASS_NODE_RANK='2': must be 0..1, this machine's place"):
        World.from_env()
    monkeypatch.setenv("IMGCLASS_NODE_RANK", "0")  # global rank 2, but the first process of the main machine
    assert World.from_env() == World(rank=2, local_rank=0, size=4, nodes=2, node_rank=0)
    assert World.from_env().is_main
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # one machine: IMGCLASS_NODE_RANK plays no part
    monkeypatch.setenv("IMGCLASS_NODE_RANK", "1")
    assert World.from_env().nodes == 1

    assert torchrun_command("s.py", ["m"], 2, 2, "h:29400", "imgclass-m")[3:] == [
        "--nnodes=2", "--rdzv_backend=c10d", "--rdzv_endpoint=h:29400", "--rdzv_id=imgclass-m", "--nproc_per_node=2",
        "s.py", "m"]
