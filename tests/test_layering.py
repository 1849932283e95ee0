"""The package's layering, read from the source: which subpackage may import which (docs/architecture.md
draws it), what inference may reach, and the old flat module paths that still import."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from imgclass import MOVED, import_closure, moved_to

PACKAGE_DIR = import_closure.PACKAGE_DIR
UTILITIES = {"files", "progress", "devices", "plots", "plots_template", "import_closure"}  # top-level modules
# Each subpackage and the subpackages it may import (besides itself and the utilities); lower layers first.
ALLOWED = {
    "config": set(),
    "tracking": set(),
    "model": {"config"},
    "data": {"config", "model"},
    "review": {"config", "data", "model"},
    "training": {"config", "data", "model", "tracking"},
    "evaluation": {"config", "data", "model"},
    "benchmarking": {"config", "model"},
    "serving": {"config", "data", "model", "evaluation", "tracking"},
}
# What a served model or an exported one loads must not pull in training, the review or any plotting.
INFERENCE = ("model", "serving")
NOT_FOR_INFERENCE = ("training/", "review/", "evaluation/evaluation_report.py", "evaluation/ensemble_report.py",
                     "evaluation/explain.py", "plots.py")


def layer(path: Path) -> str:
    """The subpackage of a source file, or the module name of a top-level one."""
    parts = path.relative_to(PACKAGE_DIR).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def library_files(subpackage: str) -> list[Path]:
    return sorted((PACKAGE_DIR / subpackage).rglob("*.py"))


def imported_files(path: Path) -> set[Path]:
    """The imgclass files one file imports directly (lazy imports included), with their packages' __init__."""
    found = set()
    for name in import_closure.imported_names(path):
        parts = name.split(".")
        found |= {f for i in range(1, len(parts) + 1) if (f := import_closure.module_file(".".join(parts[:i])))}
    return found - {PACKAGE_DIR / "__init__.py"}


def test_every_module_is_in_a_known_layer():
    layers = {layer(p) for p in PACKAGE_DIR.rglob("*.py")} - {"__init__", "cli"}
    assert layers == set(ALLOWED) | UTILITIES


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_a_subpackage_imports_only_the_layers_below_it(subpackage):
    allowed = ALLOWED[subpackage] | UTILITIES | {subpackage}
    wrong = sorted(f"{p.relative_to(PACKAGE_DIR)} imports {f.relative_to(PACKAGE_DIR)}"
                   for p in library_files(subpackage) for f in imported_files(p) if layer(f) not in allowed)
    assert not wrong, wrong


def test_utilities_import_no_subpackage():
    wrong = sorted(f"{name}.py imports {f.relative_to(PACKAGE_DIR)}" for name in UTILITIES
                   for f in imported_files(PACKAGE_DIR / f"{name}.py") if layer(f) not in UTILITIES)
    assert not wrong, wrong


@pytest.mark.parametrize("subpackage", INFERENCE)
def test_inference_reaches_no_training_review_or_plotting(subpackage):
    reached = import_closure.closure(library_files(subpackage))
    wrong = sorted(p.relative_to(PACKAGE_DIR).as_posix() for p in reached
                   if p.relative_to(PACKAGE_DIR).as_posix().startswith(NOT_FOR_INFERENCE))
    assert not wrong, f"{subpackage}/ reaches {wrong}"


def test_stages_import_the_library_and_the_standard_library_only():
    wrong = {script.name: sorted(outside) for script in (REPO / "stages").glob("*.py")
             if (outside := import_closure.third_party([script]))}
    assert not wrong, wrong


def test_the_layering_check_sees_a_wrong_import(tmp_path, monkeypatch):
    """The check is not vacuous: a model/ file importing training/ is reported."""
    bad = PACKAGE_DIR / "model" / "_layering_probe.py"
    monkeypatch.setattr(sys.modules[__name__], "library_files", lambda sub: [bad] if sub == "model" else [])
    try:
        bad.write_text("from imgclass.training import train\n")
        with pytest.raises(AssertionError, match="training/train.py"):
            test_a_subpackage_imports_only_the_layers_below_it("model")
    finally:
        bad.unlink()


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_imports_the_module_at_its_new_place(old):
    import importlib

    assert importlib.import_module(f"imgclass.{old}") is importlib.import_module(moved_to(f"imgclass.{old}"))


def test_a_model_registered_before_the_move_unpickles():
    """MLflow pickled the served class by its module path; models registered before the subpackages say
    imgclass.registry. This is the reference such a pickle holds (protocol 0's GLOBAL opcode)."""
    from imgclass.serving.registry import ImageClassifier

    assert pickle.loads(b"cimgclass.registry\nImageClassifier\n.") is ImageClassifier
    # A submodule of a moved package, in a fresh interpreter where nothing is imported yet.
    proc = subprocess.run([sys.executable, "-c", "import imgclass.sources.folder as f; print(f.__name__)"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "imgclass.data.sources.folder", proc.stderr[-800:]
