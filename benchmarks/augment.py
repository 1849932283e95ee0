"""Augmenting a batch at once (imgclass, kornia) against one transforms-v2 call per image (tutorials).

    .venv/bin/python benchmarks/augment.py [--sizes 64 128] [--batch-sizes 64 256] [--repeats 5]

Both draw crop, flip, rotation and colour jitter per image, from uint8 N x 3 x H x W batches of a real
photo (skimage's astronaut). Median of repeats after a warm-up, on the CPU. Prints a table and one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image
from skimage import data
from torchvision.transforms import v2

from imgclass.training.augment import augmentation
from imgclass.devices import device_name
from imgclass.config.params import Augment
from imgclass.model.preprocess import Preprocessing

OPTIONS = Augment(random_resized_crop=0.5, hflip=True, rotation=10.0, color_jitter=0.2)


def per_image_pipeline(size: int) -> v2.Compose:
    """The same choices as transforms v2 applies them: one call per image, as in a Dataset."""
    j = OPTIONS.color_jitter
    return v2.Compose([v2.RandomResizedCrop(size, scale=(OPTIONS.random_resized_crop, 1.0), antialias=True),
                       v2.RandomHorizontalFlip(), v2.RandomRotation(OPTIONS.rotation),
                       v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 4)])


def photo_batch(size: int, n: int) -> torch.Tensor:
    image = Preprocessing(size, size).to_uint8(Image.fromarray(data.astronaut()))
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).repeat(n, 1, 1, 1)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    rows = []
    for size in args.sizes:
        batched, per_image = augmentation(OPTIONS, size), per_image_pipeline(size)
        for n in args.batch_sizes:
            batch = photo_batch(size, n)
            whole = median_seconds(lambda: batched(batch), args.repeats)
            each = median_seconds(lambda: torch.stack([per_image(x) for x in batch]), args.repeats)
            rows.append({"size": size, "batch": n, "per_image_ms": round(each * 1e3, 1),
                         "batched_ms": round(whole * 1e3, 1), "speedup": round(each / whole, 2)})

    print(f"\naugmentation {OPTIONS.model_dump(exclude_defaults=True)}; {device_name(torch.device('cpu'))}")
    print(f"{'size':>5}{'batch':>7}{'per image ms':>14}{'batched ms':>12}{'speed-up':>10}")
    for r in rows:
        print(f"{r['size']:>5}{r['batch']:>7}{r['per_image_ms']:>14.1f}{r['batched_ms']:>12.1f}{r['speedup']:>9.2f}x")
    print(json.dumps({"benchmark": "augment", "device": device_name(torch.device("cpu")),
                      "options": OPTIONS.model_dump(exclude_defaults=True), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
