"""Trained models in MLflow's model registry, as pyfunc models that take images.

Input: a DataFrame with a column `image` (base64-encoded bytes of an image file, any format the
validator accepts) or `path` (a file readable where the model runs), one image per row.
Output: one row per input row: status (ok|error), reason and detail (why not), class, probability
and probabilities ({class: p}, most probable first).
Every member checkpoint is an artifact of the model; several members (the ensemble) are averaged,
as `imgclass predict --model ensemble` does.
"""

from __future__ import annotations

import base64
import binascii
import io
from importlib.metadata import version
from pathlib import Path
from typing import Sequence

import mlflow
import pandas as pd
from PIL import Image

import imgclass
from imgclass import files, tracking
from imgclass.predict import (ENSEMBLE, PredictError, classes_of, decode, error_row, load_members,
                              predict_images, resolve_checkpoints, top_k)

REGISTERED_NAME = "imgclass"
BEST = "best"
IMAGE_COLUMN, PATH_COLUMN = "image", "path"
MEMBER_PREFIX = "member_"
OUTPUT_COLUMNS = ["status", "reason", "detail", "class", "probability", "probabilities"]
# What `import imgclass.predict` needs where the model is served; pinned to this environment.
# Listing them explicitly skips MLflow's slow requirement inference (it would load the model).
SERVING_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "pillow", "pillow-heif", "imagehash",
                    "pydantic", "pyyaml", "scikit-learn", "tqdm")


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Images in, class and probabilities out, through each member's saved preprocessing."""

    def load_context(self, context) -> None:
        members = sorted(k for k in context.artifacts if k.startswith(MEMBER_PREFIX))
        self.members = load_members([context.artifacts[k] for k in members])
        self.classes = classes_of(self.members)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        decoded = [decode_cell(row) for row in frame.to_dict(orient="records")]
        images = [d for d in decoded if not isinstance(d, dict)]
        probs = iter(predict_images(self.members, images))
        rows = [error_output(d) if isinstance(d, dict) else ok_output(next(probs), self.classes) for d in decoded]
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS, dtype=object)  # object: errors stay None, not NaN


def decode_cell(row: dict):
    """The image of one input row (base64 `image` first, else `path`), or an error row."""
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
        return decode(Path(path))
    return error_row("", "no_image", f"each row needs a column {IMAGE_COLUMN!r} (base64) or {PATH_COLUMN!r}")


def error_output(error: dict) -> dict:
    return {"status": "error", "reason": error["reason"], "detail": error["detail"], "class": None,
            "probability": None, "probabilities": None}


def ok_output(probs, classes: Sequence[str]) -> dict:
    ranked = top_k(probs, classes, len(classes))
    return {"status": "ok", "reason": "", "detail": "", "class": ranked[0]["class"],
            "probability": ranked[0]["probability"], "probabilities": {r["class"]: r["probability"] for r in ranked}}


# --- which models -------------------------------------------------------------------------------

def best_model(metrics_dir: Path | str = "metrics/eval") -> str:
    """The model with the highest test accuracy in metrics_dir/NAME.json (written by evaluate)."""
    scores = {p.stem: files.read_json(p).get("accuracy") for p in sorted(Path(metrics_dir).glob("*.json"))}
    scores = {name: acc for name, acc in scores.items() if isinstance(acc, (int, float))}
    if not scores:
        raise PredictError(f"{metrics_dir}: no evaluated model (*.json with accuracy); run `dvc repro` first "
                           "or pass --model NAME")
    return max(scores, key=scores.get)


def member_checkpoints(model: str, models_dir: Path | str = "models",
                       metrics_dir: Path | str = "metrics/eval") -> dict[str, Path]:
    """{name: checkpoint} for `best`, `ensemble` (every trained model) or one NAME."""
    if model == BEST:
        model = best_model(metrics_dir)
    return {path.parent.name: path for path in resolve_checkpoints(model, models_dir)}


# --- registering --------------------------------------------------------------------------------

def serving_requirements() -> list[str]:
    return [f"{package}=={version(package).split('+')[0]}" for package in SERVING_PACKAGES]


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
             metrics_dir: Path | str = "metrics/eval"):
    """Log the chosen model(s) as one pyfunc model, register it as a new version of `name`; return
    the ModelVersion."""
    checkpoints = member_checkpoints(model, models_dir, metrics_dir)
    members = load_members(list(checkpoints.values()))  # fails early: missing model, classes disagree
    tracking.use_experiment()
    source = ENSEMBLE if len(checkpoints) > 1 or model == ENSEMBLE else next(iter(checkpoints))
    with mlflow.start_run(run_name=f"register {name}", tags={"model": source, "purpose": "register"}):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ImageClassifier(),
            artifacts={f"{MEMBER_PREFIX}{n}": str(path) for n, path in checkpoints.items()},
            code_paths=[str(Path(imgclass.__file__).parent)],  # serving imports imgclass from the model
            pip_requirements=serving_requirements(), signature=signature(), input_example=input_example(),
            metadata={"classes": classes_of(members), "members": list(checkpoints),
                      "training_runs": [m.meta.get("mlflow_run_id") for m in members]},
            registered_model_name=name,
        )
    client, number = mlflow.MlflowClient(), str(info.registered_model_version)
    client.set_model_version_tag(name, number, "members", ", ".join(checkpoints))
    return client.get_model_version(name, number)


def registered_uri(version) -> str:
    return f"models:/{version.name}/{version.version}"

