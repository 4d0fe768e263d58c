"""Fleet roll-out: a cell's node runs ``models:/NAME@alias`` from the MLflow registry, cached and verified.

Each Jetson of a fleet points its node's ``model_path`` at a registry URI
(``models:/NAME/VERSION``, ``models:/NAME@alias`` or ``models:/NAME/latest``). :class:`RegistryCache`
resolves it to a version, downloads that version's bundle once into
``<models_root>/.registry/<NAME>/<VERSION>/`` (staged, then renamed), checks every file against the
sha256 in its meta.json, and remembers what each alias and ``latest`` pointed at. Moving the alias
in the registry and calling the node's ``~/reload`` (or waiting ``registry_poll_s``) switches the
cell to the new version between frames.

Offline (the registry unreachable, a cell on an isolated network after a restart), a URI resolves
to the cached version it last resolved to, and :class:`Resolved` says so; with nothing cached it
is refused with a message that says what to do. The CLI's ``models:/`` flags resolve through the same
cache (:func:`resolve_path`, under :func:`cache_root`). A version's converted engine (``~/convert`` on the
Jetson: TensorRT) lives in the same folder (``engine/``), so each version is converted once.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ad_core.errors import BundleError
from ad_core.fileio import sha256, write_json_atomic
from ad_core.tracking import MODELS_SCHEME, TrackingError, is_model_uri, tracking_uri

CACHE = ".registry"
ENGINE = "engine"


class Unreachable(TrackingError):
    """The registry cannot be reached at all (as opposed to reached, but not knowing the URI)."""


@dataclass(frozen=True)
class Resolved:
    """A registry URI resolved to a local, verified bundle."""

    uri: str
    name: str
    version: str
    path: Path
    """the bundle folder (meta.json inside), or its converted engine folder when there is one"""
    offline: bool = False
    note: str = ""

    @property
    def label(self) -> str:
        """``NAME/VERSION``: the model version a cell reports."""
        return f"{self.name}/{self.version}"


def parse_uri(uri: str) -> tuple[str, str]:
    """``(name, ref)`` of a models:/ URI; ref is a version number, ``latest`` or ``@alias``."""
    rest = str(uri).removeprefix(MODELS_SCHEME).strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        ref = f"@{alias}"
    else:
        name, _, ref = rest.partition("/")
    if not is_model_uri(uri) or not name or not ref or not re.fullmatch(r"\d+|latest|@[\w.-]+", ref):
        raise TrackingError(f"{uri}: expected models:/NAME/VERSION, models:/NAME@alias or models:/NAME/latest")
    return name, ref


def verify(folder: Path) -> None:
    """Every file meta.json lists in ``sha256`` is there and unchanged (a damaged cache is not run)."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise BundleError(f"{folder}: no meta.json: not an ad-inspect bundle")
    meta = json.loads(meta_path.read_text())
    digests = meta.get("sha256") or {}
    if not digests:
        raise BundleError(f"{meta_path}: no sha256 of its files; register a bundle written by ad-inspect")
    for name, digest in digests.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{path} is missing from the cached bundle")
        if sha256(path) != digest:
            raise BundleError(f"{path} does not match its sha256 in meta.json: the download or the cache is damaged")


class RegistryCache:
    """Resolve models:/ URIs to verified local bundles under ``<models_root>/.registry``; see the module docstring."""

    def __init__(self, models_root: str | Path, tracking: str | None = None) -> None:
        self.root = Path(models_root) / CACHE
        self.tracking = tracking or None

    def folder(self, name: str, version: str) -> Path:
        """Where a version's bundle is cached."""
        return self.root / name / str(version)

    def _pointers(self, name: str) -> dict[str, str]:
        path = self.root / name / "pointers.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _remember(self, name: str, ref: str, version: str) -> None:
        pointers = {**self._pointers(name), ref: version}
        write_json_atomic(self.root / name / "pointers.json", pointers)

    def resolve(self, uri: str) -> Resolved:
        """The local bundle of ``uri`` (downloaded once per version); offline, the cached one it pointed to."""
        name, ref = parse_uri(uri)
        try:
            version = self._registry_version(uri)
        except TrackingError as exc:
            return self._offline(uri, name, ref, exc)
        folder = self.folder(name, version)
        if not self._cached(folder):
            self._download(uri, folder, version)
        self._remember(name, ref, version)
        return Resolved(uri, name, version, self.engine_or_bundle(folder))

    def engine_or_bundle(self, folder: Path) -> Path:
        """A version's converted engine when ``~/convert`` made one, else its bundle."""
        engine = folder / ENGINE
        return engine if (engine / "meta.json").is_file() else folder

    def _cached(self, folder: Path) -> bool:
        if not (folder / "meta.json").is_file():
            return False
        try:
            verify(folder)
        except BundleError:
            return False  # damaged: download again
        return True

    def _registry_version(self, uri: str) -> str:
        """The version ``uri`` names now; :class:`Unreachable` when the registry cannot be asked."""
        from ad_core.tracking import _fail_fast, _first_line, _local_folder, _model_source, client

        store = _local_folder(tracking_uri(self.tracking))
        if store is not None and not (store / "mlflow.db").is_file():  # a store folder gone (an unmounted share)
            raise Unreachable(f"the MLflow store {store} does not exist")
        try:
            c = client(self.tracking)
        except TrackingError as exc:
            raise Unreachable(str(exc)) from exc
        try:
            with _fail_fast():
                version, _ = _model_source(c, uri)
        except TrackingError:
            raise
        except Exception as exc:
            raise TrackingError(f"{c.tracking_uri}: {_first_line(exc)}") from exc
        return version

    def _download(self, uri: str, folder: Path, version: str) -> None:
        from ad_core.rundir import staged
        from ad_core.tracking import fetch_model

        name, _ = parse_uri(uri)
        with staged(folder, "replace") as stage:
            fetched = fetch_model(f"{MODELS_SCHEME}{name}/{version}", self.tracking, stage.path / ".download")
            for item in fetched.iterdir():
                item.rename(stage.path / item.name)
            verify(stage.path)
            write_json_atomic(
                stage.path / "registry.json",
                {
                    "uri": f"{MODELS_SCHEME}{name}/{version}",
                    "name": name,
                    "version": version,
                    "tracking": str(self.tracking or ""),
                    "fetched": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                },
            )

    def _offline(self, uri: str, name: str, ref: str, cause: TrackingError) -> Resolved:
        version = ref if ref.isdigit() else self._pointers(name).get(ref)
        folder = self.folder(name, version) if version else None
        if folder is None or not self._cached(folder):
            have = (
                sorted(p.name for p in (self.root / name).iterdir() if p.is_dir())
                if (self.root / name).is_dir()
                else []
            )
            problem = "cannot be reached" if isinstance(cause, Unreachable) else "does not resolve it"
            raise TrackingError(
                f"{uri}: the registry {problem} ({cause}) and no cached copy is known for it under "
                f"{self.root / name}"
                + (f" (cached versions: {', '.join(have)}; name one: models:/{name}/<version>)" if have else "")
                + "; connect this machine to the registry once, or point at a local bundle folder instead"
            ) from cause
        problem = "registry unreachable" if isinstance(cause, Unreachable) else "the registry does not resolve it"
        note = f"{problem} ({cause}); running the cached version {version} of {name}"
        return Resolved(uri, name, version, self.engine_or_bundle(folder), offline=True, note=note)


