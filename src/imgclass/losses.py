"""Losses by name. Each takes logits and targets that are class indices or soft (mixup) rows."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def as_soft(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    return targets if targets.is_floating_point() else F.one_hot(targets, num_classes).float()


def as_hard(targets: torch.Tensor) -> torch.Tensor:
    return targets.argmax(dim=1) if targets.is_floating_point() else targets


def _per_class(loss: torch.Tensor, soft: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """Weight each sample by its (soft) class weight, then average."""
    if weight is None:
        return loss.mean()
    w = soft @ weight
    return (loss * w).sum() / w.sum()


def cross_entropy(weight=None, label_smoothing: float = 0.0, **_) -> LossFn:
    return lambda logits, y: F.cross_entropy(logits, y, weight=weight, label_smoothing=label_smoothing)


def focal(weight=None, focal_gamma: float = 2.0, **_) -> LossFn:
    """Lin et al.'s focal loss: cross-entropy scaled by (1 - p)^gamma, so easy examples count less."""
    def loss(logits, y):
        soft = as_soft(y, logits.shape[1])
        log_p = F.log_softmax(logits, dim=1)
        per_sample = -(soft * (1 - log_p.exp()).pow(focal_gamma) * log_p).sum(dim=1)
        return _per_class(per_sample, soft, weight)
    return loss


def multi_margin(weight=None, **_) -> LossFn:
    """Multi-class hinge loss (needs hard labels: mixed targets use their largest share)."""
    return lambda logits, y: F.multi_margin_loss(logits, as_hard(y), weight=weight)


def mse(weight=None, **_) -> LossFn:
    """Squared error between softmax probabilities and one-hot targets."""
    def loss(logits, y):
        soft = as_soft(y, logits.shape[1])
        per_sample = (logits.softmax(dim=1) - soft).pow(2).sum(dim=1)
        return _per_class(per_sample, soft, weight)
    return loss


def bce(weight=None, **_) -> LossFn:
    """One-vs-all binary cross-entropy on each class's logit."""
    def loss(logits, y):
        soft = as_soft(y, logits.shape[1])
        per_sample = F.binary_cross_entropy_with_logits(logits, soft, reduction="none").sum(dim=1)
        return _per_class(per_sample, soft, weight)
    return loss


LOSSES = {"cross_entropy": cross_entropy, "focal": focal, "multi_margin": multi_margin, "mse": mse, "bce": bce}


def make_loss(name: str, weight: Optional[torch.Tensor] = None, **options) -> LossFn:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name](weight=weight, **options)


def balanced_class_weights(labels, num_classes: int) -> torch.Tensor:
    """n_samples / (n_classes * count), as scikit-learn's 'balanced'."""
    from sklearn.utils.class_weight import compute_class_weight
    import numpy as np

    present = np.unique(labels)
    weights = np.ones(num_classes, dtype=np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
    return torch.tensor(weights, dtype=torch.float32)
