"""The committed baseline (dvc.lock and metrics/ of the default run) matches the pipeline as declared,
so `dvc exp show`, `dvc metrics diff` and `dvc plots diff` compare against main in a fresh clone."""

from __future__ import annotations

import json

import yaml

from conftest import REPO


def declared_stages() -> set[str]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    return {f"{name}@{model}" if "foreach" in stage else name
            for name, stage in stages.items() for model in (models if "foreach" in stage else [None])}


def test_committed_lock_names_the_stages_of_dvc_yaml():
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    assert set(lock["stages"]) == declared_stages()


def test_committed_lock_was_run_with_the_committed_params():
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in lock.items():
        for key, value in stage.get("params", {}).get("params.yaml", {}).items():
            node = params
            for part in key.split("."):
                node = node[part]
            assert node == value, f"dvc.lock {name}: {key} was {value!r}, params.yaml has {node!r}; rerun make run"


def test_every_declared_metrics_file_is_committed():
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in lock:
        stage, _, model = name.partition("@")
        body = stages[stage].get("do", stages[stage])
        for entry in body.get("metrics", []):
            path = REPO / next(iter(entry)).replace("${key}", model)
            assert path.exists(), f"{path.relative_to(REPO)} is not committed"
            assert json.loads(path.read_text()), path
