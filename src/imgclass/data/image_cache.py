"""The uint8 rows a training or evaluation process reads (N x H x W x 3 at image_size): written row by
row, read a batch at a time, so that neither side holds every image in memory.

`decode_to_scratch` decodes a split's working copies (data/clean) once per process into a scratch .npy
file that is deleted when the process ends. Uncompressed rows at 224 px weigh about as much as the
photos themselves, so they are not kept at rest (nor in DVC's cache or a remote); decoding working
copies that are already at image_size is cheap (see docs/benchmarks.md).

`write_cache` decodes with threads (`decode.squashed_batches`, shared with the review's embeddings)
and appends each row to a .npy file (a temporary file, renamed when complete). `CachedImages` reads
rows with `os.pread`. Neither maps the file: pages of a memory map that a process has touched count in
its resident memory until the map closes, and a 20,000-photo split at 224 px is 3 GB; plain reads and
writes leave them in the page cache instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from imgclass import files
from imgclass.data.decode import squashed_batches
from imgclass.data.split import SplitError
from imgclass.model.preprocess import Preprocessing
from imgclass.progress import Progress


def write_cache(path: Path, images: Sequence[Path], prep: Preprocessing, desc: str = "cache") -> None:
    """Decode and squash every image to prep.image_size into `path`, atomically.

    Rows are appended to the file as they are decoded, a chunk at a time: a memory map would keep every
    row it wrote in the process's resident memory until the map closes (3 GB for 20,000 photos)."""
    shape = (len(images), prep.image_size, prep.image_size, 3)
    with files.atomic_path(path) as tmp, tmp.open("wb") as f:
        np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                 "fortran_order": False, "shape": shape})
        with Progress(len(images), desc) as progress:
            for batch in squashed_batches(images, prep.image_size):
                f.write(batch.tobytes())
                progress.update(len(batch))


def load_split(split_dir: Path, split: str, classes: list[str], image_size: int,
               images_dir: Path | None = None) -> tuple[CachedImages, np.ndarray]:
    """(uint8 images N x image_size x image_size x 3, read from disk as they are indexed; int64 labels)
    of one split. The CSV's paths are relative to images_dir, by default the split's sibling
    data/clean (or absolute); each image is decoded once here, into a scratch file this process reads."""
    split_dir = Path(split_dir)
    rows = files.read_csv(split_dir / f"{split}.csv")
    index = {name: i for i, name in enumerate(classes)}
    unknown = {r["label"] for r in rows} - set(index)
    if unknown:
        raise SplitError(f"{split_dir / split}.csv: labels {sorted(unknown)} are not in params classes; rerun split")
    images_dir = split_dir.parent / "clean" if images_dir is None else Path(images_dir)
    paths = [images_dir / r["path"] for r in rows]
    if missing := next((p for p in paths if not p.is_file()), None):
        raise SplitError(f"{split_dir / split}.csv names {missing}, which does not exist; "
                         "rerun the validate and split stages (dvc repro split)")
    labels = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    images = decode_to_scratch(paths, Preprocessing(image_size, image_size), desc=f"decoding {split}")
    return images, labels


_scratch: tempfile.TemporaryDirectory | None = None  # this process's rows; removed when it exits


def decode_to_scratch(images: Sequence[Path], prep: Preprocessing, desc: str = "decoding") -> CachedImages:
    """The images squashed to prep.image_size, in a scratch file under $TMPDIR that lives as long as this
    process (DataLoader workers reopen it by name)."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.TemporaryDirectory(prefix="imgclass-rows-")
    handle, name = tempfile.mkstemp(suffix=".npy", dir=_scratch.name)
    os.close(handle)
    write_cache(Path(name), images, prep, desc=desc)
    return CachedImages(name)


def save_array(path: Path, array: np.ndarray) -> None:
    """An array already in memory (tests, benchmarks) as a cache file, atomically."""
    with files.atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, np.ascontiguousarray(array))


class CachedImages:
    """Rows of a C-ordered .npy file, read on demand: `images[i]`, `images[a:b]` and `images[indices]`
    return arrays as numpy indexing would; `len`, `shape` and `dtype` as the array's."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with self.path.open("rb") as f:
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, fortran_order, dtype = read_header[np.lib.format.read_magic(f)](f)
            self._offset = f.tell()
        if fortran_order or dtype.hasobject or not shape:
            raise ValueError(f"{self.path}: not a C-ordered array of images; rerun the split stage")
        self.shape, self.dtype = tuple(shape), dtype
        self._row_shape = self.shape[1:]
        self._row_bytes = int(np.prod(self._row_shape, dtype=np.int64)) * dtype.itemsize
        expected = self._offset + self._row_bytes * self.shape[0]
        if self.path.stat().st_size < expected:
            raise ValueError(f"{self.path}: shorter than its header says (truncated); rerun the split stage")
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._rows(self._index(int(key)), 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._rows(start, max(0, stop - start))
            key = np.arange(start, stop, step)
        indices = np.asarray(key)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"cached images are indexed by an int, a slice or a 1-d array of ints, not {key!r}")
        out = np.empty((len(indices), *self._row_shape), self.dtype)
        for position, index in enumerate(indices.tolist()):
            out[position] = self._rows(self._index(index), 1)[0]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self[:]
        return array if dtype is None else array.astype(dtype)

    def _index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} out of range for {len(self)} cached images")
        return index % len(self)

    def _rows(self, start: int, count: int) -> np.ndarray:
        data = bytearray(count * self._row_bytes)
        view, done = memoryview(data), 0
        while done < len(data):  # pread may return less than asked for large reads
            read = os.preadv(self._fd, [view[done:]], self._offset + start * self._row_bytes + done)
            if read == 0:
                raise ValueError(f"{self.path}: ends early; rerun the split stage")
            done += read
        return np.frombuffer(data, self.dtype).reshape(count, *self._row_shape)

    def __getstate__(self) -> dict:  # DataLoader workers: each process opens its own descriptor
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None
