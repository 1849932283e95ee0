"""Learning-rate range test (Smith 2015, as fastai's lr_find): raise the learning rate exponentially
over a few hundred batches, record the smoothed loss, suggest the rate where it falls fastest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from imgclass.config.params import Params
from imgclass.data.image_cache import load_split
from imgclass.devices import resolve_device
from imgclass.model import models
from imgclass.model.preprocess import Preprocessing
from imgclass.training.augment import augmentation
from imgclass.training.losses import make_loss
from imgclass.training.train import ArrayDataset, Phase, make_loader, make_optimizer, param_groups, seed_everything


def lr_range_test(name: str, params: Params, split_dir: Path, start_lr: float = 1e-7, end_lr: float = 10.0,
                  steps: int = 100, smoothing: float = 0.05, diverge: float = 4.0) -> dict:
    """{"lrs", "losses" (smoothed), "suggestion"} for model `name` on the training split."""
    cfg = params.models[name]
    seed_everything(params.seed)
    device = resolve_device(params.device)
    images, labels = load_split(split_dir, "train", list(params.classes), params.image_size)
    prep = Preprocessing(params.image_size, params.input_size(name))
    model = models.build_model(cfg.arch, len(params.classes), cfg.weights, cfg.dropout,
                               cfg.binary_head).to(device).train()
    phase = Phase("frozen" if cfg.freeze_epochs else "unfrozen", 1)
    models.set_backbone_frozen(model, phase.name == "frozen")
    optimizer = make_optimizer(param_groups(model, cfg, phase), cfg)
    ratios = [g["lr"] / cfg.lr for g in optimizer.param_groups]  # keep discriminative ratios
    loss_fn = make_loss(cfg.loss, label_smoothing=cfg.label_smoothing, focal_gamma=cfg.focal_gamma)
    loader = make_loader(ArrayDataset(images, labels), cfg.batch_size, True, params.seed, cfg.num_workers, device)
    augment = augmentation(cfg.augment, params.image_size) or (lambda batch: batch)
    factor = (end_lr / start_lr) ** (1 / max(steps - 1, 1))
    lrs, losses, avg, best = [], [], 0.0, math.inf
    batches = iter(loader)
    for step in range(steps):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        lr = start_lr * factor**step
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        if phase.name == "frozen":
            models.apply_frozen_mode(model)
        loss = loss_fn(model(prep.normalize(augment(x.to(device)))), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        avg = smoothing * loss.item() + (1 - smoothing) * avg
        smoothed = avg / (1 - (1 - smoothing) ** (step + 1))  # bias-corrected moving average
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or smoothed > diverge * best:
            break
    return {"lrs": lrs, "losses": losses, "suggestion": suggest(lrs, losses)}


def suggest(lrs: list[float], losses: list[float]) -> float:
    """The rate at the steepest descent of the loss curve (before its minimum)."""
    if len(lrs) < 3:
        return lrs[0] if lrs else float("nan")
    end = int(np.argmin(losses)) + 1
    if end < 3:
        return lrs[0]
    slopes = np.gradient(np.array(losses[:end]), np.log10(lrs[:end]))
    return float(lrs[int(np.argmin(slopes))])


def plot(result: dict, path: Path, title: str = "") -> Path:
    from imgclass.plots import plt, save_png

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result["lrs"], result["losses"])
    ax.axvline(result["suggestion"], color="tab:red", linestyle="--", label=f"suggested {result['suggestion']:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.set_title(title or "learning-rate range test")
    ax.legend()
    return save_png(fig, path)
