"""The pipeline at camera scale: the real `dvc repro` from scrape through split plus one small model, on
N synthetic camera-size JPEGs, against the time it takes just to decode them (issue 20, item 6).

    .venv/bin/python benchmarks/scale.py --n 2000 [--seed 0] [--photos-dir DIR] [--runs-dir DIR]
    .venv/bin/python benchmarks/scale.py --n 20000 --compare-to benchmarks/results/scale-2000.json
    .venv/bin/python benchmarks/scale.py --n 2000 --generate-only        # make (or check) the photo set only
    .venv/bin/python benchmarks/scale.py --n 50 --set validate.min_size=32 --keep   # try a setting, keep the repo

Photos: N JPEGs split evenly over five classes (mammals, birds, fruit, flowers, vehicles: tuxpaint's photo
stamps, mapped as in benchmarks/small_data.py), each a stamp composited on a random plain or gradient
background, randomly cropped (60-100% of the area), flipped, colour-jittered (brightness, contrast,
saturation +-20%) and upscaled (bicubic) to a long side of 1,200-3,000 px, saved at JPEG quality 90.
Deterministic from --seed; made by 2 worker processes into --photos-dir/N<n>-seed<s> (default under
/work/scale-photos) and reused by later runs (a marker written last says the set is complete).
Generation time is reported but is not part of the pipeline's time.

Each run then measures, on the same files: the bare-decode floor (2 threads: open, convert to RGB,
sha256 of the pixels, resize to 224x224), then in a fresh scratch repository (the project's files as
git sees them, as tests/scratch_repo.py copies them, committed to a new git repo; params.yaml edited for
the photos and one small model `cnn_simple`; `--set key=value` overrides any dotted key with a YAML
value) each of `dvc repro scrape|validate|review|split|train@cnn_simple` as its own command: wall time,
CPU time and peak RSS (os.wait4's ru_maxrss: the largest process among the command and the stage
processes it ran). Then the bytes under data/ (per top-level folder) and .dvc/cache, each inode counted
once (a hardlink between them is one copy on disk), as apparent size and as allocated blocks, against
the photos' own bytes. The stage scripts import the library from the scratch copy (PYTHONPATH), so
edits made to the working tree while a run is going do not leak into it.

After the stages, one decode of every split's working copies into the rows training and evaluation
read (`image_cache.load_split`, as train and evaluate do at start) is timed in the scratch repository.

Goals (issue 20): at N = 2,000, scrape->split wall plus that decode <= 2.5x the bare-decode floor of
the same run, and
data/ + .dvc/cache <= 1.5x the photos' bytes; at N = 20,000 against N = 2,000 (--compare-to), peak RSS
<= 1.25x and total pipeline time <= 11x (1.1x the ratio of N for other pairs). Printed as PASS/FAIL
lines. Other jobs on the cores inflate the times: the load average is recorded at start and end.
Writes benchmarks/results/scale-<N>.json; the commands' logs stay in the run folder (--runs-dir,
default /work/scale-runs/N<n>-seed<s>/logs), whose scratch repo is removed unless --keep.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageEnhance

from tuxpaint_photos import MAPPING, STAMPS  # benchmarks/ is on the path

REPO = Path(__file__).resolve().parents[1]
CLASSES = list(MAPPING)
MODEL = "cnn_simple"
STAGES = ["scrape", "validate", "review", "split", f"train@{MODEL}"]
UP_TO_SPLIT = STAGES[:4]
DEFAULT_PHOTOS = Path("/work/scale-photos")
DEFAULT_RUNS = Path("/work/scale-runs")
RESULTS = REPO / "benchmarks" / "results"
GENERATOR_VERSION = 1  # bump when the generation recipe changes: cached sets of another version are redone
MARKER = ".complete.json"
WORKERS = 2
FLOOR_THREADS = 2
FLOOR_SIZE = 224
LONG_SIDE = (1200, 3000)
JPEG_QUALITY = 90
GOALS = {"split_vs_floor": 2.5, "bytes_vs_photos": 1.5, "rss_vs_reference": 1.25, "time_per_n_vs_reference": 1.1}
GOAL_N = 2000  # the first two goals are set for N = 2,000; the last two for N = 20,000 against N = 2,000
EXCLUDED_PREFIXES = ("tests/", "metrics/", "reports/", "plots/", "dvclive/")  # as tests/scratch_repo.py


# --- photos ----------------------------------------------------------------------------------------

def per_class_counts(n: int) -> dict[str, int]:
    """N split evenly over the classes; the first N mod 5 classes take one more."""
    return {c: n // len(CLASSES) + (k < n % len(CLASSES)) for k, c in enumerate(CLASSES)}


def stamp_files() -> dict[str, list[Path]]:
    found = {}
    for cls, patterns in MAPPING.items():
        paths = sorted({p for pattern in patterns for p in STAMPS.glob(pattern) if p.is_file()})
        if not paths:
            raise SystemExit(f"scale: no stamps for {cls} ({patterns}) under {STAMPS}: "
                             "install Debian's tuxpaint-stamps-default (make setup does, as root)")
        found[cls] = paths
    return found


def photo_jobs(n: int, seed: int, out: Path) -> list[tuple]:
    """One job per photo: (stamp, target, rng seed). Each class cycles through its stamps in a seeded order."""
    stamps = stamp_files()
    jobs = []
    for k, (cls, count) in enumerate(per_class_counts(n).items()):
        order = np.random.default_rng([seed, k]).permutation(len(stamps[cls]))
        for i in range(count):
            stamp = stamps[cls][order[i % len(order)]]
            jobs.append((str(stamp), str(out / cls / f"{i:05d}.jpg"), (seed, k, i)))
    return jobs


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A plain colour or a linear gradient between two colours at a random angle."""
    w, h = size
    first = rng.integers(0, 256, 3)
    if rng.random() < 0.5:
        return Image.new("RGBA", size, (*map(int, first), 255))
    second = rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = x * math.cos(angle) + y * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    rgb = first[None, None, :] * (1 - t[..., None]) + second[None, None, :] * t[..., None]
    alpha = np.full((h, w, 1), 255, np.float32)
    return Image.fromarray(np.concatenate([rgb, alpha], axis=2).round().astype(np.uint8), "RGBA")


