"""Transfer learning on Debian's tuxpaint photo stamps (5 classes, ~200 colour cut-outs):
efficientnet_lite0 from offline ImageNet weights (frozen head training, then everything unfrozen)
against the same network from scratch with the same number of epochs.

    .venv/bin/python benchmarks/transfer_tuxpaint.py [--image-size 224] [--freeze-epochs 5] [--epochs 8]

The data go through the library as the pipeline's stages do (folder source, validate, split, cache).
The defaults were chosen on validation accuracy alone (then validation loss); the test split is only
reported. With ~95 training images an epoch is ~6 steps, hence the high head learning rate and the
several frozen epochs. Prints a table and one JSON line. Goal: pretrained >= 85% test accuracy,
scratch much worse.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from imgclass import files

from imgclass.data import sources
from imgclass.model.checkpoint import load_trained
from imgclass.evaluation.evaluate import predict_probs
from imgclass.data.image_cache import load_split
from imgclass.config.params import Params, parse_params
from imgclass.data.split import SPLIT_FIELDS, SPLITS, assign_splits
from imgclass.training.train import train
from imgclass.data.validate import validate_tree
from tuxpaint_photos import MAPPING, STAMPS

REPO = Path(__file__).resolve().parents[1]
GOAL_ACCURACY = 0.85


def benchmark_params(args: argparse.Namespace) -> Params:
    """The repository's params.yaml pointed at the stamps, with a pretrained and a scratch model."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["classes"] = list(MAPPING)
    raw["image_size"] = args.image_size
    raw["scrape"] |= {"source": "folder", "max_per_class": 1000, "folder": {"root": str(STAMPS), "mapping": MAPPING}}
    raw["validate"] |= {"min_size": 64}  # the smallest stamps are 100 px on their short side
    raw["split"] = {"val": args.val, "test": args.test, "min_per_class": 10}
    shared = {"arch": "efficientnet_lite0", "input_size": args.input_size or args.image_size,
              "batch_size": args.batch_size, "augment": augment_options(args)}
    raw["models"] = {
        "pretrained": {**shared, "weights": "imagenet", "freeze_epochs": args.freeze_epochs, "epochs": args.epochs,
                       "lr": args.lr},
        "scratch": {**shared, "weights": "none", "epochs": args.freeze_epochs + args.epochs, "lr": args.scratch_lr},
    }
    return parse_params(raw, source="benchmark params")


def augment_options(args: argparse.Namespace) -> dict:
    return {"hflip": args.hflip, "random_resized_crop": args.crop_scale}


def prepare_split(params: Params, work: Path) -> Path:
    """Collect, validate, split and cache the stamps as the scrape, validate and split stages do."""
    sources.collect(params, work / "raw")
    validate_tree(work / "raw", work / "clean", params.validate, params.classes)
    accepted = [r for r in files.read_csv(work / "clean" / "report.csv") if r["status"] == "ok"]
    rows = [{"path": r["out"], "label": r["class"], "sha256": r["sha256"], "group": r["group"] or r["sha256"]}
            for r in accepted]
    splits = assign_splits(rows, params.split, params.seed)
    for name in SPLITS:
        files.write_csv(work / "split" / f"{name}.csv", splits[name], SPLIT_FIELDS)
    return work / "split"


def train_and_test(name: str, params: Params, split_dir: Path, work: Path) -> dict:
    """Train one model entry; its best-on-val checkpoint's accuracy on the test split."""
    started = time.perf_counter()
    summary = train(name, params, split_dir, work / name / "model", work / name / "resume", work / name / "live",
                    track=False)
    seconds = time.perf_counter() - started
    model, meta, prep = load_trained(work / name / "model" / "model.pt")
    images, labels = load_split(split_dir, "test", meta["classes"], prep.image_size)
    accuracy = float((predict_probs(model, prep, images).argmax(axis=1) == labels).mean())
    cfg = params.models[name]
    return {"test_accuracy": round(accuracy, 4), "val_accuracy": round(summary["val_accuracy"], 4),
            "val_loss": round(summary["val_loss"], 4),
            "best_epoch": summary["best_epoch"] + 1, "epochs": cfg.freeze_epochs + cfg.epochs,
            "freeze_epochs": cfg.freeze_epochs, "lr": cfg.lr, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224, help="cached image size")
    parser.add_argument("--input-size", type=int, default=None, help="network input size (default: image size)")
    parser.add_argument("--freeze-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8, help="unfrozen epochs; scratch trains freeze + these")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--scratch-lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--crop-scale", type=float, default=0.6, help="random_resized_crop scale; 0 = off")
    parser.add_argument("--val", type=float, default=0.2)
    parser.add_argument("--test", type=float, default=0.3)
    parser.add_argument("--models", nargs="+", choices=["pretrained", "scratch"], default=["pretrained", "scratch"],
                        help="which to train (tuning one side on val)")
    args = parser.parse_args(argv)
    args.crop_scale = args.crop_scale or None

    params = benchmark_params(args)
    with tempfile.TemporaryDirectory() as tmp:
        split_dir = prepare_split(params, Path(tmp))
        sizes = {s: len(files.read_csv(split_dir / f"{s}.csv")) for s in SPLITS}
        results = {name: train_and_test(name, params, split_dir, Path(tmp)) for name in args.models}

    print(f"\nsplit sizes: {sizes}; image_size {args.image_size}, input_size {params.input_size('pretrained')}, "
          f"augment {augment_options(args)}")
    print(f"{'model':<11}{'epochs':>7}{'lr':>8}{'best':>6}{'val loss':>9}{'val acc':>9}{'test acc':>10}{'seconds':>9}")
    for name, r in results.items():
        epochs = f"{r['freeze_epochs']}+{r['epochs'] - r['freeze_epochs']}" if r["freeze_epochs"] else str(r["epochs"])
        print(f"{name:<11}{epochs:>7}{r['lr']:>8.0e}{r['best_epoch']:>6}{r['val_loss']:>9.3f}{r['val_accuracy']:>9.3f}"
              f"{r['test_accuracy']:>10.3f}{r['seconds']:>9.1f}")
    print(json.dumps({"benchmark": "transfer_tuxpaint", "arch": "efficientnet_lite0", "split_sizes": sizes,
                      "image_size": args.image_size, "input_size": params.input_size("pretrained"),
                      "augment": augment_options(args), "results": results, "goal": GOAL_ACCURACY,
                      "goal_met": results.get("pretrained", {}).get("test_accuracy", 0) >= GOAL_ACCURACY}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
