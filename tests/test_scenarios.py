"""Every shape of dataset the README allows, through the real stages (`dvc repro` on a scratch copy).

Each scenario writes only the params sections a user would write, lets `imgclass check-params
--fill` add what dvc.yaml declares, runs the whole DAG and asserts the metrics and plots it must
produce, with values in range. Images are small and training short: this is about shapes, not scores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TUXPAINT, require_fashion, require_tuxpaint
from scratch_repo import make_repo, run

pytestmark = pytest.mark.slow

TINY_BENCHMARK = {"archs": ["cnn_simple"], "batch_sizes": [16], "images": 32, "repeats": 1, "warmup": 0,
                  "devices": ["cpu"]}
VOTES = ("hard_vote", "soft_vote", "weighted_vote")


def cnn(epochs: int = 3, **extra) -> dict:
    # min_steps 30: the default 100 makes tiny sets train dozens of epochs; these tests are about shapes
    return {"arch": "cnn_simple", "epochs": epochs, "min_steps": 30, "batch_size": 32, "lr": 0.01} | extra


def fashion_params(classes: list[str], per_class: int, models: dict, **extra) -> dict:
    return {"classes": classes, "image_size": 28, "scrape": {"source": "fashion_mnist", "max_per_class": per_class},
            "validate": {"min_size": 28}, "models": models, "benchmark": TINY_BENCHMARK} | extra


def folder_params(root: Path, mapping: dict[str, list[str]], models: dict, image_size: int, **extra) -> dict:
    return {"classes": list(mapping), "image_size": image_size,
            "scrape": {"source": "folder", "max_per_class": 1000, "folder": {"root": str(root), "mapping": mapping}},
            "models": models, "benchmark": TINY_BENCHMARK} | extra


def repro(tmp_path_factory, name: str, params: dict) -> Path:
    """A scratch repository with `params`, completed by check-params --fill, after a full `dvc repro`."""
    repo = make_repo(tmp_path_factory.mktemp(name), params)
    run(["imgclass", "check-params", "--fill"], repo)
    run(["dvc", "repro"], repo)
    return repo


def read_json(repo: Path, path: str) -> dict:
    return json.loads((repo / path).read_text())


def assert_model_outputs(repo: Path, model: str, classes: list[str]) -> dict:
    """The evaluate@model outputs every scenario must have; returns its scalar metrics."""
    scalars = read_json(repo, f"plots/eval/{model}/report.json")
    assert 0 <= scalars["accuracy"] <= 1 and scalars["n"] > 0
    assert 0 <= scalars["macro_f1"] <= 1 and 0 <= scalars["ece"] <= 1
    report = read_json(repo, f"plots/eval/{model}/report.json")
    assert list(report["per_class"]) == classes
    for png in ("confusion.png", "confusion_normalized.png", "reliability.png", "tsne.png", "gradcam.png",
                "top_losses.png"):
        assert (repo / "plots" / "eval" / model / png).stat().st_size > 1000, png
    # top-k only where it says something: k >= 2 and k < number of classes
    top_k = {int(k[3:-9]) for k in scalars if k.startswith("top") and k.endswith("_accuracy")}
    assert all(2 <= k < len(classes) for k in top_k), top_k
    return scalars


def assert_ensemble(repo: Path, members: list[str]) -> dict:
    table = read_json(repo, "reports/ensemble.json")["test_accuracy"]
    assert set(members) | set(VOTES) | {"oracle"} <= set(table)
    assert table["oracle"] >= max(table[m] for m in members)
    return table


def fashion_pngs(tmp_path: Path, classes: list[str], per_class: int) -> dict[str, list[Path]]:
    """Real Fashion-MNIST PNGs per class, through the fashion_mnist source."""
    from imgclass import sources
    from imgclass.params import parse_params

    params = parse_params({"classes": classes, "scrape": {"max_per_class": per_class},
                           "models": {"m": {"arch": "cnn_simple"}}})
    rows = sources.collect(params, tmp_path)
    return {c: sorted(tmp_path / r["path"] for r in rows if r["class"] == c) for c in classes}


def copy_tree(files_by_class: dict[str, list[Path]], root: Path) -> Path:
    for name, paths in files_by_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copy2(path, root / name / path.name)
    return root


# --- 1. two classes, the "is it a bird?" case; predict and export on the result ----------------

@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    require_fashion()
    params = fashion_params(["sneaker", "bag"], 60, {"cnn_simple": cnn(4), "cnn_medium": cnn(3, arch="cnn_medium")})
    return repro(tmp_path_factory, "binary", params)


def test_binary_evaluation_reports_roc_and_pr(binary):
    for model in ("cnn_simple", "cnn_medium"):
        scalars = assert_model_outputs(binary, model, ["sneaker", "bag"])
        assert scalars["accuracy"] > 0.8  # sneaker vs bag is easy
        assert 0.8 < scalars["roc_auc"] <= 1 and 0.5 < scalars["average_precision"] <= 1
        report = read_json(binary, f"plots/eval/{model}/report.json")
        assert report["positive_class"] == "bag" and report["threshold"] == 0.5
        for curve, columns in (("roc.csv", "fpr,tpr"), ("pr.csv", "recall,precision")):
            lines = (binary / "plots" / "eval" / model / curve).read_text().splitlines()
            assert lines[0].startswith(columns) and len(lines) > 2
    assert_ensemble(binary, ["cnn_simple", "cnn_medium"])


def test_binary_predict_and_export(binary):
    folder = binary / "data" / "clean" / "bag"
    out = binary / "preds.json"
    run(["imgclass", "predict", str(folder), "--out", str(out)], binary)
    rows = json.loads(out.read_text())
    predicted = [r["prediction"] for r in rows]
    assert len(rows) == len(list(folder.glob("*.png"))) and predicted.count("bag") / len(rows) > 0.8
    run(["imgclass", "export", "cnn_simple", "--format", "onnx"], binary)
    meta = json.loads((binary / "exports" / "cnn_simple.json").read_text())
    assert meta["classes"] == ["sneaker", "bag"]


# --- 2. colour photos through the folder source, pretrained + scratch ---------------------------

PHOTO_MAPPING = {"mammals": ["animals/mammals/**/*.png"], "vehicles": ["vehicles/**/*.png"]}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    require_tuxpaint()
    models = {"efficientnet_lite0": {"arch": "efficientnet_lite0", "weights": "imagenet", "freeze_epochs": 1,
                                     "epochs": 2, "min_steps": 0, "batch_size": 32, "lr": 0.002},
              "cnn_simple": cnn(2)}
    params = folder_params(TUXPAINT, PHOTO_MAPPING, models, image_size=96, validate={"min_size": 32},
                           split={"min_per_class": 10})
    return repro(tmp_path_factory, "photos", params)


def test_colour_photos_pretrained_and_scratch(photos):
    classes = list(PHOTO_MAPPING)
    pretrained = assert_model_outputs(photos, "efficientnet_lite0", classes)
    assert_model_outputs(photos, "cnn_simple", classes)
    assert pretrained["accuracy"] >= 0.7  # ImageNet features separate these photos at 96 px
    cache = np.load(photos / "data" / "split" / "train.npy", mmap_mode="r")
    assert cache.shape[1:] == (96, 96, 3)
    assert_ensemble(photos, ["efficientnet_lite0", "cnn_simple"])


# --- 3. class imbalance >= 10:1 with balanced class weights ---------------------------------------

@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    require_fashion()
    pngs = fashion_pngs(tmp_path_factory.mktemp("fashion-imbalanced"), ["trouser", "bag"], 200)
    root = copy_tree({"trouser": pngs["trouser"], "bag": pngs["bag"][:20]}, tmp_path_factory.mktemp("tree"))
    params = folder_params(root, {"trouser": ["trouser/*.png"], "bag": ["bag/*.png"]},
                           {"cnn_simple": cnn(4, class_weights="balanced")}, image_size=28,
                           validate={"min_size": 28})
    return repro(tmp_path_factory, "imbalanced", params)


def test_imbalance_reports_rare_recall_and_bias(imbalanced):
    assert_model_outputs(imbalanced, "cnn_simple", ["trouser", "bag"])
    split = read_json(imbalanced, "data/split/counts.json")
    assert split["train"]["per_class"]["trouser"] >= 10 * split["train"]["per_class"]["bag"] * 0.8
    report = read_json(imbalanced, "plots/eval/cnn_simple/report.json")
    rare = report["per_class"]["bag"]
    assert rare["support"] >= 3 and rare["recall"] >= 0.5  # balanced weights keep the rare class found
    for row in report["per_class"].values():
        assert -1 <= row["mean_bias_error"] <= 1
    assert "bag" in (imbalanced / "plots" / "eval" / "cnn_simple" / "report.txt").read_text()


# --- 4 + 5. a class exactly at split.min_per_class, one model -----------------------------------

@pytest.fixture(scope="module")
def at_minimum(tmp_path_factory):
    require_fashion()
    pngs = fashion_pngs(tmp_path_factory.mktemp("fashion-min"), ["sandal", "dress"], 40)
    root = copy_tree({"sandal": pngs["sandal"][:10], "dress": pngs["dress"]}, tmp_path_factory.mktemp("tree"))
    params = folder_params(root, {"sandal": ["sandal/*.png"], "dress": ["dress/*.png"]}, {"only": cnn(3)},
                           image_size=28, validate={"min_size": 28, "near_duplicate_distance": None},
                           split={"min_per_class": 10})
    return repro(tmp_path_factory, "at-minimum", params), root


def test_class_at_min_per_class_is_split_into_all_three(at_minimum):
    repo, _ = at_minimum
    counts = read_json(repo, "data/split/counts.json")
    assert sum(counts[s]["per_class"]["sandal"] for s in ("train", "val", "test")) == 10
    assert all(counts[s]["per_class"].get("sandal", 0) >= 1 for s in ("train", "val", "test"))


def test_single_model_votes_equal_the_member(at_minimum):
    repo, _ = at_minimum
    assert_model_outputs(repo, "only", ["sandal", "dress"])
    table = assert_ensemble(repo, ["only"])
    assert all(table[vote] == table["only"] for vote in VOTES) and table["oracle"] == table["only"]


def test_one_image_below_min_per_class_fails_naming_the_class(at_minimum):
    repo, root = at_minimum
    sorted((root / "sandal").glob("*.png"))[0].unlink()
    # DVC does not watch a folder outside the repository: the README says to force the scrape
    run(["dvc", "repro", "--force", "scrape"], repo)
    proc = run(["dvc", "repro"], repo, check=False)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("split:")]
    assert len(lines) == 1 and "'sandal' has 9 images" in lines[0] and "min_per_class=10" in lines[0], lines


# --- 6. grey, colour, tiny and huge images in one tree -----------------------------------------

def mixed_tree(root: Path) -> Path:
    """Tuxpaint photos (RGBA PNG cut-outs) saved as grey PNG, colour JPEG, tiny PNG and huge JPEG."""
    sources = {"birds": sorted((TUXPAINT / "animals" / "birds").glob("*.png"))[:16],
               "fruit": sorted((TUXPAINT / "food" / "fruit").glob("*.png"))[:16]}
    for name, paths in sources.items():
        (root / name).mkdir(parents=True)
        for i, path in enumerate(paths):
            with Image.open(path) as im:
                rgb = im.convert("RGBA")
                flat = Image.new("RGB", rgb.size, "white")
                flat.paste(rgb, mask=rgb.getchannel("A"))
            kind = i % 4
            if kind == 0:
                flat.convert("L").save(root / name / f"{i}_grey.png")
            elif kind == 1:
                flat.save(root / name / f"{i}_colour.jpg", quality=90)
            elif kind == 2:
                flat.resize((40, 40)).save(root / name / f"{i}_tiny.png")
            else:
                flat.resize((3000, 2400)).save(root / name / f"{i}_huge.jpg", quality=80)
        (root / name / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    require_tuxpaint()
    root = mixed_tree(tmp_path_factory.mktemp("mixed"))
    params = folder_params(root, {"birds": ["birds/*"], "fruit": ["fruit/*"]}, {"cnn_simple": cnn(3)},
                           image_size=48, validate={"min_size": 32}, split={"min_per_class": 10})
    return repro(tmp_path_factory, "mixed", params)


def test_grey_colour_tiny_and_huge_images_train_together(mixed):
    report = (mixed / "data" / "clean" / "report.csv").read_text().splitlines()
    accepted = [line for line in report[1:] if ",ok," in line]
    assert len(accepted) == 32  # every image of every kind is kept, normalised to RGB
    for split in ("train", "val", "test"):
        cache = np.load(mixed / "data" / "split" / f"{split}.npy", mmap_mode="r")
        assert cache.shape[1:] == (48, 48, 3) and cache.dtype == np.uint8
    assert_model_outputs(mixed, "cnn_simple", ["birds", "fruit"])


# --- 7. twenty-plus classes with few images each ---------------------------------------------------

MANY = {"asl": "symbols/alphabets/asl", "birds": "animals/birds", "houses": "town/houses/cartoon",
        "uppercase": "symbols/alphabets/english/filled/uppercase", "fruit": "food/fruit",
        "flowers": "plants/flowers", "roadsigns": "town/roadsigns", "christmas": "seasonal/christmas",
        "vegetables": "food/vegetables", "halloween": "seasonal/halloween", "bovines": "animals/mammals/bovines",
        "fruit_cartoons": "food/fruit/cartoon", "tools": "household/tools", "mammals": "animals/mammals",
        "rodents": "animals/mammals/rodents", "chess": "symbols/chess", "clothes": "clothes", "hanukkah": "seasonal/hanukkah",
        "easter": "seasonal/easter", "insects_drawn_as_cartoons": "animals/insects/cartoon", "fish": "animals/fish",
        "planets": "space/planets"}


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    require_tuxpaint()
    mapping = {name: [f"{folder}/*.png"] for name, folder in MANY.items()}
    params = folder_params(TUXPAINT, mapping, {"cnn_simple": cnn(3)}, image_size=32,
                           validate={"min_size": 32}, split={"min_per_class": 6})
    return repro(tmp_path_factory, "many", params)


def test_many_classes_keep_tables_and_plots_readable(many):
    classes = list(MANY)
    scalars = assert_model_outputs(many, "cnn_simple", classes)
    assert scalars["top3_accuracy"] >= scalars["accuracy"]
    table = (many / "plots" / "eval" / "cnn_simple" / "report.txt").read_text().splitlines()
    rows = [line for line in table if line.split()[0] in {"class", *classes}]
    assert len(rows) == 1 + len(classes)  # the header and one row per class, names in full
    assert len({len(line) for line in rows}) == 1, "report.txt columns do not line up"
    with Image.open(many / "plots" / "eval" / "cnn_simple" / "confusion.png") as im:
        assert min(im.size) >= 22 * 40  # room for 22 labels and counts
