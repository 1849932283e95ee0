import warnings

import numpy as np
import pytest
import torch

from imgclass import cli, files
from imgclass.model.checkpoint import load_trained
from imgclass.evaluation.evaluate import predict_probs
from imgclass.serving.export import OPSET, export_model, sidecar_path
from imgclass.model.preprocess import Preprocessing
from test_predict import split_images, train_tiny

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def trained(fashion_split, tmp_path_factory):
    """(checkpoint, the first 16 test images as normalised input, their probabilities from the checkpoint)."""
    models_dir = tmp_path_factory.mktemp("export") / "models"
    checkpoint = train_tiny(fashion_split, models_dir)
    model, _, prep = load_trained(checkpoint)
    _, images = split_images(fashion_split[1], 16)
    x = prep.normalize(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    return checkpoint, x, predict_probs(model, prep, images)


def assert_parity(actual: np.ndarray, expected: np.ndarray) -> None:
    assert (actual.argmax(axis=1) == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(actual, expected, atol=1e-4)


@pytest.mark.slow
def test_onnx_matches_the_checkpoint_at_any_batch_size(trained, tmp_path):
    checkpoint, x, expected = trained
    out = export_model(checkpoint, "onnx", tmp_path / "m.onnx")
    assert max(o.version for o in onnx.load(out).opset_import if o.domain in ("", "ai.onnx")) >= 17
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input"
    for batch in (1, 5, 16):  # the batch axis is dynamic
        got = np.concatenate([session.run(None, {"input": x[i:i + batch]})[0] for i in range(0, 16, batch)])
        assert_parity(got, expected)

    sidecar = files.read_json(sidecar_path(out))
    _, meta, prep = load_trained(checkpoint)
    assert sidecar["classes"] == meta["classes"] and Preprocessing.from_dict(sidecar["preprocessing"]) == prep
    assert sidecar["input"]["shape"] == ["batch", 3, 28, 28] and sidecar["opset"] == OPSET


def test_torchscript_matches_the_checkpoint(trained, tmp_path):
    checkpoint, x, expected = trained
    out = export_model(checkpoint, "torchscript", tmp_path / "m.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated upstream
        scripted = torch.jit.load(str(out))
    with torch.no_grad():
        assert_parity(scripted(torch.from_numpy(x[:7])).numpy(), expected[:7])
    assert files.read_json(tmp_path / "m.json")["format"] == "torchscript"


def test_cli_export_writes_beside_and_names_errors(trained, tmp_path, capsys):
    checkpoint, x, expected = trained
    models_dir = str(checkpoint.parent.parent)
    assert cli.main(["export", "m", "--format", "torchscript", "--models-dir", models_dir,
                     "--out", str(tmp_path / "x" / "m.torchscript.pt")]) == 0
    # the model where --out says, its description beside it, naming it; nothing else
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["m.torchscript.json", "m.torchscript.pt"]
    sidecar = files.read_json(tmp_path / "x" / "m.torchscript.json")
    assert (sidecar["model"], sidecar["format"]) == ("m.torchscript.pt", "torchscript")
    assert sidecar["classes"] == load_trained(checkpoint)[1]["classes"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(tmp_path / "x" / "m.torchscript.pt"))
    with torch.no_grad():
        assert_parity(scripted(torch.from_numpy(x[:3])).numpy(), expected[:3])  # the checkpoint asked for
    capsys.readouterr()
    assert cli.main(["export", "nope", "--format", "onnx", "--models-dir", models_dir]) == 1
    assert "no trained model" in capsys.readouterr().err
    assert cli.main(["export", "m", "--format", "onnx", "--models-dir", models_dir,
                     "--out", str(tmp_path / "m.json")]) == 1
    assert "written beside the model" in capsys.readouterr().err and not (tmp_path / "m.json").exists()


def test_exported_probabilities_follow_the_saved_output_side(trained, tmp_path):
    """A model trained for per-class sigmoids with a fitted temperature exports those probabilities."""
    from dataclasses import replace

    from imgclass.model.checkpoint import save_checkpoint

    checkpoint, x, softmax_probs = trained
    model, meta, prep = load_trained(checkpoint)
    other = tmp_path / "models" / "s" / "model.pt"
    save_checkpoint(other, model, {**meta, "preprocessing": replace(prep, output="sigmoid", temperature=2.0).to_dict()})
    with torch.no_grad():
        model, _, sigmoid_prep = load_trained(other)
        expected = sigmoid_prep.probabilities(model(torch.from_numpy(x))).numpy()
    assert not np.allclose(expected, softmax_probs, atol=1e-3)  # the output side matters here
    session = ort.InferenceSession(str(export_model(other, "onnx", tmp_path / "s.onnx")),
                                   providers=["CPUExecutionProvider"])
    assert_parity(session.run(None, {"input": x})[0], expected)
