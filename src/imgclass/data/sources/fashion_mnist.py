"""Fashion-MNIST from the idx files Debian's `dataset-fashion-mnist` ships, or torchvision's download.

Each selected image is written as a PNG so that this source feeds the same stages as any other.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

from imgclass.config.params import Params
from imgclass.data.sources import SourceError, store_image

# Folder-safe names, in label order (the official names contain "/" and spaces).
CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
SUBSETS = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}
DOWNLOAD_DIR = Path("data/downloads/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Decode an (optionally gzipped) idx file into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find_files(root: Path, prefix: str) -> tuple[Path, Path]:
    for suffix in (".gz", ""):
        images, labels = root / f"{prefix}-images-idx3-ubyte{suffix}", root / f"{prefix}-labels-idx1-ubyte{suffix}"
        if images.exists() and labels.exists():
            return images, labels
    raise FileNotFoundError(f"{root}: no {prefix}-images-idx3-ubyte(.gz)")


def resolve_root(root: Path) -> Path:
    """The Debian files when present, else torchvision's download (needs internet)."""
    if (root / "train-images-idx3-ubyte.gz").exists() or (root / "train-images-idx3-ubyte").exists():
        return root
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(DOWNLOAD_DIR), train=True, download=True)
        FashionMNIST(str(DOWNLOAD_DIR), train=False, download=True)
    except Exception as exc:  # URLError, HTTPError, timeouts: all mean "cannot get it"
        raise SourceError(
            f"Fashion-MNIST not found in {root} and the download failed ({type(exc).__name__}); "
            "install Debian's dataset-fashion-mnist (make setup does) or set scrape.fashion_mnist.root"
        ) from None
    return DOWNLOAD_DIR / "FashionMNIST" / "raw"


def select(labels: np.ndarray, label: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    indices = np.flatnonzero(labels == label)
    return np.sort(rng.choice(indices, size=min(limit, len(indices)), replace=False))


def collect(params: Params, raw_dir: Path) -> list[dict]:
    cfg = params.scrape.fashion_mnist
    unknown = [c for c in params.classes if c not in CLASSES]
    if unknown:
        raise SourceError(f"classes: {unknown[0]!r} is not a Fashion-MNIST class; choose from {', '.join(CLASSES)}")
    root = resolve_root(Path(cfg.root))
    rows = []
    for prefix in SUBSETS[cfg.subset]:
        images_path, labels_path = find_files(root, prefix)
        images, labels = read_idx(images_path), read_idx(labels_path)
        rng = np.random.default_rng(params.seed)
        per_subset = -(-params.scrape.max_per_class // len(SUBSETS[cfg.subset]))
        for name in params.classes:
            for index in select(labels, CLASSES.index(name), per_subset, rng):
                rows.append(_store(images[index], raw_dir / name, name, f"{images_path}#{index}", prefix))
    return rows


def _store(pixels: np.ndarray, class_dir: Path, name: str, url: str, prefix: str) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    data = buffer.getvalue()
    sha, path, is_new = store_image(data, class_dir, "png")
    return {"class": name, "query": f"fashion_mnist:{prefix}", "url": url,
            "status": "ok" if is_new else "exists", "reason": "" if is_new else "already on disk",
            "sha256": sha, "bytes": len(data), "width": pixels.shape[1], "height": pixels.shape[0],
            "path": path.relative_to(class_dir.parent).as_posix()}
