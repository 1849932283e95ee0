"""Benchmarks from another machine (issue #25 item 6): the machine stage writes this machine's CPU,
usable cores, GPUs and torch build to reports/machine.json on every `dvc repro`, and the benchmark
depends on that file. The same machine writes the same bytes, so a second repro skips the benchmark;
a baseline committed on another machine differs, so a fresh clone reruns it."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, tiny_params_dict
from imgclass.benchmarking import machine
from imgclass.devices import available
from scratch_repo import make_repo, ran_stages, run


def test_facts_are_what_torch_sees_and_stable():
    facts = machine.describe()
    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available("cuda") else []
    assert facts == {"cpu": facts["cpu"], "cpu_features": facts["cpu_features"], "usable_cores": facts["usable_cores"],
                     "cuda": cuda, "mps": available("mps"), "torch": torch.__version__}
    assert facts["cpu"] and 1 <= facts["usable_cores"] <= os.cpu_count()
    # The vector instructions recorded are those torch's kernels run on here (x86: AVX2 or AVX512).
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        assert capability.lower() in facts["cpu_features"]
    if platform.machine() in ("x86_64", "AMD64") and platform.system() == "Linux":
        assert "family" in facts["cpu"]  # "AMD EPYC" names several generations; family and model tell them apart
    assert machine.describe() == facts  # nothing volatile: a second look gives the same file


def test_machines_named_alike_differ_in_their_vector_instructions():
    zen2 = {"flags": "fpu sse2 avx avx2 fma bmi2"}
    zen4 = {"flags": "fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16"}
    graviton3 = {"Features": "fp asimd asimddp sve i8mm bf16"}
    assert machine.features_listed(zen2) == ["avx2"]
    assert machine.features_listed(zen4) == ["avx2", "avx512", "avx512_vnni", "avx512_bf16"]
    assert machine.features_listed({"flags": "avx2 fma avx512f"}) == ["avx2"]  # not the set torch's kernels need
    assert machine.features_listed(graviton3) == ["asimd", "asimddp", "i8mm", "bf16", "sve"]
    assert machine.features_listed({}) == []


def test_the_summary_names_the_vector_instructions_and_reads_older_files():
    facts = {"cpu": "AMD EPYC (family 25 model 17)", "cpu_features": ["avx2", "avx512"], "usable_cores": 2,
             "cuda": [], "mps": False, "torch": "2.14.1+cu130"}
    assert machine.summary(facts) == "AMD EPYC (family 25 model 17) with avx2 avx512, 2 usable cores, torch 2.14.1+cu130"
    older = {k: v for k, v in facts.items() if k != "cpu_features"} | {"cpu": "AMD EPYC"}
    assert machine.summary(older) == "AMD EPYC, 2 usable cores, torch 2.14.1+cu130"


def imported_modules(importtime_log: str) -> set[str]:
    """Module names from `python -X importtime` output ('import time: self | cumulative | name')."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


def test_the_stage_imports_torch_only_where_a_gpu_may_be(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "stages" / "machine.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=True)
    assert json.loads((tmp_path / "reports" / "machine.json").read_text()) == machine.describe()
    modules = imported_modules(proc.stderr)
    assert "imgclass.benchmarking.machine" in modules  # the log is the stage's own
    assert ("torch" in modules) == machine.may_have_accelerator()  # False on a Linux box with no GPU driver


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def repro(repo: Path) -> str:
    proc = run(["dvc", "repro"], repo)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory, fashion_split):
    """A committed baseline: dvc.yaml's own machine and benchmark stages, reproduced over conftest's tiny
    split (the stages before them only make data/clean and data/split, which make_split writes faster)."""
    _, split_dir = fashion_split
    repo = make_repo(tmp_path_factory.mktemp("machine"), tiny_params_dict())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {s: stages[s] for s in ("machine", "benchmark")}},
                                                  sort_keys=False))
    shutil.copytree(split_dir.parent / "clean", repo / "data" / "clean")
    shutil.copytree(split_dir, repo / "data" / "split")
    assert ran_stages(repro(repo)) == {"machine", "benchmark"}
    commit(repo, "baseline")
    return repo


@pytest.mark.slow
def test_a_second_repro_on_the_same_machine_skips_the_benchmark(repo):
    out = repro(repo)
    assert ran_stages(out) == {"machine"}  # always_changed: it runs, and writes the same bytes
    assert "Stage 'benchmark' didn't change, skipping" in out
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # nor does dvc.lock change


@pytest.mark.slow
def test_a_baseline_from_another_machine_reruns_the_benchmark(repo):
    recorded, report = repo / "reports" / "machine.json", repo / "reports" / "benchmark.json"
    here, elsewhere = machine.describe(), {**json.loads(recorded.read_text()), "cpu": "Another CPU"}
    # The baseline as another machine commits it: its facts in both files, and dvc.lock hashing them
    # (dvc commit records the workspace as if the stages had written it).
    recorded.write_text(json.dumps(elsewhere, indent=2) + "\n")
    report.write_text(json.dumps({**json.loads(report.read_text()), "machine": elsewhere}, indent=2) + "\n")
    run(["dvc", "commit", "--force"], repo)
    commit(repo, "baseline from another machine")

    assert ran_stages(repro(repo)) == {"machine", "benchmark"}
    assert json.loads(recorded.read_text()) == here
    assert json.loads(report.read_text())["machine"] == here
    table = (repo / "plots" / "benchmark" / "table.md").read_text()
    assert table.startswith(f"Measured on {machine.summary(here)}.\n")
    commit(repo, "benchmark of this machine")
