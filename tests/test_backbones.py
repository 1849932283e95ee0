"""Any backbone by name (`timm/<name>`, `torchvision/<name>`), its weights online and offline, the
offline EfficientNet-Lite1/2, and test-time augmentation (issue #21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import require_fashion, tiny_params_dict
from imgclass import cli, files
from imgclass.config.params import ParamsError, parse_params
from imgclass.evaluation import explain
from imgclass.evaluation.evaluate import SavedPredictions, choose_tta, file_sha256, predict_probs
from imgclass.model import models
from imgclass.model.checkpoint import load_trained, save_checkpoint
from imgclass.model.models import SignedLogit, build_model
from imgclass.model.preprocess import Preprocessing, tta_probabilities
from imgclass.serving.export import export_model, sidecar_path
from imgclass.serving.predict import predict_files
from scratch_repo import make_repo, run

# One of each family, tiny: (arch, input size it runs at). timm's test_vit has a fixed 160-px grid.
FAMILIES = {"resnet": ("timm/resnet10t", 32), "mobilenet": ("torchvision/mobilenet_v3_small", 32),
            "convnext": ("timm/test_convnext", 32), "vit": ("timm/test_vit", 160)}


def params_with(**model) -> dict:
    return tiny_params_dict(models={"m": {"arch": "cnn_simple", **model}})


# --- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["timm/resnet10t", "torchvision/mobilenet_v3_small", "timm/test_vit",
                                  "timm/vit_tiny_patch16_224.augreg_in21k", "efficientnet_lite1", "efficientnet_lite2"])
def test_library_names_are_accepted(arch):
    assert parse_params(params_with(arch=arch)).models["m"].arch == arch


@pytest.mark.parametrize("arch, line", [
    ("timm/resnet10x", "unknown timm model 'resnet10x'; did you mean timm/resnet10t? list them with"),
    ("torchvision/mobilenet_v9", "unknown torchvision model 'mobilenet_v9'"),
    ("keras/resnet50", "unknown arch 'keras/resnet50'"),
])
def test_unknown_names_are_one_clear_line(arch, line):
    with pytest.raises(ParamsError) as raised:
        parse_params(params_with(arch=arch))
    message = str(raised.value)
    assert "models.m.arch" in message and line in message and "\n" not in message
    if arch.startswith(("timm/", "torchvision/")):
        assert "list_models()" in message


def test_review_model_takes_library_names_and_refuses_scratch():
    raw = params_with()
    raw["review"]["model"] = "timm/test_vit"
    assert parse_params(raw).review.model == "timm/test_vit"
    raw["review"]["model"] = "timm/nope_net"
    with pytest.raises(ParamsError, match=r"review.model: unknown timm model 'nope_net'"):
        parse_params(raw)
    raw["review"]["model"] = "cnn_simple"
    with pytest.raises(ParamsError, match="no pretrained weights"):
        parse_params(raw)


def test_params_stay_cheap_to_import_once_the_library_names_are_cached(tmp_path):
    """Stages that never build a network validate params.yaml (its timm/resnet10t included) without
    importing torch, once one process has listed the library's names for this version of it."""
    code = ("import sys, yaml; from imgclass.config.params import load_params; load_params('params.yaml'); "
            "print('torch' in sys.modules)")
    env = {**os.environ, "IMGCLASS_CACHE": str(tmp_path)}

    def imports_torch() -> bool:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[1], env=env)
        assert proc.stdout.strip() in ("True", "False"), proc.stderr[-2000:]
        return proc.stdout.strip() == "True"

    assert any(m.arch.startswith("timm/") for m in load_params_file().models.values())
    assert imports_torch()  # the first process asks timm, and leaves its names in the cache
    assert [p.name for p in tmp_path.iterdir()] == [f"timm-{timm_version()}-models.txt"]
    assert not imports_torch()


def test_a_cached_list_never_accepts_an_unknown_name(tmp_path, monkeypatch):
    from imgclass.config import architectures

    monkeypatch.setenv("IMGCLASS_CACHE", str(tmp_path))
    assert architectures.check_library_name("timm/resnet10t") == "timm/resnet10t"  # fills the cache
    assert "resnet10t" in architectures.cached_library_names("timm")
    with pytest.raises(ValueError, match="unknown timm model 'resnet10x'; did you mean timm/resnet10t?"):
        architectures.check_library_name("timm/resnet10x")
    assert architectures.check_library_name("timm/vit_tiny_patch16_224.augreg_in21k")  # a tag after the dot


def load_params_file():
    from imgclass.config.params import load_params

    return load_params(Path(__file__).resolve().parents[1] / "params.yaml")


