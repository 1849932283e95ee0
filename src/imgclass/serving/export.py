"""A trained model as a standalone file for runtimes without this library: TorchScript or ONNX.

The exported graph maps the *normalised* float input (N x 3 x input_size x input_size, the output of
Preprocessing.normalize) to class probabilities (N x classes, Preprocessing.probabilities: the same
numbers evaluate and predict compute), with a free batch size. Decoding, resizing and normalising
stay outside the graph; the JSON written beside the model says how
(`preprocessing`, the same dict the checkpoint holds) and which column is which class.

Test-time augmentation is inside the graph: with `tta: hflip` the graph averages the probabilities
of its input and of its mirror image, as evaluate did (`evaluated`, the default: what the evaluate
stage chose for this checkpoint).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from imgclass import files
from imgclass.evaluation.evaluate import evaluated_tta
from imgclass.model.checkpoint import load_trained
from imgclass.model.preprocess import Preprocessing, check_tta, tta_probabilities

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
OPSET = 18
INPUT, OUTPUT = "input", "probabilities"


class Probabilities(nn.Module):
    """The classifier with its output side inside (temperature, softmax or renormalised sigmoids) and
    its test-time augmentation, so that every runtime returns the probabilities evaluate and predict compute."""

    def __init__(self, model: nn.Module, prep: Preprocessing, tta: str = "none"):
        super().__init__()
        self.model = model
        self.prep = prep
        self.tta = check_tta(tta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tta_probabilities(self.model, self.prep, x, self.tta)


def default_out(name: str, fmt: str) -> Path:
    """exports/NAME.onnx or exports/NAME.torchscript.pt: outside models/, which DVC owns."""
    return Path("exports") / (f"{name}{FORMATS[fmt]}" if fmt == "onnx" else f"{name}.torchscript.pt")


def sidecar_path(out: Path) -> Path:
    return out.with_suffix(".json")


def export_model(checkpoint: Path | str, fmt: str, out: Path | str | None = None, tta: str = "evaluated",
                 preds_dir: Path | str = "data/preds") -> Path:
    """Write the model in `fmt` to `out` (default: default_out) and its JSON beside it; return `out`.
    `tta`: none, hflip, or `evaluated` (evaluate's choice for this checkpoint, from preds_dir/NAME.npz)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    checkpoint = Path(checkpoint)
    model, meta, prep = load_trained(checkpoint, "cpu")
    name = meta.get("name") or checkpoint.parent.name
    out = Path(out) if out else default_out(name, fmt)
    if sidecar_path(out) == out:
        raise ValueError(f"{out}: the JSON description is written beside the model; give the model another suffix")
    if tta == "evaluated":
        tta = evaluated_tta(Path(preds_dir) / f"{name}.npz", checkpoint)
    wrapped = Probabilities(model, prep, tta).eval()
    # Batch 2, not 1: exporters treat a size-1 dimension as a constant.
    example = torch.randn(2, 3, prep.input_size, prep.input_size)
    with files.atomic_path(out) as tmp:
        (to_torchscript if fmt == "torchscript" else to_onnx)(wrapped, example, tmp)
    files.write_json(sidecar_path(out), describe(meta, fmt, out, tta))
    return out


def to_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; asked for explicitly
        torch.jit.save(torch.jit.trace(model, example), str(path))


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:  # torch's exporter would fail deep inside with a less helpful message
        raise ValueError(f"ONNX export needs {' and '.join(missing)}: pip install {' '.join(missing)}")
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                      opset_version=OPSET, dynamo=True, dynamic_shapes=({0: batch},),
                      external_data=False, verbose=False)  # one self-contained file


def describe(meta: dict, fmt: str, out: Path, tta: str = "none") -> dict:
    prep = meta["preprocessing"]
    size = prep["input_size"]
    return {
        "model": out.name,
        "format": fmt,
        "name": meta.get("name"),
        "arch": meta["arch"],
        "classes": list(meta["classes"]),
        "preprocessing": prep,
        "input": {"name": INPUT, "shape": ["batch", 3, size, size], "dtype": "float32",
                  "how": (f"RGB; resize to {prep['image_size']}x{prep['image_size']} (bicubic, aspect squashed); "
                          + (f"then to {size}x{size} (bilinear, antialiased); " if size != prep["image_size"] else "")
                          + "scale to 0..1; subtract mean and divide by std per channel; NCHW")},
        "output": {"name": OUTPUT, "shape": ["batch", len(meta["classes"])], "dtype": "float32",
                   "how": f"probabilities ({prep.get('output', 'softmax')} of logits / "
                          f"{prep.get('temperature', 1.0)})"
                          + (", averaged with those of the mirrored input" if tta == "hflip" else "")
                          + ", one column per class in `classes` order"},
        "tta": tta,
        "opset": OPSET if fmt == "onnx" else None,
    }
