"""The deployed path starts light: scoring an exported engine imports no training stack.

On a Jetson, ``ad-core infer`` and the ROS node load an engine and score; torch, anomalib, Lightning,
scikit-learn and the ``onnx`` package are for training and export only (importing them took about
12 s here before they were kept out). Each check runs a fresh interpreter, so it fails as soon as a
module on the path imports one of them at the top again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from ad_core import list_models
from ad_core.convert import convtrt
from ad_core.errors import BundleError
from ad_core.graph_io import onnx_metadata, read_metadata_props

TRAINING_STACK = ("torch", "anomalib", "lightning", "sklearn", "onnx", "timm", "mlflow", "optuna")
PROBE = (
    "import json, sys\n"
    "from ad_core.cli import main\n"
    "try:\n"
    "    rc = main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    rc = exc.code\n"
    f"print('LOADED', json.dumps(sorted(m for m in {TRAINING_STACK!r} if m in sys.modules)))\n"
    "sys.exit(rc)\n"
)


def _cli_in_fresh_process(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], cwd=cwd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("LOADED ")), None)
    assert line is not None, proc.stdout + proc.stderr
    return proc, json.loads(line[len("LOADED ") :])


@pytest.fixture(scope="module")
def engines(trained, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lean_engines")
    out = {}
    for model in list_models():
        bundle = trained(model) / "pytorch"
        out[model] = convtrt(model, bundle / "model.pth", bundle / "meta.json", root / model).onnx
    return out


@pytest.mark.parametrize("model", list_models())
def test_infer_on_an_engine_loads_no_training_stack(model, engines, sample_root, tmp_path):
    folder = sample_root / "test" / "Sample_brick" / "anomaly"
    proc, loaded = _cli_in_fresh_process(["infer", model, "-e", engines[model], "-d", folder], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert loaded == [], f"ad-core infer on {model}'s engine imported {loaded}"
    rows = (tmp_path / f"result_{model}.csv").read_text().splitlines()
    assert len(rows) == 1 + len(list(folder.iterdir()))  # every image scored


@pytest.mark.parametrize("args", [["--help"], ["models"], ["infer", "--help"], ["train", "--help"]])
def test_cli_help_and_model_list_load_no_training_stack(args, tmp_path):
    proc, loaded = _cli_in_fresh_process(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "usage: ad-core" in proc.stdout or "patchcore (PatchCore)" in proc.stdout
    assert loaded == []


def test_metadata_reader_agrees_with_onnx(engines):
    for path in engines.values():
        parsed = onnx.load(str(path), load_external_data=False)
        assert read_metadata_props(path.read_bytes()) == {p.key: p.value for p in parsed.metadata_props}
    # a model with unicode, empty and long values, some not ours
    model = onnx.load(str(engines["padim"]), load_external_data=False)
    del model.metadata_props[:]
    props = {"ad_inspect.model": "padim", "ad_inspect.note": "Prüfstand 検査 " * 50, "other": "", "": "x"}
    onnx.helper.set_model_props(model, props)
    data = model.SerializeToString()
    assert read_metadata_props(data) == props
    assert onnx_metadata(data)["note"] == props["ad_inspect.note"]


def test_metadata_reader_refuses_what_is_not_onnx(engines, tmp_path):
    data = engines["padim"].read_bytes()
    bad = {
        "text": b"not a protobuf at all",
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "npz": (engines["patchcore"].parent / "memory_bank.npz").read_bytes(),
    }
    for name, blob in bad.items():
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(blob)
        with pytest.raises(BundleError, match=rf"{name}\.onnx: not a readable ONNX model"):
            onnx_metadata(path)
