"""The JupyterLab panels driven headless through their widgets, with real training on the sample data."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from jupyter_ext import AnomalyStudio, DataPanel, ThresholdExplorer, TrainPanel, TunePanel

CAT = "Sample_brick"
WAIT = 600


def set_field(panel: TrainPanel, name: str, value) -> None:
    panel.fields[name][1].value = value


def finish(job) -> None:
    assert job is not None
    job.join(WAIT)
    assert not job.running


def test_data_panel_counts_thumbnails_and_clear_errors(sample_root, tmp_path):
    panel = DataPanel(sample_root, CAT)
    assert set(panel.category.options) == {"Sample_brick", "Sample_grass", "Sample_gravel"}
    assert "<b>32</b> training" in panel.counts.value and "<b>12</b> test normal" in panel.counts.value
    assert "<b>16</b> test anomalous" in panel.counts.value and "pixel masks" in panel.counts.value
    assert len(panel.grid.children) == 3 and all(len(row.children[1].children) == 4 for row in panel.grid.children)
    seen = []
    panel.on_change(lambda root, cat: seen.append(cat))
    panel.category.value = "Sample_grass"
    assert seen == ["Sample_grass"]

    panel.root.value = str(tmp_path / "nowhere")
    assert "does not exist" in panel.status.text and panel.grid.children == ()
    empty = tmp_path / "empty"
    (empty / "train" / "cat").mkdir(parents=True)
    panel.root.value = str(empty)
    assert f"{empty / 'train' / 'cat'} has no images" in panel.status.text
    (empty / "train" / "cat" / "a.png").write_bytes((sample_root / "train" / CAT / "000.png").read_bytes())
    panel.refresh.click()
    assert "no test images of both classes" in panel.status.text


def test_studio_train_tune_handover_threshold_and_export(sample_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the studio remembers its roots in the current folder
    models = tmp_path / "models"
    studio = AnomalyStudio(sample_root, models, CAT, model="padim", image_size=96)
    assert json.loads((tmp_path / ".ad-inspect-studio.json").read_text())["models_root"] == str(models)
    train = studio.train
    assert train.category_name == CAT and studio.tune.category_name == CAT

    # Train: the form comes from the registry; a real PaDiM trains and is tested
    assert set(train.fields) == {
        "image_size", "resize", "tiles", "tile_overlap", "backbone", "layers", "n_features", "shrinkage", "feature_pool",
        "pool_min_side",
    }  # fmt: skip
    set_field(train, "image_size", 96)
    set_field(train, "n_features", 48)
    train.start.click()
    finish(train.job)
    assert train.report is not None and train.report["image_auroc"] > 0.8, train.status.text
    assert "trained and tested" in train.status.text and "image AUROC" in train.results.value
    run = train.run_dir
    assert json.loads((run / "pytorch" / "meta.json").read_text())["n_features"] == 48
    assert studio.export.run.value == str(run) and studio.threshold.meta is not None

    # Tune: a real 3-trial study; the table and plot fill in; "Train with best" fills the Train form
    tune = studio.tune
    tune.model.value = "padim"
    assert "n_features" in tune.space.value
    tune.trials.value = 3
    tune.start.click()
    finish(tune.job)
    assert tune.result is not None and tune.result.n_complete == 3, tune.status.text
    assert tune.table.value.count("<tr>") == 4 and len(tune.plot.value) > 1000
    assert not tune.train_best.disabled
    studio.tabs.selected_index = 2
    tune.train_best.click()
    assert studio.tabs.selected_index == 1
    best = tune.result.best_params
    assert train.hparams()["n_features"] == best["n_features"] and train.hparams()["layers"] == best["layers"]
    train.start.click()
    finish(train.job)
    assert train.report["image_auroc"] == pytest.approx(tune.result.best_value, abs=1e-9)
    assert train.run_dir == tune.result.run_dir  # trained into the tuned run directory (seed flow 2 -> 3)
    assert (train.run_dir / "param" / "best_params.yaml").is_file()

    # Threshold explorer: loaded with the new run; moving the threshold changes the metrics
    th = studio.threshold
    assert th.run.value == str(train.run_dir)
    saved = th.slider.value
    at_saved = th.point()
    th.slider.value = 0.05
    low = th.point()
    assert low["false_reject_rate"] >= at_saved["false_reject_rate"] and low["miss_rate"] <= at_saved["miss_rate"]
    assert low != at_saved and f"{low['fp']}</td>" in th.metrics.value
    assert th.raw.value == pytest.approx(th.raw_of(0.05), rel=1e-6)
    assert th.changed() and "change side" in th.gallery.children[0].value
    th.raw.value = th.raw_of(0.7)  # the raw field drives the slider too
    assert th.slider.value == pytest.approx(0.7, abs=1e-6)

    th.target_kind.value = "miss rate at most (%)"
    th.target_value.value = 0.0
    th.target_button.click()
    assert th.point()["miss_rate"] == 0.0
    strict = th.slider.value
    th.slider.value = strict + 1e-3
    assert th.point()["miss_rate"] > 0.0  # the highest threshold that still misses nothing
    th.slider.value = strict
    th.save_button.click()
    meta = json.loads((train.run_dir / "pytorch" / "meta.json").read_text())
    assert meta["image_threshold"] == pytest.approx(strict) and meta["image_threshold"] != saved
    entry = meta["threshold_history"][-1]
    assert entry["previous"] == pytest.approx(saved) and entry["by"] and entry["at"]
    assert "saved image_threshold" in th.status.text
    assert th.changed() == []  # the saved threshold is the current one now

    # Export: ONNX, a quick check with the exported graph, the Jetson archive
    ex = studio.export
    ex.export_button.click()
    finish(ex.job)
    assert (train.run_dir / "engine" / "model.onnx").is_file(), ex.status.text
    ex.check_button.click()
    finish(ex.job)
    assert ex.report is not None and len(ex.report.rows) == 16, ex.status.text
    flagged = sum(r["decision"] == "anomaly" for r in ex.report.rows)
    assert flagged == 16  # the saved threshold misses no defect, and the deployed graph agrees
    ex.package_button.click()
    finish(ex.job)
    with tarfile.open(train.run_dir / "jetson_bundle.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"pytorch/meta.json", "pytorch/model.pth", "pytorch/stats.npz", "engine/model.onnx"} <= names


def test_training_runs_off_the_main_thread_and_stop_really_stops(sample_root, tmp_path):
    models = tmp_path / "models"
    panel = TrainPanel(sample_root, CAT, models, model="vae")
    panel.set_data(str(sample_root), CAT)
    set_field(panel, "image_size", 64)
    set_field(panel, "enc_channels", "8, 16")
    panel.epochs.value = 500
    job = panel.begin()
    assert job.running and job.thread.name != "MainThread"
    deadline = time.time() + WAIT
    while len(panel.history) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert panel.progress.value >= 2 and len(panel.plot.value) > 1000  # live progress and loss plot
    assert panel.start.disabled and not panel.stop.disabled
    panel.stop.click()
    finish(job)
    assert "stopped on request" in panel.status.text
    assert len(panel.history) < 500 and not panel.start.disabled
    assert not any(p.is_dir() and not p.name.startswith(".") for p in (models / "VAE" / CAT).iterdir())
    assert not list((models / "VAE" / CAT).glob(".*partial*"))


def test_choose_for_me_picks_a_model_without_defects_and_start_trains_it(sample_root, tmp_path):
    import yaml

    models = tmp_path / "models"
    panel = TrainPanel(sample_root, CAT, models, model="vae")
    set_field(panel, "image_size", 64)
    # Stop stops a selection too, and leaves no run directory behind
    panel.choose.click()
    panel.stop.click()
    finish(panel.job)
    assert "stopped on request" in panel.status.text and panel.stage.value == "stopped"
    assert panel.selection is None and panel.model.value == "vae" and not panel.choose.disabled
    assert not [p for p in models.rglob("*") if p.is_dir() and p.parent.parent.parent == models]

    panel.defects.value = "crack"  # scored on thin faint lines (--proxy_kinds crack)
    panel.choose.click()
    assert panel.job.kind == "selection" and panel.start.disabled and panel.choose.disabled
    assert panel.defects.disabled
    finish(panel.job)
    chosen = panel.selection
    assert chosen is not None, panel.status.text
    # the winner fills the form, at the size every candidate was fitted at
    assert panel.model.value == chosen.best["model"] and chosen.best["model"] in ("patchcore", "padim")
    assert panel.hparams()["image_size"] == 64 and panel.target_run == chosen.run_dir
    assert panel.stage.value == "chosen" and f"chosen: {chosen.best['candidate']}" in panel.status.text
    # the ranking of both candidates and the reason, as param/ records them; no test image was used
    why = yaml.safe_load((chosen.run_dir / "param" / "selection.yaml").read_text())
    assert why["chosen"] == chosen.best["candidate"] and why["proxy"]["test_split_used"] is False
    assert why["proxy"]["kinds"] == ["crack"]
    assert panel.results.value.count("<tr>") == 1 + len(why["ranking"]) == 3
    assert why["why"] in panel.results.value and len(panel.plot.value) > 1000 and not panel.start.disabled
    # Start trains the choice into the selection's run directory
    panel.start.click()
    finish(panel.job)
    assert panel.run_dir == chosen.run_dir and panel.report is not None, panel.status.text
    meta = json.loads((chosen.run_dir / "pytorch" / "meta.json").read_text())
    assert meta["model"] == chosen.best["model"] and meta["image_size"] == 64
    assert (chosen.run_dir / "param" / "selection.csv").is_file()


def test_tune_panel_scores_trials_on_thin_line_proxy_defects_with_tiles(sample_root, tmp_path):
    import yaml

    panel = TunePanel(sample_root, CAT, tmp_path / "models", model="padim", image_size=64)
    assert panel.defects.layout.display == "none"  # only the proxy objective has synthetic defects to choose
    panel.objective.value = "proxy"
    assert panel.defects.layout.display is None
    panel.defects.value = "crack"
    panel.tiles.input.value = "1x2"
    panel.tile_overlap.input.value = "0.5"  # 1x3 tiles
    panel.space.value = "n_features: {low: 8, high: 16, step: 8}\n"
    panel.trials.input.value = "1"
    handed = []
    panel.on_train_best(lambda *args: handed.append(args))
    panel.start.click()
    assert panel.objective.disabled and panel.defects.disabled
    finish(panel.job)
    assert panel.result is not None and panel.result.n_complete == 1, panel.status.text
    doc = yaml.safe_load(panel.result.files["best_params"].read_text())
    assert doc["objective"] == "proxy" and doc["proxy_kinds"] == ["crack"]
    assert doc["params"]["tiles"] == "1x2" and doc["params"]["image_size"] == 64
    assert doc["params"]["tile_overlap"] == 0.5
    assert not panel.objective.disabled
    # "Train with best" hands the tiles on to the Train form with the rest
    panel.train_best.click()
    train = TrainPanel(sample_root, CAT, tmp_path / "models")
    train.set_params(*handed[0])
    assert train.hparams()["tiles"] == "1x2" and train.hparams()["image_size"] == 64
    assert train.hparams()["tile_overlap"] == 0.5


def test_errors_appear_in_the_panel(sample_root, tmp_path):
    panel = TrainPanel(sample_root, CAT, tmp_path / "models", model="patchcore")
    set_field(panel, "layers", "blocks.9")
    finish(panel.begin())
    assert "layers: ['blocks.9'] not in backbone tf_efficientnet_lite0" in panel.status.text
    assert panel.progress.bar_style == "danger" and not panel.start.disabled

    set_field(panel, "layers", "")
    set_field(panel, "image_size", 96)
    panel.set_data(str(sample_root), "")
    assert panel.begin() is None and "choose a category" in panel.status.text

    th = ThresholdExplorer()
    assert th.load(tmp_path) is False and "no meta.json found" in th.status.text
    assert th.save_button.disabled


def test_threshold_explorer_refuses_an_untested_run(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained("padim"), run)
    shutil.rmtree(run / "test_result", ignore_errors=True)
    th = ThresholdExplorer(run)
    assert th.meta is None and "has no test result" in th.status.text and "ad-core test --run" in th.status.text


def test_scoring_targets_are_exact():
    from ad_core.scoring import operating_point, threshold_for_target

    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.9])
    t = threshold_for_target(labels, scores, max_miss_rate=0.0)
    assert t == 0.4 and operating_point(labels, scores, t)["miss_rate"] == 0.0
    assert operating_point(labels, scores, t)["false_reject_rate"] == 0.25
    t = threshold_for_target(labels, scores, max_false_reject=0.0)
    assert 0.6 < t <= 0.7 and operating_point(labels, scores, t)["false_reject_rate"] == 0.0
    assert operating_point(labels, scores, t)["miss_rate"] == 0.5
    p = operating_point(labels, scores, 2.0)
    assert np.isnan(p["precision"]) and p["miss_rate"] == 1.0
    with pytest.raises(ValueError, match="exactly one"):
        threshold_for_target(labels, scores)


def test_save_threshold_validates_and_keeps_history(trained, tmp_path):
    import shutil

    from ad_core.bundle import save_threshold
    from ad_core.errors import ConfigError

    run = tmp_path / "run"
    shutil.copytree(trained("padim"), run)
    before = (run / "pytorch" / "meta.json").read_bytes()
    with pytest.raises(ConfigError, match="between 0 and 1"):
        save_threshold(run, 1.5)
    assert (run / "pytorch" / "meta.json").read_bytes() == before
    save_threshold(run, 0.4, by="alice")
    meta = save_threshold(run, 0.45, by="bob", note="line 2")
    assert [e["by"] for e in meta["threshold_history"]] == ["alice", "bob"]
    assert meta["threshold_history"][1]["previous"] == 0.4 and meta["image_threshold"] == 0.45
    assert Path(run / "pytorch" / "meta.json").read_text().count("threshold_history") == 1
