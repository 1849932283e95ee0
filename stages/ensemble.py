"""Stage ensemble: votes over the members' saved test probabilities, compared with every member."""

import sys
from pathlib import Path

import numpy as np

from imgclass import ensemble, files, plots
from imgclass.params import load_params


def main() -> int:
    params = load_params()
    members = params.ensemble_members
    saved = [np.load(Path("data/preds") / f"{m}.npz") for m in members]
    y_test = saved[0]["test_labels"]
    if any(not np.array_equal(s["test_labels"], y_test) for s in saved):
        print("ensemble: members were evaluated on different test splits; rerun `dvc repro`", file=sys.stderr)
        return 1
    val_accuracy = [float((s["val_probs"].argmax(axis=1) == s["val_labels"]).mean()) for s in saved]
    tie_break = params.ensemble.tie_break or members[int(np.argmax(val_accuracy))]
    table = ensemble.compare(members, np.stack([s["test_probs"] for s in saved]), y_test, val_accuracy, tie_break)
    files.write_json("metrics/ensemble.json", {"accuracy": table["hard_vote"], "tie_break": tie_break,
                                               "members": dict(zip(members, val_accuracy)), "test_accuracy": table})
    files.write_csv("plots/ensemble/comparison.csv", [{"method": k, "test_accuracy": v} for k, v in table.items()],
                    ["method", "test_accuracy"])
    plots.bar_png(table, Path("plots/ensemble/comparison.png"), title="members, votes and the oracle")
    width = max(map(len, table))
    print("\n".join(f"{k:<{width}}  {v:.4f}" for k, v in table.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
