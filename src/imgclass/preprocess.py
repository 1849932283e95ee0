"""The one definition of preprocessing, saved inside every model so train, evaluate and predict agree.

Two steps: `to_uint8` (once per image: RGB, squash-resize to image_size, uint8 HWC — the split
stage caches its result) and `normalize` (per batch: to float, resize to the network's
input_size when it differs, subtract mean / divide std). Augmentation sits between the two, on uint8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
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
        """uint8 N x 3 x H x W (any device) -> normalised float N x 3 x input_size x input_size."""
        x = batch.float().div_(255)
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


def augmentation(cfg: Augment, image_size: int) -> v2.Compose | None:
    """Per-sample augmentation on uint8 CHW tensors; None when nothing is switched on."""
    steps = []
    if cfg.random_resized_crop:
        steps.append(v2.RandomResizedCrop(image_size, scale=(cfg.random_resized_crop, 1.0), antialias=True))
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.rotation:
        steps.append(v2.RandomRotation(cfg.rotation))
    if cfg.color_jitter:
        j = cfg.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 4, 0.5)))
    if cfg.trivialaugment:
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose(steps) if steps else None


def batch_mixing(cfg: Augment, num_classes: int) -> v2.RandomChoice | None:
    """MixUp and/or CutMix over a whole batch (targets become soft); None when both are off."""
    choices = []
    if cfg.mixup:
        choices.append(v2.MixUp(alpha=cfg.mixup, num_classes=num_classes))
    if cfg.cutmix:
        choices.append(v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes))
    return v2.RandomChoice(choices) if choices else None
