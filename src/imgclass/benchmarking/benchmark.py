"""Throughput of training and inference by model, batch size and device, measured after warm-up
as the median of repeats. Devices that are absent are recorded as unavailable, not skipped silently."""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import contextmanager

import numpy as np
import psutil
import torch

from imgclass.benchmarking import machine
from imgclass.devices import available, device_name
from imgclass.model import models
from imgclass.model.preprocess import Preprocessing


@contextmanager
def peak_rss(interval: float = 0.01):
    """Samples this process's resident memory while the block runs; yields a dict with 'peak_mb'."""
    process, result, stop = psutil.Process(), {"peak_mb": 0.0}, threading.Event()

    def sample():
        while not stop.is_set():
            result["peak_mb"] = max(result["peak_mb"], process.memory_info().rss / 2**20)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int, count: int):
    """`count` images as uint8 NCHW batches, cycling through the data."""
    idx = np.arange(count) % len(images)
    for start in range(0, count, batch_size):
        sel = idx[start:start + batch_size]
        yield torch.from_numpy(np.array(images[sel])).permute(0, 3, 1, 2), torch.from_numpy(labels[sel])


def timed(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(arch: str, prep: Preprocessing, images: np.ndarray, labels: np.ndarray, num_classes: int,
            batch_size: int, device: torch.device, n_images: int, warmup: int, repeats: int) -> dict:
    """Training and inference images/s of one (model, batch size, device)."""
    torch.manual_seed(0)
    model = models.build_model(arch, num_classes, "none").to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_pass():
        model.train()
        for x, y in batches(images, labels, batch_size, n_images):
            x, y = prep.normalize(x.to(device)), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
        synchronize(device)

    @torch.no_grad()
    def infer_pass():
        model.eval()
        for x, _ in batches(images, labels, batch_size, n_images):
            model(prep.normalize(x.to(device)))
        synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with peak_rss() as rss:
        train_times = timed(train_pass, warmup, repeats)
        infer_times = timed(infer_pass, warmup, repeats)
    train_s, infer_s = statistics.median(train_times), statistics.median(infer_times)
    row = {"train_images_per_s": n_images / train_s, "infer_images_per_s": n_images / infer_s,
           "train_seconds_median": train_s, "infer_seconds_median": infer_s,
           "peak_rss_mb": round(rss["peak_mb"], 1)}
    if device.type == "cuda":
        row["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def run(params, images: np.ndarray, labels: np.ndarray, n_train: int) -> dict:
    """The whole table for params.benchmark; `n_train` converts images/s into time per epoch. It names the
    machine it ran on (the facts of reports/machine.json): numbers from another machine are not these."""
    cfg = params.benchmark
    result = {"machine": machine.describe(), "devices": {}, "rows": []}
    for dev in cfg.devices:
        if not available(dev):
            result["devices"][dev] = "unavailable"
            continue
        device = torch.device(dev)
        result["devices"][dev] = device_name(device)
        prep = Preprocessing(params.image_size, params.image_size)
        width = max(map(len, cfg.archs)) + 2  # timm/resnet10t is longer than the short names
        for name in cfg.archs:
            for bs in cfg.batch_sizes:
                row = measure(name, prep, images, labels, len(params.classes), bs, device,
                              cfg.images, cfg.warmup, cfg.repeats)
                row = {"model": name, "device": dev, "batch_size": bs, **row,
                       "epoch_seconds": n_train / row["train_images_per_s"]}
                print(f"{name:<{width}}{dev:<6}bs={bs:<5}train {row['train_images_per_s']:8.1f} img/s  "
                      f"infer {row['infer_images_per_s']:8.1f} img/s  epoch {row['epoch_seconds']:7.1f} s", flush=True)
                result["rows"].append(row)
    result["fastest"] = fastest_batch_sizes(result["rows"])
    return result


def headline(rows: list[dict]) -> dict:
    """metrics/benchmark.json: the best training throughput of any architecture, batch size and device."""
    return {"best_train_images_per_s": max((r["train_images_per_s"] for r in rows), default=0.0)}


def fastest_batch_sizes(rows: list[dict]) -> dict:
    best = {}
    for row in rows:
        key = f"{row['model']}@{row['device']}"
        if key not in best or row["train_images_per_s"] > best[key]["train_images_per_s"]:
            best[key] = {"batch_size": row["batch_size"], "train_images_per_s": row["train_images_per_s"]}
    return best


def markdown_table(rows: list[dict], facts: dict) -> str:
    """The rows under a line naming the machine that measured them."""
    head = (f"Measured on {machine.summary(facts)}.\n\n"
            "| model | device | batch | train img/s | epoch s | infer img/s | peak RSS MB |\n"
            "|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['model']} | {r['device']} | {r['batch_size']} | {r['train_images_per_s']:.1f} | "
        f"{r['epoch_seconds']:.1f} | {r['infer_images_per_s']:.1f} | {r['peak_rss_mb']:.0f} |\n" for r in rows)