def timm_version() -> str:
    from importlib import metadata

    return metadata.version("timm")


# --- heads, freezing, Grad-CAM ----------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_head_replacement_freezing_and_gradcam_for_each_family(family):
    arch, size = FAMILIES[family]
    model = build_model(arch, 5).eval()
    head = model.get_submodule(models.head_name(model))
    assert isinstance(head, nn.Linear) and head.out_features == 5
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert model(x).shape == (2, 5)

    models.set_backbone_frozen(model, True)
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in head.parameters()}
    models.set_backbone_frozen(model, False)
    assert all(p.requires_grad for p in model.parameters())

    binary = build_model(arch, 2, binary_head="one_logit").eval()
    assert isinstance(binary.get_submodule(models.head_name(binary)), SignedLogit)
    with torch.no_grad():
        logits = binary(x)
    torch.testing.assert_close(logits[:, 0], -logits[:, 1])

    prep = Preprocessing(image_size=size, input_size=size)
    images = np.random.default_rng(0).integers(0, 256, (2, 3, size, size), dtype=np.uint8)
    assert isinstance(explain.gradcam_layer(model, prep.normalize(torch.from_numpy(images[:1]))), nn.Conv2d)
    maps = explain.gradcam(model, prep, images, [0, 1])
    assert maps.shape == (2, size, size) and maps.min() >= 0 and maps.max() <= 1


def test_timm_models_expect_their_own_normalisation():
    assert models.input_normalization("timm/test_vit") == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    assert models.input_normalization("efficientnet_lite2")["mean"] == (0.5, 0.5, 0.5)
    assert models.input_normalization("torchvision/mobilenet_v3_small")["mean"] == (0.485, 0.456, 0.406)


# --- weights ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_local_weights_file_initialises_everything_but_the_head(tmp_path, suffix):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("test_convnext")  # timm's own 1000-class head: a shape our head does not take
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":  # as timm's hub has them
        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    model = build_model("timm/test_convnext", 3, weights=str(path))
    torch.testing.assert_close(model.stem[0].weight, source.stem[0].weight)
    assert model.get_classifier().out_features == 3


