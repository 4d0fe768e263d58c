"""Choosing a configuration without labelled defects: the proxy, `ad-core select`, `--model auto`, tune's proxy."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import yaml

from ad_core.cli import main
from ad_core.proxy import ProxySet, held_out
from ad_core.select import Candidate, select
from ad_core.tune import load_best_params, tune

CAT = "Sample_brick"


@pytest.fixture(scope="module")
def normals_only(sample_root, tmp_path_factory):
    """A data root with the category's normal images and no test split at all (a new production line)."""
    root = tmp_path_factory.mktemp("new_line")
    shutil.copytree(sample_root / "train" / CAT, root / "train" / CAT)
    return root


def test_held_out_split_is_seeded_and_disjoint(sample_root):
    from ad_core.data.images import list_images

    paths = list_images(sample_root / "train" / CAT)
    fit, hold = held_out(paths, 0.2, seed=0)
    assert held_out(paths, 0.2, seed=0) == (fit, hold)
    assert not set(fit) & set(hold) and len(fit) + len(hold) == len(paths) and len(hold) >= 6


def test_proxy_separates_synthetic_anomalies_for_a_working_model(trained, sample_root):
    from ad_core import load_bundle
    from ad_core.data.images import list_images

    bundle = load_bundle(trained("patchcore"))
    proxy = ProxySet(list_images(sample_root / "test" / CAT / "normal")[:6], seed=0)
    result = proxy.score(bundle.model)
    assert result["normals"] == 6 and result["anomalies"] == 12
    assert set(result["per_kind"]) == {"cutpaste", "scar", "blend", "blob"}
    assert result["auroc"] > 0.8, result
    # scores in the wrong order give the mirror image: the proxy measures ranking, not luck
    flipped = proxy.evaluate(-proxy.raw_scores(bundle.model))
    assert flipped["auroc"] == pytest.approx(1 - result["auroc"])


