"""Use trained models on new image files: decode as the validator does, preprocess as the model was
trained, and report the top-k classes per file.

`ensemble` means the ensemble the pipeline evaluated: exactly params.yaml's ensemble members, voting
the way the ensemble stage chose on the validation split (reports/ensemble.json), and only while
each member's checkpoint is the one that was evaluated.

Test-time augmentation (`tta`): `evaluated` (the default) applies to each model what the evaluate
stage chose for that very checkpoint (saved in data/preds/NAME.npz; none for a checkpoint evaluated
otherwise or not at all); `none` and `hflip` apply that to every model.

Folders are searched for images: files that are neither named like an image nor start like one are
skipped and counted. An unreadable image, or any file named on its own, becomes a row with status
`error` and a reason code (see images.REASONS, plus `not_found` and `unreadable`), never an
exception: one bad file must not cost the others.
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

from imgclass import files
from imgclass.config.params import ParamsError, ValidateParams, load_params
from imgclass.data.images import SNIFF_BYTES, ImageRejected, load_rgb, sniff_format
from imgclass.evaluation import ensemble
from imgclass.evaluation.ensemble import EnsembleError, EnsembleSpec
from imgclass.evaluation.evaluate import evaluated_tta, file_sha256, predict_probs
from imgclass.model.checkpoint import load_trained
from imgclass.model.preprocess import TTA, Preprocessing, check_tta

ENSEMBLE = "ensemble"
CHECKPOINT = "model.pt"
ENSEMBLE_SPEC = Path("reports/ensemble.json")
# The validator's checks, except that small inputs (icons, MNIST-sized crops) are still predicted.
DECODE = ValidateParams(min_size=1)
CSV_COLUMNS = ["path", "status", "reason", "prediction", "probability", "top_k", "detail"]
# Raster formats by name. A file in a folder is an image when its suffix is one of these or its first
# bytes are an image signature; sounds, text and SVG beside the pictures are skipped.
IMAGE_SUFFIXES = frozenset(
    ".png .apng .jpg .jpeg .jpe .jfif .gif .bmp .dib .tif .tiff .webp .heic .heif .avif .jxl .jp2 .ico .ppm "
    ".pgm .pbm .pnm .tga .psd .qoi".split())
NOT_PICTURES = {"PDF"}  # a signature images.sniff_format knows, but a document, not a picture
EVALUATED = "evaluated"
TTA_CHOICES = (EVALUATED, *TTA)
PREDS_DIR = Path("data/preds")


class PredictError(ValueError):
    """Models cannot be used as asked (none found, classes disagree, stale); the message says what to do."""


@dataclass(frozen=True)
class Member:
    name: str
    model: nn.Module
    meta: dict
    prep: Preprocessing
    tta: str = "none"


@dataclass(frozen=True)
class ModelChoice:
    """Which checkpoints to load, in vote order, and how they vote."""
    checkpoints: dict[str, Path]
    spec: EnsembleSpec


def resolve_tta(tta: str, checkpoints: dict[str, Path], preds_dir: Path | str = PREDS_DIR) -> dict[str, str]:
    """{model: none | hflip}: `evaluated` -> what evaluate chose for each checkpoint as it is now."""
    if tta != EVALUATED:
        check_tta(tta)
        return {name: tta for name in checkpoints}
    return {name: evaluated_tta(Path(preds_dir) / f"{name}.npz", path) for name, path in checkpoints.items()}


# --- models -------------------------------------------------------------------------------------

def resolve_checkpoints(model: str, models_dir: Path | str = "models", params_path: Path | str = "params.yaml",
                        ensemble_spec: Path | str = ENSEMBLE_SPEC) -> ModelChoice:
    """`NAME` -> models_dir/NAME/model.pt alone; `ensemble` -> the evaluated ensemble (see the module doc)."""
    models_dir = Path(models_dir)
    if model != ENSEMBLE:
        return ModelChoice({model: models_dir / model / CHECKPOINT}, EnsembleSpec.single(model))
    members = ensemble_members(params_path)
    try:
        spec = ensemble.read_spec(ensemble_spec)
    except EnsembleError as exc:
        raise PredictError(str(exc)) from None
    if spec.members != members:
        raise PredictError(f"{ensemble_spec}: evaluated members {', '.join(spec.members)} but {params_path} names "
                           f"{', '.join(members)}; run `dvc repro`")
    checkpoints = {m: models_dir / m / CHECKPOINT for m in members}
    check_evaluated(checkpoints, spec.checkpoints, "the ensemble")
    return ModelChoice(checkpoints, spec)


def ensemble_members(params_path: Path | str) -> list[str]:
    try:
        return load_params(params_path).ensemble_members
    except ParamsError as exc:
        raise PredictError(f"{exc} (the ensemble's members come from params.yaml; or pass --model NAME)") from None


def check_evaluated(checkpoints: dict[str, Path], evaluated: dict[str, str], what: str) -> None:
    """Refuse a member checkpoint that is missing or not byte-identical to the one `what` evaluated."""
    for name, path in checkpoints.items():
        if not path.exists():
            raise PredictError(f"{path}: missing, and {what} needs member {name!r}; run `dvc repro`")
        if file_sha256(path) != evaluated.get(name):
            raise PredictError(f"{path}: not the checkpoint {what} evaluated (sha256 differs); run `dvc repro`")


def load_members(checkpoints: Sequence[Path | str], device: torch.device | str = "cpu",
                 ttas: Sequence[str] | None = None) -> list[Member]:
    """Every checkpoint, checked to predict the same classes in the same order (a vote combines
    probabilities column by column); `ttas`: each one's test-time augmentation (default none)."""
    if not checkpoints:
        raise PredictError("no model given")
    members = []
    for path, tta in zip(map(Path, checkpoints), ttas or ["none"] * len(checkpoints)):
        model, meta, prep = load_trained(path, device)
        members.append(Member(meta.get("name") or path.parent.name, model, meta, prep, check_tta(tta)))
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
                   batch_size: int = 64, spec: EnsembleSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores N x C, predicted N) for RGB images: each member through its own saved preprocessing,
    then the spec's vote over members in spec order (default: the soft vote, i.e. the mean)."""
    if not images:
        return np.zeros((0, len(classes_of(members))), dtype=np.float32), np.zeros(0, dtype=np.int64)
    probs = []
    for member in members:
        uint8 = np.stack([member.prep.to_uint8(image) for image in images])
        probs.append(predict_probs(member.model, member.prep, uint8, device, batch_size, member.tta))
    spec = spec or EnsembleSpec([m.name for m in members], "soft_vote", members[0].name, [1.0] * len(members))
    return spec.apply(np.stack(probs))


