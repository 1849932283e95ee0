import numpy as np
import pytest
import torch

from imgclass.evaluation import explain

from imgclass.model import models
from imgclass.evaluation.evaluate import predict_probs, predict_views
from imgclass.model.preprocess import Preprocessing
from imgclass.data.image_cache import load_split

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def random_images(n: int, size: int = 28) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def trained(fashion_split):
    """(model, prep, test images, labels, probs, classes): cnn_simple after a few seconds of Adam."""
    params, split_dir = fashion_split
    torch.manual_seed(0)
    model, prep = models.build_model("cnn_simple", len(params.classes), dropout=0.0), Preprocessing(28, 28)
    x, y = load_split(split_dir, "train", params.classes, params.image_size)
    inputs, targets = prep.normalize(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(15):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    test_x, test_y = load_split(split_dir, "test", params.classes, params.image_size)
    return model.eval(), prep, test_x, test_y, predict_probs(model, prep, test_x), params.classes


@pytest.mark.parametrize("arch, width", [("cnn_simple", 64), ("resnet18", 512)])
def test_penultimate_features_are_what_the_head_receives(arch, width):
    model = models.build_model(arch, 3).eval()
    images = random_images(5)
    features = explain.penultimate_features(model, Preprocessing(28, 28), images, batch_size=2)
    assert features.shape == (5, width)
    head = model.get_submodule(models.head_name(model))
    logits = np.log(predict_probs(model, Preprocessing(28, 28), images))
    with torch.no_grad():
        again = torch.log_softmax(head(torch.from_numpy(features)), dim=1).numpy()
    np.testing.assert_allclose(again, logits, atol=1e-4)


def test_one_pass_gives_every_view_the_separate_passes_give():
    """evaluate's single pass over a split: plain and mirrored probabilities, and the image's own
    penultimate features, as predict_probs per test-time augmentation and penultimate_features give them."""
    torch.manual_seed(0)
    model, prep, images = models.build_model("cnn_simple", 3).eval(), Preprocessing(28, 28), random_images(7)
    views = predict_views(model, prep, images, batch_size=3, mirrored=True, features=True)
    for tta in ("none", "hflip"):
        np.testing.assert_allclose(views.probabilities(tta), predict_probs(model, prep, images, tta=tta), atol=1e-6)
    assert not np.allclose(views.plain, views.mirrored)  # the mirror is a different input
    np.testing.assert_allclose(views.features, explain.penultimate_features(model, prep, images), atol=1e-5)
    plain_only = predict_views(model, prep, images)
    assert plain_only.mirrored is None and plain_only.features is None
    with pytest.raises(ValueError, match="mirrored"):
        plain_only.probabilities("hflip")
    assert predict_views(model, prep, images[:0], features=True).features.shape == (0, 64)


@pytest.mark.parametrize("input_size, layer", [(28, "layer3.1.conv2"), (64, "layer4.1.conv2")])
def test_gradcam_layer_is_the_last_conv_with_a_spatial_map(input_size, layer):
    # 28 px leaves resnet18's last block at 1 x 1, where a heatmap would be flat
    model = models.build_model("resnet18", 3).eval()
    sample = Preprocessing(28, input_size).normalize(torch.zeros(1, 3, 28, 28, dtype=torch.uint8))
    chosen = explain.gradcam_layer(model, sample)
    assert chosen is model.get_submodule(layer)


@pytest.mark.parametrize("arch", ["cnn_simple", "resnet18"])
def test_gradcam_heatmaps_are_unit_maps_that_vary(arch):
    torch.manual_seed(0)  # some untrained weights give a class no positive evidence: an all-zero map
    model = models.build_model(arch, 3).eval()
    models.set_backbone_frozen(model, True)  # no weight needs a gradient for Grad-CAM to work
    heat = explain.gradcam(model, Preprocessing(28, 28), random_images(4).transpose(0, 3, 1, 2), [0, 1, 2, 0])
    assert heat.shape == (4, 28, 28) and heat.dtype == np.float32
    assert heat.min() >= 0 and np.allclose(heat.max(axis=(1, 2)), 1)
    assert (heat.std(axis=(1, 2)) > 0.05).all()
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_gradcam_matches_the_formula_on_a_hand_split_network():
    # ScratchCNN's last conv is features[4], followed by an in-place ReLU and BatchNorm
    torch.manual_seed(0)
    model, prep = models.build_model("cnn_simple", 3, dropout=0.0).eval(), Preprocessing(28, 28)
    images, targets = random_images(3).transpose(0, 3, 1, 2), torch.tensor([0, 2, 1])
    activation = model.features[:5](prep.normalize(torch.from_numpy(images))).requires_grad_(True)
    logits = model.head(model.pool(model.features[5:](activation.clone())))
    (grads,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), activation)
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1)).detach()
    cam = torch.nn.functional.interpolate(cam[:, None], size=(28, 28), mode="bilinear")[:, 0]
    expected = (cam / cam.amax(dim=(1, 2), keepdim=True)).numpy()
    np.testing.assert_allclose(explain.gradcam(model, prep, images, targets.numpy()), expected, atol=1e-6)


def test_gradcam_of_a_trained_model_depends_on_the_target_class(trained):
    model, prep, images, _, _, _ = trained
    nchw = np.array(images[:2]).transpose(0, 3, 1, 2)
    assert not np.allclose(explain.gradcam(model, prep, nchw, [0, 0]), explain.gradcam(model, prep, nchw, [1, 1]))


def test_sample_takes_half_right_half_wrong_and_fills_from_the_other():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    predicted = np.zeros(8, dtype=int)  # six right, two wrong
    right = predicted == labels
    for n, expected in [(4, [0, 0, 1, 1]), (6, [0, 0, 1, 1, 1, 1]), (20, [0, 0, 1, 1, 1, 1, 1, 1])]:
        chosen = explain.sample_right_and_wrong(labels, predicted, n)
        assert len(set(chosen)) == len(chosen) and sorted(right[chosen]) == expected


def test_png_reports_are_written(trained, tmp_path):
    model, prep, images, labels, probs, classes = trained
    features = explain.penultimate_features(model, prep, images)
    written = [explain.tsne_png(features, labels, classes, tmp_path / "tsne.png", max_points=30),
               explain.gradcam_png(model, prep, images, labels, probs, classes, tmp_path / "gradcam.png"),
               explain.top_losses_png(images, labels, probs, classes, tmp_path / "top_losses.png")]
    for path in written:
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5_000, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gradcam.png", "top_losses.png", "tsne.png"]
