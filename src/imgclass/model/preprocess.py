"""The one definition of what a trained model needs around its network, saved inside every model so
train, evaluate, predict and export agree.

Input side, two steps: `to_uint8` (once per image: RGB, squash-resize to image_size, uint8 HWC — the
split stage caches its result) and `normalize` (per batch: to float, resize to the network's
input_size when it differs, subtract mean / divide std). Augmentation sits between the two, per batch
on the training device, in the training-only module `augment.py`.

Output side: `probabilities` turns logits into class probabilities the way the model's loss trained
them (`output`), divided first by a `temperature` fitted on validation data where the loss's scores
are not log-probabilities (hinge).

Test-time augmentation (`tta_probabilities`): `hflip` averages the probabilities of each image and
its mirror image; evaluate chooses it on validation, predict, export and serving apply that choice.

This module is on the inference path (evaluate, predict, the served model): it imports nothing that
only training needs (kornia). torch is imported where tensors are made, not on import: decoding images
(`to_uint8`, data/decode.py, the review on ONNX Runtime) needs no torch (2.7 s a process).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How logits become probabilities:
#   softmax: one distribution over the classes (cross_entropy, focal, mse; multi_margin after a temperature)
#   sigmoid: one independent probability per class (bce's one-vs-all logits), renormalised to sum to 1
OUTPUTS = ("softmax", "sigmoid")
TTA = ("none", "hflip")


def logits_to_probabilities(logits: torch.Tensor, output: str = "softmax", temperature: float = 1.0) -> torch.Tensor:
    """N x C logits -> N x C probabilities that sum to 1 per row (the soft vote averages these)."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
    logits = logits.float() / temperature
    if output == "sigmoid":
        import torch.nn.functional as F

        # sigmoid(z_k) / sum_j sigmoid(z_j), in log space so that very negative logits do not underflow.
        return F.logsigmoid(logits).softmax(dim=1)
    return logits.softmax(dim=1)


def check_tta(tta: str) -> str:
    if tta not in TTA:
        raise ValueError(f"unknown tta {tta!r}; choose one of {', '.join(TTA)}")
    return tta


def tta_probabilities(model: torch.nn.Module, prep: "Preprocessing", x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Class probabilities of normalised N x 3 x H x W inputs; `hflip`: the mean of the image's and its
    mirror's probabilities (not of their logits: each view's vote counts as a distribution)."""
    probs = prep.probabilities(model(x))
    if tta == "hflip":
        probs = (probs + prep.probabilities(model(x.flip(-1)))) / 2
    return probs


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    output: str = "softmax"      # see OUTPUTS
    temperature: float = 1.0     # logits are divided by it before `output`

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown output {self.output!r}; choose one of {', '.join(OUTPUTS)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image as uint8 HxWx3 at image_size (aspect squashed, as fastai's default)."""
        image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        return np.array(image, dtype=np.uint8)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) N x 3 x H x W, any device -> normalised float N x 3 x input_size x input_size."""
        import torch
        import torch.nn.functional as F

        x = batch.float() / 255  # not in place: augmented float batches belong to the caller
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              antialias=True, align_corners=False)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's N x C logits -> N x C class probabilities, as its loss trained them."""
        return logits_to_probabilities(logits, self.output, self.temperature)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        # Checkpoints written before the output side existed were all trained for a softmax.
        return cls(image_size=int(d["image_size"]), input_size=int(d["input_size"]),
                   mean=tuple(d["mean"]), std=tuple(d["std"]), output=d.get("output", "softmax"),
                   temperature=float(d.get("temperature", 1.0)))
