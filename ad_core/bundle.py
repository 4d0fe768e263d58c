"""Loading a model bundle: meta.json + model.pth (+ bank / stats), validated against each other.

A bundle folder is any folder whose meta.json names its weights: a run's ``pytorch/`` folder, the
seed's Jetson folder ``models/<Model>/``, a ``retrain`` output, or an engine folder written by
``convtrt`` (which carries ``model.pth`` and the array file beside the graph, with their sha256, so
that a Jetson can retrain and convert again from the engine folder alone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ad_core.errors import BundleError, ConfigError
from ad_core.fileio import load_npz, save_npz_atomic, save_torch_atomic, sha256, write_json_atomic
from ad_core.models.registry import get_spec
from ad_core.preprocessing import Preprocess
from ad_core.scoring import DEFAULT_NORMALIZED_THRESHOLD, denormalize, normalize

if TYPE_CHECKING:  # the models import torch and anomalib: only load_bundle needs them
    from ad_core.models import AnomalyModel

META_REQUIRED = ("model", "image_size", "weights_pth")


ENGINE_FILE_SUFFIXES = (".onnx", ".plan", ".engine", ".pth")


def bundle_dir(path: str | Path) -> Path:
    """The bundle folder of a run directory, a ``pytorch/`` or engine folder, a meta.json or a file beside it.

    A ``model.onnx`` / ``model.plan`` / ``model.pth`` stands for the folder that holds it and its meta.json.
    """
    path = Path(path)
    if path.is_file() and path.name == "meta.json":
        return path.parent
    if path.is_file() and path.suffix.lower() in ENGINE_FILE_SUFFIXES and (path.parent / "meta.json").is_file():
        return path.parent
    if (path / "pytorch" / "meta.json").is_file():
        return path / "pytorch"
    if (path / "meta.json").is_file():
        return path
    if not path.exists():
        raise BundleError(f"{path}: no such file or folder")
    raise BundleError(f"{path}: no meta.json found (expected {path / 'pytorch' / 'meta.json'} or {path / 'meta.json'})")


def separate_out_dir(meta_json: str | Path, out_dir: str | Path, seed_name: str) -> tuple[Path, Path]:
    """``(meta.json path, out_dir)``, refusing an ``out_dir`` that is the bundle's own folder.

    ``seed_name`` is the folder the seed uses for this output (``retrained``, ``engine``).
    """
    meta_path = bundle_dir(meta_json) / "meta.json"
    out = Path(out_dir)
    if out.resolve() == meta_path.parent.resolve():
        raise ConfigError(
            f"--out_dir {out} is the folder of --meta_json: the original bundle is never overwritten; "
            f"choose another folder (the seed uses <model>/{seed_name})"
        )
    return meta_path, out


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read and check meta.json; accepts the seed's PaDiM spelling ``image_min``/``image_max``."""
    meta_path = bundle_dir(path) / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path}: expected a JSON object")
    for old, new in (("image_min", "raw_image_min"), ("image_max", "raw_image_max")):
        if old in meta and new not in meta:
            meta[new] = meta[old]
    missing = [k for k in META_REQUIRED if k not in meta]
    if missing:
        raise BundleError(f"{meta_path}: missing key(s) {', '.join(missing)}")
    return meta


def write_meta(path: str | Path, meta: dict[str, Any]) -> None:
    """Write meta.json atomically."""
    write_json_atomic(bundle_dir(path) / "meta.json", meta)


@dataclass
class Bundle:
    """A loaded, validated model bundle."""

    path: Path
    meta: dict[str, Any]
    model: AnomalyModel

    @property
    def run_dir(self) -> Path:
        """The run directory holding this bundle (its parent for a ``pytorch/`` folder)."""
        return self.path.parent if self.path.name == "pytorch" else self.path

    @property
    def preprocess(self) -> Preprocess:
        """Preprocessing recorded in meta.json."""
        return (
            Preprocess.from_dict(self.meta["preprocessing"]) if "preprocessing" in self.meta else self.model.preprocess
        )

    @property
    def image_threshold(self) -> float:
        """The normalised decision threshold in force (meta ``image_threshold``, default 0.5)."""
        return float(self.meta.get("image_threshold", DEFAULT_NORMALIZED_THRESHOLD))

    def normalize(self, raw):
        """Seed 003 normalisation with this bundle's threshold and raw min/max."""
        return normalize_with(self.meta, raw)


def normalize_with(meta: dict[str, Any], raw):
    """Seed 003 normalisation with meta.json's automatic threshold and raw min/max."""
    return normalize(raw, meta["image_threshold_auto"], meta["raw_image_min"], meta["raw_image_max"])


PIXEL_KEYS = ("pixel_threshold_auto", "raw_pixel_min", "raw_pixel_max")