def convert_once(folder: Path) -> Path:
    """Convert a cached version into its ``engine/`` folder, once: later calls return the engine made before.

    The engine file to run: ``model.plan`` where TensorRT and a GPU are present, otherwise ``model.onnx``.
    """
    from ad_core.bundle import read_meta
    from ad_core.convert import convtrt

    engine = folder / ENGINE
    if (engine / "meta.json").is_file():
        meta = read_meta(engine)
        info = meta.get("engine") or {}
        plan = engine / info.get("plan", "") if info.get("plan") else None
        return plan if plan is not None and plan.is_file() else engine / info.get("onnx", "model.onnx")
    result = convtrt(read_meta(folder)["model"], None, folder, engine)
    return result.plan or result.onnx


def cached_version_of(path: str | Path) -> tuple[str, str] | None:
    """``(name, version)`` when ``path`` lies in a registry cache (its bundle or engine folder), else None."""
    path = Path(path).resolve()
    for folder in (path, *path.parents):
        info = folder / "registry.json"
        if info.is_file():
            data = json.loads(info.read_text())
            return data["name"], str(data["version"])
        if folder.name == CACHE:
            break
    return None


def cache_root(tracking: str | bool | None = None) -> Path:
    """Where the CLI keeps the bundles it fetched from the registry at ``tracking``.

    ``$AD_CORE_MODELS_CACHE`` (default ``~/.cache/ad_core/models``), one folder per tracking URI
    (a hash of it, so two registries that both hold ``brick/1`` never share a folder); inside it the
    layout of :class:`RegistryCache`: each version fetched once, verified, and reused,
    offline too.
    """
    base = Path(os.environ.get("AD_CORE_MODELS_CACHE", Path.home() / ".cache" / "ad_core" / "models"))
    return base / hashlib.sha256(tracking_uri(tracking).encode()).hexdigest()[:16]


def resolve_path(
    value: str | Path | None,
    filename: str,
    tracking: str | bool | None = None,
    memo: dict[str, Resolved] | None = None,
) -> str | Path | None:
    """``value`` itself, or for a ``models:/`` URI the named file inside the fetched bundle.

    ``filename`` is ``model.pth``, ``meta.json``, ``memory_bank.npz`` ... or ``""`` for the folder.
    A version is downloaded once into :func:`cache_root` and verified against its sha256; with the
    registry out of reach, a URI resolves to the cached version it last resolved to (said on stderr).
    ``memo`` (one per command) resolves each URI once, so that ``models:/NAME/latest`` given for the
    weights and for meta.json names the same version even if a new one is registered in between.
    """
    if not is_model_uri(value):
        return value
    cache = RegistryCache(cache_root(tracking), tracking_uri(tracking))
    resolved = memo.get(str(value)) if memo is not None else None
    if resolved is None:
        resolved = cache.resolve(str(value))
        if resolved.offline:
            print(f"note: {resolved.note}", file=sys.stderr)
        if memo is not None:
            memo[str(value)] = resolved
    folder = cache.folder(resolved.name, resolved.version)
    target = folder / filename if filename else folder
    if filename and not target.exists():
        raise TrackingError(
            f"{value} has no {filename} (it holds {', '.join(sorted(p.name for p in folder.iterdir()))})"
        )
    return target
