"""Hyperparameter search with Optuna (seed 000 step 2): search space, study, best parameters.

The objective trains a candidate on the category's normal images exactly as ``ad-core train``
would (same seed, split and options) and scores the labelled test split: image AUROC, with best
F1 as the tie-break (or the other way round with ``metric="f1"``). Trained models (EfficientAD,
VAE) report the test AUROC after every epoch, so hopeless trials are pruned early.

The study lives in an Optuna storage: by default an SQLite file beside the category's runs
(``models/<Model>/<CATEGORY>/optuna.db``), so a crashed or interrupted search resumes with the same
command and no finished trial is lost. Any Optuna storage URL (PostgreSQL, MySQL) or a journal
file (``journal:PATH`` or ``*.log``) lets several processes or machines work on one study.

Results go to the run directory's ``param/`` folder (the seed's flow: tune, then train into the
same run): ``search_space.yaml``, ``best_params.yaml``, ``trials.csv`` and
``optimisation_history.png``. ``ad-core train --params <run>/param/best_params.yaml`` trains the
best trial's configuration.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ad_core.errors import ADCoreError, ConfigError, TrainingDiverged
from ad_core.fileio import write_bytes_atomic
from ad_core.models import get_spec
from ad_core.models.registry import ModelSpec, Param

# seed 001 model table: the hyperparameters each model is tuned over by default
TUNED = {
    "patchcore": ("backbone", "layers", "coreset_ratio"),
    "padim": ("backbone", "layers", "n_features"),
    "efficientad": ("model_size", "learning_rate"),
    "vae": ("latent_dim", "learning_rate"),
}
# layer combinations offered per backbone (each has >= 112 channels, so every n_features below fits)
LAYER_CHOICES = {
    "tf_efficientnet_lite0": [["blocks.2", "blocks.4"], ["blocks.1", "blocks.2", "blocks.4"], ["blocks.4"]],
    **{
        b: [["layer2", "layer3"], ["layer1", "layer2", "layer3"], ["layer3"]]
        for b in ("resnet18", "resnet34", "resnet50", "wide_resnet50_2")
    },
}
DEFAULT_RANGES: dict[str, dict[str, Any]] = {
    "coreset_ratio": {"low": 0.01, "high": 0.25, "log": True},
    "n_features": {"low": 32, "high": 112, "step": 4},  # holds the default, 100
    "model_size": {"choices": ["small", "medium"]},
    "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
    "latent_dim": {"choices": [16, 32, 64, 128, 256]},
}
METRICS = {"auroc": ("image_auroc", "image_f1"), "f1": ("image_f1", "image_auroc")}
TRAIN_KEYS = ("seed", "epochs", "patience", "val_fraction", "batch_size")
SEP = "+"  # list values (layers, enc_channels) are categorical strings "a+b"


class TuneError(ADCoreError):
    """The study cannot run: storage unreachable, or a study of another model / search space."""


# -- search space ----------------------------------------------------------------------------------
@dataclass
class Dim:
    """One hyperparameter of the search: fixed, categorical or a numeric range."""

    name: str
    kind: str  # "fixed" | "categorical" | "int" | "float"
    value: Any = None  # fixed value
    choices: list | dict | None = None  # categorical (layers: per backbone)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def to_yaml(self) -> Any:
        """The YAML form this dimension was (or could have been) written in."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return {"choices": self.choices}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass
