"""Scenarios 2 and 6: colour photos through the folder source, pretrained + scratch, as grey, colour,
tiny and huge files in one tree (tests/scenarios.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import TUXPAINT, require_tuxpaint
from PIL import Image
from scenarios import assert_ensemble, assert_model_outputs, cnn, folder_params, repro

from imgclass.config.params import ValidateParams
from imgclass.data.image_cache import load_split
from imgclass.data.images import load_rgb, sha256_of_pixels
from imgclass.files import read_csv

pytestmark = pytest.mark.slow


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


