"""What a study leaves behind: ``param/`` files, the best trial, and reading ``best_params.yaml`` back."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ad_core.errors import ConfigError
from ad_core.fileio import write_bytes_atomic
from ad_core.models import get_spec
from ad_core.options import TrainOptions
from ad_core.tune.space import METRICS, SEP, SearchSpace, read_yaml
from ad_core.tune.storage import hide_password


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


def best_trial(study, metric: str):
    """The complete trial with the highest primary metric, ties broken by the secondary, then the earliest.

    Metrics are compared to 6 decimals: two trials whose AUROC differs only by float rounding (the
    same ranking summed in another order) are a tie, and F1 decides.
    """
    return best_of(study, *METRICS[metric])


def best_of(study, primary: str, secondary: str):
    """The complete trial that is best on ``primary`` (to 6 decimals), then on ``secondary``."""
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
            f"{'proxy' if identity.get('objective') == 'proxy' else 'test'} image {'AUROC' if metric == 'auroc' else 'F1'}",
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
            "objective": identity.get("objective", "test"),
            **({"proxy_kinds": identity["proxy_kinds"]} if "proxy_kinds" in identity else {}),
            "value": best.user_attrs.get(primary),
            "image_auroc": best.user_attrs.get("image_auroc"),
            "image_f1": best.user_attrs.get("image_f1"),
            "trial": best.number,
            "study": study.study_name,
            "storage": hide_password(str(storage)),
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
        storage=hide_password(str(storage)),
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
    doc = read_yaml(path, f"--params {path}")
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict) or "model" not in doc:
        raise ConfigError(f"--params {path}: expected 'model', 'category' and a 'params' mapping (ad-core tune output)")
    spec = get_spec(str(doc["model"]))
    try:
        hparams = spec.validate(doc["params"])
    except ConfigError as exc:
        raise ConfigError(f"--params {path}: {exc}") from exc
    train = doc.get("train") or {}
    unknown = sorted(set(train) - set(TrainOptions().logged()))
    if unknown:
        raise ConfigError(
            f"--params {path}: unknown training option(s) {', '.join(unknown)}; known: {', '.join(TrainOptions().logged())}"
        )
    return BestParams(path, spec.name, str(doc.get("category", "")), doc.get("data_root"), hparams, dict(train))
