"""Stage ensemble: votes over the members' saved probabilities, chosen on validation, reported on test."""

import sys
from pathlib import Path

from imgclass.config.params import load_params
from imgclass.evaluation import ensemble_report
from imgclass.evaluation.ensemble import EnsembleError
from imgclass.tracking import mlflow_runs, training_curves


def main() -> int:
    params = load_params()
    try:
        result = ensemble_report.write_report(params.ensemble_members, Path("data/preds"),
                                              Path("metrics/ensemble.json"), Path("reports/ensemble.json"),
                                              Path("plots/ensemble"), params.ensemble.tie_break)
    except (EnsembleError, FileNotFoundError, ValueError) as exc:
        print(f"ensemble: {exc}", file=sys.stderr)
        return 1
    print(ensemble_report.table(result))
    # every model's validation curves in one table: dvc.yaml's plots draw a line per model from it
    training_curves.write_curves(list(params.models), Path("dvclive"), Path("plots/compare/curves.csv"))
    mlflow_runs.log_pipeline_result(result.record(), [Path("plots/ensemble/comparison.png")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
