"""Download throughput, 1 worker against 8: a local server answers ~200 image requests, each after
50 ms of latency (a typical image host), so the gain measured is that of overlapping waits.

    .venv/bin/python benchmarks/scrape.py [--images 200] [--latency 0.05] [--workers 1 8]

Prints a table and one JSON line. Goal: 8 workers at least 5x faster than 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's local server

from httpserver import LocalServer, distinct_jpegs, image  # noqa: E402

from imgclass.config.params import Download  # noqa: E402
from imgclass.data.sources.download import Job, download_all  # noqa: E402

GOAL_SPEEDUP = 5.0


def time_download(server: LocalServer, count: int, workers: int) -> tuple[float, int]:
    """Seconds to fetch and store every image into a fresh folder, and how many were stored."""
    jobs = [Job("bench", server.url(f"/{i}.jpg")) for i in range(count)]
    with tempfile.TemporaryDirectory() as raw_dir:
        started = time.perf_counter()
        rows = download_all(jobs, Path(raw_dir), Download(workers=workers))
        elapsed = time.perf_counter() - started
    return elapsed, sum(row["status"] == "ok" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server waits per request")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)

    images = distinct_jpegs(args.images, size=(160, 120))
    with LocalServer({f"/{i}.jpg": image(data, delay=args.latency) for i, data in enumerate(images)}) as server:
        results = {workers: time_download(server, args.images, workers) for workers in args.workers}

    base = results[args.workers[0]][0]
    print(f"{'workers':>8} {'seconds':>8} {'images/s':>9} {'speedup':>8} {'stored':>7}")
    for workers, (seconds, stored) in results.items():
        print(f"{workers:>8} {seconds:>8.2f} {args.images / seconds:>9.1f} {base / seconds:>7.1f}x {stored:>7}")
    speedup = base / results[args.workers[-1]][0]
    print(json.dumps({
        "benchmark": "scrape_download", "images": args.images, "latency_s": args.latency,
        "seconds": {str(w): round(s, 3) for w, (s, _) in results.items()},
        "speedup": round(speedup, 2), "goal": GOAL_SPEEDUP, "goal_met": speedup >= GOAL_SPEEDUP,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