def make_photo(job: tuple) -> int:
    """Composite, crop, flip, jitter, upscale and save one photo; returns its bytes."""
    stamp, target, rng_seed = job
    rng = np.random.default_rng(list(rng_seed))
    with Image.open(stamp) as im:
        cutout = im.convert("RGBA")
    img = Image.alpha_composite(_background(rng, cutout.size), cutout).convert("RGB")
    w, h = img.size
    area = rng.uniform(0.6, 1.0)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = max(1, min(w, round(w * math.sqrt(area * aspect))))
    ch = max(1, min(h, round(h * math.sqrt(area / aspect))))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(rng.uniform(0.8, 1.2))
    long_side = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
    scale = long_side / max(cw, ch)
    img = img.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.BICUBIC)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    img.save(target, "JPEG", quality=JPEG_QUALITY)
    return Path(target).stat().st_size


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for cls in CLASSES for p in (folder / cls).glob("*.jpg"))


def ensure_photos(n: int, seed: int, photos_dir: Path) -> dict:
    """The photo set for (n, seed), generated unless a complete one of this recipe is there already."""
    folder = photos_dir / f"N{n}-seed{seed}"
    marker = folder / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("generator_version") == GENERATOR_VERSION and len(photo_files(folder)) == n:
            return info | {"cached": True}
        print(f"photos: {folder} is from another recipe or incomplete: generating again", flush=True)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    jobs = photo_jobs(n, seed, folder)
    print(f"photos: generating {n} JPEGs into {folder} with {WORKERS} processes", flush=True)
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        for done, _ in enumerate(pool.map(make_photo, jobs, chunksize=8), 1):
            if done % 500 == 0:
                print(f"photos: {done}/{n} ({time.perf_counter() - started:.0f}s)", flush=True)
    seconds = time.perf_counter() - started
    paths = photo_files(folder)
    sizes = [os.stat(p) for p in paths]
    pixels = 0
    for p in paths:
        with Image.open(p) as im:
            pixels += im.width * im.height
    info = {"folder": str(folder), "n": n, "seed": seed, "generator_version": GENERATOR_VERSION,
            "per_class": per_class_counts(n), "count": len(paths),
            "bytes": sum(s.st_size for s in sizes), "allocated_bytes": sum(s.st_blocks * 512 for s in sizes),
            "megapixels": round(pixels / 1e6, 1), "generation_seconds": round(seconds, 1),
            "workers": WORKERS, "long_side": list(LONG_SIDE), "jpeg_quality": JPEG_QUALITY}
    marker.write_text(json.dumps(info, indent=2) + "\n")  # last: its presence means the set is complete
    return info | {"cached": False}


