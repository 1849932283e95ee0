"""Scenarios 3, 4 and 5: 10:1 imbalance, the rare class exactly at split.min_per_class, one model
(tests/scenarios.py)."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import require_fashion
from scenarios import (VOTES, assert_ensemble, assert_model_outputs, cnn, copy_tree, fashion_pngs, folder_params,
                       read_json, repro)
from scratch_repo import copy_finished, run, write_params

pytestmark = pytest.mark.slow


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


