"""Stage train@NAME: train one model from params.models.NAME on data/split; best weights to models/NAME.

With distributed.nproc_per_node > 1 or distributed.nnodes > 1 the stage runs itself again under
torchrun, one process per GPU (or share of the CPU); the first process of the machine with
IMGCLASS_NODE_RANK=0 writes the outputs, the other machines' workspaces are left as they were."""

import subprocess
import sys
from pathlib import Path

from imgclass import files
from imgclass.config.params import load_params
from imgclass.plots import training_curves_png
from imgclass.training import distributed
from imgclass.training.train import train


def main(name: str) -> int:
    params = load_params()
    if name not in params.models:
        print(f"train: no model {name!r} in params.yaml models ({', '.join(params.models)})", file=sys.stderr)
        return 2
    dist = params.distributed
    if dist.processes > 1 and not distributed.launched_by_torchrun():
        return subprocess.call(distributed.torchrun_command(__file__, [name], dist.nproc_per_node, dist.nnodes,
                                                            dist.rdzv_endpoint, run_id=f"imgclass-{name}"))
    world = distributed.World.from_env()
    with distributed.resume_dir(Path("data/checkpoints") / name, world) as checkpoints:
        result = train(name, params, split_dir=Path("data/split"), model_dir=Path("models") / name,
                       resume_dir=checkpoints, dvclive_dir=Path("dvclive") / name)
    if world.is_main:
        history = result.pop("history")
        files.write_json(f"metrics/train/{name}.json", result)
        training_curves_png(history, Path(f"plots/train/{name}.png"), title=name)
        print(summary_line(name, result))
    return 0


def summary_line(name: str, summary: dict) -> str:
    processes = summary["processes"]
    return (f"train {name}: kept epoch {summary['best_epoch'] + 1} of {summary['epochs_run']} "
            f"(val_accuracy {summary['val_accuracy']:.4f}, val_loss {summary['val_loss']:.4f}); "
            f"{summary['train_seconds']:.1f} s on {summary['device']}"
            + (f", {processes} processes" if processes > 1 else ""))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
