"""Stage evaluate@NAME: the model on the test split only; metrics, report, plots, saved probabilities."""

import sys
from pathlib import Path

import numpy as np

from imgclass import explain, files, plots, tracking
from imgclass.checkpoint import load_trained
from imgclass.devices import resolve_device
from imgclass.evaluate import classification_metrics, predict_probs, report_table
from imgclass.params import load_params
from imgclass.split import load_split

SCALARS = ("accuracy", "top3_accuracy", "top2_accuracy", "top1_accuracy", "macro_f1", "weighted_f1", "ece", "n")


def main(name: str) -> int:
    params = load_params()
    device = resolve_device(params.device)
    model, meta, prep = load_trained(Path("models") / name / "model.pt", device)
    classes = meta["classes"]
    test_x, test_y = load_split(Path("data/split"), "test", classes)
    val_x, val_y = load_split(Path("data/split"), "val", classes)
    test_probs = predict_probs(model, prep, test_x, device)
    val_probs = predict_probs(model, prep, val_x, device)
    metrics = classification_metrics(test_y, test_probs, classes)

    out = Path("plots/eval") / name
    scalars = {k: metrics[k] for k in SCALARS if k in metrics}
    files.write_json(f"metrics/eval/{name}.json", scalars)
    files.write_json(out / "report.json", metrics)
    files.write_text(out / "report.txt", report_table(metrics, classes))
    files.write_csv(out / "confusion.csv", [{"actual": classes[t], "predicted": classes[p]}
                                            for t, p in zip(test_y, test_probs.argmax(axis=1))], ["actual", "predicted"])
    cm = np.array(metrics["confusion"])
    pngs = [plots.confusion_png(cm, classes, out / "confusion.png", title=f"{name}: confusion (counts)"),
            plots.confusion_png(cm, classes, out / "confusion_normalized.png", normalize=True),
            plots.reliability_png(metrics["reliability"], metrics["ece"], out / "reliability.png"),
            explain.tsne_png(explain.penultimate_features(model, prep, test_x, device), test_y, classes,
                             out / "tsne.png", seed=params.seed),
            explain.gradcam_png(model, prep, test_x, test_y, test_probs, classes, out / "gradcam.png", seed=params.seed),
            explain.top_losses_png(test_x, test_y, test_probs, classes, out / "top_losses.png")]
    with files.atomic_path(Path("data/preds") / f"{name}.npz") as tmp, tmp.open("wb") as f:
        np.savez(f, test_probs=test_probs, test_labels=test_y, val_probs=val_probs, val_labels=val_y,
                 classes=np.array(classes))
    tracking.log_to_run(meta.get("mlflow_run_id"), {f"test_{k}": v for k, v in scalars.items()},
                        [out / "report.json", out / "report.txt", *pngs])
    print(f"evaluate {name}: " + " ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