class SearchSpace:
    """The validated search space of one model."""

    model: str
    dims: dict[str, Dim] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to ``param/search_space.yaml``."""
        return {name: d.to_yaml() for name, d in self.dims.items()}

    def suggest(self, trial) -> dict[str, Any]:
        """Hyperparameters for one trial (lists decoded, layers chosen for the trial's backbone)."""
        spec = get_spec(self.model)
        params = {p.name: p for p in spec.all_params()}
        out: dict[str, Any] = {}
        for name, d in self.dims.items():
            if name == "layers":
                continue
            out[name] = _suggest_one(trial, d, params[name])
        if "layers" in self.dims:
            d = self.dims["layers"]
            if d.kind == "fixed":
                out["layers"] = d.value
            else:
                options = d.choices[out["backbone"]]
                key = f"layers[{out['backbone']}]" if len(d.choices) > 1 else "layers"
                out["layers"] = trial.suggest_categorical(key, [SEP.join(c) for c in options]).split(SEP)
        return out

    def default_trial(self) -> dict[str, Any]:
        """The model's defaults as Optuna parameters of this space: the study's first trial.

        A tuned model should never come out worse than an untuned one, so a new study starts from
        the defaults. Numbers are clipped into their range and snapped to its step; a default that
        is not among a dimension's choices is left to the sampler, as are fixed dimensions.
        """
        from ad_core.backbones import DEFAULT_LAYERS

        params = {p.name: p for p in get_spec(self.model).all_params()}
        out: dict[str, Any] = {}
        for name, d in self.dims.items():
            default = params[name].default
            if name == "layers" or d.kind == "fixed" or default is None:
                continue
            if d.kind == "categorical":
                options = [SEP.join(map(str, c)) for c in d.choices] if params[name].multiple else list(d.choices)
                value = SEP.join(map(str, default)) if params[name].multiple else default
                if value in options:
                    out[name] = value
                continue
            value = min(max(default, d.low), d.high)
            if d.step:
                steps = min(round((value - d.low) / d.step), int((d.high - d.low) // d.step))
                value = round(d.low + steps * d.step, 12)
            out[name] = int(value) if d.kind == "int" else float(value)
        layers, backbone = self.dims.get("layers"), self.dims.get("backbone")
        if layers is not None and layers.kind == "categorical" and backbone is not None:
            chosen = backbone.value if backbone.kind == "fixed" else out.get("backbone")
            wanted = params["layers"].default or DEFAULT_LAYERS.get(chosen)
            if chosen in layers.choices and wanted and list(wanted) in layers.choices[chosen]:
                key = f"layers[{chosen}]" if len(layers.choices) > 1 else "layers"
                out[key] = SEP.join(wanted)
        return out


def _suggest_one(trial, d: Dim, p: Param) -> Any:
    if d.kind == "fixed":
        return d.value
    if d.kind == "categorical":
        if p.multiple:
            picked = trial.suggest_categorical(d.name, [SEP.join(str(v) for v in c) for c in d.choices])
            return p.validate(picked.split(SEP))
        return trial.suggest_categorical(d.name, list(d.choices))
    if d.kind == "int":
        return trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
    return trial.suggest_float(d.name, float(d.low), float(d.high), step=d.step, log=d.log)


def _offline_backbones(spec: ModelSpec) -> list[str]:
    from ad_core.backbones import available_offline

    backbone = next(p for p in spec.params if p.name == "backbone")
    return [b for b in backbone.choices if available_offline(b)]


def default_search_space(model: str) -> dict[str, Any]:
    """The seed 001 hyperparameters of ``model`` with their default ranges (offline backbones only)."""
    spec = get_spec(model)
    out: dict[str, Any] = {}
    for name in TUNED[spec.name]:
        if name == "backbone":
            out["backbone"] = {"choices": _offline_backbones(spec)}
        elif name == "layers":
            out["layers"] = {"choices": {b: LAYER_CHOICES[b] for b in out["backbone"]["choices"]}}
        else:
            out[name] = dict(DEFAULT_RANGES[name])
    return out


def parse_search_space(
    model: str,
    raw: dict[str, Any] | None = None,
    fixed: dict[str, Any] | None = None,
    *,
    where: str = "search space",
    allow_download: bool = False,
) -> SearchSpace:
    """Validate a search space (YAML data) against the registry; ``fixed`` adds fixed values.

    Hyperparameters the space does not name keep the model's defaults.
    Unknown parameters, values out of a parameter's range, and backbones whose weights are not
    available offline (unless ``allow_download``) are errors that name ``where`` and the entry.
    """
    spec = get_spec(model)
    params = {p.name: p for p in spec.all_params()}
    raw = default_search_space(model) if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of hyperparameter names, got {type(raw).__name__}")
    merged = {**raw, **(fixed or {})}
    unknown = sorted(set(merged) - set(params))
    if unknown:
        raise ConfigError(
            f"{where}: model {spec.name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(params)}"
        )
    space = SearchSpace(spec.name)
    for name, value in merged.items():
        if name == "layers":
            continue
        space.dims[name] = _parse_dim(params[name], value, where)
    if "layers" in merged and "backbone" not in space.dims:  # layers are checked against the backbone
        space.dims["backbone"] = Dim("backbone", "fixed", value=params["backbone"].default)
    if "backbone" in space.dims:
        _check_backbones(space.dims["backbone"], where, allow_download)
    if "layers" in merged:
        space.dims["layers"] = _parse_layers(merged["layers"], space.dims["backbone"], params, where)
    return space


def _parse_dim(p: Param, value: Any, where: str) -> Dim:
    def check(v: Any, what: str) -> Any:
        try:
            return p.validate(v)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {what}: {exc}") from exc

    if isinstance(value, dict) and "choices" in value:
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: {p.name}: 'choices' must be a non-empty list")
        return Dim(p.name, "categorical", choices=[check(c, p.name) for c in choices])
    if isinstance(value, dict) and ("low" in value or "high" in value):
        extra = sorted(set(value) - {"low", "high", "log", "step"})
        if extra or "low" not in value or "high" not in value:
            raise ConfigError(
                f"{where}: {p.name}: a range needs 'low' and 'high' (optional 'log', 'step'), got {value}"
            )
        if p.type not in (int, float) or p.multiple:
            raise ConfigError(f"{where}: {p.name} is not numeric; give 'choices' instead of a range")
        low, high = check(value["low"], p.name), check(value["high"], p.name)
        if low > high:
            raise ConfigError(f"{where}: {p.name}: low {low} is above high {high}")
        kind = "int" if p.type is int else "float"
        return Dim(p.name, kind, low=low, high=high, log=bool(value.get("log", False)), step=value.get("step"))
    if isinstance(value, dict):
        raise ConfigError(f"{where}: {p.name}: expected a value, {{choices: [...]}} or {{low: .., high: ..}}")
    return Dim(p.name, "fixed", value=check(value, p.name))


def _check_backbones(d: Dim, where: str, allow_download: bool) -> None:
    from ad_core.backbones import available_offline, downloads_allowed

    names = d.choices if d.kind == "categorical" else [d.value]
    if not names or names == [None]:
        raise ConfigError(f"{where}: backbone: no backbone with weights available offline; stage weights first")
    if downloads_allowed(allow_download):
        return
    missing = [b for b in names if not available_offline(b)]
    if missing:
        raise ConfigError(
            f"{where}: backbone {', '.join(missing)}: no ImageNet weights available offline. Stage them "
            f"(see `ad-core train --help`, --weights) or pass --allow_download; offline now: "
            f"{', '.join(b for b in names if b not in missing) or 'tf_efficientnet_lite0'}"
        )


def _parse_layers(value: Any, backbone: Dim | None, params: dict[str, Param], where: str) -> Dim:
    from ad_core.models.backbone_model import check_layers

    backbones = (backbone.choices if backbone.kind == "categorical" else [backbone.value]) if backbone else []
    if value is not None and not isinstance(value, dict):
        value = params["layers"].validate(value)
        for b in backbones:
            _layers_ok(check_layers, b, value, where)
        return Dim("layers", "fixed", value=value)
    choices = (value or {}).get("choices")
    if choices is None:
        choices = {b: LAYER_CHOICES.get(b) for b in backbones}
    elif isinstance(choices, list):  # one list for every backbone
        choices = {b: choices for b in backbones}
    if not isinstance(choices, dict):
        raise ConfigError(f"{where}: layers: 'choices' must be a list of layer lists or a mapping backbone -> list")
    extra = sorted(set(choices) - set(backbones))
    if extra:
        raise ConfigError(f"{where}: layers: choices for {', '.join(extra)}, which is not a backbone choice")
    out: dict[str, list[list[str]]] = {}
    for b in backbones:
        options = choices.get(b) or LAYER_CHOICES.get(b)
        if not options:
            raise ConfigError(f"{where}: layers: no layer choices for backbone {b}")
        out[b] = [_layers_ok(check_layers, b, params["layers"].validate(o), where) for o in options]
    return Dim("layers", "categorical", choices=out)


def _layers_ok(check, backbone: str, layers: list[str], where: str) -> list[str]:
    try:
        check(backbone, layers)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return layers


def _read_yaml(path: Path, where: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from exc


def load_search_space(path: str | Path, model: str, fixed: dict[str, Any] | None = None, **kw: Any) -> SearchSpace:
    """Read and validate a search-space YAML file (a mapping: name -> value / choices / range)."""
    path = Path(path)
    raw = _read_yaml(path, f"search space {path}")
    if isinstance(raw, dict) and "params" in raw and isinstance(raw["params"], dict):
        raw = raw["params"]
    return parse_search_space(model, raw or {}, fixed, where=f"search space {path}", **kw)


# -- storage -------------------------------------------------------------------------------------
def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is another process creating the same Optuna tables at the same moment."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    return isinstance(exc, IntegrityError) or (isinstance(exc, OperationalError) and "already exists" in str(exc))


def _rdb_storage(url: str, engine_kwargs: dict):
    """``RDBStorage(url)``, retried while another worker is creating the same new database's tables."""
    import optuna
    from optuna.storages import RDBStorage

    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30, grace_period=120)
        except Exception as exc:
            if attempt == 5 or not _schema_race(exc):
                raise
            time.sleep(0.2 * (attempt + 1))  # the other worker has made the tables a moment later
    raise AssertionError("unreachable")


def open_storage(url: str | Path):
    """An Optuna storage for ``url``: an RDB URL, ``journal:PATH`` / ``*.log`` (journal file) or a path (SQLite)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    url = str(url)
    journal = url.removeprefix("journal:") if url.startswith("journal:") else None
    if journal is None and "://" not in url:
        if url.endswith((".log", ".journal", ".jsonl")):
            journal = url
        else:
            url = f"sqlite:///{Path(url).resolve()}"
    try:
        if journal is not None:
            parent = Path(journal).resolve().parent
            if not parent.is_dir():
                raise TuneError(f"journal storage {journal}: folder {parent} does not exist")
            return JournalStorage(JournalFileBackend(str(journal)))
        if url.startswith("sqlite:///"):
            db = Path(url.removeprefix("sqlite:///"))
            if not db.parent.is_dir():
                raise TuneError(f"Optuna storage {url}: folder {db.parent} does not exist")
        kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        return _rdb_storage(url, kwargs)
    except TuneError:
        raise
    except (ImportError, ModuleNotFoundError) as exc:
        raise TuneError(
            f"Optuna storage {_hide_password(url)}: the database driver is not installed ({exc}); "
            "install it (e.g. psycopg2-binary for PostgreSQL, PyMySQL for MySQL)"
        ) from exc
    except (optuna.exceptions.OptunaError, Exception) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TuneError(f"cannot open Optuna storage {_hide_password(url)}: {text}") from exc


# -- the study -----------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """What a tuning session produced."""

    study_name: str
    storage: str
    run_dir: Path
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any] | None
    n_complete: int
    n_pruned: int
    n_failed: int
    files: dict[str, Path]


def tune(
    model: str,
    category: str,
    data_root: str | Path = "data",
    models_root: str | Path = "models",
    *,
    trials: int = 20,
    timeout: float | None = None,
    search_space: str | Path | dict | None = None,
    storage: str | None = None,
    study: str | None = None,
    metric: str = "auroc",
    run_dir: str | Path | None = None,
    seed: int = 0,
    epochs: int | None = None,
    patience: int = 5,
    val_fraction: float = 0.1,
    batch_size: int = 8,
    num_workers: int = 0,
    allow_download: bool | None = None,
    pruner=None,
    mlflow: str | bool | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
    log: Callable[[str], None] = print,
    on_trial: Callable[[Any, Any], None] | None = None,
    **fixed: Any,
) -> TuneResult:
    """Run (or resume) an Optuna study until it holds ``trials`` finished trials; write ``param/``.

    ``fixed`` hyperparameters (e.g. ``image_size=128``) hold for every trial. ``on_trial(trial,
    study)`` is called after each trial (the panels draw their table and plot from it). Finished means
    complete or pruned; failed trials (a configuration that cannot train) are recorded, not counted.
    Everything is checked (search space, data, storage, tracking store) before the first trial.
    """
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    spec = get_spec(model)
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r}: choose one of {', '.join(METRICS)}")
    if trials < 1:
        raise ConfigError(f"trials: expected at least 1, got {trials}")
    space = _space(spec, search_space, {k: v for k, v in fixed.items() if v is not None}, bool(allow_download))
    train_opts = {
        "seed": seed,
        "epochs": epochs,
        "patience": patience,
        "val_fraction": val_fraction,
        "batch_size": batch_size,
    }
    objective = _Objective(spec, category, data_root, space, train_opts, num_workers, allow_download, stop)
    category_dir = Path(models_root) / spec.dir_name / category
    if storage is None:
        category_dir.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(category_dir / 'optuna.db').resolve()}"
    store = open_storage(storage)
    if mlflow:
        from ad_core.tracking import client

        client(mlflow)  # fail before any trial when the tracking store is unreachable
    the_study = _open_study(store, study or f"{spec.name}-{category}", pruner, spec.trained)
    identity = {"model": spec.name, "category": category, "metric": metric, "search_space": space.to_dict()}
    _claim_study(the_study, identity, the_study.study_name)
    run_dir = _run_dir(the_study, run_dir, category_dir)
    tracker = _start_tracker(mlflow, spec, category, the_study.study_name, metric, trials, train_opts, space)
    primary, secondary = METRICS[metric]
    if not the_study.trials:  # a new study: the defaults first (workers starting together enqueue it once)
        the_study.enqueue_trial(space.default_trial(), user_attrs={"start": "model defaults"}, skip_if_exists=True)

    after_trial = _after_trial(objective.stop, tracker, log if progress else None, on_trial, primary, secondary)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = sum(t.state in finished for t in the_study.trials)
    if progress:
        log(
            f"study {the_study.study_name!r} in {_hide_password(str(storage))}: {done} finished trial(s), "
            f"running up to {max(0, trials - done)} more"
        )
    objective.primary = primary
    interrupted: BaseException | None = None
    try:
        if trials > done:
            the_study.optimize(
                objective,
                n_trials=trials - done,
                timeout=timeout,
                catch=(ConfigError, TrainingDiverged),
                callbacks=[MaxTrialsCallback(trials, states=finished), after_trial],
                gc_after_trial=True,
            )
    except BaseException as exc:  # Ctrl-C, Stop: finished trials are in the storage; still write param/
        interrupted = exc
    return _write_and_close(the_study, space, run_dir, identity, train_opts, objective, storage, tracker, interrupted)


def _write_and_close(study, space, run_dir, identity, train_opts, objective, storage, tracker, interrupted):
    """Write ``param/`` (also after an interruption, then re-raise it) and close the MLflow run."""
    try:
        result = write_results(study, space, run_dir, identity, train_opts, objective.data.data_root, storage)
        if tracker is not None:
            _finish_tracker(tracker, result, METRICS[identity["metric"]][0], interrupted is not None)
    except BaseException:
        if interrupted is None:
            raise
    if interrupted is not None:
        raise interrupted
    return result


def _after_trial(stop, tracker, log, on_trial, primary: str, secondary: str):
    """The study callback: honour Stop, log the trial to MLflow, print a line, tell the caller."""

    def after_trial(study, trial) -> None:
        if stop.is_set():
            study.stop()
        if tracker is not None:
            _log_trial(tracker, trial)
        if log is not None:
            log(_trial_line(trial, study, primary, secondary))
        if on_trial is not None:
            on_trial(trial, study)

    return after_trial


def _space(spec: ModelSpec, search_space, fixed: dict[str, Any], allow_download: bool) -> SearchSpace:
    if isinstance(search_space, str | Path):
        return load_search_space(search_space, spec.name, fixed, allow_download=allow_download)
    return parse_search_space(spec.name, search_space, fixed, allow_download=allow_download)


class _Objective:
    """One trial: train the suggested configuration as ``ad-core train`` would, score the test split."""

    def __init__(self, spec, category, data_root, space, train_opts, num_workers, allow_download, stop) -> None:
        from ad_core.data.layout import resolve_category

        self.spec, self.category, self.data_root, self.space = spec, category, data_root, space
        self.train_opts, self.num_workers, self.allow_download = train_opts, num_workers, allow_download
        self.stop = stop or threading.Event()
        self.data = resolve_category(data_root, category, require_test=True)
        self.test_paths = [s.path for s in self.data.test]
        self.labels = np.array([s.label for s in self.data.test])
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.primary = "image_auroc"

    def __call__(self, trial) -> float:
        from ad_core.scoring import best_f1_threshold
        from ad_core.train import prepare_fit

        hparams = self.space.suggest(trial)
        trial.set_user_attr("worker", self.worker)
        job = prepare_fit(
            self.spec.name,
            self.category,
            self.data_root,
            num_workers=self.num_workers,
            allow_download=self.allow_download,
            progress=False,
            stop=self.stop,
            **self.train_opts,
            **hparams,
        )
        trial.set_user_attr("hparams", _jsonable(job.model.hparams))
        if self.spec.trained:
            job.cfg.on_epoch = self._reporter(trial, job)
        try:
            job.run()
        except (ConfigError, TrainingDiverged) as exc:
            trial.set_user_attr("error", str(exc))
            raise
        scores, _ = job.model.score_paths(self.test_paths, self.train_opts["batch_size"], self.num_workers)
        f1 = best_f1_threshold(self.labels, scores)
        result = {"image_auroc": _auroc(self.labels, scores), "image_f1": f1["f1"], "threshold": f1["threshold"]}
        for k, v in result.items():
            trial.set_user_attr(k, v)
        return result[self.primary]

    def _reporter(self, trial, job) -> Callable[[dict], None]:
        import optuna

        calib = job.val or job.train

        def report(row: dict) -> None:
            value = _auroc(self.labels, job.model.interim_scores(self.test_paths, calib, job.cfg))
            trial.report(value, int(row["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"test AUROC {value:.3f} after epoch {row['epoch']}")

        return report


def _open_study(store, name: str, pruner, trained: bool):
    """Create or load the study. The sampler is not seeded: two workers must not propose the same points."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if pruner is None:
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if trained else optuna.pruners.NopPruner()
        )
    return optuna.create_study(
        storage=store,
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(),
        pruner=pruner,
    )


def _start_tracker(mlflow, spec, category, study_name, metric, trials, train_opts, space):
    if not mlflow:
        return None
    from ad_core.tracking import Tracker

    tracker = Tracker.start(mlflow, f"{spec.dir_name}/{category}", run_name=f"tune {study_name}")
    tracker.log_params({"study": study_name, "metric": metric, "trials": trials, **train_opts})
    tracker.set_tags({"search_space": json.dumps(space.to_dict())})
    return tracker


def _finish_tracker(tracker, result: TuneResult, primary: str, interrupted: bool) -> None:
    for f in result.files.values():
        tracker.log_artifact(f, "param")
    if result.best_value is not None:
        tracker.log_metrics({f"best_{primary}": result.best_value, "best_trial": result.best_trial})
    tracker.end("KILLED" if interrupted else "FINISHED")


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from ad_core.scoring import image_auroc

    scores = np.asarray(scores, np.float64)
    if not np.all(np.isfinite(scores)):
        return 0.0
    return image_auroc(labels, scores)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


def _claim_study(study, identity: dict[str, Any], name: str) -> None:
    """Record what the study tunes; refuse to continue it with another model, category or space."""
    attrs = study.user_attrs
    if "model" not in attrs:
        for k, v in identity.items():
            study.set_user_attr(k, v)
        return
    for k, v in identity.items():
        if attrs.get(k) != v:
            raise TuneError(
                f"study {name!r} was started with another {k.replace('_', ' ')} ({attrs.get(k)!r}, now {v!r}); "
                f"resume it with the same settings or start a new one with --study NEW_NAME"
            )


def _run_dir(study, run_dir: str | Path | None, category_dir: Path) -> Path:
    """The run directory whose ``param/`` receives the results (kept in the study, so a resume reuses it)."""
    if run_dir is not None:
        return Path(run_dir)
    recorded = study.user_attrs.get("run_dir")
    if recorded and not (Path(recorded) / "pytorch").exists():
        return Path(recorded)
    stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    path = (category_dir / stamp).resolve()
    study.set_user_attr("run_dir", str(path))
    return path


def _trial_line(trial, study, primary: str, secondary: str) -> str:
    state = trial.state.name.lower()
    hp = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    if trial.state.name == "COMPLETE":
        what = f"{primary} {trial.user_attrs.get(primary, float('nan')):.4f}, {secondary} {trial.user_attrs.get(secondary, float('nan')):.4f}"
    elif trial.state.name == "FAIL":
        what = f"failed: {trial.user_attrs.get('error', 'see the log')}"
    else:
        what = state
    top = _best(study, primary, secondary)  # the trial best_params.yaml will name, ties and all
    best = f"; best {top.user_attrs.get(primary, top.value):.4f} (trial {top.number})" if top else ""
    return f"trial {trial.number}: {what} ({hp}){best}"


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _log_trial(tracker, trial) -> None:
    from ad_core.tracking import Tracker

    child = Tracker.start(None, tracker.experiment, run_name=f"trial {trial.number}", parent=tracker)
    child.log_params(trial.user_attrs.get("hparams", trial.params))
    child.log_metrics({k: trial.user_attrs.get(k) for k in ("image_auroc", "image_f1", "threshold")})
    for step, value in trial.intermediate_values.items():
        child.log_metrics({"interim_test_auroc": value}, step=step)
    child.set_tags({"trial_state": trial.state.name, "trial_number": trial.number})
    child.end("FINISHED" if trial.state.name in ("COMPLETE", "PRUNED") else "FAILED")


# -- results ------------------------------------------------------------------------------------
def best_trial(study, metric: str):
    """The complete trial with the highest primary metric, ties broken by the secondary, then the earliest.

    Metrics are compared to 6 decimals: two trials whose AUROC differs only by float rounding (the
    same ranking summed in another order) are a tie, and F1 decides.
    """
    return _best(study, *METRICS[metric])


def _best(study, primary: str, secondary: str):
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    if not done:
        return None

    def rank(t) -> tuple[float, float, int]:
        return round(t.user_attrs.get(primary, -1), 6), round(t.user_attrs.get(secondary, -1), 6), -t.number

    return max(done, key=rank)


def write_results(
    study,
    space: SearchSpace,
    run_dir: Path,
    identity: dict[str, Any],
    train_opts: dict[str, Any],
    data_root: Path,
    storage: str,
) -> TuneResult:
    """Write ``param/search_space.yaml``, ``trials.csv``, ``optimisation_history.png`` and ``best_params.yaml``."""
    from ad_core.viz import optimisation_history

    metric = identity["metric"]
    param = run_dir / "param"
    param.mkdir(parents=True, exist_ok=True)
    files = {"search_space": param / "search_space.yaml", "trials": param / "trials.csv"}
    header = (
        f"# ad-core tune search space for {space.model} (study {study.study_name}).\n"
        "# Edit and pass with --search_space: a value is fixed, {choices: [...]} is categorical,\n"
        "# {low, high, log, step} is a numeric range; layers may list choices per backbone.\n"
    )
    write_bytes_atomic(files["search_space"], (header + yaml.safe_dump(space.to_dict(), sort_keys=False)).encode())
    trials = study.trials
    write_bytes_atomic(files["trials"], _trials_csv(trials))
    values = [t.value if t.state.name == "COMPLETE" else None for t in trials]
    if any(v is not None for v in values):
        files["history"] = param / "optimisation_history.png"
        optimisation_history(
            values,
            files["history"],
            f"{space.model} / {identity['category']}: {len(trials)} trials",
            f"test image {'AUROC' if metric == 'auroc' else 'F1'}",
        )
    best = best_trial(study, metric)
    best_params = None
    if best is not None:
        best_params = best.user_attrs["hparams"]
        primary = METRICS[metric][0]
        doc = {
            "model": space.model,
            "category": identity["category"],
            "data_root": str(data_root),
            "metric": primary,
            "value": best.user_attrs.get(primary),
            "image_auroc": best.user_attrs.get("image_auroc"),
            "image_f1": best.user_attrs.get("image_f1"),
            "trial": best.number,
            "study": study.study_name,
            "storage": _hide_password(str(storage)),
            "params": best_params,
            "train": train_opts,
        }
        files["best_params"] = param / "best_params.yaml"
        text = (
            f"# Best trial of study {study.study_name} ({metric}); train it with\n"
            f"#   ad-core train --params {files['best_params']}\n" + yaml.safe_dump(doc, sort_keys=False)
        )
        write_bytes_atomic(files["best_params"], text.encode())
    return TuneResult(
        study_name=study.study_name,
        storage=_hide_password(str(storage)),
        run_dir=run_dir,
        best_trial=None if best is None else best.number,
        best_value=None if best is None else best.value,
        best_params=best_params,
        n_complete=sum(t.state.name == "COMPLETE" for t in trials),
        n_pruned=sum(t.state.name == "PRUNED" for t in trials),
        n_failed=sum(t.state.name == "FAIL" for t in trials),
        files=files,
    )


def _trials_csv(trials) -> bytes:
    names: list[str] = []
    for t in trials:
        for k in t.user_attrs.get("hparams", {}):
            if k not in names:
                names.append(k)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        ["trial", "state", "value", "image_auroc", "image_f1", "threshold", *names, "duration_s", "worker", "note"]
    )
    for t in trials:
        hp = t.user_attrs.get("hparams", {})
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else ""
        )
        note = t.user_attrs.get("error", "")
        if t.state.name == "PRUNED" and t.intermediate_values:
            step = max(t.intermediate_values)
            note = f"pruned after epoch {step} (test AUROC {t.intermediate_values[step]:.3f})"
        writer.writerow(
            [
                t.number,
                t.state.name.lower(),
                "" if t.value is None else f"{t.value:.6g}",
                *(
                    f"{t.user_attrs[k]:.6g}" if k in t.user_attrs else ""
                    for k in ("image_auroc", "image_f1", "threshold")
                ),
                *(_csv_value(hp.get(k)) for k in names),
                f"{duration:.1f}" if duration != "" else "",
                t.user_attrs.get("worker", ""),
                note,
            ]
        )
    return buf.getvalue().encode()


