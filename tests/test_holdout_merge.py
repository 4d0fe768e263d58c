"""Training calibrates on held-out normal images, then PatchCore and PaDiM absorb them (``merge_val``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ad_core import train
from ad_core.cli import main
from ad_core.data.images import read_image
from ad_core.data.layout import resolve_category
from ad_core.fileio import load_npz
from ad_core.models import FitConfig, create_model
from ad_core.runtime import open_scorer
from ad_core.train import split_train_val

CAT = "Sample_brick"
ARRAYS = {"patchcore": "memory_bank.npz", "padim": "stats.npz"}


def _meta(run: Path) -> dict:
    return json.loads((run / "pytorch" / "meta.json").read_text())


@pytest.mark.parametrize("model", ["padim", "patchcore"])
def test_the_held_out_images_calibrate_first_and_then_join_the_model(model, sample_root, tmp_path):
    merged = train(model, CAT, sample_root, tmp_path / "on", progress=False, image_size=96)
    kept_out = train(model, CAT, sample_root, tmp_path / "off", progress=False, image_size=96, merge_val=False)
    m_on, m_off = _meta(merged), _meta(kept_out)
    assert m_on["val_merged"] is True and m_off["val_merged"] is False
    assert m_on["val_images"] == m_off["val_images"] > 0
    # the calibration is the same: made by the model that had not seen the held-out images
    for key in ("image_threshold_auto", "raw_image_min", "raw_image_max"):
        assert m_on[key] == m_off[key], key
    calibration = json.loads((merged / "logs" / "train.json").read_text())["validation_scores"]
    assert calibration == json.loads((kept_out / "logs" / "train.json").read_text())["validation_scores"]

    on = load_npz(merged / "pytorch" / ARRAYS[model])
    off = load_npz(kept_out / "pytorch" / ARRAYS[model])
    data = resolve_category(sample_root, CAT)
    _, val = split_train_val(list(data.train), 0.1, 0)
    if model == "padim":
        # merged exactly: the statistics of a fit on every training image
        assert int(on["n_samples"]) == len(data.train) == int(off["n_samples"]) + len(val)
        cfg = FitConfig(batch_size=8, progress=False)
        every = create_model("padim", image_size=96)
        every.prepare_pretrained(cfg)
        every.fit(list(data.train), [], cfg)
        want = every.artifacts()
        np.testing.assert_allclose(on["mean"], want["mean"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(on["covariance"], want["covariance"], rtol=1e-4, atol=1e-5)
    else:
        bank_on, bank_off = on["memory_bank"], off["memory_bank"]
        added = m_on["fit"]["merged_val"]["added"]
        assert added > 0 and bank_on.shape == (len(bank_off) + added, bank_off.shape[1])
        np.testing.assert_array_equal(bank_on[: len(bank_off)], bank_off)  # the fitted bank, then held-out rows

    # the held-out images are now part of the model: it scores them lower than the model without them
    images = [read_image(p) for p in val]
    before = open_scorer(kept_out, "torch")(images).raw_score
    after = open_scorer(merged, "torch")(images).raw_score
    np.testing.assert_allclose(before, calibration, rtol=1e-5)  # the scores the threshold came from
    assert after.mean() < before.mean()
    if model == "patchcore":  # a bank that only grew: no patch is farther from it than before
        assert (after <= before + 1e-4 * np.abs(before)).all()


def test_merge_val_off_from_the_command_line_and_on_models_that_train(sample_root, tmp_path, capsys):
    flags = ["--category", CAT, "--data_root", str(sample_root), "--models_root", str(tmp_path)]
    rc = main(["train", "--model", "padim", *flags, "--image_size", "96", "--merge_val", "off"])
    assert rc == 0, capsys.readouterr().err
    (run,) = (tmp_path / "PaDiM" / CAT).iterdir()
    meta = _meta(run)
    assert meta["val_merged"] is False and "merged_val" not in meta["fit"]
    assert int(load_npz(run / "pytorch" / "stats.npz")["n_samples"]) == meta["train_images"]
    # a model trained by gradient descent keeps the weights it was calibrated with
    assert create_model("vae", image_size=64).absorb([], FitConfig(progress=False)) is None
