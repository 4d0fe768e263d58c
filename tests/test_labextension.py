"""The prebuilt JupyterLab extension: current with its sources, and shipped by a pip install of the project."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "jupyter_ext" / "labextension_src"
BUILT = ROOT / "jupyter_ext" / "labextension"


def test_build_is_current_with_its_sources():
    files = sorted(
        ["package.json", "package-lock.json", "tsconfig.json"]
        + [str(p.relative_to(SRC)) for d in ("src", "style") for p in (SRC / d).glob("*")]
    )
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + b"\0" + (SRC / f).read_bytes())
    assert (BUILT / "source.sha256").read_text().strip() == h.hexdigest(), (
        "jupyter_ext/labextension is older than its sources: run `make labextension` and commit"
    )
    meta = json.loads((BUILT / "package.json").read_text())
    assert meta["name"] == "ad-inspect-studio"
    assert (BUILT / meta["jupyterlab"]["_build"]["load"]).is_file()
    source = (SRC / "src" / "index.ts").read_text()
    assert "launcher.add" in source and "palette.addItem" in source and "AnomalyStudio" in source


def test_pip_install_puts_it_where_jupyterlab_looks(tmp_path):
    # build from a copy, so setuptools' build/ and egg-info never land in the working tree
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    for package in ("ad_core", "jupyter_ext"):
        shutil.copytree(
            ROOT / package, project / package, ignore=shutil.ignore_patterns("node_modules", "__pycache__", "lib")
        )
    wheel_dir = tmp_path / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir)]
    out = subprocess.run([*cmd, str(project)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(wheel_dir.glob("ad_inspect-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    prefix = "ad_inspect-0.1.0.data/data/share/jupyter/labextensions/ad-inspect-studio/"
    assert prefix + "package.json" in names and prefix + "install.json" in names
    assert any(n.startswith(prefix + "static/remoteEntry.") for n in names)
    assert not any("labextension_src" in n or "node_modules" in n for n in names)

    target = tmp_path / "prefix"
    out = subprocess.run(
        # --ignore-installed: never touch the project installed in this venv
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--ignore-installed",
            "-q",
            "--prefix",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    env = {**os.environ, "JUPYTER_PATH": str(target / "share" / "jupyter")}
    listed = subprocess.run(
        [sys.executable, "-m", "jupyterlab.labextensions", "list"], capture_output=True, text=True, env=env
    )
    lines = (listed.stdout + listed.stderr).splitlines()
    header = lines.index(str(target / "share" / "jupyter" / "labextensions"))
    section = []
    for line in lines[header + 1 :]:
        if not line.startswith((" ", "\t")):
            break
        section.append(line)
    entry = next(line for line in section if "ad-inspect-studio" in line)  # found in the pip-installed prefix
    assert "v0.1.0" in entry and "enabled" in entry and "OK" in entry
