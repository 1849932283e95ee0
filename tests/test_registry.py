import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import torch
import yaml

from conftest import tiny_params_dict
from imgclass import cli, files
from imgclass.evaluation import ensemble_report
from imgclass.model import models
from imgclass.model.checkpoint import load_trained, save_checkpoint
from imgclass.evaluation.evaluate import SavedPredictions, predict_probs
from imgclass.serving.predict import PredictError
from imgclass.serving.registry import (PATH_REFUSED, SERVE_ROOT_ENV, best_model, choose_models, register, registered_uri,
                               serving_imports, serving_requirements)
from test_predict import save_predictions, split_images

SERVER_START_S = 180  # mlflow + torch imports on two busy cores
REQUEST_S = 60
MEMBER = {"arch": "cnn_simple", "epochs": 2, "batch_size": 32}


@pytest.fixture(scope="module")
def store(fashion_split, tiny_checkpoint, tmp_path_factory):
    """A project folder after `dvc repro`: params members m and copy (the same network), their saved
    predictions and the ensemble's metrics, a stale models/old that params no longer names, an empty
    sqlite store, MLFLOW_TRACKING_URI pointing at it and the working directory inside it."""
    root = tmp_path_factory.mktemp("registry")
    checkpoint = root / "models" / "m" / "model.pt"  # conftest's session checkpoint, copied: tests change it
    shutil.copytree(tiny_checkpoint.parent, checkpoint.parent)
    shutil.copytree(checkpoint.parent, root / "models" / "copy")
    _, meta, _ = load_trained(checkpoint)
    torch.manual_seed(2)
    save_checkpoint(root / "models" / "old" / "model.pt", models.build_model(meta["arch"], 4), {**meta, "name": "old"})
    params = tiny_params_dict(models={"m": MEMBER, "copy": MEMBER})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))  # params order is vote order
    for name in ("m", "copy"):
        save_predictions(root / "models" / name / "model.pt", fashion_split[1], root / "data" / "preds" / f"{name}.npz")
    ensemble_report.write_report(["m", "copy"], root / "data" / "preds", root / "metrics" / "ensemble.json",
                                 root / "reports" / "ensemble.json", root / "plots" / "ensemble")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv(SERVE_ROOT_ENV, raising=False)
        mp.chdir(root)
        yield root


@pytest.fixture(scope="module")
def expected(store, fashion_split):
    """(3 test PNG paths, their probabilities from the checkpoint, the classes)."""
    model, meta, prep = load_trained(store / "models" / "m" / "model.pt")
    paths, images = split_images(fashion_split[1], 3)
    return paths, predict_probs(model, prep, images), meta["classes"]


@pytest.fixture(scope="module")
def registered(store):
    return register("best", "imgclass-test")


def write_preds(path: Path, val_right: int, test_right: int, n: int = 10) -> None:
    """Saved predictions of 2 classes with val_right of n validation and test_right of n test images right."""
    labels = np.zeros(n, dtype=np.int64)
    def probs(right):
        return np.array([[0.9, 0.1]] * right + [[0.1, 0.9]] * (n - right))
    SavedPredictions(["x", "y"], probs(val_right), labels, probs(test_right), labels, "0" * 64).save(path)


def test_best_model_is_chosen_on_validation_never_on_test(tmp_path):
    write_preds(tmp_path / "a.npz", val_right=7, test_right=9)   # the best on test
    write_preds(tmp_path / "b.npz", val_right=8, test_right=6)   # the best on validation
    write_preds(tmp_path / "c.npz", val_right=8, test_right=5)   # tied on validation, later in params
    write_preds(tmp_path / "stale.npz", val_right=10, test_right=10)  # not in params
    assert best_model(["a", "b", "c"], tmp_path) == "b"
    with pytest.raises(PredictError, match="no evaluated model"):
        best_model(["a"], tmp_path / "missing")


@pytest.mark.slow  # an MLflow store with the evaluated members registered in it (the `store` fixture)
def test_best_refuses_a_checkpoint_changed_since_evaluation(store, tmp_path):
    shutil.copytree(store / "models", tmp_path / "models")
    torch.manual_seed(5)
    _, meta, _ = load_trained(tmp_path / "models" / "m" / "model.pt")
    save_checkpoint(tmp_path / "models" / "m" / "model.pt", models.build_model(meta["arch"], 4), meta)
    with pytest.raises(PredictError, match="not the checkpoint the evaluate stage evaluated"):
        choose_models("best", tmp_path / "models")
    assert list(choose_models("best", store / "models").checkpoints) == ["m"]


@pytest.mark.slow  # an MLflow store with the evaluated members registered in it (the `store` fixture)
def test_registered_pyfunc_takes_base64_images_and_refuses_paths_by_default(registered, expected):
    import mlflow

    assert str(registered.version) == "1" and registered.tags["members"] == "m"
    paths, probs, classes = expected
    loaded = mlflow.pyfunc.load_model(registered_uri(registered))
    frame = pd.DataFrame({"image": [base64.b64encode(paths[0].read_bytes()).decode(), "not base64!", None, None],
                          "path": [None, None, str(paths[1]), "/no/such/file.png"]})
    out = loaded.predict(frame)
    assert list(out["status"]) == ["ok", "error", "error", "error"]
    assert list(out["reason"][1:]) == ["not_base64", PATH_REFUSED, PATH_REFUSED]
    assert out["detail"][2] == out["detail"][3]  # an existing and a missing file get the same answer
    assert out["class"][0] == classes[probs[0].argmax()]
    np.testing.assert_allclose([out["probabilities"][0][c] for c in classes], probs[0], atol=1e-6)


