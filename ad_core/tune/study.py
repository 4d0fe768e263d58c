"""The study: one Optuna trial trains a configuration as ``ad-core train`` would and scores the test split."""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ad_core.errors import ConfigError, TrainingDiverged, TuneError
from ad_core.models import get_spec
from ad_core.models.registry import ModelSpec
from ad_core.options import TrainOptions
from ad_core.tune.results import TuneResult, best_of, write_results
from ad_core.tune.space import METRICS, SearchSpace, load_search_space, parse_search_space
from ad_core.tune.storage import hide_password, open_storage


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
    objective: str = "test",
    proxy_kinds: Sequence[str] | None = None,
    run_dir: str | Path | None = None,
    options: TrainOptions | None = None,
    pruner=None,
    mlflow: str | bool | None = None,
    log: Callable[[str], None] = print,
    on_trial: Callable[[Any, Any], None] | None = None,
    **kwargs: Any,
) -> TuneResult:
    """Run (or resume) an Optuna study until it holds ``trials`` finished trials; write ``param/``.

    ``kwargs`` are :class:`TrainOptions` fields (``seed``, ``epochs``, ``batch_size``, ``stop`` ...;
    or give ``options``) and fixed hyperparameters (e.g. ``image_size=128``) that hold for every trial. ``on_trial(trial,
    study)`` is called after each trial (the panels draw their table and plot from it). Finished means
    complete or pruned; failed trials (a configuration that cannot train) are recorded, not counted.
    Everything is checked (search space, data, storage, tracking store) before the first trial.

    ``objective``: ``"test"`` scores the labelled test split; ``"proxy"`` needs no labelled defects: each
    trial fits on the normal images minus a seeded held-out part and is scored on those held-out
    normals and synthetic anomalies made from them (:class:`ad_core.proxy.ProxySet`, as ``ad-core select``;
    ``proxy_kinds`` names the kinds, as select's).
    """
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    spec = get_spec(model)
    _check_request(metric, objective, proxy_kinds, trials)
    options, fixed = TrainOptions.split(kwargs, options)
    show = options.progress
    options = options.replace(progress=False)  # no bars inside a trial: each trial prints one line instead
    space = _space(spec, search_space, {k: v for k, v in fixed.items() if v is not None}, bool(options.allow_download))
    train_opts = options.logged()
    the_objective = _Objective(spec, category, data_root, space, options, objective, proxy_kinds)
    category_dir = Path(models_root) / spec.dir_name / category
    if storage is None:
        category_dir.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(category_dir / 'optuna.db').resolve()}"
    store = open_storage(storage)
    if mlflow:
        from ad_core.tracking import client

        client(mlflow)  # fail before any trial when the tracking store is unreachable
    the_study, created = _open_study(store, study or f"{spec.name}-{category}", pruner, spec.trained)
    identity = {"model": spec.name, "category": category, "metric": metric, "search_space": space.to_dict()}
    if objective != "test":
        identity["objective"] = objective
    if objective == "proxy" and proxy_kinds:
        identity["proxy_kinds"] = list(dict.fromkeys(proxy_kinds))
    _claim_study(the_study, identity, the_study.study_name)
    run_dir = _run_dir(the_study, run_dir, category_dir)
    tracker = _start_tracker(mlflow, spec, category, the_study.study_name, metric, trials, train_opts, space)
    primary, secondary = METRICS[metric]
    if created:  # a new study: the defaults first, queued by the one worker whose create_study made it
        the_study.enqueue_trial(space.default_trial(), user_attrs={"start": "model defaults"}, skip_if_exists=True)

    after_trial = _after_trial(the_objective.stop, tracker, log if show else None, on_trial, primary, secondary)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = sum(t.state in finished for t in the_study.trials)
    if show:
        log(
            f"study {the_study.study_name!r} in {hide_password(str(storage))}: {done} finished trial(s), "
            f"running up to {max(0, trials - done)} more"
        )
    the_objective.primary = primary
    interrupted: BaseException | None = None
    try:
        if trials > done:
            the_study.optimize(
                the_objective,
                n_trials=trials - done,
                timeout=timeout,
                catch=(ConfigError, TrainingDiverged),
                callbacks=[MaxTrialsCallback(trials, states=finished), after_trial],
                gc_after_trial=True,
            )
    except BaseException as exc:  # Ctrl-C, Stop: finished trials are in the storage; still write param/
        interrupted = exc
    return _write_and_close(
        the_study, space, run_dir, identity, train_opts, the_objective, storage, tracker, interrupted
    )


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


OBJECTIVES = ("test", "proxy")


