"""A trained model on disk: `model.pt` = {"state_dict", "meta"}; meta carries the architecture, the
class names and the preprocessing, so evaluate and predict rebuild exactly what was trained."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from imgclass import files
from imgclass.model import models
from imgclass.model.preprocess import Preprocessing


def save_checkpoint(path: Path, model: nn.Module, meta: dict) -> None:
    with files.atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)


def load_trained(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict, Preprocessing]:
    """(model in eval mode on device, meta, preprocessing) from a checkpoint written by training."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model; run `dvc repro` (or the train stage) first")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    meta = saved["meta"]
    model = models.build_model(meta["arch"], len(meta["classes"]), "none", meta.get("dropout", 0.0),
                               meta.get("params", {}).get("binary_head", "two_logits"))
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), meta, Preprocessing.from_dict(meta["preprocessing"])
