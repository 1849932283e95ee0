import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import tiny_params_dict
from imgclass import cli, files
from imgclass.evaluation import ensemble_report
from imgclass.model import models
from imgclass.model.checkpoint import load_trained, save_checkpoint
from imgclass.evaluation.ensemble import EnsembleSpec
from imgclass.evaluation.evaluate import SavedPredictions, file_sha256, predict_probs
from imgclass.serving.predict import PredictError, expand_paths, predict_paths, resolve_checkpoints
from imgclass.data.image_cache import load_split
from imgclass.training.train import train
from test_train import with_model


def train_tiny(fashion_split, models_dir: Path, name: str = "m") -> Path:
    """models_dir/name/model.pt: a cnn_simple trained for two epochs on the tiny split (seconds)."""
    params, split_dir = fashion_split
    work = models_dir.parent / f"work-{name}"
    train("m", with_model(params, epochs=2), split_dir, models_dir / name, work / "resume", work / "live", track=False)
    return models_dir / name / "model.pt"


def split_images(split_dir: Path, n: int) -> tuple[list[Path], np.ndarray]:
    """The first n test-split PNGs as files, and the same images as training reads them (uint8, 28 px)."""
    rows = files.read_csv(split_dir / "test.csv")
    images = load_split(split_dir, "test", sorted({r["label"] for r in rows}), 28)[0][:n]
    return [split_dir.parent / "clean" / r["path"] for r in rows[:n]], images


@pytest.fixture(scope="module")
def trained(fashion_split, tmp_path_factory):
    """(models_dir with one model `m`, split_dir)."""
    models_dir = tmp_path_factory.mktemp("predict") / "models"
    train_tiny(fashion_split, models_dir)
    return models_dir, fashion_split[1]


@pytest.fixture
def image_folder(trained, tmp_path):
    """tmp/images: 6 real PNGs (2 in a subfolder), one as JPEG, two broken PNGs and a text file."""
    _, split_dir = trained
    pngs, _ = split_images(split_dir, 6)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, png in enumerate(pngs):
        shutil.copy(png, folder / ("sub" if i >= 4 else "") / f"{i}.png")
    Image.open(pngs[0]).convert("RGB").save(folder / "6.jpg", quality=95)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a picture\n")
    (folder / "truncated.png").write_bytes(pngs[0].read_bytes()[:120])
    (folder / ".hidden.png").write_bytes(b"")  # hidden files are skipped
    return folder


def test_predictions_match_evaluation_and_bad_files_are_rows(trained, image_folder):
    models_dir, split_dir = trained
    checkpoint = models_dir / "m" / "model.pt"
    rows = predict_paths([image_folder, image_folder / "missing.png", image_folder / "notes.txt"], [checkpoint],
                         top=2, batch_size=4)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert [Path(r["path"]).name for r in rows] == ["0.png", "1.png", "2.png", "3.png", "6.jpg", "empty.png",
                                                   "truncated.png", "4.png", "5.png", "missing.png", "notes.txt"]
    assert {n: by_name[n]["reason"] for n in ("empty.png", "notes.txt", "truncated.png", "missing.png")} == {
        "empty.png": "empty_file", "notes.txt": "not_an_image", "truncated.png": "truncated",
        "missing.png": "not_found"}

    # The same pixels through the training-time cache and through predict give the same probabilities.
    model, meta, prep = load_trained(checkpoint)
    _, cached = split_images(split_dir, 6)
    expected = predict_probs(model, prep, cached)
    for i in range(6):
        row = by_name[f"{i}.png"]
        assert row["status"] == "ok" and len(row["top_k"]) == 2
        assert row["prediction"] == meta["classes"][expected[i].argmax()]
        assert row["probability"] == pytest.approx(expected[i].max(), abs=1e-6)
        assert row["top_k"][0]["probability"] >= row["top_k"][1]["probability"]
    assert by_name["6.jpg"]["status"] == "ok"


def test_batch_size_does_not_change_results_and_top_k_is_capped(trained, image_folder):
    checkpoint = trained[0] / "m" / "model.pt"
    one = predict_paths([image_folder], [checkpoint], top=10, batch_size=1)
    many = predict_paths([image_folder], [checkpoint], top=10, batch_size=64)
    assert [r["prediction"] for r in one] == [r["prediction"] for r in many]
    assert all(len(r["top_k"]) == 4 for r in many if r["status"] == "ok")  # 4 classes
    for a, b in zip(one, many):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)