def test_select_writes_its_choice_and_reasons(normals_only, tmp_path):
    cands = [Candidate("padim", {"n_features": 8}, "padim tiny"), Candidate("patchcore", {}, "patchcore (defaults)")]
    lines = []
    result = select(
        CAT, normals_only, tmp_path / "models", candidates=cands, image_size=96, progress=False, log=lines.append
    )
    param = result.run_dir / "param"
    assert result.run_dir.parent.parent.name == {"padim": "PaDiM", "patchcore": "PatchCore"}[result.best["model"]]
    assert not (result.run_dir / "pytorch").exists()  # only the reasons: training comes next
    with open(param / "selection.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["candidate"] for r in rows] == ["padim tiny", "patchcore (defaults)"]
    best_row = max(rows, key=lambda r: float(r["proxy_auroc"]))
    assert best_row["candidate"] == result.best["candidate"]
    why = yaml.safe_load((param / "selection.yaml").read_text())
    assert why["chosen"] == result.best["candidate"] and "proxy AUROC" in why["why"]
    assert why["proxy"]["test_split_used"] is False and why["proxy"]["synthetic_anomalies"] > 0
    assert why["ranking"][0]["candidate"] == result.best["candidate"]
    assert (param / "selection.png").stat().st_size > 1000
    best = load_best_params(param / "best_params.yaml")
    assert best.model == result.best["model"] and best.hparams["image_size"] == 96
    assert best.run_dir == result.run_dir
    assert any("candidate 2/2" in line for line in lines)


def test_train_model_auto_trains_the_choice(normals_only, tmp_path, capsys):
    code = main(
        ["train", "--model", "auto", "--category", CAT, "--data_root", str(normals_only),
         "--models_root", str(tmp_path), "--image_size", "96"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "chosen:" in out
    (run,) = [p for p in tmp_path.glob("*/*/*") if (p / "pytorch").is_dir()]
    why = yaml.safe_load((run / "param" / "selection.yaml").read_text())
    meta = __import__("json").loads((run / "pytorch" / "meta.json").read_text())
    assert meta["model"] == why["model"] and meta["image_size"] == 96


def test_tune_on_the_proxy_needs_no_test_split(normals_only, tmp_path):
    result = tune(
        "padim",
        CAT,
        normals_only,
        tmp_path,
        trials=2,
        objective="proxy",
        search_space={"n_features": {"low": 8, "high": 32, "step": 8}},
        image_size=96,
        progress=False,
    )
    assert result.n_complete == 2 and 0.5 <= result.best_value <= 1.0
    doc = yaml.safe_load(result.files["best_params"].read_text())
    assert doc["objective"] == "proxy" and doc["metric"] == "image_auroc"
    with pytest.raises(Exception, match="objective 'guess'"):
        tune("padim", CAT, normals_only, tmp_path, trials=1, objective="guess", progress=False)


def test_select_with_too_few_images_is_refused(tmp_path, sample_root):
    from ad_core.errors import DataError

    (tmp_path / "train" / CAT).mkdir(parents=True)
    for p in sorted((sample_root / "train" / CAT).iterdir())[:5]:
        shutil.copy(p, tmp_path / "train" / CAT)
    with pytest.raises(DataError, match="too few"):
        select(CAT, tmp_path, tmp_path / "m", image_size=96, progress=False, log=None)
    assert not (tmp_path / "m").exists()


def test_select_cli_lists_candidates(normals_only, tmp_path, capsys):
    from ad_core.models.registry import get_spec

    assert main(["select", "--category", CAT, "--data_root", str(normals_only), "--models_root", str(tmp_path),
                 "--models", "padim", "--image_size", "64", "--wide"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "chosen: padim" in out and "next: ad-core train --params" in out
    chosen = out.split("chosen: ")[1]
    assert np.isfinite(float(chosen.split("proxy AUROC ")[1].split(")")[0]))
    # --wide: the defaults and every variant of the spec were fitted and scored, each on its own row
    (csv_path,) = tmp_path.glob("*/*/*/param/selection.csv")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    variants = get_spec("padim").proxy_variants
    assert len(variants) >= 3 and len(rows) == 1 + len(variants)
    assert rows[0]["candidate"] == "padim (defaults)"
    assert "padim n_features=100 shrinkage=0.0 feature_pool=1" in {r["candidate"] for r in rows}
    assert all(0.0 <= float(r["proxy_auroc"]) <= 1.0 for r in rows), rows


def test_proxy_kinds_name_the_synthetic_defects_the_choice_is_scored_on(normals_only, tmp_path, capsys):
    args = ["--category", CAT, "--data_root", str(normals_only), "--models_root", str(tmp_path), "--image_size", "64"]
    assert main(["select", *args, "--models", "padim", "--proxy_kinds", "crack"]) == 0
    (param,) = tmp_path.glob("*/*/*/param")
    why = yaml.safe_load((param / "selection.yaml").read_text())
    assert why["proxy"]["kinds"] == ["crack"]
    with open(param / "selection.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert [k for k in row if k.startswith("auroc_")] == ["auroc_crack"]
    assert 0.0 <= float(row["auroc_crack"]) <= 1.0
    # tune on the same proxy: best_params.yaml says which defects its trials were scored on
    space = tmp_path / "space.yaml"
    space.write_text("n_features: {low: 8, high: 16, step: 8}\n")
    tuned = ["--models_root", str(tmp_path / "tuned"), "--trials", "1", "--search_space", str(space)]
    assert main(["tune", "--model", "padim", *args[:4], "--image_size", "64", *tuned, "--objective", "proxy",
                 "--proxy_kinds", "crack"]) == 0  # fmt: skip
    (best,) = (tmp_path / "tuned").glob("*/*/*/param/best_params.yaml")
    doc = yaml.safe_load(best.read_text())
    assert doc["objective"] == "proxy" and doc["proxy_kinds"] == ["crack"]
    capsys.readouterr()
    for bad, message in (
        (
            ["select", *args, "--proxy_kinds", "rust"],
            "--proxy_kinds rust: choose from cutpaste, scar, blend, blob, crack",
        ),
        (["tune", "--model", "padim", *args, "--proxy_kinds", "crack"], "--proxy_kinds is for --objective proxy"),
        (["train", "--model", "padim", *args, "--proxy_kinds", "crack"], "--proxy_kinds is for --model auto"),
    ):
        assert main(bad) == 2
        assert message in capsys.readouterr().err


def test_selection_plot_lays_out_one_candidate(tmp_path):
    """A choice among one candidate (``--models padim``) still gets room for its title and axis label."""
    import warnings

    from PIL import Image

    from ad_core.viz import selection_plot

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Tight layout not applied" when it cannot fit them
        selection_plot([{"candidate": "padim lite0", "auroc": 0.93}], tmp_path / "one.png", "Sample_brick: proxy AUROC")
    assert Image.open(tmp_path / "one.png").size[1] >= 130
