"""A scratch copy of the repository where tests run the real `dvc repro` with edited params."""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from conftest import REPO

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command of the venv (dvc, imgclass, python) in `cwd`; with check, fail showing its output."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store must resolve to the repository
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if cmd[:2] == ["dvc", "repro"] and proc.returncode == 0:
        keep_review_backbones(Path(cwd) / "data" / "embeddings")
    return proc


# The review stage exports its backbone to ONNX (seconds of torch.onnx.export) into its persistent
# output data/embeddings/<backbone key>/, beside the embeddings. Every scratch repository would export
# the same file again: the first export of each key (model, image size, version) is kept here for the
# test session and put in place in every later repository before its first `dvc repro`. The embeddings
# themselves are never shared: each review still embeds and scores its own images.
ONNX_FILE = "backbone.onnx"
_BACKBONES: Path | None = None


def _backbones() -> Path:
    global _BACKBONES
    if _BACKBONES is None:
        _BACKBONES = Path(tempfile.mkdtemp(prefix="imgclass-test-onnx-"))
        atexit.register(shutil.rmtree, _BACKBONES, True)
    return _BACKBONES


def keep_review_backbones(embeddings: Path) -> None:
    """Keep the ONNX backbones of a review cache folder (a repository's data/embeddings) not kept yet."""
    for onnx in embeddings.glob(f"*/{ONNX_FILE}"):
        kept = _backbones() / onnx.parent.name / ONNX_FILE
        if not kept.exists():
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(onnx, kept.with_suffix(".part"))
            kept.with_suffix(".part").rename(kept)


def review_backbone_key(params: dict) -> str:
    """The data/embeddings folder that the review stage of a params.yaml (defaults filled) uses."""
    from imgclass.config.params import ReviewParams
    from imgclass.review.embeddings import BackboneSpec

    review = ReviewParams(**(params.get("review") or {}))
    return BackboneSpec(review.model, review.image_size, review.hflip).key


def seed_review_backbones(embeddings: Path, key: str = "*") -> None:
    """Put the kept ONNX backbone(s) of `key` in a review cache folder, as if an earlier review had
    exported it there."""
    for kept in _backbones().glob(f"{key}/{ONNX_FILE}"):
        target = embeddings / kept.parent.name / ONNX_FILE
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kept, target)


def copy_finished(src: Path, dst: Path) -> Path:
    """A private copy of a repository that tests built and ran (git, DVC cache, outputs, mlflow.db):
    seconds, where running its stages again takes minutes. Links into src are pointed at the copy,
    and the MLflow store's artifact locations too, so that nothing the copy does reaches src."""
    shutil.copytree(src, dst, symlinks=True)
    for path in dst.rglob("*"):
        if path.is_symlink():
            target = Path(os.readlink(path))
            if target.is_absolute() and target.is_relative_to(src):
                path.unlink()
                path.symlink_to(dst / target.relative_to(src))
    if (dst / "mlflow.db").exists():
        old, new = src.resolve().as_uri(), dst.resolve().as_uri()
        with sqlite3.connect(dst / "mlflow.db") as db:
            db.execute("update experiments set artifact_location = replace(artifact_location, ?, ?)", (old, new))
            db.execute("update runs set artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
        db.close()
    return dst


def copy_repository(dst: Path) -> None:
    """The project's files as git sees them (tracked and new), without tests and committed results."""
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        source = REPO / name
        if source.is_file() and not name.startswith(("tests/", "metrics/", "reports/", "plots/", "dvclive/")) \
                and name != "dvc.lock":
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dst / name)


def make_repo(dst: Path, params: dict) -> Path:
    """A committed git + DVC copy of the project with `params` as its params.yaml."""
    copy_repository(dst)
    write_params(dst, params)
    # not committed: data/embeddings is the review stage's (persistent) output
    seed_review_backbones(dst / "data" / "embeddings", review_backbone_key(params))
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.org"],
                ["git", "config", "user.name", "ci"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        run(cmd, dst)
    return dst


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
