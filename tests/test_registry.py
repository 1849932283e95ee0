import base64
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

from imgclass import cli, files
from imgclass.checkpoint import load_trained
from imgclass.evaluate import predict_probs
from imgclass.predict import PredictError
from imgclass.registry import best_model, register, registered_uri
from test_predict import split_images, train_tiny

SERVER_START_S = 180  # mlflow + torch imports on two busy cores
REQUEST_S = 60


@pytest.fixture(scope="module")
def store(fashion_split, tmp_path_factory):
    """A project folder with models/{m,copy}, metrics/eval, an empty sqlite store, MLFLOW_TRACKING_URI
    pointing at it and the working directory inside it (so artifacts land there too)."""
    root = tmp_path_factory.mktemp("registry")
    checkpoint = train_tiny(fashion_split, root / "models")
    shutil.copytree(checkpoint.parent, root / "models" / "copy")
    files.write_json(root / "metrics" / "eval" / "m.json", {"accuracy": 0.9})
    files.write_json(root / "metrics" / "eval" / "copy.json", {"accuracy": 0.5})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
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


def test_best_model_is_the_highest_test_accuracy(tmp_path):
    files.write_json(tmp_path / "a.json", {"accuracy": 0.7})
    files.write_json(tmp_path / "b.json", {"accuracy": 0.8})
    files.write_json(tmp_path / "broken.json", {"loss": 0.1})
    assert best_model(tmp_path) == "b"
    with pytest.raises(PredictError, match="no evaluated model"):
        best_model(tmp_path / "missing")


def test_registered_pyfunc_takes_base64_images_and_paths(registered, expected):
    import mlflow

    assert str(registered.version) == "1" and registered.tags["members"] == "m"
    paths, probs, classes = expected
    loaded = mlflow.pyfunc.load_model(registered_uri(registered))
    frame = pd.DataFrame({"image": [base64.b64encode(paths[0].read_bytes()).decode(), None, "not base64!", None],
                          "path": [None, str(paths[1]), None, "missing.png"]})
    out = loaded.predict(frame)
    assert list(out["status"]) == ["ok", "ok", "error", "error"]
    assert list(out["reason"][2:]) == ["not_base64", "not_found"]
    for i in range(2):
        assert out["class"][i] == classes[probs[i].argmax()]
        got = [out["probabilities"][i][c] for c in classes]
        np.testing.assert_allclose(got, probs[i], atol=1e-6)


def test_ensemble_registers_every_member_and_cli_names_the_version(store, registered, expected, capsys):
    import mlflow

    assert cli.main(["register", "--model", "ensemble", "--name", "imgclass-test"]) == 0
    assert "models:/imgclass-test/2 (members: copy, m)" in capsys.readouterr().out
    paths, probs, classes = expected
    out = mlflow.pyfunc.load_model("models:/imgclass-test/2").predict(pd.DataFrame({"path": [str(paths[2])]}))
    assert out["class"][0] == classes[probs[2].argmax()]  # two identical members vote as one
    assert cli.main(["register", "--model", "nope"]) == 1
    assert "no trained model" in capsys.readouterr().err


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
