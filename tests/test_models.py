import pytest
import torch

from imgclass.model import models
from imgclass.model.models import ARCHITECTURES, WeightsUnavailable, build_model


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_builds_with_our_head_and_runs(arch):
    model = build_model(arch, num_classes=5).eval()
    head = model.get_submodule(models.head_name(model))
    assert head.out_features == 5
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_scratch_networks_grow_in_depth():
    sizes = [models.count_parameters(build_model(a, 10)) for a in ("cnn_simple", "cnn_medium", "cnn_deep")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_freeze_leaves_backbone_trainable_head_only():
    model = build_model("resnet18", 3)
    models.set_backbone_frozen(model, True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    models.set_backbone_frozen(model, False)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("arch, file", [("resnet18", "resnet18"), ("torchvision/mobilenet_v3_small", "mobilenet_v3_small")])
def test_torchvision_imagenet_offline_names_the_file(arch, file, tmp_path, monkeypatch):
    """A short name and any torchvision/<name>: one line naming the file and torch's hub folder."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty cache
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # and no network, even where there is one
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(WeightsUnavailable, match=rf"{file}-[0-9a-f]+\.pth.*hub/checkpoints"):
        build_model(arch, 3, weights="imagenet")


def test_scratch_network_has_no_imagenet_weights():
    with pytest.raises(WeightsUnavailable, match="weights: none"):
        build_model("cnn_simple", 3, weights="imagenet")


def test_offline_efficientnet_lite0_weights_see_a_cat():
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from imgclass.model.preprocess import Preprocessing

    model = models._efficientnet_lite("efficientnet_lite0", pretrained=True, dropout=0.0).eval()
    prep = Preprocessing(image_size=224, input_size=224)
    image = prep.to_uint8(Image.fromarray(skimage_data.chelsea()))
    with torch.no_grad():
        logits = model(prep.normalize(torch.from_numpy(image).permute(2, 0, 1)[None]))
    top5 = logits.topk(5).indices[0].tolist()
    assert set(top5) & set(range(281, 286)), top5  # ImageNet 281-285: tabby, tiger cat, Persian, Siamese, Egyptian


def test_checkpoint_path_weights_keep_matching_tensors(tmp_path):
    source = build_model("cnn_simple", 4)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": source.state_dict(), "meta": {}}, path)
    model = build_model("cnn_simple", 7, weights=str(path))  # other class count: head stays fresh
    assert torch.equal(model.features[0].weight, source.features[0].weight)
    assert model.head.out_features == 7


def test_missing_checkpoint_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("cnn_simple", 3, weights=str(tmp_path / "nope.pt"))


def test_load_in_order_refuses_mismatched_shapes():
    model = build_model("cnn_simple", 3)
    state = {f"x{i}": torch.zeros(1) for i in range(len(model.state_dict()))}
    with pytest.raises(ValueError, match="do not fit"):
        models.load_in_order(model, state)