def offline_error(arch: str, tmp_path: Path) -> str:
    """build_model(arch, weights: imagenet) with empty caches and no network: the one-line error."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
           "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    code = ("from imgclass.model.models import build_model, WeightsUnavailable\n"
            f"try:\n    build_model({arch!r}, 3, weights='imagenet')\n"
            "except WeightsUnavailable as exc:\n    print(exc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    return proc.stdout.strip()


@pytest.mark.slow
def test_offline_timm_weights_name_the_file_and_where_it_goes(tmp_path):
    line = offline_error("timm/resnet10t", tmp_path)
    assert line.startswith("timm/resnet10t ImageNet weights: download failed") and "\n" not in line
    assert "model.safetensors from https://huggingface.co/timm/resnet10t" in line
    assert "set weights: to its path" in line and str(tmp_path / "hf" / "hub") in line


@pytest.mark.parametrize("arch, size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_offline_efficientnet_lite_weights_see_a_cat(arch, size):
    skimage_data = pytest.importorskip("skimage.data")

    model = models._efficientnet_lite(arch, pretrained=True, dropout=0.0).eval()
    prep = Preprocessing(image_size=size, input_size=size, **models.input_normalization(arch))
    image = prep.to_uint8(Image.fromarray(skimage_data.chelsea()))
    with torch.no_grad():
        logits = model(prep.normalize(torch.from_numpy(image).permute(2, 0, 1)[None]))
    top5 = logits.topk(5).indices[0].tolist()
    assert set(top5) & set(range(281, 286)), top5  # ImageNet 281-285: the cats
    assert build_model(arch, 4, weights="imagenet").get_classifier().out_features == 4


# --- test-time augmentation -------------------------------------------------------------------------

class LeftRight(nn.Module):
    """Logits (left-half mean, right-half mean): a mirror image swaps them."""

    def forward(self, x):
        half = x.shape[-1] // 2
        return torch.stack([x[..., :half].mean(dim=(1, 2, 3)), x[..., half:].mean(dim=(1, 2, 3))], dim=1) * 5


def test_hflip_averages_probabilities_and_leaves_symmetric_images_alone():
    prep = Preprocessing(image_size=8, input_size=8)
    x = torch.zeros(1, 3, 8, 8)
    x[..., :4] = 1.0  # bright left half
    plain = tta_probabilities(LeftRight(), prep, x, "none")
    flipped = tta_probabilities(LeftRight(), prep, x.flip(-1), "none")
    both = tta_probabilities(LeftRight(), prep, x, "hflip")
    torch.testing.assert_close(both, (plain + flipped) / 2)  # the mean of probabilities ...
    torch.testing.assert_close(both, torch.full((1, 2), 0.5))
    symmetric = torch.rand(2, 3, 8, 8)
    symmetric = symmetric + symmetric.flip(-1)
    model = build_model("cnn_simple", 3).eval()
    with torch.no_grad():
        torch.testing.assert_close(tta_probabilities(model, prep, symmetric, "hflip"),
                                   tta_probabilities(model, prep, symmetric, "none"))


def test_hflip_is_the_mean_of_softmaxes_not_the_softmax_of_mean_logits():
    prep = Preprocessing(image_size=8, input_size=8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 4))
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        got = tta_probabilities(model, prep, x, "hflip")
        expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
        of_logits = ((model(x) + model(x.flip(-1))) / 2).softmax(1)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, of_logits)


def test_auto_tta_is_chosen_on_validation():
    assert choose_tta("auto", {"none": 0.8, "hflip": 0.85}) == "hflip"
    assert choose_tta("auto", {"none": 0.8, "hflip": 0.8}) == "none"  # a tie keeps the cheaper one
    assert choose_tta("hflip", {"none": 0.9, "hflip": 0.1}) == "hflip"  # configured: applied as it is
    raw = params_with()
    raw["evaluate"] = {"tta": "vflip"}
    with pytest.raises(ParamsError, match="evaluate.tta"):
        parse_params(raw)


@pytest.fixture
def untrained_checkpoint(tmp_path):
    """models/m/model.pt of a cnn_simple (random weights are enough to tell views apart) and 3 PNGs."""
    torch.manual_seed(0)
    prep = Preprocessing(image_size=16, input_size=16)
    checkpoint = tmp_path / "models" / "m" / "model.pt"
    save_checkpoint(checkpoint, build_model("cnn_simple", 3),
                    {"name": "m", "arch": "cnn_simple", "classes": ["a", "b", "c"], "preprocessing": prep.to_dict()})
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return checkpoint, sorted(folder.glob("*.png"))


def test_predict_applies_the_tta_asked_for_or_the_evaluated_one(untrained_checkpoint, tmp_path, capsys):
    checkpoint, pngs = untrained_checkpoint
    model, _, prep = load_trained(checkpoint)
    images = np.stack([prep.to_uint8(Image.open(p)) for p in pngs])
    expected = {t: predict_probs(model, prep, images, tta=t) for t in ("none", "hflip")}
    assert not np.allclose(expected["none"], expected["hflip"])

    def probs(rows):
        return np.array([[{r["class"]: r["probability"] for r in row["top_k"]}[c] for c in "abc"] for row in rows])

    preds_dir = tmp_path / "preds"
    for tta in ("none", "hflip"):
        np.testing.assert_allclose(probs(predict_files(pngs, [checkpoint], top=3, tta=tta, preds_dir=preds_dir)),
                                   expected[tta], atol=1e-6)
    # evaluated: none until evaluate saved hflip for this very checkpoint
    assert np.allclose(probs(predict_files(pngs, [checkpoint], top=3, tta="evaluated", preds_dir=preds_dir)),
                       expected["none"], atol=1e-6)
    empty = np.zeros((0, 3), np.float32)
    SavedPredictions(["a", "b", "c"], empty, np.zeros(0, int), empty, np.zeros(0, int), file_sha256(checkpoint),
                     "hflip").save(preds_dir / "m.npz")
    out = tmp_path / "rows.json"
    assert cli.main(["predict", str(pngs[0].parent), "--model", "m", "--models-dir", str(checkpoint.parents[1]),
                     "--preds-dir", str(preds_dir), "--out", str(out), "--top-k", "3"]) == 0
    np.testing.assert_allclose(probs(json.loads(out.read_text())), expected["hflip"], atol=1e-6)
    assert cli.main(["predict", str(pngs[0].parent), "--model", "m", "--models-dir", str(checkpoint.parents[1]),
                     "--preds-dir", str(preds_dir), "--out", str(out), "--top-k", "3", "--tta", "none"]) == 0
    np.testing.assert_allclose(probs(json.loads(out.read_text())), expected["none"], atol=1e-6)


def test_torchscript_export_carries_the_tta(untrained_checkpoint, tmp_path):
    checkpoint, _ = untrained_checkpoint
    model, _, prep = load_trained(checkpoint)
    images = np.random.default_rng(2).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    x = prep.normalize(torch.from_numpy(images).permute(0, 3, 1, 2))
    out = export_model(checkpoint, "torchscript", tmp_path / "m.pt", tta="hflip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(out))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), predict_probs(model, prep, images, tta="hflip"), atol=1e-5)
    sidecar = files.read_json(sidecar_path(out))
    assert sidecar["tta"] == "hflip" and "mirrored" in sidecar["output"]["how"]


# --- four families through the real stages --------------------------------------------------------

def local_weights(arch: str, path: Path) -> str:
    """A randomly initialised copy of the library's own network (its 1000-class head included), saved
    as a local weights file: the offline stand-in for downloaded ImageNet weights."""
    torch.manual_seed(0)
    library, name = arch.split("/")
    if library == "timm":
        import timm
        from safetensors.torch import save_file

        path = path.with_suffix(".safetensors")  # as timm's hub has them
        save_file(timm.create_model(name).state_dict(), str(path))
    else:
        import torchvision

        torch.save(torchvision.models.get_model(name, weights=None).state_dict(), path)
    return str(path)


@pytest.mark.slow
def test_four_families_train_evaluate_export_and_predict_through_the_stages(tmp_path_factory):
    require_fashion()
    ort = pytest.importorskip("onnxruntime")
    weights_dir = tmp_path_factory.mktemp("weights")
    raw = tiny_params_dict()
    raw["scrape"]["max_per_class"] = 30
    raw["evaluate"] = {"tta": "auto"}
    raw["models"] = {family: {"arch": arch, "weights": local_weights(arch, weights_dir / f"{family}.pt"),
                              "input_size": size, "epochs": 2, "freeze_epochs": 1, "head_steps": 10, "min_steps": 0,
                              "batch_size": 32, "lr": 0.002}
                     for family, (arch, size) in FAMILIES.items()}
    repo = make_repo(tmp_path_factory.mktemp("backbones"), raw)
    run(["dvc", "repro", "evaluate"], repo, timeout=1200)  # every evaluate@M and what it needs: no ensemble, no benchmark

    rows = files.read_csv(repo / "data" / "split" / "test.csv")[:6]
    pngs = [repo / "data" / "clean" / r["path"] for r in rows]
    for family, (arch, size) in FAMILIES.items():
        checkpoint = repo / "models" / family / "model.pt"
        model, meta, prep = load_trained(checkpoint)
        assert meta["arch"] == arch and prep.input_size == size
        # normalised as the weights expect (test_vit: [-1, 1]; the others: ImageNet's statistics)
        assert list(prep.mean) == list(models.input_normalization(arch)["mean"])
        report = json.loads((repo / "plots" / "eval" / family / "report.json").read_text())
        tta = report["tta"]
        assert tta["configured"] == "auto" and set(tta["val_accuracy"]) == {"none", "hflip"}
        assert tta["applied"] == ("hflip" if tta["val_accuracy"]["hflip"] > tta["val_accuracy"]["none"] else "none")
        saved = SavedPredictions.load(repo / "data" / "preds" / f"{family}.npz")
        assert saved.tta == tta["applied"] and saved.val_accuracy == tta["val_accuracy"][tta["applied"]]
        assert (repo / "plots" / "eval" / family / "gradcam.png").exists()

        # predict: the evaluated TTA, the same probabilities the evaluate stage saved
        out = repo / f"{family}.json"
        assert cli.main(["predict", *map(str, pngs), "--model", family, "--models-dir", str(repo / "models"),
                         "--preds-dir", str(repo / "data" / "preds"), "--out", str(out), "--top-k", "4"]) == 0
        predicted = json.loads(out.read_text())
        classes = meta["classes"]
        got = np.array([[{r["class"]: r["probability"] for r in row["top_k"]}[c] for c in classes] for row in predicted])
        np.testing.assert_allclose(got, saved.test_probs[:6], atol=1e-4)

        # export: the evaluated TTA inside the graph, parity with the checkpoint
        onnx_file = export_model(checkpoint, "onnx", repo / "exports" / f"{family}.onnx",
                                 preds_dir=repo / "data" / "preds")
        assert files.read_json(sidecar_path(onnx_file))["tta"] == tta["applied"]
        x = prep.normalize(torch.from_numpy(np.stack([prep.to_uint8(Image.open(p))
                                                      for p in pngs])).permute(0, 3, 1, 2)).numpy()
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        exported = session.run(None, {"input": x})[0]
        assert (exported.argmax(1) == saved.test_probs[:6].argmax(1)).all()
        np.testing.assert_allclose(exported, saved.test_probs[:6], atol=1e-4)
