"""Trained models in MLflow's model registry, as pyfunc models that take images.

Input: a DataFrame with a column `image` (base64-encoded bytes of an image file, any format the
validator accepts), one image per row. A column `path` is refused unless the operator names a
folder in IMGCLASS_SERVE_ROOT where the model is served; then paths (relative to it, or absolute)
are read only when they resolve, symlinks and `..` followed, to a file under it. A refused path gets
the same answer whether or not the file exists.
Output: one row per input row: status (ok|error), reason and detail (why not), class, probability
and probabilities ({class: p}, most probable first).

Every member checkpoint is an artifact of the model, with the vote the ensemble stage chose on the
validation split (`ensemble.json`) and the test-time augmentation evaluate chose for each member
(`tta.json`), so the served ensemble is the evaluated one. The imgclass source
travels with the model (code_paths) and the pip requirements are what that code imports, so the
model loads where imgclass is not installed.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import tempfile
from importlib.metadata import packages_distributions, version
from pathlib import Path
from typing import Sequence

import mlflow
import pandas as pd
from PIL import Image

import imgclass
from imgclass import files, import_closure
from imgclass.config.architectures import family
from imgclass.evaluation.ensemble import EnsembleSpec
from imgclass.evaluation.evaluate import SavedPredictions
from imgclass.serving.predict import (
    ENSEMBLE,
    ENSEMBLE_SPEC,
    EVALUATED,
    ModelChoice,
    PredictError,
    check_evaluated,
    classes_of,
    decode,
    error_row,
    load_members,
    predict_images,
    resolve_checkpoints,
    resolve_tta,
    top_k,
)
from imgclass.tracking import mlflow_runs

REGISTERED_NAME = "imgclass"
BEST = "best"
IMAGE_COLUMN, PATH_COLUMN = "image", "path"
MEMBER_PREFIX = "member_"
SPEC_ARTIFACT = "ensemble_spec"
TTA_ARTIFACT = "tta"
OUTPUT_COLUMNS = ["status", "reason", "detail", "class", "probability", "probabilities"]
SERVE_ROOT_ENV = "IMGCLASS_SERVE_ROOT"
PATH_REFUSED = "path_not_allowed"
# The module the served model imports; its import closure inside imgclass decides the requirements.
SERVING_MODULE = "imgclass.serving.registry"
# Packages a model family imports only when such a network is built (architectures.family of the arch).
FAMILY_PACKAGES = {"timm": "timm", "torchvision": "torchvision"}  # imported only to build such a net


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Images in, class and probabilities out, through each member's saved preprocessing and the
    ensemble's chosen vote."""

    def load_context(self, context) -> None:
        self.spec = load_spec(context.artifacts)
        tta = load_tta(context.artifacts)
        self.members = load_members([context.artifacts[f"{MEMBER_PREFIX}{m}"] for m in self.spec.members],
                                    ttas=[tta.get(m, "none") for m in self.spec.members])
        self.classes = classes_of(self.members)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        root = serve_root()
        decoded = [decode_cell(row, root) for row in frame.to_dict(orient="records")]
        images = [d for d in decoded if not isinstance(d, dict)]
        voted = iter(zip(*predict_images(self.members, images, spec=self.spec)))
        rows = [error_output(d) if isinstance(d, dict) else ok_output(*next(voted), self.classes) for d in decoded]
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS, dtype=object)  # object: errors stay None, not NaN


def load_spec(artifacts: dict) -> EnsembleSpec:
    """The vote saved with the model; models registered before it was saved soft-vote their members."""
    if SPEC_ARTIFACT in artifacts:
        return EnsembleSpec.from_dict(json.loads(Path(artifacts[SPEC_ARTIFACT]).read_text()))
    names = sorted(k[len(MEMBER_PREFIX):] for k in artifacts if k.startswith(MEMBER_PREFIX))
    return EnsembleSpec(names, "soft_vote", names[0], [1.0] * len(names))


def load_tta(artifacts: dict) -> dict[str, str]:
    """{member: none | hflip} as evaluated; models registered before TTA existed use none."""
    if TTA_ARTIFACT not in artifacts:
        return {}
    return json.loads(Path(artifacts[TTA_ARTIFACT]).read_text())


