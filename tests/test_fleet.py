"""Fleet roll-out without ROS: models:/ URIs resolved to verified cached bundles, aliases, offline, convert once."""

from __future__ import annotations

import json
import shutil

import pytest

from ad_core import train
from ad_core.fleet import RegistryCache, convert_once, parse_uri, verify
from ad_core.tracking import TrackingError, client, register

CAT = "Sample_brick"


@pytest.fixture(scope="module")
def registry(trained, sample_root, tmp_path_factory):
    """A local MLflow store (SQLite) holding two versions of 'brick': the session's PaDiM, and another one."""
    root = tmp_path_factory.mktemp("fleet")
    store = str(root / "mlruns")
    v1 = trained("padim")
    v2 = train("padim", CAT, sample_root, root / "models_pc", progress=False, image_size=128, n_features=64)
    assert register(v1, "brick", store)["version"] == 1
    assert register(v2, "brick", store)["version"] == 2
    client(store).set_registered_model_alias("brick", "prod", "1")
    return {"store": store, "v1": v1, "v2": v2, "root": root}


def test_parse_uri():
    assert parse_uri("models:/brick/3") == ("brick", "3")
    assert parse_uri("models:/brick@prod") == ("brick", "@prod")
    assert parse_uri("models:/brick/latest") == ("brick", "latest")
    for bad in ("models:/brick", "models:/brick/v3", "brick/3", "models:/"):
        with pytest.raises(TrackingError, match="expected models:/NAME/VERSION"):
            parse_uri(bad)


def test_resolve_download_once_alias_move_and_offline(registry, tmp_path):
    cache = RegistryCache(tmp_path / "models", registry["store"])
    first = cache.resolve("models:/brick@prod")
    assert (first.name, first.version, first.offline) == ("brick", "1", False)
    assert first.path == tmp_path / "models" / ".registry" / "brick" / "1"
    meta = json.loads((first.path / "meta.json").read_text())
    assert (
        meta["sha256"]["model.pth"]
        == json.loads((registry["v1"] / "pytorch" / "meta.json").read_text())["sha256"]["model.pth"]
    )
    verify(first.path)
    stamp = (first.path / "model.pth").stat().st_mtime_ns
    assert cache.resolve("models:/brick/1").path == first.path  # cached: not downloaded again
    assert (first.path / "model.pth").stat().st_mtime_ns == stamp
    assert cache.resolve("models:/brick/latest").version == "2"
    client(registry["store"]).set_registered_model_alias("brick", "prod", "2")
    try:
        assert cache.resolve("models:/brick@prod").version == "2"
    finally:
        client(registry["store"]).set_registered_model_alias("brick", "prod", "1")

    # the registry gone (an isolated cell after a restart): the alias resolves to what it last pointed at
    offline = RegistryCache(tmp_path / "models", str(tmp_path / "no_such_store" / "mlruns"))
    got = offline.resolve("models:/brick@prod")
    assert got.offline and got.version == "2" and "registry unreachable" in got.note and "cached version 2" in got.note
    with pytest.raises(TrackingError, match="no cached copy is known"):
        RegistryCache(tmp_path / "fresh", str(tmp_path / "no_such_store" / "mlruns")).resolve("models:/brick@prod")
    with pytest.raises(TrackingError, match=r"cached versions: 1, 2; name one"):
        offline.resolve("models:/brick@staging")

    # a damaged cache is not run: online it is fetched again, offline it is refused
    (first.path / "stats.npz").write_bytes(b"broken")
    assert cache.resolve("models:/brick/1").path == first.path
    verify(first.path)
    (first.path / "stats.npz").write_bytes(b"broken")
    with pytest.raises(TrackingError, match="no cached copy"):
        offline.resolve("models:/brick/1")


def test_convert_once_per_version(registry, tmp_path):
    cache = RegistryCache(tmp_path / "models", registry["store"])
    folder = cache.resolve("models:/brick/2").path
    engine = convert_once(folder)
    assert engine == folder / "engine" / "model.onnx" and engine.is_file()
    stamp = engine.stat().st_mtime_ns
    assert convert_once(folder) == engine and engine.stat().st_mtime_ns == stamp  # once per version
    again = cache.resolve("models:/brick/2")
    assert again.path == folder / "engine" and again.label == "brick/2"  # the cell runs the converted engine
    shutil.rmtree(folder / "engine")
