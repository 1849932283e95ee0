"""Stage train@NAME: train one model from params.models.NAME on data/split; best weights to models/NAME."""

import sys
from pathlib import Path

from imgclass import files
from imgclass.params import load_params
from imgclass.plots import training_curves_png
from imgclass.train import train


def main(name: str) -> int:
    params = load_params()
    if name not in params.models:
        print(f"train: no model {name!r} in params.yaml models ({', '.join(params.models)})", file=sys.stderr)
        return 2
    result = train(name, params, split_dir=Path("data/split"), model_dir=Path("models") / name,
                   resume_dir=Path("data/checkpoints") / name, dvclive_dir=Path("dvclive") / name)
    history = result.pop("history")
    files.write_json(f"metrics/train/{name}.json", result)
    training_curves_png(history, Path(f"plots/train/{name}.png"), title=name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
