"""An existing folder tree: each class maps to glob patterns under a root.

Examples: Animals-10's Italian folder names to English (`dog: ["cane/*"]`), or the tuxpaint photo
folders (`mammals: ["animals/mammals/**/*.png"]`). Files are copied, named by content hash; the
validate stage decides what is a usable image.
"""

from __future__ import annotations

from pathlib import Path

from imgclass.config.params import Params
from imgclass.data.sources import SourceError, store_image
from imgclass.progress import track

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ico",
                  ".avif", ".heic", ".heif", ".jfif"}


def matching_files(root: Path, patterns: list[str]) -> list[Path]:
    """Files under root matching any pattern with an image suffix, sorted for reproducibility."""
    found = {p for pattern in patterns for p in root.glob(pattern) if p.is_file()}
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)


def collect(params: Params, raw_dir: Path) -> list[dict]:
    cfg = params.scrape.folder
    root = Path(cfg.root)
    if not root.is_dir():
        raise SourceError(f"scrape.folder.root: {root} is not a folder; point it at your image tree")
    # Every class's files are found before any is copied: one progress line counts them all, and a
    # pattern that matches nothing stops the run before it copies anything.
    chosen = [(name, path) for name in params.classes
              for path in class_files(root, name, cfg.mapping[name])[: params.scrape.max_per_class]]
    return [_store(path, raw_dir / name, name, root) for name, path in track(chosen, "scrape", unit="file")]


def class_files(root: Path, name: str, patterns: list[str]) -> list[Path]:
    """The class's matching files; none is a mistake in the mapping."""
    paths = matching_files(root, patterns)
    if not paths:
        raise SourceError(f"scrape.folder.mapping.{name}: no image files match {patterns} under {root}")
    return paths


def _store(path: Path, class_dir: Path, name: str, root: Path) -> dict:
    data = path.read_bytes()
    sha, stored, is_new = store_image(data, class_dir, path.suffix)
    return {"class": name, "query": f"folder:{root}", "url": path.as_posix(),
            "status": "ok" if is_new else "exists", "reason": "" if is_new else "already on disk",
            "sha256": sha, "bytes": len(data), "width": "", "height": "",
            "path": stored.relative_to(class_dir.parent).as_posix()}
