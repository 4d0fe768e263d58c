"""Choose a model and configuration with no labelled defects: ``ad-core select`` and ``ad-core train --model auto``.

Each candidate (a model and a set of hyperparameters; the models' specs list them in
``select_candidates``) is fitted on the category's normal images minus a seeded held-out part, and
scored on :class:`ad_core.proxy.ProxySet`: the held-out normals and synthetic anomalies made from
them. The candidate with the highest proxy AUROC wins (to 3 decimals; the faster one breaks ties).
Nothing reads the test split. The reasons go to ``<run>/param/``, as the seed's tuning does:
``selection.csv`` (every candidate: proxy AUROC overall and per kind, fit time, ms per image),
``selection.yaml`` (the choice and why), ``selection.png`` and ``best_params.yaml``, which
``ad-core train --params`` (and ``--model auto``) trains into the same run directory.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ad_core.errors import ConfigError, TrainingDiverged, TrainingStopped
from ad_core.fileio import write_bytes_atomic
from ad_core.models.registry import get_spec, list_models
from ad_core.options import TrainOptions

DEFAULT_MODELS = ("patchcore", "padim")
"""Models considered by default: the two that fit in seconds on a CPU (``--models`` adds EfficientAD and the VAE)."""


@dataclass(frozen=True)
class Candidate:
    """One configuration to try."""

    model: str
    hparams: dict[str, Any]
    label: str


@dataclass
class SelectResult:
    """What a selection produced."""

    run_dir: Path
    best: dict[str, Any]
    rows: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)


def candidate_configs(models: Sequence[str] | None = None, wide: bool = False) -> list[Candidate]:
    """The candidates of ``models`` (default :data:`DEFAULT_MODELS`) from their specs.

    ``wide`` adds each spec's ``proxy_variants``: more configurations, some deliberately weaker,
    which ``bench/bench_quality.py --proxy`` uses to check that the proxy ranks like the test split.
    """
    out = []
    for name in models or DEFAULT_MODELS:
        spec = get_spec(name)
        variants = list(spec.select_candidates) + (list(spec.proxy_variants) if wide else [])
        for hp in variants or [{}]:
            out.append(Candidate(spec.name, dict(hp), _label(spec.name, hp)))
    return out


def _label(model: str, hparams: dict[str, Any]) -> str:
    if not hparams:
        return f"{model} (defaults)"
    parts = [f"{k}={'+'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in hparams.items()]
    return f"{model} {' '.join(parts)}"


def select(
    category: str,
    data_root: str | Path = "data",
    models_root: str | Path = "models",
    *,
    models: Sequence[str] | None = None,
    candidates: Sequence[Candidate] | None = None,
    wide: bool = False,
    options: TrainOptions | None = None,
    hold_fraction: float = 0.2,
    per_image: int = 2,
    proxy_kinds: Sequence[str] | None = None,
    log: Callable[[str], None] | None = print,
    **kwargs: Any,
) -> SelectResult:
    """Fit every candidate, score it on the proxy set, write ``param/`` of a new run directory for the winner.

    ``kwargs`` are :class:`TrainOptions` fields and hyperparameters every candidate gets (``image_size``).
    ``wide`` also tries each model's ``proxy_variants`` (other layers, backbones, searches: about six
    fits per model instead of one), for when an hour of fitting is cheaper than a wrong default.
    ``proxy_kinds``: the synthetic defects to make (:func:`ad_core.proxy.check_kinds`; default the four
    broad kinds; ``["crack"]`` where the line's defects are hairline cracks or scratches).
    """
    from ad_core.data.layout import resolve_category
    from ad_core.proxy import ProxySet, check_kinds, held_out
    from ad_core.rundir import staged

    unknown = [m for m in (models or ()) if m not in list_models()]
    if unknown:
        raise ConfigError(f"--models {', '.join(unknown)}: choose from {', '.join(list_models())}")
    kinds = check_kinds(proxy_kinds)
    options, fixed = TrainOptions.split(kwargs, options)
    device = options.resolve_device()
    cands = list(candidates) if candidates is not None else candidate_configs(models, wide)
    if not cands:
        raise ConfigError("no candidates to select from")
    data = resolve_category(data_root, category)
    fit_paths, hold = held_out(data.train, hold_fraction, options.seed)
    proxy = ProxySet(hold, per_image, kinds, seed=options.seed)
    if log:
        log(
            f"proxy set: {len(hold)} held-out normal images of {category} and {len(proxy) - len(hold)} synthetic "
            f"anomalies made from them; {len(fit_paths)} images to fit each of {len(cands)} candidates"
        )
    rows = []
    for n, cand in enumerate(cands, 1):
        if options.stop.is_set():
            raise TrainingStopped("selection stopped on request")
        options.progress_of("select", n - 1, len(cands))
        row, _ = try_candidate(cand, data, fit_paths, hold, proxy, options, fixed, device)
        rows.append(row)
        if log:
            log(_line(n, len(cands), row, rows))
    options.progress_of("select", len(cands), len(cands))
    done = [r for r in rows if r.get("auroc") is not None]
    if not done:
        raise ConfigError(f"no candidate could be fitted: {rows[0].get('error')}")
    best = max(done, key=_rank)
    spec = get_spec(best["model"])
    final = Path(models_root) / spec.dir_name / category / _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    with staged(final, "new") as stage:
        files = write_selection(stage.path, best, rows, proxy, category, data.data_root, options, len(fit_paths))
    files = {k: stage.final / v.relative_to(stage.path) for k, v in files.items()}
    return SelectResult(stage.final, best, rows, files)


def try_candidate(cand: Candidate, data, fit_paths, hold, proxy, options: TrainOptions, fixed=None, device=None):
    """Fit one candidate on ``fit_paths`` and score it on the proxy set: ``(row, fitted model or None)``."""
    import torch

    from ad_core.models import create_model
    from ad_core.train import FitJob

    row: dict[str, Any] = {"candidate": cand.label, "model": cand.model}
    try:
        torch.manual_seed(options.seed)
        own = {p.name for p in get_spec(cand.model).all_params()}
        given = {k: v for k, v in (fixed or {}).items() if k in own}  # e.g. image_size; another model's flags skip
        model = create_model(cand.model, **{**given, **cand.hparams}).to(device or options.resolve_device())
        row["hparams"] = dict(model.hparams)
        start = time.perf_counter()
        FitJob(data, model, options.replace(progress=False), list(fit_paths), list(hold)).run()
        row["fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = proxy.raw_scores(model, options.batch_size)
        row["ms_per_image"] = (time.perf_counter() - start) * 1000.0 / len(proxy)
        row.update(proxy.evaluate(scores))
    except (ConfigError, TrainingDiverged) as exc:
        row.update(auroc=None, error=str(exc))
        return row, None
    return row, model


def _rank(row: dict[str, Any]) -> tuple[float, float]:
    return round(row["auroc"], 3), -row["ms_per_image"]


def _line(n: int, total: int, row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    if row.get("auroc") is None:
        return f"candidate {n}/{total}: {row['candidate']}: failed: {row['error']}"
    kinds = ", ".join(f"{k} {v:.3f}" for k, v in row["per_kind"].items())
    best = max((r for r in rows if r.get("auroc") is not None), key=_rank)
    return (
        f"candidate {n}/{total}: {row['candidate']}: proxy AUROC {row['auroc']:.3f} ({kinds}); "
        f"fit {row['fit_s']:.1f} s, {row['ms_per_image']:.1f} ms/image; best so far: {best['candidate']}"
    )


def write_selection(
    run: Path, best: dict, rows: list[dict], proxy, category: str, data_root: Path, options: TrainOptions, n_fit: int
) -> dict[str, Path]:
    """``param/selection.csv``, ``selection.yaml``, ``selection.png`` and ``best_params.yaml`` (tune's format)."""
    from ad_core.viz import selection_plot

    param = run / "param"
    param.mkdir(parents=True, exist_ok=True)
    files = {
        k: param / f for k, f in (("csv", "selection.csv"), ("why", "selection.yaml"), ("best", "best_params.yaml"))
    }
    write_bytes_atomic(files["csv"], _csv(rows))
    ranked = sorted((r for r in rows if r.get("auroc") is not None), key=_rank, reverse=True)
    runner_up = ranked[1] if len(ranked) > 1 else None
    why = (
        f"{best['candidate']} separates {proxy.__len__() - int((proxy.labels == 0).sum())} synthetic anomalies from "
        f"{int((proxy.labels == 0).sum())} held-out normal images best: proxy AUROC {best['auroc']:.3f}"
    )
    if runner_up is not None:
        why += f" (next: {runner_up['candidate']}, {runner_up['auroc']:.3f})"
        if round(runner_up["auroc"], 3) == round(best["auroc"], 3):
            why += "; tied to 3 decimals, the faster one is chosen"
    weakest = min(best["per_kind"].items(), key=lambda kv: kv[1])
    doc = {
        "chosen": best["candidate"],
        "model": best["model"],
        "why": why,
        "weakest_kind": {"kind": weakest[0], "auroc": round(weakest[1], 4)},
        "proxy": {
            "held_out_normals": int((proxy.labels == 0).sum()),
            "synthetic_anomalies": int((proxy.labels == 1).sum()),
            "kinds": sorted({k for k in proxy.kinds if k != "normal"}),
            "fit_images": n_fit,
            "test_split_used": False,
        },
        "ranking": [
            {
                "candidate": r["candidate"],
                "proxy_auroc": round(r["auroc"], 4),
                "ms_per_image": round(r["ms_per_image"], 2),
            }
            for r in ranked
        ],
        "held_out_files": [str(p) for p in proxy.normal_paths],
    }
    header = "# ad-core select: the configuration chosen without labelled defects, and why\n"
    write_bytes_atomic(files["why"], (header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)).encode())
    best_doc = {
        "model": best["model"],
        "category": category,
        "data_root": str(data_root),
        "metric": "proxy_auroc",
        "value": best["auroc"],
        "source": "ad-core select",
        "params": _plain(best["hparams"]),
        "train": options.logged(),
    }
    text = (
        f"# Chosen by ad-core select (proxy AUROC, no labelled defects); train it with\n"
        f"#   ad-core train --params {files['best']}\n" + yaml.safe_dump(best_doc, sort_keys=False)
    )
    write_bytes_atomic(files["best"], text.encode())
    files["plot"] = param / "selection.png"
    selection_plot(ranked, files["plot"], f"{category}: proxy AUROC per candidate")
    return files


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _csv(rows: list[dict]) -> bytes:
    kinds: list[str] = []
    for r in rows:
        for k in r.get("per_kind", {}):
            if k not in kinds:
                kinds.append(k)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        ["candidate", "model", "proxy_auroc", *[f"auroc_{k}" for k in kinds], "fit_s", "ms_per_image", "error"]
    )
    for r in rows:
        ok = r.get("auroc") is not None
        writer.writerow(
            [
                r["candidate"],
                r["model"],
                f"{r['auroc']:.6f}" if ok else "",
                *(f"{r['per_kind'][k]:.6f}" if ok and k in r["per_kind"] else "" for k in kinds),
                f"{r['fit_s']:.2f}" if ok else "",
                f"{r['ms_per_image']:.2f}" if ok else "",
                r.get("error", ""),
            ]
        )
    return buf.getvalue().encode()
