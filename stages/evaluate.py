"""Stage evaluate@NAME: metrics, report and plots on the test split; val and test probabilities saved."""

import sys
from pathlib import Path

from imgclass.config.params import load_params
from imgclass.devices import resolve_device
from imgclass.evaluation import evaluation_report
from imgclass.tracking import mlflow_runs


def main(name: str) -> int:
    params = load_params()
    report = evaluation_report.evaluate_model(
        name, Path("models") / name / "model.pt", Path("data/split"), plots_dir=Path("plots/eval") / name,
        preds_path=Path("data/preds") / f"{name}.npz", metrics_path=Path("metrics/eval") / f"{name}.json",
        device=resolve_device(params.device), seed=params.seed, tta=params.evaluate.tta)
    mlflow_runs.log_to_run(report.mlflow_run_id, report.tracked_metrics(), report.artifacts)
    print(report.summary_line())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