def top_k(scores: np.ndarray, classes: Sequence[str], k: int, first: int | None = None) -> list[dict]:
    """The k highest-scoring classes of one image, the predicted one (`first`, default the top
    score) first: a hard vote's tie-break decides between equal shares."""
    order = list(np.argsort(-scores, kind="stable"))
    if first is not None:
        order.remove(first)
        order.insert(0, first)
    return [{"class": classes[i], "probability": float(scores[i])} for i in order[:max(1, min(k, len(classes)))]]


# --- files --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    files: list[Path]
    skipped: int  # files under folders that are not images


def expand_paths(paths: Iterable[Path | str]) -> Found:
    """Files as given (whatever they are: asked for, so answered) and the images under folders
    (recursively, sorted; hidden files and folders left out); folder files that are not images are
    counted, not listed."""
    out, skipped = [], 0
    for path in map(Path, paths):
        if not path.is_dir():
            out.append(path)  # a missing path becomes a not_found row
            continue
        for folder, subdirs, names in os.walk(path):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for file in (Path(folder, name) for name in sorted(names) if not name.startswith(".")):
                if is_image_file(file):
                    out.append(file)
                else:
                    skipped += 1
    return Found(out, skipped)


def is_image_file(path: Path) -> bool:
    """Named like an image, or starting with an image signature (the validator's sniffer)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            fmt = sniff_format(f.read(SNIFF_BYTES))
    except OSError:
        return False  # unreadable and not named like an image: nothing says it is one
    return fmt is not None and fmt not in NOT_PICTURES


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


def predict_paths(paths: Iterable[Path | str], choice: ModelChoice | Sequence[Path | str], top: int = 3,
                  batch_size: int = 64, device: torch.device | str = "cpu", tta: str = "none",
                  preds_dir: Path | str = PREDS_DIR) -> list[dict]:
    """Rows for every file of `expand_paths(paths)` (see predict_files)."""
    return predict_files(expand_paths(paths).files, choice, top, batch_size, device, tta, preds_dir)


def predict_files(paths: Sequence[Path], choice: ModelChoice | Sequence[Path | str], top: int = 3,
                  batch_size: int = 64, device: torch.device | str = "cpu", tta: str = "none",
                  preds_dir: Path | str = PREDS_DIR) -> list[dict]:
    """One row per file, in input order: status ok with prediction, probability and top_k, or status
    error with reason. Files are decoded batch_size at a time, so memory stays bounded. `choice` is a
    ModelChoice, or checkpoints to soft-vote (named by their folder). `tta`: see the module doc."""
    if batch_size < 1 or top < 1:
        raise PredictError("batch size and top-k must be at least 1")
    if tta not in TTA_CHOICES:
        raise PredictError(f"unknown tta {tta!r}; choose one of {', '.join(TTA_CHOICES)}")
    checkpoints, spec = (dict(choice.checkpoints), choice.spec) if isinstance(choice, ModelChoice) \
        else ({Path(c).parent.name: Path(c) for c in choice}, None)
    if not isinstance(choice, ModelChoice) and len(checkpoints) < len(choice):  # two folders named alike
        checkpoints = {str(c): Path(c) for c in choice}
    ttas = resolve_tta(tta, checkpoints, preds_dir)
    members = load_members(list(checkpoints.values()), device, [ttas[n] for n in checkpoints])
    classes = classes_of(members)
    rows = []
    for chunk in batches(paths, batch_size):
        decoded = [decode(path) for path in chunk]
        images = [d for d in decoded if isinstance(d, Image.Image)]
        scores, predicted = predict_images(members, images, device, batch_size, spec)
        voted = iter(zip(scores, predicted))
        for path, d in zip(chunk, decoded):
            if isinstance(d, Image.Image):
                row_scores, winner = next(voted)
                d = ok_row(path, top_k(row_scores, classes, top, first=int(winner)))
            rows.append(d)
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


def skipped_line(skipped: int) -> str:
    return f"skipped {skipped} file{'s' if skipped != 1 else ''} that {'are' if skipped != 1 else 'is'} not " \
           f"{'images' if skipped != 1 else 'an image'}"
