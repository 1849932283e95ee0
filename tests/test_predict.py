import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgclass import cli, files, models
from imgclass.checkpoint import load_trained, save_checkpoint
from imgclass.evaluate import predict_probs
from imgclass.predict import PredictError, expand_paths, predict_paths, resolve_checkpoints
from imgclass.train import train
from test_train import with_model


def train_tiny(fashion_split, models_dir: Path, name: str = "m") -> Path:
    """models_dir/name/model.pt: a cnn_simple trained for two epochs on the tiny split (seconds)."""
    params, split_dir = fashion_split
    work = models_dir.parent / f"work-{name}"
    train("m", with_model(params, epochs=2), split_dir, models_dir / name, work / "resume", work / "live", track=False)
    return models_dir / name / "model.pt"


def split_images(split_dir: Path, n: int) -> tuple[list[Path], np.ndarray]:
    """The first n test-split PNGs as files, and the same images as the split's cached uint8 array."""
    rows = files.read_csv(split_dir / "test.csv")[:n]
    images = np.load(split_dir / "test.npy")[:n]
    return [split_dir.parent / "raw" / r["path"] for r in rows], images


@pytest.fixture(scope="module")
def trained(fashion_split, tmp_path_factory):
    """(models_dir with one model `m`, split_dir)."""
    models_dir = tmp_path_factory.mktemp("predict") / "models"
    train_tiny(fashion_split, models_dir)
    return models_dir, fashion_split[1]


@pytest.fixture
def image_folder(trained, tmp_path):
    """tmp/images: 6 real PNGs (2 in a subfolder), one as JPEG, and four files that are no image."""
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
    rows = predict_paths([image_folder, image_folder / "missing.png"], [checkpoint], top=2, batch_size=4)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert [Path(r["path"]).name for r in rows] == ["0.png", "1.png", "2.png", "3.png", "6.jpg", "empty.png",
                                                   "notes.txt", "truncated.png", "4.png", "5.png", "missing.png"]
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
    table = capsys.readouterr().out
    assert "0.png" in table and "empty_file" in table and "7 predicted, 3 unreadable" in table

    assert cli.main(["predict", str(image_folder), "--models-dir", models_dir, "--out", str(tmp_path / "p.csv"),
                     "--top-k", "2"]) == 0
    rows = files.read_csv(tmp_path / "p.csv")
    assert len(rows) == 10 and rows[0]["status"] == "ok" and len(rows[0]["top_k"].split()) == 2
    assert cli.main(["predict", str(image_folder), "--models-dir", models_dir, "--out", str(tmp_path / "p.json")]) == 0
    assert json.loads((tmp_path / "p.json").read_text())[0]["top_k"][0]["class"] in ["trouser", "bag", "sneaker", "dress"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_text("<html><body>404</body></html>")
    assert cli.main(["predict", str(bad), "--models-dir", models_dir]) == 1
    assert "html_not_image" in capsys.readouterr().out
    assert cli.main(["predict", str(bad), "--models-dir", str(tmp_path / "nothing")]) == 1
    assert "no */model.pt" in capsys.readouterr().err


def test_ensemble_soft_votes_members_and_rejects_different_classes(trained, image_folder, tmp_path):
    source = trained[0] / "m" / "model.pt"
    models_dir = tmp_path / "models"
    shutil.copytree(source.parent, models_dir / "a")
    _, meta, _ = load_trained(source)
    torch.manual_seed(1)  # an untrained second member: its votes differ from the trained one's
    save_checkpoint(models_dir / "b" / "model.pt", models.build_model(meta["arch"], 4), {**meta, "name": "b"})

    members = resolve_checkpoints("ensemble", models_dir)
    assert [p.parent.name for p in members] == ["a", "b"]
    voted = predict_paths([image_folder / "0.png"], members, top=4)[0]["top_k"]
    single = [predict_paths([image_folder / "0.png"], [p], top=4)[0]["top_k"] for p in members]
    mean = {c: np.mean([next(r["probability"] for r in s if r["class"] == c) for s in single]) for c in meta["classes"]}
    assert {r["class"]: r["probability"] for r in voted} == pytest.approx(mean, abs=1e-6)

    save_checkpoint(models_dir / "c" / "model.pt", models.build_model(meta["arch"], 4),
                    {**meta, "name": "c", "classes": meta["classes"][::-1]})
    with pytest.raises(PredictError, match="disagree on classes"):
        predict_paths([image_folder], resolve_checkpoints("ensemble", models_dir))


def test_folders_are_searched_recursively_in_a_stable_order(tmp_path):
    for name in ("b/2.png", "a/1.png", "c.png", ".git/x.png", "a/.DS_Store"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in expand_paths([tmp_path])] == ["c.png", "a/1.png", "b/2.png"]
