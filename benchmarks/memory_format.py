"""Training-step throughput, contiguous against channels_last memory format (the models' `channels_last`).

    .venv/bin/python benchmarks/memory_format.py [--archs cnn_medium timm/resnet10t] [--size 28]
                                                 [--batch-size 64] [--seconds 3] [--repeats 3]

One training step = forward, cross-entropy, backward and an AdamW step on a random N x 3 x size x size
batch, as the train stage runs it on the CPU. Images a second: the median of repeats, each as many steps
as fit in --seconds after two warm-up steps. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from imgclass.devices import device_name
from imgclass.model.models import build_model

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def images_per_second(arch: str, size: int, batch_size: int, memory_format: torch.memory_format,
                      seconds: float) -> float:
    torch.manual_seed(0)
    model = build_model(arch, 10).train().to(memory_format=memory_format)
    x = torch.randn(batch_size, 3, size, size).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch_size,))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(2):
        step()
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        images += batch_size
    return images / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["cnn_medium", "timm/resnet10t"])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    rows = []
    print(f"{'arch':<18}{'contiguous img/s':>18}{'channels_last img/s':>21}{'gain':>8}")
    for arch in args.archs:
        row = {"arch": arch}
        for label, memory_format in FORMATS.items():
            row[label] = round(statistics.median(
                images_per_second(arch, args.size, args.batch_size, memory_format, args.seconds)
                for _ in range(args.repeats)), 1)
        row["gain"] = round(row["channels_last"] / row["contiguous"] - 1, 3)
        rows.append(row)
        print(f"{arch:<18}{row['contiguous']:>18.0f}{row['channels_last']:>21.0f}{row['gain']:>8.0%}")
    print(json.dumps({"benchmark": "memory_format", "device": device_name(torch.device("cpu")),
                      "threads": torch.get_num_threads(), "size": args.size, "batch_size": args.batch_size,
                      "rows": rows}))


if __name__ == "__main__":
    main()
