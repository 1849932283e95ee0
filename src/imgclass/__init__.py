"""imgclass: a reproducible image-classification pipeline (DVC stages over a small library).

Subpackages follow the pipeline: config, data, review, model, training, evaluation, benchmarking,
serving, tracking (docs/architecture.md)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.2.0"

# Where each module lived before the subpackages. Models registered earlier pickle their serving class
# by the old path (imgclass.registry.ImageClassifier), and people's scripts import the old names: both
# get the module at its new place. Not listed: review and tracking, whose old names are now packages.
MOVED = {
    "params": "config.params", "dvc_params": "config.dvc_params",
    "sources": "data.sources", "images": "data.images", "validate": "data.validate",
    "decisions": "data.decisions", "split": "data.split", "image_cache": "data.image_cache",
    "embeddings": "review.embeddings", "image_quality": "review.image_quality",
    "review_report": "review.review_report", "review_page": "review.review_page",
    "preprocess": "model.preprocess", "models": "model.models", "checkpoint": "model.checkpoint",
    "architectures": "config.architectures",
    "train": "training.train", "resume": "training.resume", "distributed": "training.distributed",
    "augment": "training.augment", "losses": "training.losses", "lr_find": "training.lr_find",
    "benchmark": "benchmarking.benchmark", "machine": "benchmarking.machine",
    "evaluate": "evaluation.evaluate", "evaluation_report": "evaluation.evaluation_report",
    "explain": "evaluation.explain", "ensemble": "evaluation.ensemble", "ensemble_report": "evaluation.ensemble_report",
    "predict": "serving.predict", "registry": "serving.registry", "export": "serving.export",
    "training_curves": "tracking.training_curves", "compare": "tracking.compare",
}


def moved_to(name: str) -> str | None:
    """The current name of a module imported by its old path (imgclass.sources.ddg -> imgclass.data.sources.ddg)."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != __name__ or parts[1] not in MOVED:
        return None
    return ".".join([__name__, MOVED[parts[1]], *parts[2:]])


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the very module at its new place (one module object, not a copy)."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if moved_to(fullname) else None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        # The import system returns whatever sys.modules holds under the name once this returns.
        sys.modules[module.__name__] = importlib.import_module(moved_to(module.__name__))


# First in line: under an old package path (imgclass.sources) the path finder would otherwise load a
# second copy of a submodule (imgclass.sources.folder beside imgclass.data.sources.folder).
if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
    sys.meta_path.insert(0, _OldPaths())