def _csv_value(v: Any) -> str:
    if isinstance(v, list):
        return SEP.join(map(str, v))
    return "" if v is None else str(v)


# -- train --params ------------------------------------------------------------------------------
@dataclass
class BestParams:
    """A ``best_params.yaml`` read back for ``ad-core train --params``."""

    path: Path
    model: str
    category: str
    data_root: str | None
    hparams: dict[str, Any]
    train: dict[str, Any]

    @property
    def run_dir(self) -> Path | None:
        """The tuning run directory to train into (when the file is its ``param/best_params.yaml``, untrained)."""
        if self.path.parent.name == "param" and not (self.path.parent.parent / "pytorch").exists():
            return self.path.parent.parent
        return None


def load_best_params(path: str | Path) -> BestParams:
    """Read ``best_params.yaml``; every hyperparameter is checked against the model's registry entry."""
    path = Path(path)
    doc = _read_yaml(path, f"--params {path}")
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict) or "model" not in doc:
        raise ConfigError(f"--params {path}: expected 'model', 'category' and a 'params' mapping (ad-core tune output)")
    spec = get_spec(str(doc["model"]))
    try:
        hparams = spec.validate(doc["params"])
    except ConfigError as exc:
        raise ConfigError(f"--params {path}: {exc}") from exc
    train = doc.get("train") or {}
    unknown = sorted(set(train) - set(TRAIN_KEYS))
    if unknown:
        raise ConfigError(
            f"--params {path}: unknown training option(s) {', '.join(unknown)}; known: {', '.join(TRAIN_KEYS)}"
        )
    return BestParams(path, spec.name, str(doc.get("category", "")), doc.get("data_root"), hparams, dict(train))
