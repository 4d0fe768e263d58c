"""The Review tab of the Anomaly Studio in Debian's Chromium: label captured frames by key and by click."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")

from browser_support import ARTIFACTS, CHROMIUM, chromium, jupyterlab, open_and_run, visible  # noqa: E402

from ad_core.capture import FieldCapture  # noqa: E402
from ad_core.data.images import list_images, read_image  # noqa: E402
from ad_core.data.manifest import read_manifest  # noqa: E402
from ad_core.inspector import Inspector  # noqa: E402

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)",
)
CAT = "Sample_brick"


def notebook(path: Path, code: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_label_two_frames_in_the_review_tab(evaluated, sample_root, tmp_path):
    root = tmp_path / "lab"
    root.mkdir()
    run = root / "models" / "PaDiM" / CAT / "run"
    shutil.copytree(evaluated("padim")[0], run)
    with jupyterlab(sample_root, root) as url:
        data = root / "data"
        inspector = Inspector.open(run, "torch")
        capture = FieldCapture(data, CAT, "all", max_per_min=0, model=str(run), model_version="v7")
        sources = list_images(data / "test" / CAT / "anomaly")[:2] + list_images(data / "test" / CAT / "normal")[:1]
        for i, p in enumerate(sources):
            capture.offer(inspector(read_image(p)), 1_700_000_100 + i, 0, "cam")
        capture.close()
        queue = sorted((data / "review" / CAT).glob("*.png"))
        assert len(queue) == 3
        notebook(
            root / "studio.ipynb",
            "from jupyter_ext import AnomalyStudio\nstudio = AnomalyStudio(data_root='data', models_root='models')\nstudio",
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with chromium((1280, 800)) as page:
            try:
                open_and_run(page, url, "studio.ipynb")
                visible(page, '.lm-TabBar-tab:has-text("Review")').wait_for(timeout=180_000)
                visible(page, '.lm-TabBar-tab:has-text("Review")').click()
                visible(page, "text=/3 waiting/").wait_for(timeout=60_000)
                frame = visible(page, ".widget-image")
                frame.wait_for(timeout=60_000)
                page.screenshot(path=ARTIFACTS / "review_1_queue.png")
                # first frame: the pointer on the picture and the key A (anomaly)
                frame.hover()
                page.keyboard.press("a")
                visible(page, "text=/2 waiting/").wait_for(timeout=30_000)
                # second frame: the Normal button
                visible(page, 'button:has-text("Normal (N)")').click()
                visible(page, "text=/1 waiting/").wait_for(timeout=30_000)
                page.screenshot(path=ARTIFACTS / "review_2_labelled.png")
            finally:
                page.screenshot(path=ARTIFACTS / "review_last.png")
    anomaly = data / "test" / CAT / "anomaly" / queue[0].name
    normal = data / "train" / CAT / queue[1].name
    assert anomaly.is_file() and normal.is_file() and not queue[0].exists() and not queue[1].exists()
    assert queue[2].exists()  # the third is still waiting
    row = next(r for r in read_manifest(anomaly.parent) if r["file"] == anomaly.name)
    assert row["label"] == "anomaly" and row["model_version"] == "v7" and row["stamp"] == "1700000100.000000000"
    side = json.loads(queue[2].with_suffix(".json").read_text())
    assert side["model_version"] == "v7"
    assert next(r for r in read_manifest(normal.parent) if r["file"] == normal.name)["label"] == "normal"
