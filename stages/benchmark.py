"""Stage benchmark: training and inference speed by model, batch size and device."""

import sys
from pathlib import Path

from imgclass import files
from imgclass.benchmarking import benchmark
from imgclass.config.params import load_params
from imgclass.data.image_cache import load_split


def main() -> int:
    params = load_params()
    images, labels = load_split(Path("data/split"), "train", list(params.classes), params.image_size)
    result = benchmark.run(params, images, labels, n_train=len(labels))
    files.write_json("metrics/benchmark.json", benchmark.headline(result["rows"]))
    files.write_json("reports/benchmark.json", result)  # machine, devices, every row, the fastest batch size per series
    # arch_device: one line per architecture x device in dvc.yaml's throughput plots
    files.write_csv("plots/benchmark/batch_size.csv",
                    [{**r, "arch_device": f"{r['model']}@{r['device']}"} for r in result["rows"]],
                    ["model", "device", "arch_device", "batch_size", "train_images_per_s", "infer_images_per_s",
                     "epoch_seconds"])
    files.write_text("plots/benchmark/table.md", benchmark.markdown_table(result["rows"], result["machine"]))
    print(summary_line(result))
    return 0


def summary_line(result: dict) -> str:
    if not result["rows"]:
        unavailable = ", ".join(dev for dev, name in result["devices"].items() if name == "unavailable")
        return f"benchmark: nothing measured; unavailable devices: {unavailable or 'none'}"
    best = max(result["rows"], key=lambda row: row["train_images_per_s"])
    return (f"benchmark: {len(result['rows'])} configurations; fastest training {best['train_images_per_s']:.1f} "
            f"images/s ({best['model']} on {best['device']}, batch {best['batch_size']}); "
            f"table in plots/benchmark/table.md")


if __name__ == "__main__":
    sys.exit(main())
