"""The facts about this machine that the benchmark's numbers depend on: CPU model, the vector
instructions torch's CPU kernels choose from, usable cores, GPU names, MPS, torch build. The machine
stage writes them to reports/machine.json on every `dvc repro` and the benchmark stage depends on that
file, so the benchmark reruns where the hardware differs from the committed baseline's, and only there.
Hence only stable facts: nothing about time, load or free memory, which would rerun the benchmark
every time.

Cheap, since it runs on every repro: torch (3.5 s to import on 2 warm cores, over 20 s cold) is
imported only where a GPU driver is present or the system is macOS."""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import platform
import re
import subprocess
from pathlib import Path

from imgclass.devices import usable_cpus

# Vector instruction sets that decide which CPU kernels torch and oneDNN run, by architecture. Cloud
# machines often name every generation alike ("AMD EPYC"); one with AVX-512 trains some networks 3x
# faster than one without, so these tell apart machines whose benchmark numbers differ.
CPU_FEATURES = {
    "x86": ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx"),
    "arm": ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2"),
}
# "avx512" is the set torch's AVX512 kernels need; "amx" its tile unit (flags amx_tile, amx_bf16, ...).
X86_FLAG_SETS = {"avx2": {"avx2", "fma"}, "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
                 "avx512_vnni": {"avx512_vnni"}, "avx512_bf16": {"avx512_bf16"}, "amx": {"amx_tile"}}


def describe() -> dict:
    return {"cpu": cpu_model(), "cpu_features": cpu_features(), "usable_cores": usable_cpus(), **accelerators(),
            "torch": torch_version()}


def summary(facts: dict) -> str:
    """One line for people: 'AMD EPYC (family 25 model 17) with avx2 avx512, 2 usable cores, cuda: NVIDIA
    H100, torch 2.14.1+cu130'."""
    features = facts.get("cpu_features") or []  # absent from a machine.json that predates them
    cpu = facts["cpu"] + (f" with {' '.join(features)}" if features else "")
    parts = [cpu, f"{facts['usable_cores']} usable cores"]
    if facts["cuda"]:
        parts.append("cuda: " + ", ".join(facts["cuda"]))
    if facts["mps"]:
        parts.append("mps")
    return ", ".join([*parts, f"torch {facts['torch']}"])


def cpu_model() -> str:
    """The CPU's model name; the architecture where the system does not say."""
    system = platform.system()
    name = linux_cpu_model() if system == "Linux" else macos_cpu_model() if system == "Darwin" else ""
    return name or platform.processor() or platform.machine()  # platform.processor() names it on Windows


def linux_cpu_fields() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where it cannot be read)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0].splitlines()
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines if ":" in line)}


def linux_cpu_model() -> str:
    fields = linux_cpu_fields()
    if fields.get("model name"):
        if "cpu family" in fields and "model" in fields:  # x86: the family and model name the generation
            return f"{fields['model name']} (family {fields['cpu family']} model {fields['model']})"
        return fields["model name"]
    if fields.get("CPU part"):  # ARM cores have no model name: their implementer and part numbers tell them apart
        return f"{platform.machine()} implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    return ""


def cpu_features() -> list[str]:
    """The CPU_FEATURES this CPU has, from Linux's /proc/cpuinfo; none where the system does not list
    them (macOS: the brand string, "Apple M2", already names the design)."""
    return features_listed(linux_cpu_fields() if platform.system() == "Linux" else {})


def features_listed(fields: dict[str, str]) -> list[str]:
    """CPU_FEATURES among a processor's /proc/cpuinfo flags (x86) or Features (ARM)."""
    if "flags" in fields:
        flags = set(fields["flags"].split())
        return [name for name in CPU_FEATURES["x86"] if X86_FLAG_SETS[name] <= flags]
    if "Features" in fields:
        flags = set(fields["Features"].split())
        return [name for name in CPU_FEATURES["arm"] if name in flags]
    return []


def macos_cpu_model() -> str:
    try:
        return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def accelerators() -> dict:
    """{'cuda': device names as torch sees them, 'mps': whether torch can use it}: what benchmark measures
    besides the CPU (torch's cuda covers NVIDIA's CUDA and AMD's ROCm builds alike)."""
    if not may_have_accelerator():
        return {"cuda": [], "mps": False}
    import torch

    from imgclass.devices import available, device_name

    cuda = [device_name(torch.device("cuda", i)) for i in range(torch.cuda.device_count())] \
        if available("cuda") else []
    return {"cuda": cuda, "mps": available("mps")}


def may_have_accelerator() -> bool:
    """False only where torch could find no GPU either, so that a CPU-only Linux machine skips importing it:
    neither the CUDA driver library that torch's CUDA build loads (libcuda.so.1) nor the kernel driver
    that its ROCm build needs (/dev/kfd). Elsewhere (macOS: MPS; Windows) torch itself is asked."""
    if platform.system() != "Linux":
        return True
    return cuda_driver_loadable() or Path("/dev/kfd").exists()


def cuda_driver_loadable() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")  # loading the library initialises no GPU
    except OSError:
        return False
    return True


def torch_version() -> str:
    """torch's version with its build tag (2.14.1+cu130: built for CUDA 13.0), read from torch/version.py
    without importing torch; the package metadata, which can lack the tag, where that file is missing."""
    spec = importlib.util.find_spec("torch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        version_file = Path(folder) / "version.py"
        if version_file.is_file():
            match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.MULTILINE)
            if match:
                return match.group(1)
    return importlib.metadata.version("torch")
