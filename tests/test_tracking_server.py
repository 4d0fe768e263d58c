"""Seed 004 against a real `mlflow server` process (the compose file's command, on a free local port)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ad_core import evaluate, train
from ad_core.cli import main
from ad_core.fleet import RegistryCache

ROOT = Path(__file__).resolve().parents[1]
CAT = "Sample_brick"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` as docker/compose.yaml runs it, its store in a temp folder; stopped at the end."""
    store = tmp_path_factory.mktemp("mlflow_server")
    command = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["mlflow"]["command"]
    port = _free_port()
    args = [a.replace("/workspace/mlruns", str(store)) for a in command]
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"
    exe = Path(sys.executable).parent / "mlflow"
    log = open(store / "server.log", "w")  # noqa: SIM115 - closed when the server stops
    proc = subprocess.Popen([str(exe), *args[1:]], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail(f"mlflow server did not start: {(store / 'server.log').read_text()[-2000:]}")
    if proc.poll() is not None:
        pytest.fail(f"mlflow server exited: {(store / 'server.log').read_text()[-2000:]}")
    yield url, store
    proc.terminate()
    proc.wait(30)
    log.close()


def test_train_test_register_and_infer_by_name_through_the_server(server, sample_root, tmp_path, capsys):
    url, store = server
    run = train("padim", CAT, sample_root, tmp_path / "models", progress=False, mlflow=url, image_size=96)
    report = evaluate(run, progress=False, mlflow=url, save_images=False)
    meta = json.loads((run / "pytorch" / "meta.json").read_text())
    assert meta["mlflow"]["tracking_uri"] == url and report["mlflow"]["run_id"] == meta["mlflow"]["run_id"]
    client = MlflowClient(url)
    logged = client.get_run(meta["mlflow"]["run_id"])
    assert logged.data.params["model"] == "padim" and logged.data.metrics["test_image_auroc"] == pytest.approx(
        report["image_auroc"]
    )
    assert (store / "mlflow.db").is_file() and any((store / "artifacts").rglob("meta.json"))  # stored by the server

    # seed 004's flow: register, then run by name
    assert main(["register", "--run", str(run), "--name", "brick_server", "--mlflow", url]) == 0
    assert "registered brick_server version 1" in capsys.readouterr().out
    folder = tmp_path / "frames"
    assert main(["infer", "padim", "-e", "models:/brick_server/1", "-d", str(sample_root / "test" / CAT / "anomaly"),
                 "--mlflow", url, "-o", str(folder / "result.csv")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "16 images scored" in out and (folder / "result.csv").is_file()

    # a cell resolves the alias through the server, into its cache
    client.set_registered_model_alias("brick_server", "prod", "1")
    resolved = RegistryCache(tmp_path / "jetson", url).resolve("models:/brick_server@prod")
    assert resolved.label == "brick_server/1" and not resolved.offline
    assert json.loads((resolved.path / "meta.json").read_text())["sha256"] == meta["sha256"]
