"""dvc.yaml declares, for every stage, each library file the stage's script can import: a change to
any of them (a default in params.py, a metric in evaluate.py) reruns the stage, and nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SRC = REPO / "src"
PACKAGE = "imgclass"


def module_file(name: str) -> Path | None:
    """The source file of a dotted imgclass module name, or None outside the package."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file, function-level (lazy) imports included."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1]) if path.is_relative_to(SRC) else ""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this file's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(filter(None, [*parent, base]))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def import_closure(script: Path) -> set[Path]:
    """The imgclass source files a script reaches through imports, including each package's __init__."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                found = module_file(".".join(parts[:i]))
                if found and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return seen


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
    # A folder dependency (src/imgclass/sources: modules loaded by name) counts every file in it as imported.
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
    assert {"imgclass/__init__.py", "imgclass/params.py", "imgclass/review_page.py"} <= closure
