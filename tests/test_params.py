import pytest
import yaml

from conftest import tiny_params_dict
from imgclass.config.params import ParamsError, load_params, parse_params


def error_of(raw: dict) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    return str(info.value)


def test_repository_params_are_valid():
    params = load_params("params.yaml")
    assert len(params.classes) == 10
    assert params.validate.min_size == 28
    assert params.input_size("cnn_medium") == params.image_size


def test_misspelled_key_is_named_with_a_suggestion():
    raw = tiny_params_dict()
    raw["models"]["cnn_simple"]["lrr"] = 0.1
    assert error_of(raw) == "params.yaml: models.cnn_simple.lrr: unknown key; did you mean 'lr'?"


def test_misspelled_nested_section_key():
    raw = tiny_params_dict()
    raw["models"]["cnn_simple"]["augment"] = {"flip": True}
    assert "models.cnn_simple.augment.flip: unknown key; did you mean 'hflip'?" in error_of(raw)


def test_unknown_top_level_key():
    raw = tiny_params_dict()
    raw["clases"] = ["a", "b"]
    assert "clases: unknown key; did you mean 'classes'?" in error_of(raw)


def test_wrong_type_names_key_and_value():
    raw = tiny_params_dict()
    raw["models"]["cnn_simple"]["epochs"] = "many"
    message = error_of(raw)
    assert "models.cnn_simple.epochs" in message and "'many'" in message


@pytest.mark.parametrize("classes", [[], ["only"], ["a", "a"], ["a/b", "c"]])
def test_bad_class_lists(classes):
    raw = tiny_params_dict()
    raw["classes"] = classes
    assert error_of(raw).startswith("params.yaml: classes:")


def test_unknown_arch_lists_the_choices():
    raw = tiny_params_dict()
    raw["models"]["cnn_simple"]["arch"] = "resnet19"
    assert "unknown arch 'resnet19'; choose one of" in error_of(raw)


def test_freezing_a_scratch_network_is_refused():
    raw = tiny_params_dict()
    raw["models"]["cnn_simple"]["freeze_epochs"] = 1
    assert "freeze_epochs needs pretrained weights" in error_of(raw)


def test_missing_required_key():
    raw = tiny_params_dict()
    del raw["models"]["cnn_simple"]["arch"]
    assert error_of(raw) == "params.yaml: models.cnn_simple.arch: required key is missing"


def test_folder_source_needs_every_class_mapped():
    raw = tiny_params_dict()
    raw["scrape"]["source"] = "folder"
    raw["scrape"]["folder"] = {"root": "/tmp", "mapping": {"trouser": ["x/*"]}}
    assert "scrape.folder.mapping: no folder given for class 'bag'" in error_of(raw)


def test_tie_break_must_be_a_member():
    raw = tiny_params_dict()
    raw["ensemble"] = {"tie_break": "resnet18"}
    assert "ensemble.tie_break" in error_of(raw)


def test_unknown_benchmark_arch():
    raw = tiny_params_dict()
    raw["benchmark"]["archs"] = ["vgg99"]
    assert "benchmark.archs" in error_of(raw)


def test_load_params_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_params_dict()))
    assert load_params(good).classes == tiny_params_dict()["classes"]


def test_training_length_keys_are_checked():
    raw = tiny_params_dict()
    raw["models"]["cnn_simple"]["min_steps"] = -1
    assert error_of(raw).startswith("params.yaml: models.cnn_simple.min_steps: ")
    raw["models"]["cnn_simple"]["min_steps"] = 0
    raw["models"]["cnn_simple"]["head_step"] = 10
    assert "did you mean 'head_steps'?" in error_of(raw)


def test_the_own_classes_example_is_a_complete_valid_params_file():
    from conftest import REPO

    raw = yaml.safe_load((REPO / "examples" / "own_classes.yaml").read_text())
    params = parse_params(raw, source="examples/own_classes.yaml")
    assert len(params.classes) == 2 and params.scrape.source == "ddg"
    assert params.models["efficientnet_lite0"].weights == "imagenet"
    # Complete: every section params.yaml has, so `dvc repro` finds every parameter it tracks.
    assert set(yaml.safe_load((REPO / "params.yaml").read_text())) <= set(raw)


def test_the_small_data_benchmark_changes_only_the_source_classes_and_seed(monkeypatch):
    import importlib.util

    from conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when run as a script: its helpers import
    spec = importlib.util.spec_from_file_location("small_data", REPO / "benchmarks" / "small_data.py")
    small_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(small_data)
    example = load_params(REPO / "examples" / "own_classes.yaml")
    swapped = small_data.example_params(["mammals", "vehicles"], seed=1)
    assert swapped.scrape.source == "folder" and swapped.seed == 1
    same = ("image_size", "validate_", "split", "models", "distributed", "ensemble", "device")
    assert all(getattr(swapped, key) == getattr(example, key) for key in same)
    probe = small_data.example_params(["mammals", "vehicles"], seed=1, pretrained="efficientnet_lite1",
                                      overrides=("models.efficientnet_lite1.epochs=0", "evaluate.tta=hflip"))
    assert probe.models["efficientnet_lite1"].epochs == 0 and probe.evaluate.tta == "hflip"
    assert probe.models["cnn_simple"] == example.models["cnn_simple"]
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        small_data.set_param({}, "models.m.epochs")
