"""Use trained models on new image files: decode as the validator does, preprocess as the model was
trained, and report the top-k classes per file. Several models form a soft-vote ensemble.

An unreadable file becomes a row with status `error` and a reason code (see images.REASONS, plus
`not_found` and `unreadable`), never an exception: one bad file must not cost the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from imgclass import ensemble, files
from imgclass.checkpoint import load_trained
from imgclass.evaluate import predict_probs
from imgclass.images import ImageRejected, load_rgb
from imgclass.params import ValidateParams
from imgclass.preprocess import Preprocessing

ENSEMBLE = "ensemble"
CHECKPOINT = "model.pt"
# The validator's checks, except that small inputs (icons, MNIST-sized crops) are still predicted.
DECODE = ValidateParams(min_size=1)
CSV_COLUMNS = ["path", "status", "reason", "prediction", "probability", "top_k", "detail"]


class PredictError(ValueError):
    """Models cannot be used as asked (none found, classes disagree); the message says what to do."""


@dataclass(frozen=True)
class Member:
    name: str
    model: nn.Module
    meta: dict
    prep: Preprocessing


# --- models -------------------------------------------------------------------------------------

def resolve_checkpoints(model: str, models_dir: Path | str = "models") -> list[Path]:
    """`NAME` -> [models_dir/NAME/model.pt]; `ensemble` -> every models_dir/*/model.pt."""
    models_dir = Path(models_dir)
    if model != ENSEMBLE:
        return [models_dir / model / CHECKPOINT]
    found = sorted(models_dir.glob(f"*/{CHECKPOINT}"))
    if not found:
        raise PredictError(f"{models_dir}: no */{CHECKPOINT} to ensemble; run `dvc repro` (or the train stage) first")
    return found


def load_members(checkpoints: Sequence[Path | str], device: torch.device | str = "cpu") -> list[Member]:
    """Every checkpoint, checked to predict the same classes in the same order (a soft vote averages
    probabilities column by column)."""
    if not checkpoints:
        raise PredictError("no model given")
    members = []
    for path in map(Path, checkpoints):
        model, meta, prep = load_trained(path, device)
        members.append(Member(meta.get("name") or path.parent.name, model, meta, prep))
    first = members[0]
    for other in members[1:]:
        if other.meta["classes"] != first.meta["classes"]:
            raise PredictError(
                f"models disagree on classes: {first.name} has {first.meta['classes']}, {other.name} has "
                f"{other.meta['classes']}; an ensemble needs the same classes in the same order")
    return members


def classes_of(members: Sequence[Member]) -> list[str]:
    return list(members[0].meta["classes"])


@torch.no_grad()
def predict_images(members: Sequence[Member], images: Sequence[Image.Image], device: torch.device | str = "cpu",
                   batch_size: int = 64) -> np.ndarray:
    """N x C probabilities for RGB images: each member through its own saved preprocessing, then the
    soft vote (mean of probabilities; a single member is its own mean)."""
    if not images:
        return np.zeros((0, len(classes_of(members))), dtype=np.float32)
    probs = []
    for member in members:
        uint8 = np.stack([member.prep.to_uint8(image) for image in images])
        probs.append(predict_probs(member.model, member.prep, uint8, device, batch_size))
    return ensemble.soft_vote(np.stack(probs))


def top_k(probs: np.ndarray, classes: Sequence[str], k: int) -> list[dict]:
    """The k most probable classes of one image, most probable first."""
    order = np.argsort(-probs, kind="stable")[:max(1, min(k, len(classes)))]
    return [{"class": classes[i], "probability": float(probs[i])} for i in order]


# --- files --------------------------------------------------------------------------------------

def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Files as given and every visible file under folders (recursively, sorted). Every file is
    tried: the decoder, not the file name, decides what is an image."""
    out = []
    for path in map(Path, paths):
        if not path.is_dir():
            out.append(path)  # a missing path becomes a not_found row
            continue
        for folder, subdirs, names in os.walk(path):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            out.extend(Path(folder, name) for name in sorted(names) if not name.startswith("."))
    return out


def decode(source: Path | BinaryIO, label: str | None = None) -> Image.Image | dict:
    """The RGB image from a file or a binary stream, or the error row (path = label or the file)
    that says why there is none."""
    label = label if label is not None else str(source)
    try:
        return load_rgb(source, DECODE)
    except ImageRejected as exc:
        return error_row(label, exc.reason, str(exc))
    except FileNotFoundError:
        return error_row(label, "not_found", "no such file")
    except OSError as exc:  # permissions, a directory race, an I/O error
        return error_row(label, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}")


def error_row(path: Path | str, reason: str, detail: str) -> dict:
    return {"path": str(path), "status": "error", "reason": reason, "prediction": None, "probability": None,
            "top_k": [], "detail": detail}


def ok_row(path: Path | str, ranked: list[dict]) -> dict:
    return {"path": str(path), "status": "ok", "reason": "", "prediction": ranked[0]["class"],
            "probability": ranked[0]["probability"], "top_k": ranked, "detail": ""}


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_paths(paths: Iterable[Path | str], checkpoints: Sequence[Path | str], top: int = 3,
                  batch_size: int = 64, device: torch.device | str = "cpu") -> list[dict]:
    """One row per file, in input order: status ok with prediction, probability and top_k, or status
    error with reason. Files are decoded batch_size at a time, so memory stays bounded."""
    if batch_size < 1 or top < 1:
        raise PredictError("batch size and top-k must be at least 1")
    members = load_members(checkpoints, device)
    classes = classes_of(members)
    rows = []
    for chunk in batches(expand_paths(paths), batch_size):
        decoded = [decode(path) for path in chunk]
        images = [d for d in decoded if isinstance(d, Image.Image)]
        probs = iter(predict_images(members, images, device, batch_size))
        for path, d in zip(chunk, decoded):
            rows.append(ok_row(path, top_k(next(probs), classes, top)) if isinstance(d, Image.Image) else d)
    return rows


# --- output -------------------------------------------------------------------------------------

def format_top_k(ranked: list[dict]) -> str:
    return " ".join(f"{r['class']}:{r['probability']:.3f}" for r in ranked)


def write_rows(path: Path | str, rows: list[dict]) -> None:
    """CSV (top_k as `class:p class:p`) or JSON (top_k as a list), chosen by the suffix."""
    path = Path(path)
    if path.suffix == ".json":
        files.write_json(path, rows)
    elif path.suffix == ".csv":
        files.write_csv(path, [{**r, "top_k": format_top_k(r["top_k"])} for r in rows], CSV_COLUMNS)
    else:
        raise PredictError(f"{path}: --out must end in .csv or .json")


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for column, justify in (("file", "left"), ("prediction", "left"), ("p", "right"), ("top k / detail", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for r in rows:
        if r["status"] == "ok":
            table.add_row(escape(r["path"]), escape(r["prediction"]), f"{r['probability']:.3f}",
                          escape(format_top_k(r["top_k"])))
        else:  # file names and messages are text, not rich markup
            table.add_row(escape(r["path"]), f"[red]error: {r['reason']}[/red]", "", escape(r["detail"]))
    Console().print(table)


def summary(rows: list[dict]) -> str:
    ok = sum(r["status"] == "ok" for r in rows)
    return f"{ok} predicted, {len(rows) - ok} unreadable"
