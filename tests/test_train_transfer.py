"""Transfer learning: the frozen phase trains the head on cached backbone features when it can."""

import pytest
import torch

from imgclass.model import models

from imgclass.training import resume
from imgclass.training import train as train_module
from imgclass.training.losses import make_loss
from imgclass.config.params import ModelParams, parse_params
from imgclass.model.preprocess import Preprocessing
from imgclass.data.image_cache import load_split
from imgclass.training.train import (ArrayDataset, Phase, Stepper, dropout_before_head, feature_phase, make_loader,
                            make_optimizer, make_schedule, param_groups, train, train_one_epoch)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A cnn_simple checkpoint standing in for pretrained weights (so freeze_epochs is allowed)."""
    path = tmp_path_factory.mktemp("weights") / "pretrained.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": models.build_model("cnn_simple", 4).state_dict()}, path)
    return str(path)


def with_model(params, **cfg):
    raw = params.model_dump(by_alias=True)
    raw["models"] = {"m": {"arch": "cnn_simple", "batch_size": 32, "lr": 0.01, "min_steps": 0, "head_steps": 0, **cfg}}
    return parse_params(raw)


def run(params, split_dir, out) -> dict:
    return train("m", params, split_dir, out / "model", out / "resume", out / "live", track=False)


@pytest.fixture
def feature_phases(monkeypatch):
    """Counts how often train() builds a cached-feature phase."""
    calls = []

    def counting(*args):
        calls.append(args)
        return feature_phase(*args)

    monkeypatch.setattr(train_module, "feature_phase", counting)
    return calls


def test_cached_frozen_phase_keeps_the_backbone_and_trains_the_head(fashion_split, pretrained):
    params, split_dir = fashion_split
    model = models.build_model("cnn_simple", 4, pretrained)
    cfg = ModelParams(arch="cnn_simple", weights=pretrained, freeze_epochs=2, lr=0.01, batch_size=32)
    s = Stepper(model, Preprocessing(28, 28), make_loss("cross_entropy"), torch.device("cpu"), cfg)
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head")}
    head = model.head.weight.detach().clone()

    models.set_backbone_frozen(model, True)
    phase = Phase("frozen", 2)
    runner, train_features, val_loader = feature_phase(s, ArrayDataset(*load_split(split_dir, "train", params.classes, params.image_size)),
                                                       ArrayDataset(*load_split(split_dir, "val", params.classes, params.image_size)))
    assert train_features.tensors[0].shape[1] == model.head.in_features
    opt = make_optimizer(param_groups(model, cfg, phase), cfg)
    loader = make_loader(train_features, cfg.batch_size, True, 0, 0, torch.device("cpu"))
    sched = make_schedule(opt, cfg, len(loader), phase.epochs)
    for epoch in range(phase.epochs):
        train_one_epoch(runner, loader, val_loader, opt, sched, phase, epoch, 0, "test")

    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in backbone.items())  # BatchNorm statistics included
    assert not torch.equal(model.head.weight, head)  # the network's own head was trained


@pytest.mark.slow  # pretrained efficientnet_lite0 trained through several phases: ~10 s each
def test_cached_and_uncached_frozen_phases_follow_the_same_trajectory(fashion_split, tmp_path, pretrained,
                                                                      feature_phases, monkeypatch):
    base, split_dir = fashion_split
    params = with_model(base, weights=pretrained, freeze_epochs=3, epochs=1, dropout=0.3)
    cached = run(params, split_dir, tmp_path / "cached")
    assert len(feature_phases) == 1
    monkeypatch.setattr(train_module, "caches_features", lambda *args: False)
    uncached = run(params, split_dir, tmp_path / "uncached")
    assert len(feature_phases) == 1

    # Same batches, shuffling and dropout masks: equal up to floating-point summation order.
    for a, b in zip(cached["history"], uncached["history"]):
        assert a["phase"] == b["phase"]
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=0.02)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    assert cached["history"][2]["train_loss"] < cached["history"][0]["train_loss"]  # the head did learn


@pytest.mark.slow  # pretrained efficientnet_lite0 trained through several phases: ~10 s each
@pytest.mark.parametrize("augment", [{"hflip": True}, {"mixup": 0.4}])
def test_the_head_phase_fits_unaugmented_cached_features_and_augmentation_starts_after(
        fashion_split, tmp_path, pretrained, feature_phases, augment):
    base, split_dir = fashion_split
    params = with_model(base, weights=pretrained, freeze_epochs=1, epochs=1, augment=augment, dropout=0.0)
    result = run(params, split_dir, tmp_path / "augmented")
    assert len(feature_phases) == 1
    (stepper, *_), = feature_phases
    assert stepper.augment is None and stepper.mixing is None
    # Without augmentation the unfrozen epoch would fit the training images at least as well as the head did.
    plain = run(with_model(base, weights=pretrained, freeze_epochs=1, epochs=1, dropout=0.0), split_dir,
                tmp_path / "plain")
    assert result["history"][0]["train_loss"] == pytest.approx(plain["history"][0]["train_loss"], rel=1e-5)
    assert result["history"][1]["train_loss"] != pytest.approx(plain["history"][1]["train_loss"], rel=1e-3)


@pytest.mark.slow  # pretrained efficientnet_lite0 trained through several phases: ~10 s each
def test_the_head_phase_takes_head_steps_on_cached_features(fashion_split, tmp_path, pretrained, feature_phases):
    """168 training images in batches of 32: 6 steps an epoch, so head_steps=60 makes 10 head epochs,
    all on one pass of the backbone (here a random one, so the head learns slowly)."""
    base, split_dir = fashion_split
    result = run(with_model(base, weights=pretrained, freeze_epochs=1, epochs=1, head_steps=60), split_dir,
                 tmp_path / "long")
    assert [h["phase"] for h in result["history"]] == ["frozen"] * 10 + ["unfrozen"]
    assert len(feature_phases) == 1
    assert result["history"][9]["train_loss"] < 0.95 * result["history"][0]["train_loss"]


def test_epochs_zero_trains_the_head_alone_on_cached_features(fashion_split, tmp_path, pretrained, feature_phases):
    """A linear probe: the head on one pass of the pretrained backbone, and a saved model whose backbone
    is the pretrained one, weight for weight."""
    base, split_dir = fashion_split
    result = run(with_model(base, weights=pretrained, freeze_epochs=2, epochs=0, head_steps=0), split_dir, tmp_path)
    assert [h["phase"] for h in result["history"]] == ["frozen", "frozen"]
    assert len(feature_phases) == 1
    saved = torch.load(tmp_path / "model" / "model.pt", weights_only=False)["state_dict"]
    source = torch.load(pretrained, weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in source.items() if not k.startswith("head"))


def test_epochs_zero_needs_a_head_phase(fashion_split):
    base, _ = fashion_split
    with pytest.raises(Exception, match=r"epochs: 0 trains nothing.*freeze_epochs > 0"):
        with_model(base, epochs=0)


@pytest.mark.slow  # pretrained efficientnet_lite0 trained through several phases: ~10 s each
@pytest.mark.parametrize("killed_after", ["head epoch 2 of 3", "the head phase"])
def test_a_run_interrupted_in_or_after_the_cached_phase_resumes_identically(fashion_split, tmp_path, pretrained,
                                                                           monkeypatch, killed_after):
    base, split_dir = fashion_split
    params = with_model(base, weights=pretrained, freeze_epochs=3, epochs=2)
    fresh = run(params, split_dir, tmp_path / "fresh")

    one_epoch, save = train_module.train_one_epoch, resume.save_state
    epochs, saves = [], []

    def epoch_then_die(*args, **kwargs):
        metrics = one_epoch(*args, **kwargs)
        epochs.append(1)
        if killed_after == "head epoch 2 of 3" and len(epochs) == 2:
            raise KeyboardInterrupt
        return metrics

    def save_then_die(*args):
        save(*args)
        saves.append(args[-1])  # the history
        if killed_after == "the head phase":
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_one_epoch", epoch_then_die)
    monkeypatch.setattr(resume, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(params, split_dir, tmp_path / "resumed")
    # Inside the cached phase nothing is saved (epochs of milliseconds); its end is.
    assert [len(h) for h in saves] == ([] if killed_after == "head epoch 2 of 3" else [3])
    monkeypatch.setattr(train_module, "train_one_epoch", one_epoch)
    monkeypatch.setattr(resume, "save_state", save)
    resumed = run(params, split_dir, tmp_path / "resumed")
    assert [h["phase"] for h in resumed["history"]] == ["frozen"] * 3 + ["unfrozen"] * 2
    for a, b in zip(resumed["history"], fresh["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)


def test_dropout_before_head_is_found_for_each_family():
    assert dropout_before_head(models.build_model("cnn_simple", 3, dropout=0.1)) == 0.1
    assert dropout_before_head(models.build_model("efficientnet_lite0", 3, dropout=0.3)) == 0.3  # timm's drop_rate
    assert dropout_before_head(models.build_model("mobilenet_v2", 3)) == 0.2  # classifier[0]
    assert dropout_before_head(models.build_model("resnet18", 3)) == 0.0


@pytest.mark.parametrize("batchnorm", ["train", "frozen"])
def test_batchnorm_frozen_keeps_running_statistics_while_everything_trains(fashion_split, pretrained, batchnorm):
    params, split_dir = fashion_split
    model = models.build_model("cnn_simple", 4, pretrained)
    cfg = ModelParams(arch="cnn_simple", weights=pretrained, lr=0.01, batch_size=32, batchnorm=batchnorm)
    s = Stepper(model, Preprocessing(28, 28), make_loss("cross_entropy"), torch.device("cpu"), cfg)
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    weights = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(".weight")}
    phase = Phase("unfrozen", 1)
    loader = make_loader(ArrayDataset(*load_split(split_dir, "train", params.classes, params.image_size)), 32, True, 0, 0,
                         torch.device("cpu"))
    opt = make_optimizer(param_groups(model, cfg, phase), cfg)
    train_module.run_epoch(s, loader, opt, make_schedule(opt, cfg, len(loader), 1))
    after = model.state_dict()
    assert all(not torch.equal(after[k], v) for k, v in weights.items())  # BatchNorm's scale trains too
    kept = [torch.equal(after[k], v) for k, v in statistics.items()]
    assert all(kept) if batchnorm == "frozen" else not any(kept)
