"""What this process may compute on: the CPU cores it is allowed, and the device choice that assumes
nothing about the vendor (auto = cuda, then mps, then cpu). torch is imported only to choose a device,
so the data stages can count cores without it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def usable_cpus() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available(name: str) -> bool:
    import torch

    if name == "cpu":
        return True
    if name == "cuda":
        return torch.cuda.is_available()
    if name == "mps":
        return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")


def resolve_device(name: str = "auto") -> torch.device:
    import torch

    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available(d)))
    if not available(name):
        raise RuntimeError(f"device: {name} is not available on this machine; use auto or cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """A human name for tables: the GPU's model, or the CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
