"""Epoch time of imgclass's data path against the one tutorials use, same model, data and batches.

    .venv/bin/python benchmarks/data_path.py [--sizes 64 128] [--archs mobilenet_v3_small cnn_simple resnet18] [--images 600]

naive:    torchvision ImageFolder; PIL opens, decodes and resizes every JPEG in every epoch
          (Resize, RandomHorizontalFlip, ToTensor, Normalize per image), DataLoader with 0 and 2 workers.
imgclass: every image decoded and resized once into a uint8 array (as the split stage does, timed
          separately), memory-mapped; flips drawn per image but applied to the whole batch on the
          training device; normalisation per batch; channels_last; the library's own training loop.

The inputs are photo-sized: JPEGs of 400-600 px (quality 90), Debian's tuxpaint photo stamps (5
classes) pasted on random crops of the photos scikit-image and scikit-learn ship. Prints a table and one JSON line. Goal: imgclass's epoch
at least 3x faster than the best naive one on this CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from imgclass.model import models
from imgclass.training.augment import augmentation
from imgclass.devices import device_name
from imgclass.data.image_cache import CachedImages, write_cache
from imgclass.config.params import Augment, ModelParams
from imgclass.model.preprocess import Preprocessing
from imgclass.training.train import ArrayDataset, Phase, Stepper, make_loader, make_optimizer, make_schedule, param_groups, \
    run_epoch

STAMPS = Path("/usr/share/tuxpaint/stamps")
CLASSES = {"mammals": "animals/mammals", "birds": "animals/birds", "fruit": "food/fruit",
           "flowers": "plants/flowers", "vehicles": "vehicles"}
GOAL = 3.0


def background_photos() -> list[Image.Image]:
    """Real colour photos that scikit-image and scikit-learn ship, to give the JPEGs photo-like detail."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field(),
              data.immunohistochemistry(), *load_sample_images().images]
    return [Image.fromarray(a).convert("RGB") for a in arrays]