@pytest.mark.slow  # an MLflow store with the evaluated members registered in it (the `store` fixture)
def test_paths_are_read_only_under_the_operators_root(registered, expected, tmp_path, monkeypatch):
    import mlflow

    paths, probs, classes = expected
    root = tmp_path / "served"
    (root / "in").mkdir(parents=True)
    shutil.copy(paths[1], root / "in" / "shoe.png")
    outside = tmp_path / "secret.png"
    shutil.copy(paths[1], outside)
    (root / "link.png").symlink_to(outside)
    monkeypatch.setenv(SERVE_ROOT_ENV, str(root))
    loaded = mlflow.pyfunc.load_model(registered_uri(registered))
    asked = ["in/shoe.png", str(root / "in" / "shoe.png"), "in/missing.png",
             "../secret.png", str(outside), "link.png", "in/../../secret.png", "../nothing-here.png", "/etc/passwd"]
    out = loaded.predict(pd.DataFrame({"path": asked}))
    assert list(out["status"]) == ["ok", "ok"] + ["error"] * 7
    assert out["class"][0] == out["class"][1] == classes[probs[1].argmax()]
    assert out["reason"][2] == "not_found"  # inside the root the operator chose, existence may show
    refused = out[3:]
    assert set(refused["reason"]) == {PATH_REFUSED} and refused["detail"].nunique() == 1


@pytest.mark.slow  # an MLflow store with the evaluated members registered in it (the `store` fixture)
def test_ensemble_registers_the_evaluated_members_and_vote(store, registered, expected, capsys):
    import mlflow

    assert cli.main(["register", "--model", "ensemble", "--name", "imgclass-test"]) == 0
    vote = files.read_json(store / "reports" / "ensemble.json")["chosen_vote"]
    assert f"models:/imgclass-test/2 (members: m, copy; vote: {vote})" in capsys.readouterr().out  # not old
    paths, probs, classes = expected
    image = base64.b64encode(paths[2].read_bytes()).decode()
    out = mlflow.pyfunc.load_model("models:/imgclass-test/2").predict(pd.DataFrame({"image": [image]}))
    assert out["class"][0] == classes[probs[2].argmax()]  # two identical members vote as one
    assert cli.main(["register", "--model", "nope"]) == 1
    assert "no trained model" in capsys.readouterr().err


LOAD_WITHOUT_IMGCLASS = """
import importlib.util, json, sys
from pathlib import Path
sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "imgclass").is_dir()]  # the editable install
class Block:  # training-only libraries must not be needed either
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("kornia", "imgclass_blocked"):
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Block())
assert importlib.util.find_spec("imgclass") is None, "imgclass is still importable"
import mlflow, pandas as pd
out = mlflow.pyfunc.load_model(sys.argv[1]).predict(pd.DataFrame({"image": [sys.argv[2]]}))
import imgclass
print(json.dumps({"imgclass": imgclass.__file__, "class": out["class"][0],
                  "kornia": any(m.split(".")[0] == "kornia" for m in sys.modules)}))
"""


@pytest.mark.slow  # a fresh interpreter loading the model: half a minute
def test_registered_model_loads_where_imgclass_is_not_installed(registered, expected, store):
    paths, probs, classes = expected
    image = base64.b64encode(paths[0].read_bytes()).decode()
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_IMGCLASS, registered_uri(registered), image],
                          capture_output=True, text=True, timeout=300, cwd=store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["class"] == classes[probs[0].argmax()] and not result["kornia"]
    assert "/code/imgclass/" in result["imgclass"]  # the copy logged with the model


def test_serving_requirements_are_what_the_served_code_imports():
    imports = serving_imports()
    assert {"torch", "numpy", "PIL", "pandas", "mlflow", "sklearn", "pydantic", "yaml"} <= imports
    # training, tracking, the CLI; timm and torchvision only for an arch they build
    assert not {"kornia", "dvclive", "rich", "timm", "torchvision"} & imports
    pins = serving_requirements(["cnn_simple"])
    names = {pin.split("==")[0].lower().replace("_", "-") for pin in pins}
    assert {"torch", "pillow", "scikit-learn", "pyyaml", "mlflow"} <= names and "kornia" not in names
    assert not {"timm", "torchvision"} & names
    assert "timm" in {p.split("==")[0] for p in serving_requirements(["efficientnet_lite0"])}
    with_torchvision = serving_requirements(["resnet18", "torchvision/mobilenet_v3_small"])
    assert "torchvision" in {p.split("==")[0] for p in with_torchvision}
    assert all("+" not in pin for pin in pins)  # local versions (torch's +cu130) are not on PyPI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_ping(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow models serve not up after {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """The server and its workers: it was started in a session (process group) of its own."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


@pytest.mark.slow  # a real `mlflow models serve`: half a minute
def test_served_model_classifies_a_posted_png(registered, expected, store):
    paths, probs, classes = expected
    bin_dir = Path(sys.executable).parent
    port, log = free_port(), store / "serve.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(bin_dir / "mlflow"), "models", "serve", "-m", registered_uri(registered), "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_ping(url, server, log)
        image = base64.b64encode(paths[0].read_bytes()).decode()
        response = requests.post(f"{url}/invocations", json={"dataframe_records": [{"image": image}]},
                                 timeout=REQUEST_S)
        assert response.status_code == 200, response.text
        row = response.json()["predictions"][0]
        assert row["status"] == "ok" and row["class"] == classes[probs[0].argmax()]
        np.testing.assert_allclose([row["probabilities"][c] for c in classes], probs[0], atol=1e-6)
    finally:
        stop(server)
