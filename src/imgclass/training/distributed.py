"""Data-parallel training with torch's own engine: DistributedDataParallel under torchrun.

`distributed.nproc_per_node > 1` in params.yaml makes the train stage relaunch itself as
`python -m torch.distributed.run --standalone --nproc_per_node=N stages/train.py M`; running it under
`torchrun` yourself works as well. With `distributed.nnodes: K > 1` the torchrun of every machine
meets the others at `distributed.rdzv_endpoint` (c10d rendezvous, run id imgclass-M), and each
machine says which one it is in IMGCLASS_NODE_RANK: params.yaml is shared, a machine's place is not.
Each process reads WORLD_SIZE, RANK and LOCAL_RANK from torchrun's environment, joins the process
group (gloo on CPU, nccl on CUDA) and trains on its own shard of every epoch (DistributedSampler).
Gradients are averaged across processes, so every process holds the same weights; only one process
logs, prints and writes files: the first of the machine with IMGCLASS_NODE_RANK=0 (on one machine,
rank 0).

`batch_size` stays the global batch: each of N processes takes batch_size / N images per step, and
a shuffled epoch visits the same global batches as a single process does with the same seed. Results
then match a single-process run up to BatchNorm statistics (computed per process) and the order of
floating-point sums.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

BACKENDS = ("auto", "gloo", "nccl")
NODE_RANK_ENV = "IMGCLASS_NODE_RANK"


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; size 1 when not under torchrun."""
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    nodes: int = 1
    node_rank: int = 0  # IMGCLASS_NODE_RANK when nodes > 1

    @classmethod
    def from_env(cls) -> "World":
        env = os.environ
        size = int(env.get("WORLD_SIZE", 1))
        nodes = size // int(env.get("LOCAL_WORLD_SIZE", size))
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), size, nodes,
                   node_rank_from_env(nodes) if nodes > 1 else 0)

    @property
    def is_main(self) -> bool:
        """The process that logs, prints and writes files. Not global rank 0 on several machines:
        torchrun's c10d rendezvous numbers the machines in its own order (sorted host names) and
        ignores --node_rank, so the outputs would land on whichever machine it put first."""
        return self.local_rank == 0 and self.node_rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def local_device(self, device: torch.device) -> torch.device:
        """The device this process trains on: its own GPU under torchrun."""
        if not self.distributed:
            return device
        if device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        if device.type != "cpu":
            raise RuntimeError(f"distributed training runs on cuda or cpu, not {device.type}; "
                               "set device: cpu or distributed.nproc_per_node: 1")
        return device

    def local_batch_size(self, batch_size: int, key: str) -> int:
        if batch_size % self.size:
            raise ValueError(f"{key}: {batch_size} cannot be split over {self.size} processes; "
                             f"use a multiple of {self.size}")
        return batch_size // self.size

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model as training calls it: wrapped in DDP when distributed. Wrap after freezing:
        DDP registers the parameters that require gradients when it is built."""
        if not self.distributed:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of `values` over all processes (every process gets the result)."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def print(self, message: str) -> None:
        """Progress lines from rank 0 only: N processes would print each line N times."""
        if self.is_main:
            print(message, flush=True)


def backend_for(device: torch.device, choice: str = "auto") -> str:
    if choice not in BACKENDS:
        raise ValueError(f"unknown distributed.backend {choice!r}; choose one of {', '.join(BACKENDS)}")
    if choice == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return choice


@contextmanager
def process_group(world: World, device: torch.device, backend: str = "auto"):
    """Join torchrun's process group for the duration of a run (nothing to do for one process)."""
    if not world.distributed or torch.distributed.is_initialized():
        yield world
        return
    if launched_by_torchrun():
        exit_with_launcher()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend_for(device, backend))
    try:
        if world.nodes > 1:
            check_one_main_node(world)
        yield world
    finally:
        torch.distributed.destroy_process_group()


def node_rank_from_env(nodes: int) -> int:
    value = os.environ.get(NODE_RANK_ENV, "0")
    if not value.isdigit() or int(value) >= nodes:
        raise ValueError(f"{NODE_RANK_ENV}={value!r}: must be 0..{nodes - 1}, this machine's place among "
                         f"distributed.nnodes={nodes} (0 writes the outputs)")
    return int(value)


def check_one_main_node(world: World) -> None:
    """Exactly one machine writes: two would each log to MLflow, none would leave the stage without outputs."""
    mains = [False] * world.size
    torch.distributed.all_gather_object(mains, world.is_main)
    if sum(mains) != 1:
        raise RuntimeError(f"{NODE_RANK_ENV}: {sum(mains)} of {world.nodes} machines have 0; set 0 on the machine "
                           f"that writes the outputs and 1..{world.nodes - 1} on the others")


@contextmanager
def resume_dir(path: Path, world: World):
    """Where training keeps its resume checkpoint: `path`, or on several machines a scratch folder
    (no resume): only the main machine would find its last.pt on a rerun, and machines resuming
    from different epochs would train different runs."""
    if world.nodes == 1:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="imgclass-resume-") as scratch:
        yield Path(scratch)


def exit_with_launcher(poll_seconds: float = 1.0) -> None:
    """End this process when torchrun dies. torchrun starts its workers in their own sessions, so a
    SIGKILL to the launcher's process group (an OOM kill, `kill -9`, a CI timeout) would leave them
    training on as orphans and writing the checkpoint a rerun resumes from."""
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_seconds)
        os._exit(1)  # no cleanup to wait for: every checkpoint write is atomic

    threading.Thread(target=watch, name="exit-with-torchrun", daemon=True).start()


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_command(script: str, args: list[str], nproc_per_node: int, nnodes: int = 1,
                     rdzv_endpoint: str | None = None, run_id: str = "imgclass") -> list[str]:
    """The command that runs `script` in `nproc_per_node` processes on this machine, which with
    nnodes > 1 joins the other machines at rdzv_endpoint. Runs with another run_id (another model)
    do not join each other."""
    if nnodes == 1:
        rendezvous = ["--standalone"]
    else:
        rendezvous = [f"--nnodes={nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}",
                      f"--rdzv_id={run_id}"]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc_per_node={nproc_per_node}",
            script, *args]