def serve_root() -> Path | None:
    """The folder the operator allows paths under (IMGCLASS_SERVE_ROOT), resolved; None: bytes only."""
    value = os.environ.get(SERVE_ROOT_ENV, "").strip()
    return Path(value).resolve() if value else None


def decode_cell(row: dict, root: Path | None = None):
    """The image of one input row (base64 `image` first, else `path` under root), or an error row."""
    data = row.get(IMAGE_COLUMN)
    if isinstance(data, str) and data:
        try:
            data = base64.b64decode("".join(data.split()), validate=True)  # line-wrapped base64 is fine
        except (binascii.Error, ValueError):
            return error_row("", "not_base64", f"column {IMAGE_COLUMN!r} must hold base64-encoded image bytes")
    if isinstance(data, (bytes, bytearray)) and data:
        return decode(io.BytesIO(data), label="")
    path = row.get(PATH_COLUMN)
    if isinstance(path, str) and path:
        return decode_path(path, root)
    return error_row("", "no_image", f"each row needs a column {IMAGE_COLUMN!r} with base64-encoded image bytes")


def decode_path(path: str, root: Path | None):
    """A client's path, read only under root; the refusal never depends on whether the file exists."""
    if root is None:
        return error_row("", PATH_REFUSED, f"this model takes image bytes (column {IMAGE_COLUMN!r}); paths are "
                                           f"read only under a folder the operator sets in {SERVE_ROOT_ENV}")
    try:
        target = (root / path).resolve()  # an absolute path replaces root; then symlinks and .. are followed
    except (OSError, ValueError):  # a NUL byte, a symlink loop
        target = None
    if target is None or not target.is_relative_to(root):
        return error_row("", PATH_REFUSED, f"paths must name a file under the serving root ({SERVE_ROOT_ENV})")
    return decode(target, label="")


def error_output(error: dict) -> dict:
    return {"status": "error", "reason": error["reason"], "detail": error["detail"], "class": None,
            "probability": None, "probabilities": None}


def ok_output(scores, predicted, classes: Sequence[str]) -> dict:
    ranked = top_k(scores, classes, len(classes), first=int(predicted))
    return {"status": "ok", "reason": "", "detail": "", "class": ranked[0]["class"],
            "probability": ranked[0]["probability"], "probabilities": {r["class"]: r["probability"] for r in ranked}}


# --- which models -------------------------------------------------------------------------------

def best_model(candidates: Sequence[str], preds_dir: Path | str = "data/preds") -> str:
    """The candidate with the highest *validation* accuracy in preds_dir/NAME.npz (saved by evaluate);
    the first in params order on a tie. The test split chooses nothing."""
    scores = {}
    for name in candidates:
        try:
            scores[name] = SavedPredictions.load(Path(preds_dir) / f"{name}.npz").val_accuracy
        except FileNotFoundError:
            continue
        except ValueError as exc:
            raise PredictError(str(exc)) from None
    if not scores:
        raise PredictError(f"{preds_dir}: no evaluated model among {', '.join(candidates)}; run `dvc repro` first "
                           "or pass --model NAME")
    return max(scores, key=scores.get)


def choose_models(model: str, models_dir: Path | str = "models", preds_dir: Path | str = "data/preds",
                  params_path: Path | str = "params.yaml",
                  ensemble_spec: Path | str = ENSEMBLE_SPEC) -> ModelChoice:
    """`best` (params' model with the best validation accuracy, checked to be the evaluated checkpoint),
    `ensemble` (the evaluated ensemble) or one NAME."""
    if model != BEST:
        return resolve_checkpoints(model, models_dir, params_path, ensemble_spec)
    name = best_model(params_models(params_path), preds_dir)
    choice = resolve_checkpoints(name, models_dir)
    evaluated = SavedPredictions.load(Path(preds_dir) / f"{name}.npz").checkpoint_sha256
    check_evaluated(choice.checkpoints, {name: evaluated}, "the evaluate stage")
    return choice


def params_models(params_path: Path | str) -> list[str]:
    """Every model of params.yaml: `best` may be any of them, not only an ensemble member."""
    from imgclass.config.params import ParamsError, load_params

    try:
        return list(load_params(params_path).models)
    except ParamsError as exc:
        raise PredictError(f"{exc} (`best` picks among params.yaml's models)") from None


