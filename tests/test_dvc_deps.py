"""dvc.yaml declares, for every stage, each library file the stage's script can import: a change to
any of them (a default in params.py, a metric in evaluate.py) reruns the stage, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO
from imgclass.import_closure import closure

SRC = REPO / "src"


def import_closure(script: Path) -> set[Path]:
    """The imgclass source files a script reaches through imports, lazy ones and package __init__s included."""
    return closure([script])


def declared_deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def covered(file: Path, deps: list[str]) -> bool:
    rel = file.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def stage_scripts() -> list[tuple[str, Path, list[str]]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        script = next(word for word in body["cmd"].split() if word.startswith("stages/") and word.endswith(".py"))
        out.append((name, REPO / script, declared_deps(body)))
    return out


@pytest.mark.parametrize("stage,script,deps", stage_scripts(), ids=[s[0] for s in stage_scripts()])
def test_every_imported_library_file_is_a_dependency(stage, script, deps):
    assert covered(script, deps), f"{stage}: dvc.yaml does not list its own script {script.name}"
    # A folder dependency (src/imgclass/data/sources: modules loaded by name) counts every file in it as imported.
    reached = import_closure(script).union(*(import_closure(f) for d in deps if (REPO / d).is_dir()
                                              for f in (REPO / d).rglob("*.py")))
    missing = sorted(f.relative_to(REPO).as_posix() for f in reached if not covered(f, deps))
    assert not missing, f"{stage}: imports {missing} but dvc.yaml does not declare them as deps"


def test_every_stage_script_has_a_stage():
    scripts = {s[1] for s in stage_scripts()}
    assert set((REPO / "stages").glob("*.py")) == scripts


def test_closure_follows_lazy_and_package_imports(tmp_path):
    closure = {f.relative_to(SRC).as_posix() for f in import_closure(REPO / "stages" / "review.py")}
    # review_report.py imports review_page.py inside write_page; the stage reaches it only that way.
    assert {"imgclass/__init__.py", "imgclass/config/params.py", "imgclass/review/__init__.py",
            "imgclass/review/review_page.py"} <= closure
