"""Sources of raw images. Each writes files into `data/raw/<class>/<sha256>.<ext>` and returns
manifest rows, so every source feeds the same downstream stages.

A source module exposes `collect(params, raw_dir) -> list[dict]` (rows with MANIFEST_FIELDS).
"""

from __future__ import annotations

import hashlib
import importlib
from collections import Counter
from pathlib import Path

from imgclass import files
from imgclass.config.params import Params

MANIFEST_FIELDS = ["class", "query", "url", "status", "reason", "sha256", "bytes", "width", "height", "path"]
SOURCES = ("fashion_mnist", "folder", "ddg", "urls")


class SourceError(RuntimeError):
    """A source cannot deliver (offline, missing files); the message says what to do."""


def store_image(data: bytes, class_dir: Path, ext: str) -> tuple[str, Path, bool]:
    """Write `data` as `<class_dir>/<sha256>.<ext>` atomically. Returns (sha256, path, is_new)."""
    sha = hashlib.sha256(data).hexdigest()
    path = class_dir / f"{sha}.{ext.lower().lstrip('.')}"
    if path.exists():
        return sha, path, False
    files.write_bytes(path, data)
    return sha, path, True


def collect(params: Params, raw_dir: Path) -> list[dict]:
    """Run the source named in params.scrape.source; return its manifest rows."""
    name = params.scrape.source
    if name not in SOURCES:
        raise SourceError(f"scrape.source: unknown source {name!r}; choose one of {', '.join(SOURCES)}")
    module = importlib.import_module(f"imgclass.data.sources.{name}")
    return module.collect(params, Path(raw_dir))


def summarize(rows: list[dict]) -> dict:
    """Counts for reports/scrape.json (`downloaded` is also metrics/scrape.json): per class and per outcome."""
    stored = [r for r in rows if r["status"] in ("ok", "exists")]
    return {
        "found": len(rows),
        "downloaded": len(stored),
        "per_class": dict(sorted(Counter(r["class"] for r in stored).items())),
        "failed_by_reason": dict(sorted(Counter(r["reason"] for r in rows if r["status"] not in ("ok", "exists")).items())),
    }


def prune(raw_dir: Path, rows: list[dict], classes: list[str]) -> int:
    """Delete image files that are not part of this dataset any more (another source, a dropped
    class); the journal and manifest stay. Returns the number removed."""
    keep = {raw_dir / r["path"] for r in rows if r.get("path")}
    removed = 0
    for class_dir in (p for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if raw_dir.is_dir() else []:
        for path in class_dir.iterdir():
            if path.is_file() and (class_dir.name not in classes or path not in keep):
                path.unlink()
                removed += 1
        if class_dir.name not in classes and not any(class_dir.iterdir()):
            class_dir.rmdir()
    return removed
