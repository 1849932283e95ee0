from pathlib import Path

from imgclass.tracking import flatten, main_repo_root, tracking_uri


def test_experiment_copies_resolve_to_the_main_repository(tmp_path):
    (tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc123").mkdir(parents=True)
    assert main_repo_root(tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc123") == tmp_path
    assert main_repo_root(tmp_path / ".dvc" / "tmp" / "exps" / "tmpxyz" / "sub") == tmp_path


def test_workspace_resolves_to_the_nearest_repository(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "stages").mkdir()
    assert main_repo_root(tmp_path / "stages") == tmp_path
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path / "stages") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_flatten_nested_params():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
