"""Training-only batch augmentation: random per image, applied to whole batches on the training device.

kornia (crop, flip, rotation, colour jitter, TrivialAugment) and torchvision's v2 MixUp/CutMix are
training libraries: nothing on the inference path (preprocess, checkpoint, evaluate, predict, the
served model) imports this module, so a serving environment needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import kornia.augmentation as K
import torch
from kornia.augmentation.auto import TrivialAugment
from torch import nn

from imgclass.config.params import Augment

if TYPE_CHECKING:
    from torchvision.transforms import v2


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
    if not (cfg.mixup or cfg.cutmix):
        return None
    # imported only when asked: torchvision takes 2.4 s to import (torch._dynamo)
    from torchvision.transforms import v2

    choices = []
    if cfg.mixup:
        choices.append(v2.MixUp(alpha=cfg.mixup, num_classes=num_classes))
    if cfg.cutmix:
        choices.append(v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes))
    return v2.RandomChoice(choices) if choices else None
