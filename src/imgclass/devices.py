"""Device choice that assumes nothing about the vendor: auto = cuda, then mps, then cpu."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def available(name: str) -> bool:
    if name == "cpu":
        return True
    if name == "cuda":
        return torch.cuda.is_available()
    if name == "mps":
        return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available(d)))
    if not available(name):
        raise RuntimeError(f"device: {name} is not available on this machine; use auto or cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """A human name for tables: the GPU's model, or the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
