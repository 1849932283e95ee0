"""The imgclass source files a script or module reaches through its imports, read from the source (no
import runs). One walker answers three questions: which files training's resume fingerprint hashes
(every import, lazy ones inside functions too), which third-party packages a registered model loads
(only the imports that run when the module loads), and which files dvc.yaml must list for a stage."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Iterable

PACKAGE = "imgclass"
PACKAGE_DIR = Path(__file__).parent


def module_file(name: str) -> Path | None:
    """The source file of a dotted imgclass module or package name; None for anything else (a class,
    a function, another package)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, lazy: bool = True) -> list[str]:
    """Every module an import statement of the file names; `from a import b` names a and a.b (b may be
    a module). lazy=False skips statements inside function bodies: those do not run on import."""
    package = _package_of(path)
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if not lazy and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                names.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child.module or "", child.level, package)
                names.append(base)
                names.extend(f"{base}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return names


def closure(entries: Iterable[Path], lazy: bool = True) -> set[Path]:
    """The imgclass files the entry files reach, the package __init__ files on the way included
    (importing a.b.c runs a/__init__ and a/b/__init__). Entries inside the package count themselves."""
    todo = [Path(entry) for entry in entries]
    seen = {path for path in todo if path.is_relative_to(PACKAGE_DIR)}
    while todo:
        for name in imported_names(todo.pop(), lazy):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:i]))
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return seen


def third_party(paths: Iterable[Path], lazy: bool = True) -> set[str]:
    """The top-level names of what the files import from outside the standard library and imgclass."""
    tops = {name.split(".")[0] for path in paths for name in imported_names(path, lazy)}
    return {top for top in tops if top and top != PACKAGE and top not in sys.stdlib_module_names}


def _package_of(path: Path) -> str:
    path = Path(path).resolve()
    if not path.is_relative_to(PACKAGE_DIR):
        return ""
    return ".".join((PACKAGE, *path.relative_to(PACKAGE_DIR).parent.parts))


def _absolute(module: str, level: int, package: str) -> str:
    """`from ..x import y` inside package a.b.c names a.b.x."""
    if not level:
        return module
    parent = package.split(".")[: len(package.split(".")) - level + 1]
    return ".".join(filter(None, [*parent, module]))
