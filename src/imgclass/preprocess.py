"""The one definition of preprocessing, saved inside every model so train, evaluate and predict agree.

Two steps: `to_uint8` (once per image: RGB, squash-resize to image_size, uint8 HWC — the split
stage caches its result) and `normalize` (per batch: to float, resize to the network's
input_size when it differs, subtract mean / divide std). Augmentation sits between the two, per batch
on the training device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from kornia.augmentation.auto import TrivialAugment
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from imgclass.params import Augment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image as uint8 HxWx3 at image_size (aspect squashed, as fastai's default)."""
        image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        return np.array(image, dtype=np.uint8)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) N x 3 x H x W, any device -> normalised float N x 3 x input_size x input_size."""
        x = batch.float() / 255  # not in place: augmented float batches belong to the caller
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              antialias=True, align_corners=False)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(image_size=int(d["image_size"]), input_size=int(d["input_size"]),
                   mean=tuple(d["mean"]), std=tuple(d["std"]))


def augmentation(cfg: Augment, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Random augmentation drawn per image but applied to a whole batch at once, on the training
    device (kornia): uint8 or 0..255 float N x 3 x H x W -> 0..255 float, same size. None when nothing
    is switched on. One batched call instead of one transforms call per image: 2-2.6x faster at batch
    256 on a 2-core CPU (benchmarks/augment.py), and it runs on the GPU when training does, off the
    DataLoader. TrivialAugment picks one operation per batch (kornia's policy), strength per image."""
    steps = []
    if cfg.random_resized_crop:
        steps.append(K.RandomResizedCrop((image_size, image_size), scale=(cfg.random_resized_crop, 1.0)))
    if cfg.hflip:
        steps.append(K.RandomHorizontalFlip())
    if cfg.rotation:
        steps.append(K.RandomRotation(cfg.rotation))
    if cfg.color_jitter:
        j = cfg.color_jitter
        steps.append(K.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 4, 0.5)))
    if cfg.trivialaugment:
        steps.append(TrivialAugment())
    if not steps:
        return None
    pipeline = nn.Sequential(*steps)

    def augment(batch: torch.Tensor) -> torch.Tensor:
        return pipeline.to(batch.device)(batch.float().div(255)).clamp_(0, 1).mul_(255)

    return augment


def batch_mixing(cfg: Augment, num_classes: int) -> v2.RandomChoice | None:
    """MixUp and/or CutMix over a whole batch (targets become soft); None when both are off."""
    choices = []
    if cfg.mixup:
        choices.append(v2.MixUp(alpha=cfg.mixup, num_classes=num_classes))
    if cfg.cutmix:
        choices.append(v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes))
    return v2.RandomChoice(choices) if choices else None