def test_cli_prints_a_table_writes_csv_and_json_and_exits_by_outcome(trained, image_folder, tmp_path, capsys):
    models_dir = str(trained[0])
    assert cli.main(["predict", str(image_folder), "--model", "m", "--models-dir", models_dir]) == 0
    out = capsys.readouterr().out
    assert "0.png" in out and "empty_file" in out and "7 predicted, 2 unreadable" in out
    assert "skipped 1 file that is not an image" in out and "notes.txt" not in out

    assert cli.main(["predict", str(image_folder), "--model", "m", "--models-dir", models_dir,
                     "--out", str(tmp_path / "p.csv"), "--top-k", "2"]) == 0
    rows = files.read_csv(tmp_path / "p.csv")
    assert len(rows) == 9 and rows[0]["status"] == "ok" and len(rows[0]["top_k"].split()) == 2
    assert cli.main(["predict", str(image_folder), "--model", "m", "--models-dir", models_dir,
                     "--out", str(tmp_path / "p.json")]) == 0
    first = json.loads((tmp_path / "p.json").read_text())[0]
    assert first["top_k"][0]["class"] in ["trouser", "bag", "sneaker", "dress"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_text("<html><body>404</body></html>")
    assert cli.main(["predict", str(bad), "--model", "m", "--models-dir", models_dir]) == 1
    assert "html_not_image" in capsys.readouterr().out
    assert cli.main(["predict", str(bad), "--model", "m", "--models-dir", str(tmp_path / "nothing")]) == 1
    assert "no trained model" in capsys.readouterr().err


def test_folders_skip_files_that_are_not_images_by_suffix_and_magic(trained, tmp_path, capsys):
    """A tuxpaint-like folder: sounds, text and SVG beside the pictures are counted, not listed."""
    models_dir, split_dir = trained
    pngs, _ = split_images(split_dir, 2)
    folder = tmp_path / "stamps"
    (folder / "animals").mkdir(parents=True)
    shutil.copy(pngs[0], folder / "animals" / "cat.png")
    shutil.copy(pngs[1], folder / "animals" / "cat-thumbnail")  # no suffix, PNG bytes: an image
    (folder / "animals" / "cat.ogg").write_bytes(b"OggS\x00\x02" + bytes(64))
    (folder / "animals" / "cat.txt").write_text("A cat.\n")
    (folder / "animals" / "dog.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (folder / "animals" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + bytes(10))  # an image, unreadable

    found = expand_paths([folder])
    assert [p.name for p in found.files] == ["broken.jpg", "cat-thumbnail", "cat.png"] and found.skipped == 3
    assert cli.main(["predict", str(folder), str(folder / "animals" / "cat.txt"), "--model", "m",
                     "--models-dir", str(models_dir), "--out", str(tmp_path / "p.json")]) == 0
    rows = {Path(r["path"]).name: r for r in files.read_json(tmp_path / "p.json")}
    assert {n: r["status"] for n, r in rows.items()} == {"broken.jpg": "error", "cat-thumbnail": "ok", "cat.png": "ok",
                                                       "cat.txt": "error"}  # named on the command line: answered
    assert capsys.readouterr().out.strip().splitlines()[-1] == "skipped 3 files that are not images"


def test_members_must_share_classes(trained, image_folder, tmp_path):
    source = trained[0] / "m" / "model.pt"
    _, meta, _ = load_trained(source)
    other = tmp_path / "c" / "model.pt"
    save_checkpoint(other, models.build_model(meta["arch"], 4), {**meta, "name": "c", "classes": meta["classes"][::-1]})
    with pytest.raises(PredictError, match="disagree on classes"):
        predict_paths([image_folder], [source, other])


def save_predictions(checkpoint: Path, split_dir: Path, out: Path) -> None:
    """What evaluate@M saves: val and test probabilities and the checkpoint's sha256."""
    model, meta, prep = load_trained(checkpoint)
    val_x, val_y = load_split(split_dir, "val", meta["classes"], prep.image_size)
    test_x, test_y = load_split(split_dir, "test", meta["classes"], prep.image_size)
    SavedPredictions(meta["classes"], predict_probs(model, prep, val_x), val_y, predict_probs(model, prep, test_x),
                     test_y, file_sha256(checkpoint)).save(out)


@pytest.fixture
def project(trained, tmp_path):
    """A pipeline's outputs for params members a (trained) and b (a's network always saying "trouser"),
    evaluated and ensembled, plus a stale models/old folder (untrained) that params no longer names."""
    source, split_dir = trained[0] / "m" / "model.pt", trained[1]
    root = tmp_path / "project"
    model, meta, _ = load_trained(source)
    shutil.copytree(source.parent, root / "models" / "a")
    with torch.no_grad():
        model.get_submodule(models.head_name(model)).bias[meta["classes"].index("trouser")] += 100
    save_checkpoint(root / "models" / "b" / "model.pt", model, {**meta, "name": "b"})
    torch.manual_seed(2)
    save_checkpoint(root / "models" / "old" / "model.pt", models.build_model(meta["arch"], 4), {**meta, "name": "old"})
    member = {"arch": "cnn_simple", "epochs": 2, "batch_size": 32}
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(models={"a": member, "b": member})))
    for name in ("a", "b"):
        save_predictions(root / "models" / name / "model.pt", split_dir, root / "data" / "preds" / f"{name}.npz")
    ensemble_report.write_report(["a", "b"], root / "data" / "preds", root / "metrics" / "ensemble.json",
                                 root / "reports" / "ensemble.json", root / "plots" / "ensemble")
    return root