# --- registering --------------------------------------------------------------------------------

def serving_imports(module: str = SERVING_MODULE) -> set[str]:
    """Top-level third-party modules the served code imports when it loads: the module and everything
    it imports from imgclass, statements outside function bodies only (those run on import)."""
    served = import_closure.closure([import_closure.module_file(module)], lazy=False)
    return import_closure.third_party(served, lazy=False)


def serving_requirements(archs: Sequence[str] = ()) -> list[str]:
    """pip pins of what the served code imports, plus what the members' architectures build with,
    at this environment's versions."""
    modules = serving_imports() | {FAMILY_PACKAGES[family(a)] for a in archs if family(a) in FAMILY_PACKAGES}
    distributions = packages_distributions()
    missing = sorted(m for m in modules if m not in distributions)
    if missing:
        raise PredictError(f"serving imports {', '.join(missing)}, which is not installed here")
    pins = {_distribution(m, distributions[m]) for m in modules}
    return sorted(f"{d}=={version(d).split('+')[0]}" for d in pins)  # a local version (+cu130) is not on PyPI


def _distribution(module: str, candidates: list[str]) -> str:
    """The distribution that provides `module`: the one named like it when several share it
    (mlflow, mlflow-skinny and mlflow-tracing all provide `mlflow`), else the first."""
    def norm(name: str) -> str:
        return name.lower().replace("-", "_")
    return next((d for d in candidates if norm(d) == norm(module)), sorted(candidates)[0])


def signature() -> mlflow.models.ModelSignature:
    from mlflow.types import ColSpec, Schema

    return mlflow.models.ModelSignature(inputs=Schema([ColSpec("string", IMAGE_COLUMN, required=False),
                                                       ColSpec("string", PATH_COLUMN, required=False)]))


def input_example() -> pd.DataFrame:
    """One grey PNG: MLflow runs the model on it before registering, and keeps it as the request example."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
    return pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(buffer.getvalue()).decode()]})


def register(model: str = BEST, name: str = REGISTERED_NAME, models_dir: Path | str = "models",
             preds_dir: Path | str = "data/preds", params_path: Path | str = "params.yaml",
             ensemble_spec: Path | str = ENSEMBLE_SPEC):
    """Log the chosen model(s) as one pyfunc model with their vote, register it as a new version of
    `name`; return the ModelVersion."""
    choice = choose_models(model, models_dir, preds_dir, params_path, ensemble_spec)
    members = load_members(list(choice.checkpoints.values()))  # fails early: missing model, classes disagree
    tta = resolve_tta(EVALUATED, choice.checkpoints, preds_dir)
    mlflow_runs.use_experiment()
    source = ENSEMBLE if model == ENSEMBLE else next(iter(choice.checkpoints))
    with tempfile.TemporaryDirectory() as tmp, \
            mlflow.start_run(run_name=f"register {name}", tags={"model": source, "purpose": "register"}):
        spec_file = Path(tmp) / "ensemble.json"
        files.write_json(spec_file, choice.spec.to_dict())
        tta_file = Path(tmp) / "tta.json"
        files.write_json(tta_file, tta)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ImageClassifier(),
            artifacts={**{f"{MEMBER_PREFIX}{n}": str(path) for n, path in choice.checkpoints.items()},
                       SPEC_ARTIFACT: str(spec_file), TTA_ARTIFACT: str(tta_file)},
            code_paths=[str(Path(imgclass.__file__).parent)],  # serving imports imgclass from the model
            pip_requirements=serving_requirements([m.meta["arch"] for m in members]), signature=signature(),
            input_example=input_example(),
            metadata={"classes": classes_of(members), "members": list(choice.checkpoints),
                      "vote": choice.spec.vote, "tta": tta, "training_runs": [m.meta.get("mlflow_run_id") for m in members]},
            registered_model_name=name,
        )
    client, number = mlflow.MlflowClient(), str(info.registered_model_version)
    client.set_model_version_tag(name, number, "members", ", ".join(choice.checkpoints))
    client.set_model_version_tag(name, number, "vote", choice.spec.vote)
    return client.get_model_version(name, number)


def registered_uri(version) -> str:
    return f"models:/{version.name}/{version.version}"
