"""Resume state of an interrupted training run: `last.pt` beside the model's outputs
(data/checkpoints/M/last.pt), written atomically after every epoch, deleted when training ends.

A checkpoint is resumed only when it belongs to this very run. Its fingerprint has four parts, and a
rerun that differs in any of them starts from scratch and says which, in one line:
  - params:    the model's entry in params.yaml, plus seed, image_size and classes;
  - split:     the bytes of data/split/*.csv (path, label, sha256 of every image in every split), so a
               rescrape or resplit is seen even when params.yaml did not change;
  - processes: the number of training processes (torchrun's world size): shuffling and per-process
               augmentation depend on it, so a run resumed with another count would mix two runs;
  - code:      imgclass's version, torch's, and a hash of every imgclass source file that training
               imports (the import closure of imgclass.training.train), so an edit to the loop, the models,
               the losses or the preprocessing invalidates the checkpoint, while an edit to, say,
               predict.py does not.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

import imgclass
from imgclass import files, import_closure
from imgclass.config.params import Params

PACKAGE_DIR = import_closure.PACKAGE_DIR
REASONS = {  # fingerprint part -> what a mismatch means, as the rerun says it
    "params": "the model's params changed",
    "split": "the split changed",
    "processes": "the number of training processes changed",
    "code": "the training code changed",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def params_hash(params: Params, name: str) -> str:
    relevant = {"model": params.models[name].model_dump(), "seed": params.seed, "image_size": params.image_size,
                "classes": params.classes}
    return _sha(json.dumps(relevant, sort_keys=True).encode())


def split_hash(split_dir: Path) -> str:
    digest = hashlib.sha256()
    for csv in sorted(Path(split_dir).glob("*.csv")):
        digest.update(csv.name.encode() + b"\0" + csv.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def training_sources(entry: str = "imgclass.training.train") -> list[Path]:
    """Every imgclass source file that `entry` imports, directly or not, lazily or not (itself included)."""
    return sorted(import_closure.closure([import_closure.module_file(entry)]))


@functools.cache
def code_version() -> str:
    digest = hashlib.sha256(f"imgclass {imgclass.__version__} torch {torch.__version__}".encode())
    for path in training_sources():
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{imgclass.__version__}+{digest.hexdigest()[:16]}"


def fingerprint(params: Params, name: str, split_dir: Path, processes: int) -> dict:
    """What a resume checkpoint must match to be resumed: see the module docstring."""
    return {"params": params_hash(params, name), "split": split_hash(split_dir), "processes": processes,
            "code": code_version()}


def mismatch(saved, current: dict) -> str | None:
    """Why a checkpoint with fingerprint `saved` must not be resumed by a run with `current`; None if it may."""
    if not isinstance(saved, dict):
        return "it has no fingerprint of its params, split, processes and code (written by an older imgclass)"
    for part, reason in REASONS.items():
        if saved.get(part) != current[part]:
            if part == "processes":
                return f"{reason} ({saved.get(part)} -> {current[part]})"
            return reason
    return None


def save_state(path: Path, fingerprint: dict, model: nn.Module, optimizer, scheduler, best_state: dict,
               stopper: dict, history: list[dict]) -> None:
    with files.atomic_path(path) as tmp:
        torch.save({"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "best_state": best_state, "stopper": stopper,
                    "history": history}, tmp)


def load_state(path: Path, fingerprint: dict, model: nn.Module) -> tuple[dict | None, str | None]:
    """(state, None) for a checkpoint of this very run, its weights loaded into `model`; (None, why not)
    for one that does not fit; (None, None) when there is none."""
    if not path.exists():
        return None, None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged file, another torch version
        return None, f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    reason = mismatch(state.get("fingerprint"), fingerprint)
    if reason:
        return None, reason
    try:
        model.load_state_dict(state["model"])
    except Exception as exc:  # an architecture that changed without a params change (a torch upgrade)
        return None, f"its weights do not fit the model ({str(exc).splitlines()[0]})"
    return state, None