def ensemble_args(root: Path) -> list[str]:
    return ["--models-dir", str(root / "models"), "--params", str(root / "params.yaml"),
            "--ensemble-spec", str(root / "reports" / "ensemble.json")]


def member_probs(root: Path, names: list[str], image: Path) -> np.ndarray:
    return np.stack([[[r["probability"] for r in sorted(predict_paths([image], [root / "models" / n / "model.pt"],
                                                                      top=4)[0]["top_k"], key=lambda r: r["class"])]]
                     for n in names])


def test_ensemble_is_the_params_members_with_the_vote_chosen_on_validation(project, image_folder, tmp_path):
    choice = resolve_checkpoints("ensemble", project / "models", project / "params.yaml",
                                 project / "reports" / "ensemble.json")
    assert list(choice.checkpoints) == ["a", "b"]  # not models/old
    chosen = files.read_json(project / "reports" / "ensemble.json")["chosen_vote"]
    assert choice.spec.vote == chosen

    images = [image_folder / f"{i}.png" for i in range(4)]
    assert cli.main(["predict", *map(str, images), "--top-k", "4", "--out", str(tmp_path / "p.json"),
                     *ensemble_args(project)]) == 0
    got = files.read_json(tmp_path / "p.json")
    classes = sorted(load_trained(project / "models" / "a" / "model.pt")[1]["classes"])
    for image, row in zip(images, got):
        scores, predicted = choice.spec.apply(member_probs(project, ["a", "b"], image))
        assert row["prediction"] == classes[predicted[0]]
        assert {r["class"]: r["probability"] for r in row["top_k"]} == pytest.approx(
            dict(zip(classes, scores[0])), abs=1e-6)
        # the stale folder would change the soft vote: it is not consulted
        assert not np.allclose(member_probs(project, ["a", "b", "old"], image).mean(axis=0), scores, atol=1e-3)


def test_ensemble_applies_the_recorded_hard_vote_and_tie_break(project, image_folder, tmp_path):
    metrics = files.read_json(project / "reports" / "ensemble.json")
    files.write_json(project / "reports" / "ensemble.json", {**metrics, "chosen_vote": "hard_vote", "tie_break": "b"})
    choice = resolve_checkpoints("ensemble", project / "models", project / "params.yaml",
                                 project / "reports" / "ensemble.json")
    assert choice.spec == EnsembleSpec(["a", "b"], "hard_vote", "b", choice.spec.weights, choice.spec.checkpoints)
    classes = sorted(load_trained(project / "models" / "a" / "model.pt")[1]["classes"])
    images = [image_folder / f"{i}.png" for i in range(4)] + [image_folder / "sub" / f"{i}.png" for i in (4, 5)]
    ties = 0
    for image, row in zip(images, predict_paths(images, choice, top=4)):
        a_vote, b_vote = (classes[p[0].argmax()] for p in member_probs(project, ["a", "b"], image))
        assert row["prediction"] == b_vote  # agreement, or a 1:1 tie that the tie-break member b decides
        assert row["probability"] == (1.0 if a_vote == b_vote else 0.5)  # hard vote scores are vote shares
        ties += a_vote != b_vote
    assert ties  # b always says trouser, a does not: the tie-break was exercised


def test_ensemble_refuses_missing_changed_or_other_members(project, image_folder, capsys):
    args = ["predict", str(image_folder / "0.png"), *ensemble_args(project)]
    b = project / "models" / "b" / "model.pt"
    shutil.move(b, b.with_suffix(".bak"))
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{b}: missing" in err and "member 'b'" in err

    _, meta, _ = load_trained(project / "models" / "a" / "model.pt")
    torch.manual_seed(3)
    save_checkpoint(b, models.build_model(meta["arch"], 4), {**meta, "name": "b"})  # retrained, not re-evaluated
    assert cli.main(args) == 1
    assert f"{b}: not the checkpoint the ensemble evaluated" in capsys.readouterr().err

    shutil.move(b.with_suffix(".bak"), b)
    assert cli.main(args) == 0
    capsys.readouterr()
    member = {"arch": "cnn_simple", "epochs": 2, "batch_size": 32}
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(models={"a": member, "b": member,
                                                                                 "old": member})))
    assert cli.main(args) == 1
    assert "evaluated members a, b but" in capsys.readouterr().err
    (project / "reports" / "ensemble.json").unlink()
    assert cli.main(args) == 1
    assert "ensemble.json: not found" in capsys.readouterr().err


def test_folders_are_searched_recursively_in_a_stable_order(tmp_path):
    for name in ("b/2.png", "a/1.png", "c.png", ".git/x.png", "a/.DS_Store"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = expand_paths([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found.files] == ["c.png", "a/1.png", "b/2.png"]
    assert found.skipped == 0  # hidden files are neither listed nor counted
