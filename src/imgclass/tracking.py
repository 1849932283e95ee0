"""The one place that talks to MLflow and DVCLive.

MLflow's store defaults to `sqlite:///<main repo>/mlflow.db` with artifacts in `<main repo>/mlartifacts`.
"Main repo" matters: `dvc exp run --queue` / `--temp` run stages in a copy under
`<repo>/.dvc/tmp/exps/...`, and their runs must land in the store the user opens with `make ui`.
MLFLOW_TRACKING_URI, when set, wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EXPERIMENT = "imgclass"
_EXPS_MARKER = (".dvc", "tmp", "exps")

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def main_repo_root(start: Path | None = None) -> Path:
    """The user's repository, also from inside a DVC experiment's temporary copy."""
    path = (start or Path.cwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - len(_EXPS_MARKER) + 1):
        if parts[i:i + len(_EXPS_MARKER)] == _EXPS_MARKER:
            return Path(*parts[:i])
    for candidate in (path, *path.parents):
        if (candidate / ".dvc").is_dir() or (candidate / ".git").exists():
            return candidate
    return path


def tracking_uri(start: Path | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{main_repo_root(start) / 'mlflow.db'}"


def artifact_root(start: Path | None = None) -> str:
    return (main_repo_root(start) / "mlartifacts").as_uri()


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, for MLflow params."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def use_experiment() -> None:
    """Point MLflow at the project's store and experiment (artifacts beside the store)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        try:
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root())
        except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel stage
            pass
    mlflow.set_experiment(EXPERIMENT)


class Tracker:
    """One training run: MLflow run + DVCLive directory, logged to in step with the epochs."""

    def __init__(self, run_name: str, params: dict, dvclive_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.live = None
        self.run = None
        if not enabled:
            return
        import mlflow
        from dvclive import Live

        use_experiment()
        exp_name = os.environ.get("DVC_EXP_NAME")
        self.run = mlflow.start_run(run_name=f"{run_name}" + (f"@{exp_name}" if exp_name else ""),
                                    tags={"model": run_name, "dvc_exp": exp_name or "workspace"})
        mlflow.log_params({k: str(v) for k, v in flatten(params).items()})
        self.live = Live(dir=str(dvclive_dir), dvcyaml=False, save_dvc_exp=False, report=None)

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        import mlflow

        mlflow.log_metrics(metrics, step=step)
        for name, value in metrics.items():
            self.live.log_metric(name.replace("_", "/", 1), value)
        self.live.next_step()

    def log_summary(self, metrics: dict[str, float]) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_metrics({f"best_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})

    def log_model(self, model, example, meta: dict) -> None:
        """The model with its class names and preprocessing, so MLflow alone can serve it."""
        if not self.enabled:
            return
        import mlflow
        import torch

        mlflow.log_dict(meta, "imgclass_meta.json")
        mlflow.pytorch.log_model(
            model, name="model", input_example=example,
            # Listing requirements explicitly skips MLflow's ~15 s environment inference.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "torchvision", "timm"],
            metadata={"classes": meta["classes"], "preprocessing": meta["preprocessing"]},
        )

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_artifact(str(path), artifact_path=folder)

    def close(self, status: str = "FINISHED") -> None:
        if not self.enabled:
            return
        import mlflow

        self.live.end()
        mlflow.end_run(status=status)


def log_to_run(run_id: str | None, metrics: dict[str, float], artifacts: list[Path]) -> None:
    """Attach evaluation results to the training run recorded in the model's checkpoint."""
    if not run_id:
        return
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
