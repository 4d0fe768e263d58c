"""JupyterLab in Debian's Chromium: Launcher card, studio, train from the panel, move and save the threshold.

Screenshots are kept in ``tests/artifacts/browser/`` (or ``$AD_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")

from browser_support import ARTIFACTS, CHROMIUM, field, jupyterlab, visible  # noqa: E402

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def lab(sample_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    with jupyterlab(sample_root, root) as url:
        yield url, root


def test_launcher_studio_train_threshold_save(lab):
    from ad_core.scoring import denormalize

    url, root = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            page.goto(f"{url}/lab", timeout=120_000)
            card = page.locator('.jp-LauncherCard:has-text("Anomaly Studio")').first
            card.wait_for(timeout=120_000)
            page.screenshot(path=ARTIFACTS / "1_launcher.png")
            card.click()

            # the command made a notebook and ran its cell: the studio renders with its tabs
            page.get_by_text("Anomaly Studio", exact=False).locator("visible=true").first.wait_for(timeout=180_000)
            visible(page, '.lm-TabBar-tab:has-text("Train")').wait_for(timeout=180_000)
            page.screenshot(path=ARTIFACTS / "2_studio.png")
            assert (root / "Untitled.ipynb").is_file()

            # Train tab: PaDiM at 96 px with 48 features, Start, wait for the test result
            visible(page, '.lm-TabBar-tab:has-text("Train")').click()
            visible(page, '.widget-dropdown:has(> label:text-is("model")) select').select_option("padim")
            field(page, "n_features").wait_for(timeout=30_000)  # the PaDiM form replaced the default one
            for name, value in (("image_size", "96"), ("n_features", "48")):
                box = field(page, name)
                box.fill(value)
                box.press("Tab")
            visible(page, 'button:has-text("Start")').click()
            visible(page, 'text="image AUROC"').wait_for(timeout=600_000)
            page.screenshot(path=ARTIFACTS / "3_trained.png")
            runs = [r for r in (root / "models" / "PaDiM" / "Sample_brick").iterdir() if r.is_dir()]
            assert len(runs) == 1
            meta_path = runs[0] / "pytorch" / "meta.json"
            meta = json.loads(meta_path.read_text())
            assert meta["n_features"] == 48 and meta["image_size"] == 96 and meta["threshold_source"] == "test_f1"

            # Threshold tab: the run is loaded; a new raw threshold changes the metrics; Save
            visible(page, '.lm-TabBar-tab:has-text("Threshold")').click()
            metrics = visible(page, '.widget-html:has-text("false-reject rate")')
            metrics.wait_for(timeout=60_000)
            before = metrics.inner_text()
            raw = denormalize(0.1, meta["image_threshold_auto"], meta["raw_image_min"], meta["raw_image_max"])
            box = field(page, "threshold (raw)")
            box.fill(f"{raw:.6f}")
            box.press("Enter")
            deadline = time.time() + 60
            while metrics.inner_text() == before and time.time() < deadline:
                time.sleep(0.2)
            after = metrics.inner_text()
            assert after != before
            page.screenshot(path=ARTIFACTS / "4_threshold_moved.png")
            visible(page, 'button:has-text("Save to meta.json")').click()
            visible(page, "text=/saved image_threshold/").wait_for(timeout=60_000)
            page.screenshot(path=ARTIFACTS / "5_saved.png")
        finally:
            page.screenshot(path=ARTIFACTS / "last.png")
            browser.close()
    saved = json.loads(meta_path.read_text())
    assert saved["image_threshold"] == pytest.approx(0.1, abs=1e-3)
    assert saved["threshold_history"][-1]["note"] == "threshold explorer"
