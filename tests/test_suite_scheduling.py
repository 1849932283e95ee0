"""make test's scheduling (tests/conftest.py): under pytest-xdist every test of a module runs on one
worker, so that a module-scoped repository is built once. xdist's own loadgroup stopped doing this
under pytest 9.2 without a word (pytest-dev/pytest-xdist#1386); this is the check that would have said so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import REPO, work_unit

pytestmark = pytest.mark.slow  # a pytest run with two xdist workers


def test_each_module_runs_on_one_worker():
    modules = ["tests/test_files.py", "tests/test_params.py", "tests/test_progress.py"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", "not slow",
                           "-n", "2", "--dist", "loadscope", "--no-loadscope-reorder", *modules],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    workers = defaultdict(set)
    for worker, module in re.findall(r"\[(gw\d+)\] .*?PASSED (tests/\w+\.py)::", proc.stdout):
        workers[module].add(worker)
    assert set(workers) == set(modules), proc.stdout[-3000:]
    assert all(len(w) == 1 for w in workers.values()), dict(workers)
    assert len(set().union(*workers.values())) == 2  # and both workers had work


def test_the_modules_that_share_the_session_pipeline_are_one_work_unit():
    units = {work_unit(f"tests/{m}.py::test_x") for m in ("test_pipeline", "test_parallel_experiments")}
    assert len(units) == 1
    assert work_unit("tests/test_split.py::test_x") != work_unit("tests/test_files.py::test_x")
    assert work_unit("tests/test_split.py::test_a[1]") == work_unit("tests/test_split.py::TestB::test_c")
