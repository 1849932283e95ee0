"""Two classes as a first-class case for training: bce and hinge reach cross-entropy's accuracy on a
separable pair, their logits become proper probabilities, and the learning-rate range test works."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_split, require_fashion, tiny_params_dict
from imgclass.model.checkpoint import load_trained
from imgclass.training.losses import fit_temperature
from imgclass.training.lr_find import lr_range_test
from imgclass.config.params import parse_params
from imgclass.model.preprocess import Preprocessing, logits_to_probabilities
from imgclass.data.image_cache import load_split
from imgclass.training.train import train

PAIR = ["sneaker", "bag"]


@pytest.fixture(scope="module")
def pair_split(tmp_path_factory):
    """(params, split_dir): sneaker vs bag, 80 Fashion-MNIST images each, split and cached at 28 px."""
    require_fashion()
    raw = tiny_params_dict(classes=PAIR)
    raw["scrape"]["max_per_class"] = 80
    params = parse_params(raw)
    return params, make_split(params, tmp_path_factory.mktemp("pair"))


# name -> the model params that differ: each loss, and bce on one logit (models.SignedLogit)
VARIANTS = {"cross_entropy": {"loss": "cross_entropy"}, "bce": {"loss": "bce"}, "multi_margin": {"loss": "multi_margin"},
            "bce_one_logit": {"loss": "bce", "binary_head": "one_logit"},
            "label_smoothing": {"loss": "cross_entropy", "label_smoothing": 0.2}}


def with_loss(params, variant: str):
    raw = params.model_dump(by_alias=True)
    # epochs: 2 as a user might write it; min_steps (default) makes it enough steps for 112 images.
    raw["models"] = {"m": {"arch": "cnn_simple", "epochs": 2, "batch_size": 16, "lr": 0.005, **VARIANTS[variant]}}
    return parse_params(raw)


@pytest.fixture(scope="module")
def trained(pair_split, tmp_path_factory):
    """variant -> (model, meta, prep, test logits, test labels, checkpoint), each trained the same way."""
    params, split_dir = pair_split
    out = {}
    for variant in VARIANTS:
        work = tmp_path_factory.mktemp(variant)
        train("m", with_loss(params, variant), split_dir, work / "model", work / "resume", work / "live", track=False)
        model, meta, prep = load_trained(work / "model" / "model.pt")
        images, labels = load_split(split_dir, "test", PAIR, prep.image_size)
        with torch.no_grad():
            logits = model(prep.normalize(torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)))
        out[variant] = (model, meta, prep, logits, torch.from_numpy(labels), work / "model" / "model.pt")
    return out


def accuracy(logits, labels) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


@pytest.mark.slow  # five models trained once a module (the `trained` fixture) or a range test
@pytest.mark.parametrize("loss", ["bce", "multi_margin"])
def test_bce_and_hinge_reach_cross_entropy_accuracy_on_a_separable_pair(trained, loss):
    reference = accuracy(*trained["cross_entropy"][3:5])
    assert reference >= 0.9
    assert accuracy(*trained[loss][3:5]) >= reference - 0.05


@pytest.mark.slow  # five models trained once a module (the `trained` fixture) or a range test
def test_each_loss_saves_how_its_logits_become_probabilities(trained):
    assert trained["cross_entropy"][2].output == "softmax" and trained["cross_entropy"][2].temperature == 1.0
    assert trained["bce"][2].output == "sigmoid" and trained["bce"][2].temperature == 1.0
    assert trained["multi_margin"][2].output == "softmax" and trained["multi_margin"][2].temperature != 1.0
    # smoothed targets make a timid softmax: the fitted temperature sharpens it
    assert trained["label_smoothing"][2].output == "softmax" and trained["label_smoothing"][2].temperature < 1.0
    for loss, (_, meta, prep, logits, _, _) in trained.items():
        assert meta["preprocessing"]["output"] == prep.output
        probs = prep.probabilities(logits)
        assert torch.allclose(probs.sum(dim=1), torch.ones(len(probs)))
        assert torch.equal(probs.argmax(dim=1), logits.argmax(dim=1))  # the mapping keeps every decision


@pytest.mark.slow  # five models trained once a module (the `trained` fixture) or a range test
def test_bce_probabilities_are_the_per_class_sigmoids_it_trained(trained):
    _, _, prep, logits, labels, _ = trained["bce"]
    sigmoids = logits.sigmoid()
    assert torch.allclose(prep.probabilities(logits), sigmoids / sigmoids.sum(dim=1, keepdim=True), atol=1e-6)
    # A softmax over the same logits would be more confident than what the sigmoids say.
    assert logits.softmax(dim=1).max(dim=1).values.mean() > prep.probabilities(logits).max(dim=1).values.mean()


@pytest.mark.slow  # five models trained once a module (the `trained` fixture) or a range test
def test_bce_on_one_logit_reaches_cross_entropy_accuracy(trained):
    model, meta, prep, logits, labels, _ = trained["bce_one_logit"]
    assert model.head.weight.shape[0] == 1  # the network has one output
    assert meta["params"]["binary_head"] == "one_logit" and prep.output == "sigmoid"
    assert accuracy(logits, labels) >= accuracy(*trained["cross_entropy"][3:5]) - 0.02


@pytest.mark.slow  # five models trained once a module (the `trained` fixture) or a range test
def test_one_logit_probabilities_are_its_sigmoid_and_one_minus_it(trained):
    _, _, prep, logits, _, _ = trained["bce_one_logit"]
    u = logits[:, 1]
    assert torch.equal(logits[:, 0], -u)  # the network's one output, given out as (-u, u)
    probs = prep.probabilities(logits)
    assert probs.shape == (len(u), 2)
    assert torch.allclose(probs[:, 1], u.sigmoid(), atol=1e-6) and torch.allclose(probs[:, 0], 1 - u.sigmoid(), atol=1e-6)


@pytest.mark.slow  # five models trained once a module (the `trained` fixture) or a range test
def test_one_logit_predict_and_export_agree_and_feed_the_soft_vote(trained, pair_split, tmp_path):
    from imgclass.evaluation.ensemble import apply_vote
    from imgclass.evaluation.evaluate import predict_probs
    from imgclass.serving.export import export_model

    ort = pytest.importorskip("onnxruntime")
    _, split_dir = pair_split
    checkpoint = trained["bce_one_logit"][5]
    model, _, prep = load_trained(checkpoint)
    images, labels = load_split(split_dir, "test", PAIR, prep.image_size)
    one_logit = predict_probs(model, prep, images)
    two_logits = predict_probs(trained["bce"][0], trained["bce"][2], images)
    assert one_logit.shape == two_logits.shape == (len(labels), 2)
    x = prep.normalize(torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)).numpy()
    scripted = torch.jit.load(str(export_model(checkpoint, "torchscript", tmp_path / "m.pt")))
    assert np.allclose(scripted(torch.from_numpy(x)).detach().numpy(), one_logit, atol=1e-5)
    session = ort.InferenceSession(str(export_model(checkpoint, "onnx", tmp_path / "m.onnx")),
                                   providers=["CPUExecutionProvider"])
    assert np.allclose(session.run(None, {"input": x})[0], one_logit, atol=1e-4)
    scores, predicted = apply_vote("soft_vote", np.stack([one_logit, two_logits]))
    assert np.allclose(scores, (one_logit + two_logits) / 2) and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert (predicted == labels).mean() >= 0.9


def test_one_logit_needs_two_classes():
    from imgclass.model.models import build_model

    with pytest.raises(ValueError, match="one_logit needs exactly 2 classes, not 3"):
        build_model("cnn_simple", 3, binary_head="one_logit")


@pytest.mark.slow  # five models trained once a module (the `trained` fixture) or a range test
@pytest.mark.parametrize("variant", ["multi_margin", "label_smoothing"])
def test_the_temperature_is_fitted_on_the_validation_split(trained, pair_split, variant):
    _, split_dir = pair_split
    model, _, prep, _, _, _ = trained[variant]
    images, labels = load_split(split_dir, "val", PAIR, 28)
    with torch.no_grad():
        logits = model(prep.normalize(torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)))
    assert prep.temperature == pytest.approx(fit_temperature(logits, torch.from_numpy(labels)), rel=1e-6)


def test_temperature_sharpens_timid_margins_and_softens_overconfident_scores():
    labels = torch.tensor([0] * 50 + [1] * 50)
    margins = torch.where(labels == 0, 1.0, -1.0).unsqueeze(1) * torch.tensor([[1.0, -1.0]])
    # All right with hinge's margin of 1: a plain softmax says 0.88; Platt's target for 50 images is 51/52.
    sharp = fit_temperature(margins, labels)
    assert sharp < 1 and logits_to_probabilities(margins, "softmax", sharp)[0, 0] == pytest.approx(51 / 52, abs=0.01)
    wrong = margins * 5
    wrong[:15] = -wrong[:15]  # 15% confidently wrong
    assert fit_temperature(wrong, labels) > 3


def test_sigmoid_probabilities_stay_finite_for_extreme_logits():
    logits = torch.tensor([[-300.0, -200.0], [50.0, -50.0], [0.0, 0.0]])
    probs = logits_to_probabilities(logits, "sigmoid")
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(dim=1), torch.ones(3))
    assert probs[0, 1] > 0.99 and probs[2, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown output 'sigmoids'"):
        logits_to_probabilities(logits, "sigmoids")


def test_checkpoints_without_an_output_side_load_as_softmax():
    old = {"image_size": 28, "input_size": 28, "mean": [0.5] * 3, "std": [0.5] * 3}
    prep = Preprocessing.from_dict(old)
    assert prep.output == "softmax" and prep.temperature == 1.0


@pytest.mark.slow  # five models trained once a module (the `trained` fixture) or a range test
def test_lr_find_works_with_two_classes(pair_split):
    params, split_dir = pair_split
    result = lr_range_test("cnn_simple", params, split_dir, steps=80)
    assert 3 <= len(result["lrs"]) < 80  # the loss exploded before 10: the test stopped early
    assert math.isfinite(result["suggestion"]) and 1e-7 <= result["suggestion"] <= 10
    assert min(result["losses"]) < result["losses"][0]