# --- bare-decode floor ------------------------------------------------------------------------------

def _decode(path: Path) -> str:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    digest = hashlib.sha256(rgb.tobytes()).hexdigest()
    rgb.resize((FLOOR_SIZE, FLOOR_SIZE))
    return digest


def decode_floor(paths: list[Path]) -> dict:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(FLOOR_THREADS) as pool:
        count = sum(1 for _ in pool.map(_decode, paths))
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "images": count, "threads": FLOOR_THREADS,
            "ms_per_image": round(1000 * seconds / max(count, 1), 2),
            "what": f"PIL open, convert RGB, sha256 of the pixel bytes, resize to {FLOOR_SIZE}x{FLOOR_SIZE}"}


# --- scratch repository -----------------------------------------------------------------------------

def venv_bin() -> Path:
    candidate = REPO / ".venv" / "bin"
    return candidate if (candidate / "dvc").exists() else Path(sys.executable).parent


def command_env(repo: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(repo / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store must resolve to the scratch repository
    return env


def copy_repository(dst: Path) -> int:
    """The project's files as git sees them (tracked and new), without tests and committed results."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    copied = 0
    for name in names:
        source = REPO / name
        if source.is_file() and not name.startswith(EXCLUDED_PREFIXES) and name != "dvc.lock":
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dst / name)
            copied += 1
    if not (dst / ".dvc" / "config").is_file():  # tracked today; a DVC repo needs it either way
        (dst / ".dvc").mkdir(exist_ok=True)
        shutil.copy2(REPO / ".dvc" / "config", dst / ".dvc" / "config")
    return copied


def set_dotted(params: dict, key: str, value) -> None:
    node = params
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def scale_params(n: int, photos: Path, overrides: list[str]) -> dict:
    """The project's params.yaml for the photo set and one small model; then the --set overrides."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["classes"] = list(CLASSES)
    params["image_size"] = 224
    scrape = params.setdefault("scrape", {})
    scrape["source"] = "folder"
    scrape["max_per_class"] = max(per_class_counts(n).values())
    scrape["folder"] = {"root": str(photos), "mapping": {c: [f"{c}/*.jpg"] for c in CLASSES}}
    params.setdefault("validate", {}).update({"min_size": 64, "near_duplicate_distance": 2})
    params.setdefault("review", {})["image_size"] = 128
    params["models"] = {MODEL: {"arch": "cnn_simple", "input_size": 64, "epochs": 1, "min_steps": 0,
                                "batch_size": 64, "lr": 0.005}}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"scale: --set {item!r}: expected key=value (dotted key, YAML value)")
        set_dotted(params, key.strip(), yaml.safe_load(text))
    return params


def git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def make_repo(repo: Path, params: dict) -> dict:
    started = time.perf_counter()
    repo.mkdir(parents=True)
    copied = copy_repository(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(["init", "-q"], repo)
    git(["config", "user.email", "ci@example.org"], repo)
    git(["config", "user.name", "ci"], repo)
    git(["add", "-A"], repo)
    git(["commit", "-qm", "init"], repo)
    library = subprocess.run([str(venv_bin() / "python"), "-c", "import imgclass; print(imgclass.__file__)"],
                             cwd=repo, env=command_env(repo), capture_output=True, text=True).stdout.strip()
    return {"path": str(repo), "files": copied, "library": library,
            "seconds": round(time.perf_counter() - started, 1)}


# --- running and measuring ----------------------------------------------------------------------------

def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_measured(cmd: list[str], repo: Path, log: Path) -> dict:
    """Run one command; its wall time, CPU time and peak RSS (itself and the descendants it waited for)."""
    with log.open("w") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=repo, env=command_env(repo), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return {"command": " ".join(cmd), "returncode": proc.returncode, "wall_s": round(wall, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "log": str(log)}


DECODE_SPLITS = """
import json, time
from pathlib import Path
from imgclass.data.image_cache import load_split
from imgclass.config.params import load_params
params, started = load_params(), time.perf_counter()
rows = sum(len(load_split(Path("data/split"), s, list(params.classes), params.image_size)[1])
           for s in ("train", "val", "test"))
print("decoded", json.dumps({"images": rows, "seconds": round(time.perf_counter() - started, 2)}))
"""


def split_decode(repo: Path, log: Path) -> dict:
    """What training and evaluation add to the data path: one decode of every split's working copies into
    the scratch rows they read (`image_cache.load_split`), timed inside the process (imports excluded)."""
    result = run_measured([str(venv_bin() / "python"), "-c", DECODE_SPLITS], repo, log)
    if result["returncode"] != 0:
        raise RuntimeError(f"decoding the splits failed; see {log}")
    decoded = next(line for line in log.read_text().splitlines() if line.startswith("decoded "))
    return result | json.loads(decoded.split(" ", 1)[1])


def disk_usage(repo: Path) -> dict:
    """Bytes under data/ (per top-level folder) and .dvc/cache, each inode once across both."""
    seen: set[tuple[int, int]] = set()

    def walk(root: Path) -> dict:
        total = {"files": 0, "bytes": 0, "allocated_bytes": 0, "shared_files": 0, "shared_bytes": 0}
        if not root.exists():
            return total
        for folder, _, names in os.walk(root):
            for name in names:
                st = os.lstat(os.path.join(folder, name))
                key = (st.st_dev, st.st_ino)
                if key in seen:  # a hardlink to a file already counted (in data/ or the cache)
                    total["shared_files"] += 1
                    total["shared_bytes"] += st.st_size
                    continue
                seen.add(key)
                total["files"] += 1
                total["bytes"] += st.st_size
                total["allocated_bytes"] += st.st_blocks * 512
        return total

    data = repo / "data"
    folders = {}
    if data.is_dir():
        for entry in sorted(data.iterdir()):
            folders[entry.name] = walk(entry) if entry.is_dir() else _single(entry, seen)
    cache = walk(repo / ".dvc" / "cache")
    keys = ("files", "bytes", "allocated_bytes")
    data_total = {k: sum(f[k] for f in folders.values()) for k in keys}
    return {"data": data_total, "data_folders": folders, "cache": cache,
            "total": {k: data_total[k] + cache[k] for k in keys}}


def _single(path: Path, seen: set) -> dict:
    st = os.lstat(path)
    seen.add((st.st_dev, st.st_ino))
    return {"files": 1, "bytes": st.st_size, "allocated_bytes": st.st_blocks * 512, "shared_files": 0,
            "shared_bytes": 0}


def read_metrics(repo: Path) -> dict:
    found = {}
    for path in sorted((repo / "metrics").rglob("*.json")) if (repo / "metrics").is_dir() else []:
        try:
            found[path.relative_to(repo / "metrics").as_posix()] = json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    return found


# --- the machine and the code -------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_version() -> dict:
    try:
        commit = git(["rev-parse", "HEAD"], REPO).strip()
        changes = git(["status", "--porcelain"], REPO).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(changes), "changes": changes[:50]}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("dvc", "torch", "pillow", "numpy"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "platform": platform.platform()}


# --- goals and the report -----------------------------------------------------------------------------

def judge(report: dict, reference: dict | None) -> list[dict]:
    goals = []
    n = report["n"]
    note = "" if n == GOAL_N else f" (goal set for N={GOAL_N:,}; this run N={n:,})"
    ratio = report["ratios"]["data_path_vs_floor"]
    goals.append({"goal": "scrape->split wall + decoding the splits for training <= 2.5x bare-decode floor" + note,
                  "value": ratio,
                  "limit": GOALS["split_vs_floor"], "pass": ratio <= GOALS["split_vs_floor"]})
    ratio = report["ratios"]["bytes_vs_photos"]
    goals.append({"goal": "data/ + .dvc/cache bytes <= 1.5x photos' bytes" + note, "value": ratio,
                  "limit": GOALS["bytes_vs_photos"], "pass": ratio <= GOALS["bytes_vs_photos"]})
    if reference is not None:
        n_ratio = n / reference["n"]
        rss = report["totals"]["peak_rss_mb"] / reference["totals"]["peak_rss_mb"]
        seconds = report["totals"]["pipeline_s"] / reference["totals"]["pipeline_s"]
        limit = round(GOALS["time_per_n_vs_reference"] * n_ratio, 3)
        against = f"N={n:,} against N={reference['n']:,}"
        differs = [what for what, key in (("CPU", ("machine", "cpu")), ("cores", ("machine", "usable_cores")),
                                          ("--set overrides", ("overrides",)), ("commit", ("code", "commit")))
                   if _get(report, key) != _get(reference, key)]
        if differs:
            against += f" (differs from it in: {', '.join(differs)})"
        goals.append({"goal": f"{against}: peak RSS <= 1.25x", "value": round(rss, 3),
                      "limit": GOALS["rss_vs_reference"], "pass": rss <= GOALS["rss_vs_reference"]})
        goals.append({"goal": f"{against}: total pipeline time <= {limit:g}x (1.1x the ratio of N)",
                      "value": round(seconds, 3), "limit": limit, "pass": seconds <= limit})
    return goals


def _get(data: dict, keys: tuple[str, ...]):
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f}"


def print_report(report: dict) -> None:
    photos, floor = report["photos"], report["floor"]
    load = {k: v[0] for k, v in report["load_average"].items()}
    print(f"\nscale: N={report['n']:,} seed={report['seed']} on {report['machine']['cpu']}, "
          f"{report['machine']['usable_cores']} cores; load average {load['start']:.2f} at start, "
          f"{load['before_floor']:.2f} before the floor, {load['end']:.2f} at end; "
          f"commit {str(report['code']['commit'])[:10]}{' (dirty)' if report['code']['dirty'] else ''}")
    per_pixel = photos["bytes"] / max(photos["megapixels"], 1e-9) / 1e6
    print(f"photos: {photos['count']:,} JPEGs, {mb(photos['bytes'])} MB, {photos['megapixels']:,} MP "
          f"({per_pixel:.3f} bytes/pixel); generated in {photos['generation_seconds']:.1f}s"
          f"{' (earlier run, reused)' if photos['cached'] else ''}")
    print(f"\n{'stage':<22}{'wall s':>10}{'CPU s':>10}{'peak RSS MB':>13}")
    print(f"{'bare-decode floor':<22}{floor['seconds']:>10.1f}{'':>10}{'':>13}")
    for name, s in report["stages"].items():
        print(f"{name:<22}{s['wall_s']:>10.1f}{s['cpu_s']:>10.1f}{s['peak_rss_mb']:>13.1f}")
    t = report["totals"]
    print(f"{'scrape->split':<22}{t['up_to_split_s']:>10.1f}{t['up_to_split_cpu_s']:>10.1f}"
          f"{t['up_to_split_peak_rss_mb']:>13.1f}")
    d = report["split_decode"]
    print(f"{'+ decode the splits':<22}{d['seconds']:>10.1f}{'':>10}{d['peak_rss_mb']:>13.1f}")
    print(f"{'total (all stages)':<22}{t['pipeline_s']:>10.1f}{t['pipeline_cpu_s']:>10.1f}{t['peak_rss_mb']:>13.1f}")

    disk = report["disk"]
    print(f"\n{'bytes':<22}{'files':>10}{'MB':>12}{'allocated MB':>14}{'x photos':>10}")
    rows = [(f"data/{k}", v) for k, v in disk["data_folders"].items()]
    rows += [("data/ (all)", disk["data"]), (".dvc/cache (not in data/)", disk["cache"]),
             ("data/ + .dvc/cache", disk["total"])]
    for name, v in rows:
        print(f"{name:<22}{v['files']:>10,}{mb(v['bytes']):>12}{mb(v['allocated_bytes']):>14}"
              f"{v['bytes'] / photos['bytes']:>10.2f}")
    if disk["cache"]["shared_files"]:
        print(f"(.dvc/cache also holds {disk['cache']['shared_files']:,} files, {mb(disk['cache']['shared_bytes'])} "
              "MB, that are hardlinks of data/ files: counted once)")
    r = report["ratios"]
    print(f"\nratios: scrape->split / floor {r['split_vs_floor']:.2f}, with the splits' decode "
          f"{r['data_path_vs_floor']:.2f}; bytes / photos {r['bytes_vs_photos']:.2f} "
          f"(allocated {r['allocated_bytes_vs_photos']:.2f})")
    for g in report["goals"]:
        print(f"{'PASS' if g['pass'] else 'FAIL'}  {g['goal']}: {g['value']:.2f} (limit {g['limit']:g})")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# --- main ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, required=True, help="photos in all (split evenly over 5 classes)")
    parser.add_argument("--seed", type=int, default=0, help="the photo set's seed (not params.yaml's seed)")
    parser.add_argument("--photos-dir", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS)
    parser.add_argument("--compare-to", type=Path, help="an earlier run's JSON (e.g. results/scale-2000.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key (dotted, YAML value), e.g. validate.min_size=32")
    parser.add_argument("--keep", action="store_true", help="keep the scratch repository after the run")
    parser.add_argument("--generate-only", action="store_true", help="make (or check) the photo set and stop")
    parser.add_argument("--out", type=Path, help="the JSON to write (default benchmarks/results/scale-<N>.json)")
    args = parser.parse_args(argv)
    if args.n < len(CLASSES) * 3:
        parser.error(f"--n must be at least {len(CLASSES) * 3} (a few photos per class for the split)")
    reference = json.loads(args.compare_to.read_text()) if args.compare_to else None

    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime())
    load_start = os.getloadavg()
    photos = ensure_photos(args.n, args.seed, args.photos_dir)
    print(f"photos: {photos['count']:,} JPEGs in {photos['folder']}, {mb(photos['bytes'])} MB, "
          f"{photos['megapixels']:,} MP; generated in {photos['generation_seconds']:.1f}s"
          f"{' (earlier run, reused)' if photos['cached'] else ''}", flush=True)
    if args.generate_only:
        return 0

    run_dir = args.runs_dir / f"N{args.n}-seed{args.seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    repo, logs = run_dir / "repo", run_dir / "logs"
    logs.mkdir(parents=True)
    params = scale_params(args.n, Path(photos["folder"]), args.overrides)
    scratch = make_repo(repo, params)
    print(f"repo: {scratch['files']} files copied to {repo} ({scratch['seconds']:.1f}s); library {scratch['library']}",
          flush=True)

    paths = photo_files(Path(photos["folder"]))
    load_measured = os.getloadavg()  # after generation (2 busy processes when it ran), before the floor
    floor = decode_floor(paths)
    print(f"floor: {floor['images']:,} images decoded in {floor['seconds']:.1f}s "
          f"({floor['ms_per_image']:.1f} ms each, {FLOOR_THREADS} threads)", flush=True)

    stages = {}
    for stage in STAGES:
        log = logs / f"{stage.replace('@', '-')}.log"
        result = run_measured([str(venv_bin() / "dvc"), "repro", stage], repo, log)
        stages[stage] = result
        print(f"{stage}: {result['wall_s']:.1f}s wall, {result['cpu_s']:.1f}s CPU, peak RSS "
              f"{result['peak_rss_mb']:.0f} MB (exit {result['returncode']})", flush=True)
        if result["returncode"] != 0:
            print(f"\n--- last lines of {log} ---\n{tail(log)}\n---", file=sys.stderr)
            print(f"scale: `dvc repro {stage}` failed with exit code {result['returncode']}; the full log is "
                  f"{log}; the scratch repository is kept at {repo}", file=sys.stderr)
            return 1

    decode = split_decode(repo, logs / "decode-splits.log")
    print(f"decoding the splits for training and evaluation: {decode['images']:,} working copies in "
          f"{decode['seconds']:.1f}s (peak RSS {decode['peak_rss_mb']:.0f} MB)", flush=True)
    disk = disk_usage(repo)
    load_end = os.getloadavg()
    totals = {"up_to_split_s": round(sum(stages[s]["wall_s"] for s in UP_TO_SPLIT), 2),
              "data_path_s": round(sum(stages[s]["wall_s"] for s in UP_TO_SPLIT) + decode["seconds"], 2),
              "up_to_split_cpu_s": round(sum(stages[s]["cpu_s"] for s in UP_TO_SPLIT), 2),
              "up_to_split_peak_rss_mb": max(stages[s]["peak_rss_mb"] for s in UP_TO_SPLIT),
              "pipeline_s": round(sum(s["wall_s"] for s in stages.values()), 2),
              "pipeline_cpu_s": round(sum(s["cpu_s"] for s in stages.values()), 2),
              "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values())}
    ratios = {"split_vs_floor": round(totals["up_to_split_s"] / floor["seconds"], 3),
              "data_path_vs_floor": round(totals["data_path_s"] / floor["seconds"], 3),
              "bytes_vs_photos": round(disk["total"]["bytes"] / photos["bytes"], 3),
              "allocated_bytes_vs_photos": round(disk["total"]["allocated_bytes"] / photos["allocated_bytes"], 3)}
    report = {"benchmark": "scale", "n": args.n, "seed": args.seed, "overrides": args.overrides,
              "started": started_at,
              "machine": machine(), "load_average": {"start": list(load_start), "before_floor": list(load_measured),
                                                       "end": list(load_end)},
              "code": code_version(), "versions": versions(), "photos": photos, "floor": floor,
              "scratch": scratch | {"kept": args.keep, "logs": str(logs)}, "params": params,
              "stages": stages, "split_decode": decode, "totals": totals, "disk": disk, "ratios": ratios,
              "metrics": read_metrics(repo),
              "compared_to": str(args.compare_to) if args.compare_to else None}
    report["goals"] = judge(report, reference)
    if not args.keep:
        shutil.rmtree(repo)
    out = args.out or RESULTS / f"scale-{args.n}.json"
    write_json(out, report)
    print_report(report)
    print(f"\nwrote {out}; logs in {logs}" + (f"; repository kept at {repo}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
