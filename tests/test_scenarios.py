"""Every shape of dataset the README allows, through the real stages (`dvc repro` on a scratch copy).

Each scenario writes only the params sections a user would write, lets `imgclass check-params
--fill` add what dvc.yaml declares, runs the whole DAG and asserts the metrics and plots it must
produce, with values in range. Images are small and training short: this is about shapes, not scores.

Seven scenarios in four repositories, since each `dvc repro` pays for a dozen stage processes: two
classes (+ predict, export and the benchmark stage); colour photos, pretrained + scratch (bce on one
logit), as grey, colour, tiny and huge files in one tree; 10:1 imbalance with the rare class exactly at min_per_class
and a single model (then one image fewer fails); 22 classes. Each repository's wall time and the test
accuracy of every member and vote go to scenario_matrix.json in pytest's base temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import TUXPAINT, require_fashion, require_tuxpaint
from evaluation_checks import assert_png_figure, assert_report_matches_predictions
from imgclass.files import read_csv
from imgclass.data.image_cache import load_split
from imgclass.data.images import load_rgb, sha256_of_pixels
from imgclass.config.params import ValidateParams
from scratch_repo import copy_finished, make_repo, run, write_params

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


def repro(tmp_path_factory, name: str, params: dict, target: str | None = None) -> Path:
    """A scratch repository with `params`, completed by check-params --fill, after `dvc repro` (of
    `target` and what it needs: `ensemble` leaves out the benchmark, which no data changes), timed
    into scenario_matrix.json with the test accuracy of each member and vote."""
    started, cpu_started = time.perf_counter(), children_cpu_seconds()
    repo = make_repo(tmp_path_factory.mktemp(name), params)
    run(["imgclass", "check-params", "--fill"], repo)
    run(["dvc", "repro", *([target] if target else [])], repo)
    record(tmp_path_factory, name, {"seconds": round(time.perf_counter() - started, 1),
                                    "cpu_seconds": round(children_cpu_seconds() - cpu_started, 1),
                                    "test_accuracy": read_json(repo, "reports/ensemble.json")["test_accuracy"]})
    return repo


def children_cpu_seconds() -> float:
    """CPU seconds of the finished commands this process ran (dvc and every stage it started): on
    shared cores, what the scenario costs apart from the other jobs' load."""
    times = os.times()
    return times.children_user + times.children_system


def record(tmp_path_factory, scenario: str, row: dict) -> None:
    """Adds a scenario's row to scenario_matrix.json in pytest's base temporary folder."""
    path = tmp_path_factory.getbasetemp() / "scenario_matrix.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    table[scenario] = table.get(scenario, {}) | row
    path.write_text(json.dumps(table, indent=1))


def read_json(repo: Path, path: str) -> dict:
    return json.loads((repo / path).read_text())


def assert_model_outputs(repo: Path, model: str, classes: list[str]) -> dict:
    """The evaluate@model outputs every scenario must have, every number recomputed from the saved
    probabilities (data/preds/MODEL.npz) of this checkpoint and the split's labels; returns report.json."""
    report = assert_report_matches_predictions(
        repo / "plots" / "eval" / model, repo / "data" / "preds" / f"{model}.npz", repo / "data" / "split", classes,
        checkpoint=repo / "models" / model / "model.pt", headline=repo / "metrics" / "eval" / f"{model}.json")
    for png in ("confusion.png", "confusion_normalized.png", "reliability.png", "tsne.png", "gradcam.png",
                "top_losses.png"):
        assert_png_figure(repo / "plots" / "eval" / model / png)
    # top-k only where it says something: k >= 2 and k < number of classes
    top_k = {int(k[3:-9]) for k in report if k.startswith("top") and k.endswith("_accuracy")}
    assert top_k == ({min(3, len(classes) - 1)} if len(classes) > 2 else set()), top_k
    return report


