"""Losses by name. Each takes logits and targets that are class indices or soft (mixup) rows."""

from __future__ import annotations

import math
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
    """One-vs-all binary cross-entropy on each class's logit (two logits for two classes): each
    sigmoid(logit) estimates one class's probability, so probabilities are the sigmoids renormalised
    (output "sigmoid"), not a softmax, which would make them overconfident. With one logit
    (models.SignedLogit: columns -u and u) the two terms are the same binary cross-entropy of u, so the
    loss is twice the textbook one (AdamW's steps do not depend on that scale) and the probabilities
    are sigmoid(u) for class 1 and 1 - sigmoid(u) for class 0."""
    def loss(logits, y):
        soft = as_soft(y, logits.shape[1])
        per_sample = F.binary_cross_entropy_with_logits(logits, soft, reduction="none").sum(dim=1)
        return _per_class(per_sample, soft, weight)
    return loss


LOSSES = {"cross_entropy": cross_entropy, "focal": focal, "multi_margin": multi_margin, "mse": mse, "bce": bce}
# How each loss's logits become probabilities (preprocess.logits_to_probabilities): bce trains one
# sigmoid per class, the others a softmax. multi_margin's scores are margins, not log-probabilities:
# a temperature fitted on validation data turns them into probabilities (Platt scaling).
OUTPUT_OF_LOSS = {"cross_entropy": "softmax", "focal": "softmax", "multi_margin": "softmax", "mse": "softmax",
                  "bce": "sigmoid"}
NEEDS_TEMPERATURE = {"multi_margin"}


def needs_temperature(loss: str, label_smoothing: float = 0.0) -> bool:
    """Whether the logits need a temperature fitted on validation data to be probabilities: the hinge's
    scores are margins, and cross-entropy with label smoothing ε trains the true class towards
    1 - ε + ε/K instead of 1, so its softmax is under-confident (Müller et al., 2019): the default
    cnn_medium's expected calibration error is 0.095 with ε = 0.1 and no temperature, 0.028 with ε = 0."""
    return loss in NEEDS_TEMPERATURE or (loss == "cross_entropy" and label_smoothing > 0)


def make_loss(name: str, weight: Optional[torch.Tensor] = None, **options) -> LossFn:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name](weight=weight, **options)


def balanced_class_weights(labels, num_classes: int) -> torch.Tensor:
    """n_samples / (n_classes * count), as scikit-learn's 'balanced'."""
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = np.ones(num_classes, dtype=np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
    return torch.tensor(weights, dtype=torch.float32)


def probability_output(loss: str) -> str:
    """The `Preprocessing.output` that matches what `loss` trains."""
    if loss not in OUTPUT_OF_LOSS:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(OUTPUT_OF_LOSS)}")
    return OUTPUT_OF_LOSS[loss]


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, output: str = "softmax") -> float:
    """The temperature T that makes probabilities(logits / T) fit `labels` best (lowest cross-entropy),
    searched on a log grid from 0.05 to 20. Targets are smoothed as Platt's: the true class gets
    (n + 1) / (n + 2) with n its count, so a perfectly separated validation set does not drive T to 0."""
    from imgclass.model.preprocess import logits_to_probabilities

    logits, labels = logits.detach().float(), labels.long()
    num_classes = logits.shape[1]
    counts = torch.bincount(labels, minlength=num_classes).float()
    hit = (counts[labels] + 1) / (counts[labels] + 2)
    targets = ((1 - hit) / max(num_classes - 1, 1)).unsqueeze(1).repeat(1, num_classes)
    targets[torch.arange(len(labels)), labels] = hit
    best, best_loss = 1.0, float("inf")
    for t in torch.logspace(math.log10(0.05), math.log10(20.0), 121).tolist():
        probs = logits_to_probabilities(logits, output, t).clamp_min(1e-12)
        loss = -(targets * probs.log()).sum(dim=1).mean().item()
        if loss < best_loss:
            best, best_loss = t, loss
    return best