def make_photos(root: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` JPEGs of 400-600 px per side in root/<class>/: a class's stamp pasted on a random crop of
    a real photo, cycling through the classes."""
    rng = random.Random(seed)
    stamps = {name: sorted((STAMPS / folder).rglob("*.png")) for name, folder in CLASSES.items()}
    backgrounds = background_photos()
    paths = []
    for i in range(count):
        name = list(CLASSES)[i % len(CLASSES)]
        stamp = Image.open(rng.choice(stamps[name])).convert("RGBA")
        size = (rng.randint(400, 600), rng.randint(400, 600))
        background = rng.choice(backgrounds)
        left, top = rng.randint(0, background.width // 3), rng.randint(0, background.height // 3)
        photo = background.crop((left, top, background.width, background.height)).resize(size)
        scale = rng.uniform(0.6, 0.95) * min(size[0] / stamp.width, size[1] / stamp.height)
        stamp = stamp.resize((max(1, int(stamp.width * scale)), max(1, int(stamp.height * scale))))
        photo.paste(stamp, (rng.randint(0, size[0] - stamp.width), rng.randint(0, size[1] - stamp.height)), stamp)
        path = root / name / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo.save(path, quality=90)
        paths.append(path)
    return paths


def naive_epoch_seconds(root: Path, arch: str, size: int, batch: int, workers: int, epochs: int) -> list[float]:
    """The tutorial loop: ImageFolder + per-image PIL transforms, decoded anew every epoch."""
    prep = Preprocessing(size, size)
    transform = T.Compose([T.Resize((size, size)), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(prep.mean, prep.std)])
    loader = DataLoader(datasets.ImageFolder(str(root), transform=transform), batch_size=batch, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0)
    model = models.build_model(arch, len(CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            loss_fn(model(images), labels).backward()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
    return seconds


def imgclass_epoch_seconds(images: np.ndarray, labels: np.ndarray, arch: str, size: int, batch: int,
                           epochs: int, compile: bool = False) -> list[float]:
    """The library's loop on the decoded-once array, batch augmentation on the device."""
    cfg = ModelParams(arch=arch, batch_size=batch, lr=1e-3, channels_last=True, compile=compile,
                      augment=Augment(hflip=True))
    model = models.build_model(arch, len(CLASSES)).to(memory_format=torch.channels_last)
    stepper = Stepper(model, Preprocessing(size, size), nn.CrossEntropyLoss(), torch.device("cpu"), cfg,
                      augment=augmentation(cfg.augment, size)).for_phase()
    optimizer = make_optimizer(param_groups(model, cfg, Phase("unfrozen", epochs)), cfg)
    scheduler = make_schedule(optimizer, cfg, -(-len(labels) // batch), epochs)
    dataset = ArrayDataset(images, labels)
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        run_epoch(stepper, make_loader(dataset, batch, True, epoch, 0, stepper.device), optimizer, scheduler)
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--archs", nargs="+", default=["mobilenet_v3_small", "cnn_simple", "resnet18"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    parser.add_argument("--compile", action="store_true", help="add a row for the library's loop with torch.compile")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        paths = make_photos(root, args.images)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        labels = np.array([list(CLASSES).index(p.parent.name) for p in paths])
        for size in args.sizes:
            started = time.perf_counter()
            write_cache(Path(tmp) / f"cache{size}.npy", paths, Preprocessing(size, size))
            decode_once = time.perf_counter() - started
            images = CachedImages(Path(tmp) / f"cache{size}.npy")  # as training reads data/split
            for arch in args.archs:
                timed = {"imgclass": imgclass_epoch_seconds(images, labels, arch, size, args.batch_size,
                                                            args.epochs + 1)[1:]}
                if args.compile:  # the warm-up epoch includes compiling
                    timed["imgclass + compile"] = imgclass_epoch_seconds(images, labels, arch, size, args.batch_size,
                                                                         args.epochs + 1, compile=True)[1:]
                for workers in (0, 2):
                    timed[f"naive, {workers} workers"] = naive_epoch_seconds(root, arch, size, args.batch_size,
                                                                           workers, args.epochs + 1)[1:]
                medians = {path: statistics.median(s) for path, s in timed.items()}
                best_naive = min(v for k, v in medians.items() if k.startswith("naive"))
                for path, median in medians.items():
                    rows.append({"arch": arch, "size": size, "path": path, "epoch_s": round(median, 3),
                                 "images_per_s": round(len(paths) / median, 1),
                                 "speedup_vs_best_naive": round(best_naive / median, 2),
                                 "decode_once_s": round(decode_once, 2) if path == "imgclass" else None})

    print(f"\n{args.images} JPEGs, 400-600 px ({megabytes:.0f} MB), batch {args.batch_size}, "
          f"median of {args.epochs} epochs after a warm-up, {device_name(torch.device('cpu'))}")
    print(f"{'arch':<11}{'size':>5}  {'data path':<18}{'epoch s':>8}{'img/s':>8}{'speed-up':>9}{'decode once s':>15}")
    for r in rows:
        once = f"{r['decode_once_s']:.2f}" if r["decode_once_s"] is not None else ""
        print(f"{r['arch']:<11}{r['size']:>5}  {r['path']:<18}{r['epoch_s']:>8.2f}{r['images_per_s']:>8.0f}"
              f"{r['speedup_vs_best_naive']:>8.2f}x{once:>15}")
    ratios = {f"{r['arch']}@{r['size']}": r["speedup_vs_best_naive"] for r in rows if r["path"] == "imgclass"}
    compiled = {f"{r['arch']}@{r['size']}": r["speedup_vs_best_naive"] for r in rows
                if r["path"] == "imgclass + compile"}
    print(json.dumps({"benchmark": "data_path", "images": args.images, "batch_size": args.batch_size,
                      "device": device_name(torch.device("cpu")), "rows": rows, "speedups": ratios,
                      "speedups_compiled": compiled, "goal": GOAL,
                      "goal_met": {k: v >= GOAL for k, v in ratios.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
