"""MLflow experiment tracking and the model registry (seed 004), optional and explicit.

Nothing here runs unless asked (``--mlflow [URI]``). The default store is ``mlruns/`` in the
working directory: an SQLite database ``mlruns/mlflow.db`` plus ``mlruns/artifacts/`` (MLflow's
plain-folder backend is in maintenance mode and refuses to start). Any tracking URI works:
``http://server:5000``, ``sqlite:///path.db``, ``postgresql://...``. A folder path is read as
"an mlruns-style store in that folder".

The client API (``MlflowClient``) is used throughout instead of MLflow's global "active run", so
several trainings in one process (a notebook, the panels) never log into each other's runs.
A bundle is registered as a model version whose source is the run's ``pytorch/`` artifacts, and
``models:/NAME/VERSION`` fetches that folder back for retrain / convtrt / infer.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ad_core.errors import ADCoreError

DEFAULT_STORE = "mlruns"
MODELS_SCHEME = "models:/"


class TrackingError(ADCoreError):
    """The MLflow tracking store or registry cannot be reached, or a model URI does not resolve."""


def tracking_uri(uri: str | bool | None = None) -> str:
    """The tracking URI for ``uri``: ``None``/``True`` means ``$MLFLOW_TRACKING_URI`` or ``./mlruns``."""
    if uri is None or uri is True or uri == "":
        uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE
    uri = str(uri)
    if "://" in uri or uri.startswith(("file:", "databricks")):
        return uri
    folder = Path(uri).expanduser().resolve()
    return f"sqlite:///{folder / 'mlflow.db'}"


def _local_folder(uri: str) -> Path | None:
    """The mlruns-style folder of a default-style SQLite URI (``<folder>/mlflow.db``), else None."""
    if uri.startswith("sqlite:///") and uri.endswith("/mlflow.db"):
        return Path(uri.removeprefix("sqlite:///")).parent
    return None


@contextlib.contextmanager
def _fail_fast() -> Iterator[None]:
    """Make an unreachable HTTP tracking server fail in seconds instead of minutes of retries."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def client(uri: str | bool | None = None):
    """An ``MlflowClient`` for ``uri`` whose store has been reached once (a clear error if not)."""
    try:
        from mlflow import MlflowClient
    except ImportError as exc:  # pragma: no cover - mlflow is a dependency
        raise TrackingError("MLflow is not installed: pip install mlflow") from exc
    resolved = tracking_uri(uri)
    folder = _local_folder(resolved)
    if folder is not None:
        if not folder.parent.is_dir():
            raise TrackingError(f"MLflow store {folder}: its parent folder {folder.parent} does not exist")
        folder.mkdir(exist_ok=True)
    with _fail_fast():
        try:
            c = MlflowClient(tracking_uri=resolved, registry_uri=resolved)
            c.search_experiments(max_results=1)
        except Exception as exc:
            raise TrackingError(f"cannot reach the MLflow tracking store {resolved}: {_first_line(exc)}") from exc
    return c


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _experiment_id(c, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    folder = _local_folder(c.tracking_uri)
    location = (folder / "artifacts").as_uri() if folder is not None else None
    return c.create_experiment(name, artifact_location=location)


def _param_value(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 6000 else text[:5997] + "..."


class Tracker:
    """One MLflow run, written through the client API."""

    def __init__(self, mlflow_client, run_id: str, experiment: str) -> None:
        self.client, self.run_id, self.experiment = mlflow_client, run_id, experiment

    @classmethod
    def start(
        cls,
        uri: str | bool | None,
        experiment: str,
        run_name: str | None = None,
        parent: Tracker | None = None,
        tags: dict[str, str] | None = None,
    ) -> Tracker:
        """Create a run in ``experiment`` (created when missing); ``parent`` nests it (tuning trials)."""
        c = parent.client if parent is not None else client(uri)
        exp_id = _experiment_id(c, experiment)
        all_tags = {"ad_inspect": "1", **(tags or {})}
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent.run_id
        run = c.create_run(exp_id, run_name=run_name, tags=all_tags)
        return cls(c, run.info.run_id, experiment)

    @classmethod
    def resume(cls, reference: dict[str, str], uri: str | bool | None = None) -> Tracker | None:
        """Reopen the run recorded in meta.json when it lives in the store ``uri`` points to."""
        if not reference or tracking_uri(uri) != reference.get("tracking_uri"):
            return None
        c = client(uri)
        try:
            c.get_run(reference["run_id"])
        except Exception:
            return None
        return cls(c, reference["run_id"], reference.get("experiment", ""))

    def reference(self) -> dict[str, str]:
        """What meta.json records about this run."""
        return {"tracking_uri": self.client.tracking_uri, "run_id": self.run_id, "experiment": self.experiment}

    # -- logging ------------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Log parameters (None values skipped, long values shortened)."""
        from mlflow.entities import Param

        items = [Param(str(k), _param_value(v)) for k, v in params.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, params=items)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log the finite numeric values of ``metrics`` at ``step``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(str(k), float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and float(v) == float(v)
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one file."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_folder(self, folder: str | Path, artifact_path: str) -> None:
        """Upload a folder's files (not its hidden staging folders) under ``artifact_path``."""
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Tag the run."""
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, _param_value(v))

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run finished (or FAILED / KILLED)."""
        self.client.set_terminated(self.run_id, status)

    def epoch_logger(self, then: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
        """An ``on_epoch`` callback that logs the epoch's losses live, then calls ``then``."""

        def on_epoch(row: dict) -> None:
            self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row.get("epoch", 0)))
            if then is not None:
                then(row)

        return on_epoch

    # -- what train / test / tune log ---------------------------------------------------------
    def log_train_run(self, run_dir: Path, meta: dict[str, Any]) -> None:
        """Training outcome: raw-score statistics, training log files and the ``pytorch/`` bundle."""
        self.log_metrics({k: meta.get(k) for k in ("image_threshold_auto", "raw_image_min", "raw_image_max")})
        self.set_tags({"run_dir": str(run_dir), "model": meta.get("model"), "category": meta.get("category")})
        from ad_core.rundir import RunDir

        run = RunDir(run_dir)
        for name in ("history.csv", "loss_curve.png", "train.json"):
            if (run.logs / name).is_file():
                self.log_artifact(run.logs / name, "logs")
        self.log_folder(run.pytorch, "pytorch")

    def log_test_result(self, report: dict[str, Any], out: Path, bundle_dir: Path | None) -> None:
        """Test metrics, the seed 004 plots and predictions; the bundle again (its meta.json changed)."""
        metrics = {
            f"test_{k}": report.get(k)
            for k in ("image_auroc", "image_f1", "precision", "recall", "pixel_auroc", "image_threshold_auto")
        }
        metrics.update({f"test_{k}": v for k, v in report.get("confusion", {}).items()})
        for cls_name, stats in report.get("score_stats", {}).items():
            metrics.update({f"score_{cls_name}_{k}": v for k, v in stats.items()})
        self.log_metrics(metrics)
        for f in sorted(out.glob("*")):
            if f.is_file() and f.suffix in {".png", ".csv", ".json"}:
                self.log_artifact(f, "test_result")
        if bundle_dir is not None:
            self.log_folder(bundle_dir, "pytorch")


def log_test(report: dict[str, Any], meta: dict[str, Any], bundle_dir: Path, uri: str | bool | None) -> dict:
    """Log a test into the training's MLflow run when it is in this store, else into a new run."""
    tracker = Tracker.resume(meta.get("mlflow", {}), uri)
    new = tracker is None
    if new:
        tracker = Tracker.start(uri, f"{meta.get('model', 'model')}/{meta.get('category', '')}", run_name="test")
        tracker.log_params({k: meta.get(k) for k in ("model", "category", "image_size")})
    tracker.log_test_result(report, Path(report["output"]), bundle_dir)
    if new:
        tracker.end()
    return tracker.reference()


# -- model registry -------------------------------------------------------------------------------
def register(run: str | Path, name: str, uri: str | bool | None = None) -> dict[str, Any]:
    """Register ``run``'s ``pytorch/`` bundle as a new version of the registered model ``name``.

    The bundle is uploaded (again) into the MLflow run that trained it when that run is in this
    store, otherwise into a new run, so the registered version always holds the current files.
    """
    from ad_core.bundle import bundle_dir as find_bundle
    from ad_core.bundle import read_meta

    bundle_dir = find_bundle(run)
    meta = read_meta(bundle_dir)
    if not name or "/" in name:
        raise TrackingError(f"registered model name {name!r}: use a plain name such as 'bottle_patchcore'")
    tracker = Tracker.resume(meta.get("mlflow", {}), uri)
    new = tracker is None
    if new:
        tracker = Tracker.start(uri, f"{meta.get('model', 'model')}/{meta.get('category', '')}", run_name="register")
        tracker.log_params({k: meta.get(k) for k in ("model", "category", "image_size")})
    tracker.log_folder(bundle_dir, "pytorch")
    if new:
        tracker.end()
    c = tracker.client
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=f"ad-inspect {meta.get('model')} bundle ({meta.get('category')})")
    source = f"{c.get_run(tracker.run_id).info.artifact_uri}/pytorch"
    version = c.create_model_version(
        name,
        source=source,
        run_id=tracker.run_id,
        tags={"model": str(meta.get("model")), "category": str(meta.get("category")), "run_dir": str(run)},
    )
    return {"name": name, "version": int(version.version), "uri": f"models:/{name}/{version.version}", "source": source}


def is_model_uri(value: str | Path | None) -> bool:
    """True for ``models:/NAME/VERSION`` (or ``models:/NAME@alias``)."""
    return isinstance(value, str) and value.startswith(MODELS_SCHEME)


def _model_source(c, uri: str) -> tuple[str, str]:
    """``(version, source URI)`` of ``models:/NAME/VERSION``, ``models:/NAME/latest`` or ``models:/NAME@alias``."""
    rest = uri.removeprefix(MODELS_SCHEME).strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        mv = c.get_model_version_by_alias(name, alias)
    else:
        name, _, version = rest.partition("/")
        if not name or not version:
            raise TrackingError(f"{uri}: expected models:/NAME/VERSION, models:/NAME/latest or models:/NAME@alias")
        if version == "latest":
            versions = c.search_model_versions(f"name='{name}'")
            if not versions:
                raise TrackingError(f"{uri}: the registry has no versions of {name!r}")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            mv = c.get_model_version(name, version)
    return str(mv.version), mv.source


def fetch_model(uri: str, tracking: str | bool | None, dest: str | Path) -> Path:
    """Download a registered bundle (``models:/NAME/VERSION``) into ``dest`` and return its folder (meta.json inside)."""
    c = client(tracking)
    from mlflow.artifacts import download_artifacts

    try:
        with _fail_fast():
            _, source = _model_source(c, uri)
            path = Path(download_artifacts(artifact_uri=source, dst_path=str(dest), tracking_uri=c.tracking_uri))
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"{uri}: cannot fetch it from {c.tracking_uri}: {_first_line(exc)}") from exc
    if not (path / "meta.json").is_file():
        raise TrackingError(f"{uri} holds no meta.json: it is not an ad-inspect bundle")
    return path