def normalize_map_with(meta: dict[str, Any], raw_map):
    """Seed 003's pixel normalisation of anomaly maps: meta.json's pixel threshold and raw pixel min/max.

    A bundle tested without masks (or from before pixel thresholds) has no pixel keys: its maps are
    normalised with the image keys, as the seed falls back to the image threshold.
    """
    if all(k in meta for k in PIXEL_KEYS):
        return normalize(raw_map, meta["pixel_threshold_auto"], meta["raw_pixel_min"], meta["raw_pixel_max"])
    return normalize_with(meta, raw_map)


def pixel_threshold_of(meta: dict[str, Any]) -> float:
    """The normalised pixel threshold in force (meta ``pixel_threshold``, default 0.5)."""
    return float(meta.get("pixel_threshold", DEFAULT_NORMALIZED_THRESHOLD))


def model_version(meta: dict[str, Any]) -> str:
    """What names a bundle's version in logs, sidecars and ``/diagnostics``.

    A model fetched from the registry is ``NAME/VERSION``; otherwise the weights' sha256 (first 12
    digits) and when the bundle was made.
    """
    registry = meta.get("registry") or {}
    if registry.get("name") and registry.get("version"):
        return f"{registry['name']}/{registry['version']}"
    sha = (meta.get("sha256") or {}).get(meta.get("weights_pth", "model.pth"), "")
    return " ".join(x for x in (sha[:12], meta.get("created", "")) if x) or "unknown"


