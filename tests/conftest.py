"""Shared fixtures: small real data from Fashion-MNIST (Debian's files) and tiny params."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
REPO = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
FOUR_CLASSES = ["trouser", "bag", "sneaker", "dress"]
IN_CI = os.environ.get("CI", "").lower() == "true"
# Under pytest-xdist each worker, and every process it starts (stages, dvc, torchrun), gets its share of
# the cores for torch's threads instead of all of them: 6 % faster for make test-fast on 2 cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    from imgclass.devices import usable_cpus

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cpus() // _WORKERS)))


# make test runs the suite on every core (pytest-xdist, --dist loadscope, scheduled here). A module's
# tests stay on one worker, so that a module-scoped repository is built once; the modules that start
# from the session's finished pipeline share a worker, so that it is built once too. xdist's own
# loadgroup cannot do this under pytest 9.2: it marks groups by editing node ids, which pytest no longer
# reads (pytest-dev/pytest-xdist#1386), and every module ran on both workers.
SHARED_WORKER = {"test_pipeline": "finished_pipeline", "test_parallel_experiments": "finished_pipeline"}


def work_unit(nodeid: str) -> str:
    """The tests that run together on one worker: a module, or the modules that share a session repository."""
    path = nodeid.split("::", 1)[0]
    return SHARED_WORKER.get(Path(path).stem, path)


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: a hook of pytest-xdist's, known only with it
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByModule(config, log)


def pytest_collection_modifyitems(items):
    # The longest work first, so that neither worker is left alone with a long tail: the modules that
    # share the session's pipeline (its build, then their experiments), then the other modules with slow
    # tests (repository builds). The sort is stable: a module's tests keep their order.
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.module.__name__ not in SHARED_WORKER, item.module.__name__ not in slow))


def require(present: bool, what: str) -> None:
    """Skip a test whose offline data or tool is missing on a developer's machine; in CI (CI=true),
    where `make test` installs everything, a missing one is a failure, never a silent skip."""
    if present:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: make setup should have installed it", pytrace=False)
    pytest.skip(f"{what} is missing (make setup installs it)")


def require_fashion() -> None:
    require(FASHION.exists(), "Debian's dataset-fashion-mnist")


def require_tuxpaint() -> None:
    require(TUXPAINT.exists(), "Debian's tuxpaint-stamps-default")


def tiny_params_dict(**overrides) -> dict:
    """The repository's params.yaml shrunk to seconds of work."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["classes"] = FOUR_CLASSES
    raw["scrape"]["max_per_class"] = 60
    # min_steps 0: the epochs asked for (the default 100 steps would make 6 steps an epoch train 17 epochs)
    raw["models"] = {"cnn_simple": {"arch": "cnn_simple", "epochs": 2, "min_steps": 0, "batch_size": 32, "lr": 0.01}}
    raw["benchmark"] = {"archs": ["cnn_simple"], "batch_sizes": [16, 32], "images": 64, "repeats": 1, "warmup": 0}
    for key, value in overrides.items():
        raw[key] = value
    return copy.deepcopy(raw)


def make_split(params, root: Path) -> Path:
    """root/clean (PNGs) and root/split (CSVs), as the validate and split stages write them."""
    from imgclass import files
    from imgclass.data import sources
    from imgclass.data.split import SPLIT_FIELDS, SPLITS, assign_splits

    rows = sources.collect(params, root / "clean")  # small PNGs: their working copies would be identical
    split_rows = [{"path": r["path"], "label": r["class"], "sha256": r["sha256"], "group": r["sha256"]} for r in rows]
    splits = assign_splits(split_rows, params.split, params.seed)
    for name in SPLITS:
        files.write_csv(root / "split" / f"{name}.csv", splits[name], SPLIT_FIELDS)
    return root / "split"


@pytest.fixture(scope="session")
def fashion_split(tmp_path_factory):
    """(params, split_dir): 4 Fashion-MNIST classes x 60 images, split and cached at 28 px."""
    require_fashion()
    from imgclass.config.params import parse_params

    params = parse_params(tiny_params_dict())
    return params, make_split(params, tmp_path_factory.mktemp("fashion"))


@pytest.fixture(scope="session")
def tiny_checkpoint(fashion_split, tmp_path_factory) -> Path:
    """models/m/model.pt: a cnn_simple trained for two epochs on fashion_split, trained once a session
    (test_predict.train_tiny's network). Read only: a test that changes it copies the folder first."""
    from imgclass.training.train import train
    from test_train import with_model

    params, split_dir = fashion_split
    root = tmp_path_factory.mktemp("tiny-checkpoint")
    train("m", with_model(params, epochs=2), split_dir, root / "models" / "m", root / "resume", root / "live",
          track=False)
    return root / "models" / "m" / "model.pt"


PIPELINE_MODELS = ("cnn_simple", "cnn_medium")


@pytest.fixture(scope="session")
def finished_pipeline(tmp_path_factory) -> Path:
    """A scratch repository after the real `dvc repro` of tiny params with two models (3 epochs each),
    committed: the baseline that test_pipeline and test_parallel_experiments both start from. Read
    only: each module works in its own copy (scratch_repo.copy_finished), so no test sees another's
    experiments."""
    require_fashion()
    from scratch_repo import make_repo, run

    raw = tiny_params_dict()
    raw["models"] = {m: {"arch": m, "epochs": 3, "min_steps": 0, "batch_size": 32, "lr": 0.01}
                     for m in PIPELINE_MODELS}
    repo = make_repo(tmp_path_factory.mktemp("finished") / "repo", raw)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "first run"], repo)
    return repo