def assert_ensemble(repo: Path, members: list[str]) -> dict:
    """reports/ensemble.json's test accuracies, recomputed from the members' saved probabilities."""
    record = read_json(repo, "reports/ensemble.json")
    table = record["test_accuracy"]
    assert set(members) | set(VOTES) | {"oracle"} <= set(table)
    saved = [np.load(repo / "data" / "preds" / f"{m}.npz") for m in members]
    probs, y = np.stack([s["test_probs"] for s in saved]), saved[0]["test_labels"]
    val_accuracy = [float((s["val_probs"].argmax(axis=1) == s["val_labels"]).mean()) for s in saved]
    right = probs.argmax(axis=2) == y  # members x images
    assert [table[m] for m in members] == pytest.approx(right.mean(axis=1).tolist())
    assert table["oracle"] == pytest.approx(right.any(axis=0).mean())  # right when any member is
    assert table["soft_vote"] == pytest.approx((probs.mean(axis=0).argmax(axis=1) == y).mean())
    weighted = np.tensordot(np.array(val_accuracy) / sum(val_accuracy), probs, axes=1)
    assert table["weighted_vote"] == pytest.approx((weighted.argmax(axis=1) == y).mean())
    assert table["oracle"] >= max(table[m] for m in members)
    return table


def fashion_pngs(tmp_path: Path, classes: list[str], per_class: int) -> dict[str, list[Path]]:
    """Real Fashion-MNIST PNGs per class, through the fashion_mnist source."""
    from imgclass.data import sources
    from imgclass.config.params import parse_params

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
    return repro(tmp_path_factory, "binary", fashion_params(["sneaker", "bag"], 60, {"cnn_simple": cnn(4)}))


