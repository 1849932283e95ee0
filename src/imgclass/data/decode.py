"""Many image files into uint8 arrays at one size, in order, a batch at a time: how training's scratch
rows (image_cache) and the review's embeddings read the working copies."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from imgclass.data.images import decode_rgb
from imgclass.devices import usable_cpus
from imgclass.model.preprocess import Preprocessing


def squashed_batches(paths: Sequence[Path], size: int, batch_size: int = 256,
                     workers: int | None = None) -> Iterator[np.ndarray]:
    """The images in order as uint8 batch x size x size x 3 arrays: each decoded as `images.decode_rgb`
    does (EXIF, transparency on white: a raw folder reads like a working copy) and squashed as
    `Preprocessing.to_uint8` squashes for training and prediction, so the review sees the pixels a model
    sees. Threads decode a batch at a time (Pillow releases the GIL); memory holds one batch."""
    squash = Preprocessing(size, size).to_uint8
    with ThreadPoolExecutor(max_workers=workers or min(4, usable_cpus())) as pool:
        for start in range(0, len(paths), batch_size):
            yield np.stack(list(pool.map(lambda path: squash(decode_rgb(path)), paths[start:start + batch_size])))
