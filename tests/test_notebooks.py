"""The four notebooks run top to bottom in a real kernel on the sample data (short schedules)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import keep_train_images
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# short schedules through the notebooks' own environment knobs; EfficientAD skips tuning (TRIALS 0) and
# trains on 6 of the 32 normal images (batch 1 at 256 px: ~3.5 s a step on a 2-core CPU)
TRAIN_IMAGES = {"EfficientAD": 6}
SCHEDULES = {
    "PatchCore": {"AD_NOTEBOOK_TRIALS": "2", "AD_NOTEBOOK_IMAGE_SIZE": "96"},
    "PaDiM": {"AD_NOTEBOOK_TRIALS": "2", "AD_NOTEBOOK_IMAGE_SIZE": "96"},
    "VAE": {"AD_NOTEBOOK_TRIALS": "2", "AD_NOTEBOOK_IMAGE_SIZE": "64", "AD_NOTEBOOK_EPOCHS": "3"},
    "EfficientAD": {"AD_NOTEBOOK_TRIALS": "0", "AD_NOTEBOOK_EPOCHS": "1", "AD_NOTEBOOK_DISTILL_STEPS": "2"},
}


def test_notebooks_are_generated_from_the_template():
    import subprocess
    import sys

    before = {p.name: p.read_bytes() for p in NOTEBOOKS.glob("*.ipynb")}
    assert sorted(before) == sorted(f"{n}.ipynb" for n in SCHEDULES)
    for name in before:
        assert len(nbformat.read(NOTEBOOKS / name, 4).cells) == 13
    out = subprocess.run([sys.executable, str(NOTEBOOKS / "make_notebooks.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    after = {p.name: p.read_bytes() for p in NOTEBOOKS.glob("*.ipynb")}
    # byte for byte: regenerating leaves the working tree clean (cell ids are stable)
    assert after == before, "notebooks/ is out of date: run `make notebooks` and commit"


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_notebook_runs_top_to_bottom(name, sample_root, tmp_path, monkeypatch):
    for key, value in SCHEDULES[name].items():
        monkeypatch.setenv(key, value)
    shutil.copytree(sample_root, tmp_path / "data")
    if name in TRAIN_IMAGES:
        keep_train_images(tmp_path / "data", "Sample_brick", TRAIN_IMAGES[name])
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", 4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(
        out.get("text", "") + json.dumps(out.get("data", {}))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    from ad_core.device import resolve

    device = resolve("auto")
    assert f"device that will be used: {device.name} ({device.description}, {device.precision})" in text
    assert "trained and tested" in text and "image AUROC" in text
    runs = [p for p in (tmp_path / "models").glob("*/Sample_brick/*") if p.is_dir()]
    assert len(runs) == 1, runs
    meta = json.loads((runs[0] / "pytorch" / "meta.json").read_text())
    assert meta["device"] == device.name  # cell 0's device reached the training
    assert meta["threshold_source"] == "test_f1" and meta["test_metrics"]["image_auroc"] > 0.6
    if SCHEDULES[name]["AD_NOTEBOOK_TRIALS"] != "0":
        best = runs[0] / "param" / "best_params.yaml"
        assert best.is_file()  # tuned and trained into the same run directory, as in the seed
        assert "tune" in text.lower() or "complete" in text