def test_binary_evaluation_reports_roc_and_pr(binary):
    for model in ("cnn_simple",):
        scalars = assert_model_outputs(binary, model, ["sneaker", "bag"])
        assert scalars["accuracy"] > 0.8  # sneaker vs bag is easy
        assert 0.8 < scalars["roc_auc"] <= 1 and 0.5 < scalars["average_precision"] <= 1
        report = read_json(binary, f"plots/eval/{model}/report.json")
        assert report["positive_class"] == "bag" and report["threshold"] == 0.5
        # the curves DVC draws are those of the numbers reported beside them
        roc = read_csv(binary / "plots" / "eval" / model / "roc.csv")
        fpr, tpr = np.array([[float(r["fpr"]), float(r["tpr"])] for r in roc]).T
        assert list(roc[0]) == ["fpr", "tpr"] and (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
        assert np.trapezoid(tpr, fpr) == pytest.approx(scalars["roc_auc"], abs=1e-6)
        pr = read_csv(binary / "plots" / "eval" / model / "pr.csv")
        recall, precision = np.array([[float(r["recall"]), float(r["precision"])] for r in pr]).T
        assert list(pr[0]) == ["recall", "precision"] and (recall[0], recall[-1]) == (1, 0)
        # average precision is the step sum of the curve: precision times each drop of recall
        assert -(np.diff(recall) * precision[:-1]).sum() == pytest.approx(scalars["average_precision"], abs=1e-6)
    assert_ensemble(binary, ["cnn_simple"])
    assert read_json(binary, "metrics/benchmark.json")  # the whole DAG, benchmark included


def test_binary_predict_and_export(binary):
    folder = binary / "data" / "clean" / "bag"
    out = binary / "preds.json"
    run(["imgclass", "predict", str(folder), "--out", str(out)], binary)
    rows = json.loads(out.read_text())
    predicted = [r["prediction"] for r in rows]
    assert len(rows) == len(list(folder.glob("*.png"))) and predicted.count("bag") / len(rows) > 0.8
    run(["imgclass", "export", "cnn_simple", "--format", "onnx"], binary)
    meta = json.loads((binary / "exports" / "cnn_simple.json").read_text())
    assert meta["classes"] == ["sneaker", "bag"] and meta["output"]["shape"] == ["batch", 2]


# --- 2 + 6. colour photos through the folder source, pretrained + scratch, as grey, colour, tiny
# and huge files in one tree --------------------------------------------------------------------

PHOTO_FOLDERS = {"mammals": TUXPAINT / "animals" / "mammals", "vehicles": TUXPAINT / "vehicles"}


def mixed_tree(root: Path, per_class: int = 30) -> int:
    """`per_class` tuxpaint photos (RGBA PNG cut-outs, in subfolders) of each class flattened onto
    white: the first two as huge JPEGs, the next two as tiny PNGs, every fourth of the rest grey, the
    others colour JPEGs; and a text file beside them. Returns the number of images written."""
    written = 0
    for name, folder in PHOTO_FOLDERS.items():
        (root / name).mkdir(parents=True)
        for i, path in enumerate(sorted(folder.rglob("*.png"))[:per_class]):
            with Image.open(path) as im:
                rgba = im.convert("RGBA")
                flat = Image.new("RGB", rgba.size, "white")
                flat.paste(rgba, mask=rgba.getchannel("A"))
            if i < 2:
                flat.resize((3000, 2400)).save(root / name / f"{i}_huge.jpg", quality=80)
            elif i < 4:
                flat.resize((40, 40)).save(root / name / f"{i}_tiny.png")
            elif i % 4 == 0:
                flat.convert("L").save(root / name / f"{i}_grey.png")
            else:
                flat.save(root / name / f"{i}_colour.jpg", quality=90)
            written += 1
        (root / name / "notes.txt").write_text("not an image")
    return written


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    require_tuxpaint()
    root = tmp_path_factory.mktemp("photo-tree")
    written = mixed_tree(root)
    models = {"efficientnet_lite0": {"arch": "efficientnet_lite0", "weights": "imagenet", "freeze_epochs": 1,
                                     "epochs": 2, "min_steps": 0, "head_steps": 100, "batch_size": 32,
                                     "lr": 0.002},
              # the cached 96 px images at a quarter of the compute; bce on one logit, whose 2-column
              # probabilities go through evaluate and the votes like any other member's
              "cnn_simple": cnn(2, input_size=48, loss="bce", binary_head="one_logit")}
    params = folder_params(root, {name: [f"{name}/*"] for name in PHOTO_FOLDERS}, models, image_size=96,
                           validate={"min_size": 32}, split={"min_per_class": 10})
    return repro(tmp_path_factory, "photos", params, target="ensemble"), written


def test_colour_photos_pretrained_and_scratch(photos):
    repo, _ = photos
    classes = list(PHOTO_FOLDERS)
    pretrained = assert_model_outputs(repo, "efficientnet_lite0", classes)
    assert_model_outputs(repo, "cnn_simple", classes)
    assert pretrained["accuracy"] >= 0.7  # ImageNet features separate these photos at 96 px
    assert_ensemble(repo, ["efficientnet_lite0", "cnn_simple"])


def test_grey_colour_tiny_and_huge_images_train_together(photos):
    repo, written = photos
    report = (repo / "data" / "clean" / "report.csv").read_text().splitlines()
    accepted = [line for line in report[1:] if ",ok," in line]
    assert len(accepted) == written  # every image of every kind is kept, normalised to RGB
    classes = sorted({row["class"] for row in read_csv(repo / "data" / "clean" / "report.csv")})
    for split in ("train", "val", "test"):
        images, labels = load_split(repo / "data" / "split", split, classes, 96)
        assert images.shape == (len(labels), 96, 96, 3) and images.dtype == np.uint8


def test_huge_photos_are_kept_as_small_working_copies_linked_from_the_cache(photos):
    """validate.working_size auto = max(image_size 96, review.image_size 128): the 3000 x 2400 JPEGs are
    decoded once into 160 x 128 working copies, named by the originals' pixels; DVC links every
    output into its cache instead of storing it twice."""
    repo, _ = photos
    rows = [row for row in read_csv(repo / "data" / "clean" / "report.csv") if row["status"] == "ok"]
    huge = [row for row in rows if (row["width"], row["height"]) == ("3000", "2400")]  # raw files are named by hash
    assert len(huge) == 4
    for row in huge:
        original = load_rgb(repo / "data" / "raw" / row["path"], ValidateParams())
        assert row["sha256"] == sha256_of_pixels(original) and row["out"].endswith(".jpg")
        with Image.open(repo / "data" / "clean" / row["out"]) as copy:
            assert copy.size == (160, 128)
    cached = {path.stat().st_ino for path in (repo / ".dvc" / "cache").rglob("*") if path.is_file()}
    for folder in ("raw", "clean", "split"):
        outputs = [path for path in (repo / "data" / folder).rglob("*") if path.is_file()]
        assert outputs and all(path.stat().st_ino in cached for path in outputs), folder


# --- 3 + 4 + 5. 10:1 imbalance, the rare class exactly at split.min_per_class, one model --------

@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    require_fashion()
    pngs = fashion_pngs(tmp_path_factory.mktemp("fashion-imbalanced"), ["trouser", "bag"], 200)
    root = copy_tree({"trouser": pngs["trouser"], "bag": pngs["bag"][:20]}, tmp_path_factory.mktemp("tree"))
    params = folder_params(root, {"trouser": ["trouser/*.png"], "bag": ["bag/*.png"]},
                           {"only": cnn(4, class_weights="balanced")}, image_size=28,
                           validate={"min_size": 28, "near_duplicate_distance": None},
                           split={"min_per_class": 20})
    return repro(tmp_path_factory, "imbalanced", params, target="ensemble"), root


def test_imbalance_reports_rare_recall_and_bias(imbalanced):
    repo, _ = imbalanced
    assert_model_outputs(repo, "only", ["trouser", "bag"])
    split = read_json(repo, "data/split/counts.json")
    assert split["train"]["per_class"]["trouser"] >= 10 * split["train"]["per_class"]["bag"] * 0.8
    report = read_json(repo, "plots/eval/only/report.json")
    rare = report["per_class"]["bag"]
    assert rare["support"] >= 3 and rare["recall"] >= 0.5  # balanced weights keep the rare class found
    # mean bias error (predicted share minus true share, checked against the predictions by
    # assert_model_outputs, as is report.txt's bias column): what one class over-predicts, the other misses
    assert rare["mean_bias_error"] == pytest.approx(-report["per_class"]["trouser"]["mean_bias_error"])


def test_class_at_min_per_class_is_split_into_all_three(imbalanced):
    repo, _ = imbalanced
    counts = read_json(repo, "data/split/counts.json")
    assert sum(counts[s]["per_class"]["bag"] for s in ("train", "val", "test")) == 20
    assert all(counts[s]["per_class"].get("bag", 0) >= 1 for s in ("train", "val", "test"))


def test_single_model_votes_equal_the_member(imbalanced):
    repo, _ = imbalanced
    table = assert_ensemble(repo, ["only"])
    assert all(table[vote] == table["only"] for vote in VOTES) and table["oracle"] == table["only"]


def test_one_image_below_min_per_class_fails_naming_the_class(imbalanced, tmp_path):
    # a copy of the finished repository and of its image tree: the other tests keep all 20 bags
    repo, root = copy_finished(imbalanced[0], tmp_path / "repo"), shutil.copytree(imbalanced[1], tmp_path / "tree")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["scrape"]["folder"]["root"] = str(root)
    write_params(repo, params)
    sorted((root / "bag").glob("*.png"))[0].unlink()
    # DVC does not watch a folder outside the repository: the README says to force the scrape
    run(["dvc", "repro", "--force", "scrape"], repo)
    proc = run(["dvc", "repro", "split"], repo, check=False)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("split:")]
    assert len(lines) == 1 and "'bag' has 19 images" in lines[0] and "min_per_class=20" in lines[0], lines


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
    params["scrape"]["max_per_class"] = 15  # 22 rows and columns are the point, not the images in them
    return repro(tmp_path_factory, "many", params, target="ensemble")


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
