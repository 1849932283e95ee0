"""Progress of long steps: plain lines with done / total, rate and ETA where output is a log, a bar on a
terminal; and a real stage's output read back."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import make_split, tiny_params_dict
from imgclass import progress
from imgclass.progress import INTERVAL_ENV, Progress, track
from scratch_repo import make_repo, run

CLASSES = ["red", "green", "blue"]
IMAGES_PER_CLASS = 24


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """The seconds progress.py sees, set by the test."""
    now = SimpleNamespace(seconds=0.0)
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: now.seconds))
    return now


def advance(bar: Progress, clock, seconds: float, done: int) -> None:
    clock.seconds = seconds
    bar.update(done)


def test_a_log_gets_a_line_per_interval_with_done_total_rate_and_eta_then_a_last_line(clock):
    log = io.StringIO()
    bar = Progress(100, "validate", unit="file", stream=log, interval=10)
    advance(bar, clock, 5, 10)    # before the interval: silent
    advance(bar, clock, 10, 20)
    advance(bar, clock, 15, 10)   # 5 s after the last line: silent
    advance(bar, clock, 20, 20)
    advance(bar, clock, 40, 40)   # done: the last line says so, not a running one
    bar.close()
    assert log.getvalue().splitlines() == [
        "validate: 30/100 files (30%), 3.0 files/s, ETA 23 s",
        "validate: 60/100 files (60%), 3.0 files/s, ETA 13 s",
        "validate: 100/100 files in 40 s, 2.5 files/s",
    ]


def test_long_etas_read_in_minutes_and_hours(clock):
    log = io.StringIO()
    minutes = Progress(1_000, "review: quality", stream=log, interval=10)
    hours = Progress(100_000, "review: embedding", stream=log, interval=10)
    advance(minutes, clock, 10, 100)
    advance(hours, clock, 10, 20)
    assert log.getvalue().splitlines() == [
        "review: quality: 100/1000 images (10%), 10.0 images/s, ETA 1 min 30 s",
        "review: embedding: 20/100000 images (0%), 2.0 images/s, ETA 13 h 53 min",
    ]


def test_a_step_shorter_than_the_interval_prints_nothing(clock):
    log = io.StringIO()
    with Progress(5, "scrape", unit="file", stream=log, interval=10) as bar:
        advance(bar, clock, 9, 5)
    assert log.getvalue() == ""


def test_track_yields_every_item_and_reports_them(clock, monkeypatch, capsys):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    assert list(track(["a", "b"], "review: quality")) == ["a", "b"]
    assert capsys.readouterr().err.splitlines() == [
        "review: quality: 1/2 images (50%), 0.0 images/s, ETA unknown",
        "review: quality: 2/2 images in 0 s, 0.0 images/s",
    ]


def test_a_terminal_gets_the_bar_alone(clock):
    terminal = Terminal()
    with Progress(10, "cnn_simple epoch 1/2 (unfrozen)", stream=terminal, interval=0) as bar:
        for second in range(1, 11):
            advance(bar, clock, second, 1)
    shown = terminal.getvalue()
    assert "cnn_simple epoch 1/2 (unfrozen)" in shown and "\r" in shown
    assert "ETA" not in shown and "images/s" not in shown and "\n" not in shown.rstrip("\n")


@pytest.mark.parametrize("value", ["ten", "-1", "nan", "inf"])
def test_a_bad_interval_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv(INTERVAL_ENV, value)
    with pytest.raises(ValueError) as raised:
        Progress(10, "validate")
    assert str(raised.value) == f"{INTERVAL_ENV}={value!r}: expected seconds between progress lines, e.g. 10"


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert Progress(1, "x").interval == 10
    monkeypatch.setenv(INTERVAL_ENV, "0.5")
    assert Progress(1, "x").interval == 0.5


# --- a real stage's output -----------------------------------------------------------------------

def noise_tree(root: Path) -> Path:
    """Class folders of distinct 32-px noise PNGs, tinted by class."""
    rng = np.random.default_rng(0)
    for channel, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(IMAGES_PER_CLASS):
            pixels = rng.integers(0, 128, (32, 32, 3), dtype=np.uint8)
            pixels[..., channel] += 127
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_copying_and_training_report_progress_and_the_stage_a_readable_summary(tmp_path, monkeypatch, capsys):
    from imgclass.config.params import parse_params

    raw = tiny_params_dict(classes=CLASSES)
    raw["scrape"]["source"] = "folder"
    raw["scrape"]["folder"] = {"root": str(noise_tree(tmp_path / "photos")),
                               "mapping": {name: [f"{name}/*.png"] for name in CLASSES}}
    raw["models"] = {"cnn_simple": {"arch": "cnn_simple", "epochs": 2, "min_steps": 0, "batch_size": 16}}
    repo = make_repo(tmp_path / "repo", raw)
    # A line per file and per batch, here and in the stage that dvc runs: the test does not wait 10 s.
    monkeypatch.setenv(INTERVAL_ENV, "0")

    # The folder source copies (as the scrape stage does) and the split is made from its files directly:
    # the review stage before the split needs pretrained weights.
    split_dir = make_split(parse_params(raw), repo / "data")
    copied = capsys.readouterr().err
    total = len(CLASSES) * IMAGES_PER_CLASS
    assert f"scrape: {total // 2}/{total} files (50%)" in copied
    assert re.search(rf"^scrape: {total}/{total} files in \d+ s, [\d.]+ files/s$", copied, re.M), copied[-2000:]

    train_images = len((split_dir / "train.csv").read_text().splitlines()) - 1
    train = run(["dvc", "repro", "--single-item", "train@cnn_simple"], repo)
    assert re.search(rf"^cnn_simple epoch 1/2 \(unfrozen\): 16/{train_images} images \(\d+%\), [\d.]+ images/s, ETA ",
                     train.stderr, re.M), train.stderr[-2000:]
    assert re.search(rf"^cnn_simple epoch 2/2 \(unfrozen\): {train_images}/{train_images} images in ",
                     train.stderr, re.M)
    assert re.search(r"^cnn_simple epoch 2/2 \(validation\): \d+/\d+ images in ", train.stderr, re.M)
    assert re.search(r"^cnn_simple 2/2 unfrozen: train_loss=", train.stdout, re.M)  # the epoch's metrics, as before
    assert re.search(r"^train cnn_simple: kept epoch [12] of 2 \(val_accuracy [\d.]+, val_loss [\d.]+\); "
                     r"[\d.]+ s on \w+$", train.stdout, re.M), train.stdout[-2000:]