def _check_request(metric: str, objective: str, proxy_kinds: Sequence[str] | None, trials: int) -> None:
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r}: choose one of {', '.join(METRICS)}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    if proxy_kinds and objective != "proxy":
        raise ConfigError("--proxy_kinds is for --objective proxy (the synthetic defects it scores)")
    if objective == "proxy" and metric != "auroc":
        raise ConfigError("--objective proxy ranks by AUROC: F1 needs a threshold from labelled defects")
    if trials < 1:
        raise ConfigError(f"trials: expected at least 1, got {trials}")


class _Objective:
    """One trial: train the suggested configuration as ``ad-core train`` would, score the test split.

    With ``objective="proxy"`` the trial fits on the normal images minus a held-out part and is scored
    on the proxy set (held-out normals + synthetic anomalies); the test split is never read.
    """

    def __init__(
        self, spec, category, data_root, space, options: TrainOptions, objective: str = "test", proxy_kinds=None
    ) -> None:
        from ad_core.data.layout import resolve_category

        self.spec, self.category, self.data_root, self.space, self.options = spec, category, data_root, space, options
        self.stop = options.stop
        self.objective = objective
        self.data = resolve_category(data_root, category, require_test=objective == "test")
        self.proxy = None
        if objective == "proxy":
            from ad_core.proxy import ProxySet, check_kinds, held_out

            self.fit_paths, self.hold = held_out(self.data.train, 0.2, options.seed)
            self.proxy = ProxySet(self.hold, kinds=check_kinds(proxy_kinds), seed=options.seed)
        self.test_paths = [s.path for s in self.data.test]
        self.labels = np.array([s.label for s in self.data.test])
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.primary = "image_auroc"

    def _job(self, hparams: dict[str, Any]):
        from ad_core.train import FitJob, prepare_fit

        job = prepare_fit(self.spec.name, self.category, self.data_root, self.options.replace(), hparams)
        if self.proxy is not None:
            job = FitJob(job.data, job.model, job.options, list(self.fit_paths), list(self.hold))
        return job

    def _scores(self, model) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, raw scores)`` of the set this objective ranks on."""
        if self.proxy is not None:
            return self.proxy.labels, self.proxy.raw_scores(model, self.options.batch_size)
        return self.labels, model.score_paths(self.test_paths, self.options.batch_size, self.options.num_workers)[0]

    def __call__(self, trial) -> float:
        from ad_core.scoring import best_f1_threshold

        hparams = self.space.suggest(trial)
        trial.set_user_attr("worker", self.worker)
        job = self._job(hparams)
        trial.set_user_attr("hparams", _jsonable(job.model.hparams))
        if self.spec.trained:
            job.cfg.on_epoch = self._reporter(trial, job)
        try:
            job.run()
        except (ConfigError, TrainingDiverged) as exc:
            trial.set_user_attr("error", str(exc))
            raise
        if self.proxy is None:  # as training does; the proxy's held-out images are what it scores, so they stay out
            job.absorb_val()
        labels, scores = self._scores(job.model)
        f1 = best_f1_threshold(labels, scores)
        result = {"image_auroc": _auroc(labels, scores), "image_f1": f1["f1"], "threshold": f1["threshold"]}
        if self.proxy is not None:
            result["threshold"] = float("nan")  # a threshold from synthetic anomalies is not one to deploy
        for k, v in result.items():
            trial.set_user_attr(k, v)
        return result[self.primary]

    def _reporter(self, trial, job) -> Callable[[dict], None]:
        import optuna

        calib = job.val or job.train
        what = "proxy AUROC" if self.proxy is not None else "test AUROC"

        def report(row: dict) -> None:
            if self.proxy is not None:
                value = _auroc(*self._scores(job.model))
            else:
                value = _auroc(self.labels, job.model.interim_scores(self.test_paths, calib, job.cfg))
            trial.report(value, int(row["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"{what} {value:.3f} after epoch {row['epoch']}")

        return report


def _open_study(store, name: str, pruner, trained: bool):
    """``(study, created)``: create the study, or load it when it exists (``created`` False).

    The sampler is not seeded: two workers must not propose the same points. Of workers starting together
    on a new study, the storage lets exactly one create it (the name is unique), so only that one queues the
    defaults; checking for an empty study would let both see it empty and queue them twice.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if pruner is None:
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if trained else optuna.pruners.NopPruner()
        )
    how = {"storage": store, "study_name": name, "sampler": optuna.samplers.TPESampler(), "pruner": pruner}
    try:
        return optuna.create_study(direction="maximize", **how), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(**how), False


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
        # "model" marks a claimed study, so it is written last: a second worker starting at the same
        # moment sees either no claim (and writes the same values) or the whole identity, never a part
        for k, v in sorted(identity.items(), key=lambda kv: kv[0] == "model"):
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
    top = best_of(study, primary, secondary)  # the trial best_params.yaml will name, ties and all
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
