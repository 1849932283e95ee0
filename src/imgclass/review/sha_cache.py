"""Per-image vectors kept by the image's sha256 in one .npz file: the review's embeddings and quality
severities depend on the pixels alone, so a rerun computes only images it has not seen."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from imgclass.files import atomic_path


def read(path: Optional[Path], field: str) -> dict[str, np.ndarray]:
    """{sha256: vector} from `path`'s `field` array; empty when there is no file (or no path)."""
    if path is None or not Path(path).exists():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return dict(zip(data["sha256"].tolist(), data[field]))


def write(path: Path, vectors: dict[str, np.ndarray], field: str, dtype=np.float32) -> None:
    """Every vector under `field`, keyed by sha256, atomically (a killed run leaves the old file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, sha256=np.array(list(vectors), dtype="<U64"), **{field: np.stack(list(vectors.values())).astype(dtype)})
