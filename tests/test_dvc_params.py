"""A params.yaml with only the sections a user cares about: check-params says what DVC will need and
--fill writes it with the defaults imgclass would use anyway."""

from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import REPO
from imgclass.config.dvc_params import declared_keys, fill_missing, missing_keys
from imgclass.config.params import load_params

MINIMAL = """\
# my two classes
classes: [cat, dog]
models:
  net: {arch: cnn_simple, epochs: 3}
"""


def check_params(path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgclass.cli", "check-params", str(path), "--dvc-yaml",
                           str(REPO / "dvc.yaml"), *extra], capture_output=True, text=True)


def test_declared_keys_expand_foreach_over_models():
    keys = declared_keys(REPO / "dvc.yaml", {"models": {"a": {}, "b": {}}})
    assert {"classes", "seed", "split", "models.a", "models.b"} <= set(keys)
    assert not any("${" in k for k in keys)


def test_minimal_file_is_reported_then_filled(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(MINIMAL)
    before = load_params(path)
    missing = missing_keys(yaml.safe_load(MINIMAL), REPO / "dvc.yaml")
    assert "split" in missing and "seed" in missing and "classes" not in missing

    proc = check_params(path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "dvc repro needs" in proc.stderr and "split" in proc.stderr and "--fill" in proc.stderr

    proc = check_params(path, "--fill")
    assert proc.returncode == 0, proc.stderr
    assert "wrote defaults for" in proc.stdout and "ok" in proc.stdout
    text = path.read_text()
    assert text.startswith(MINIMAL)  # the user's lines and comments stay as written
    assert load_params(path) == before  # the defaults written are the ones imgclass used
    assert missing_keys(yaml.safe_load(text), REPO / "dvc.yaml") == []
    assert fill_missing(path, REPO / "dvc.yaml") == []  # a second fill writes nothing
    assert path.read_text() == text


def test_an_invalid_file_is_not_filled(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(MINIMAL.replace("epochs", "epochz"))
    proc = check_params(path, "--fill")
    assert proc.returncode == 1 and "models.net.epochz: unknown key" in proc.stderr
    assert path.read_text() == MINIMAL.replace("epochs", "epochz")


def test_the_repository_params_need_nothing():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert missing_keys(raw, REPO / "dvc.yaml") == []


def test_a_declared_key_missing_inside_a_section_is_named_with_its_default(tmp_path):
    """validate declares review.image_size (it sizes the working copies): a file whose review section
    lacks it cannot be appended to, so --fill says what to add; without the section it fills it whole."""
    path = tmp_path / "params.yaml"
    path.write_text(MINIMAL + "review:\n  auto_drop: none\n")
    proc = check_params(path, "--fill")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "params.yaml: review.image_size is declared by dvc.yaml but missing; add `image_size: 128` to its "
        "`review:` section"]
    path.write_text(MINIMAL)
    assert "review.image_size" not in missing_keys(yaml.safe_load(MINIMAL), REPO / "dvc.yaml")
    assert check_params(path, "--fill").returncode == 0
    assert yaml.safe_load(path.read_text())["review"]["image_size"] == 128