def save_threshold(
    path: str | Path, image_threshold: float, by: str | None = None, note: str = "", key: str = "image_threshold"
) -> dict[str, Any]:
    """Set meta.json's normalised ``image_threshold`` (or ``pixel_threshold``) atomically; record who, when, why.

    Each change is appended to ``threshold_history`` (value, previous value, raw equivalent, user,
    time, note), so a deployed threshold can always be traced. The number written is the number given,
    to full precision.
    """
    import datetime as _dt
    import getpass

    if key not in ("image_threshold", "pixel_threshold"):
        raise ConfigError(f"threshold key {key!r}: image_threshold or pixel_threshold")
    value = float(image_threshold)
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key} must be a normalised number between 0 and 1, got {image_threshold!r}")
    meta = read_meta(path)
    check_meta_numbers(meta, bundle_dir(path) / "meta.json")
    if key == "pixel_threshold" and all(k in meta for k in PIXEL_KEYS):
        raw = denormalize(value, meta["pixel_threshold_auto"], meta["raw_pixel_min"], meta["raw_pixel_max"])
    else:
        raw = denormalize(value, meta["image_threshold_auto"], meta["raw_image_min"], meta["raw_image_max"])
    entry = {
        key: value,
        "previous": meta.get(key, DEFAULT_NORMALIZED_THRESHOLD),
        "raw": raw,
        "by": by or getpass.getuser(),
        "at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if note:
        entry["note"] = note
    meta[key] = value
    meta["threshold_history"] = [*meta.get("threshold_history", []), entry]
    write_meta(path, meta)
    return meta


def write_bundle(model: AnomalyModel, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write model.pth, the array file and meta.json (with sha256 of each file) into ``folder``.

    ``meta["sha256"]`` may already list other files of the folder (an engine's graph); they are kept.
    """
    folder.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(folder / "model.pth", model.weights_state())
    digests = {"model.pth": sha256(folder / "model.pth")}
    meta = {**meta, "weights_pth": "model.pth"}
    arrays = model.artifacts()
    if arrays is not None and model.artifact_file:
        save_npz_atomic(folder / model.artifact_file, arrays)
        digests[model.artifact_file] = sha256(folder / model.artifact_file)
        meta[model.artifact_key] = model.artifact_file
    meta["sha256"] = {**meta.get("sha256", {}), **digests}
    write_json_atomic(folder / "meta.json", meta)
    return meta


def check_meta_numbers(meta: dict[str, Any], where: str | Path) -> None:
    """The normalisation numbers must be finite numbers; the thresholds must be in [0, 1].

    The pixel keys are optional (bundles tested without masks, or from before them), but all three
    or none, and numbers when present.
    """
    for key in ("image_threshold_auto", "raw_image_min", "raw_image_max"):
        if not _finite(meta.get(key)):
            raise BundleError(f"{where}: {key} must be a number, found {meta.get(key)!r}")
    present = [k for k in PIXEL_KEYS if k in meta]
    if present and len(present) != len(PIXEL_KEYS):
        missing = [k for k in PIXEL_KEYS if k not in meta]
        raise BundleError(f"{where}: {', '.join(present)} without {', '.join(missing)}: the pixel keys come together")
    for key in present:
        if not _finite(meta[key]):
            raise BundleError(f"{where}: {key} must be a number, found {meta[key]!r}")
    for key in ("image_threshold", "pixel_threshold"):
        thr = meta.get(key, DEFAULT_NORMALIZED_THRESHOLD)
        if not _finite(thr) or not 0.0 <= thr <= 1.0:
            raise BundleError(f"{where}: {key} must be a normalised number between 0 and 1, found {thr!r}")


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and bool(np.isfinite(v))


def _check_sha(folder: Path, meta: dict[str, Any], filename: str) -> None:
    expected = meta.get("sha256", {}).get(filename)
    if expected and sha256(folder / filename) != expected:
        raise BundleError(
            f"{folder / filename} does not match the sha256 recorded in meta.json: the file was changed "
            f"or belongs to another run"
        )


def load_bundle(
    path: str | Path,
    image_size: int | None = None,
    *,
    weights: str | Path | None = None,
    arrays: str | Path | None = None,
    model: str | None = None,
) -> Bundle:
    """Load meta.json, weights and arrays of a bundle and check they belong together.

    The seed's Jetson flow keeps files apart (``--meta_json models/PaDiM/meta.json --weights_pth
    models/PaDiM/retrained/model.pth --stats models/PaDiM/retrained/stats.npz``): ``weights`` and
    ``arrays`` replace the files meta.json names. Replaced files are not checked against meta.json's
    sha256 (they are newer by design) but must still fit the model's shapes exactly.

    Args:
        path: a run directory, its ``pytorch/`` folder or a meta.json.
        image_size: when given, must equal the size the model was trained for.
        weights: a ``model.pth`` to use instead of the one meta.json names.
        arrays: a ``memory_bank.npz`` / ``stats.npz`` to use instead of the one meta.json names.
        model: when given, must equal meta.json's model.
    """
    folder = bundle_dir(path)
    meta = read_meta(folder)
    where = folder / "meta.json"
    if model is not None and model != meta["model"]:
        raise BundleError(f"{where} describes a {meta['model']} model, not {model}")
    spec = get_spec(meta["model"])
    if image_size is not None and int(image_size) != int(meta["image_size"]):
        raise BundleError(f"{where}: the model was trained for image_size {meta['image_size']}, not {image_size}")
    check_meta_numbers(meta, where)
    ad_model = spec.model_class(**spec.from_meta(meta))
    weights_file = Path(weights) if weights is not None else folder / meta["weights_pth"]
    if weights is None and not weights_file.is_file() and meta.get("engine"):
        source = _engine_source(folder, meta)  # an engine folder from before engines carried their weights
        if source is not None:
            return load_bundle(source[0], image_size, weights=source[1], arrays=arrays, model=model)
    if not weights_file.is_file():
        raise BundleError(f"{weights_file}: {_missing_weights(weights_file, weights is not None, meta)}")
    if weights is None:
        _check_sha(folder, meta, meta["weights_pth"])
    import torch

    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleError(f"{weights_file}: not a readable state dict ({exc})") from exc
    loaded = _load_arrays(folder, meta, ad_model, arrays)
    try:
        ad_model.load_state(state, loaded)
    except BundleError as exc:
        raise BundleError(f"{weights_file if weights is not None else folder}: {exc}") from exc
    return Bundle(folder, meta, ad_model)


def _restore_hint(meta: dict[str, Any]) -> str:
    """Where a file missing from an engine folder can be had again."""
    engine = meta.get("engine") or {}
    if not engine:
        return ""
    source = engine.get("from_meta_json", "the bundle it was converted from")
    return (
        f"; this is an engine folder written by `ad-core convtrt` from {source}: copy the file back from there, "
        f"or run `ad-core convtrt` again on that bundle"
    )


def _missing_weights(path: Path, given: bool, meta: dict[str, Any]) -> str:
    if given:
        return "the weights file given is missing"
    return f"the weights file named in meta.json is missing{_restore_hint(meta) or '; restore it or train again'}"


def _engine_source(folder: Path, meta: dict[str, Any]) -> tuple[Path, Path] | None:
    """``(bundle folder, weights)`` an engine folder was converted from, if they still exist and match by sha256."""
    engine = meta["engine"]
    src_meta, src_weights = engine.get("from_meta_json"), engine.get("from_weights")
    digest = engine.get("from_weights_sha256")
    if not (src_meta and src_weights and digest):
        return None
    src_meta, src_weights = Path(src_meta), Path(src_weights)
    if not (src_meta.is_file() and src_weights.is_file()) or sha256(src_weights) != digest:
        return None
    return src_meta.parent, src_weights


def _load_arrays(folder: Path, meta: dict[str, Any], ad_model: AnomalyModel, arrays: str | Path | None):
    """The bundle's array file (``arrays`` or the one meta.json names, sha256-checked), or None for none."""
    if not ad_model.artifact_key:
        return None
    if arrays is not None:
        array_file = Path(arrays)
        if not array_file.is_file():
            raise BundleError(f"{array_file}: {ad_model.artifact_file} given is missing")
    else:
        name = meta.get(ad_model.artifact_key)
        if not name or not (folder / name).is_file():
            raise BundleError(
                f"{folder}: meta.json key {ad_model.artifact_key!r} must name an existing {ad_model.artifact_file}"
                f"{_restore_hint(meta)}"
            )
        _check_sha(folder, meta, name)
        array_file = folder / name
    try:
        return load_npz(array_file)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{array_file}: not a readable .npz ({exc})") from exc
