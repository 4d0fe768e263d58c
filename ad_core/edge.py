"""What the robot cell asks of a deployed model, as plain functions: retrain it, convert it, keep a frame.

The ROS node's services (``~/retrain``, ``~/convert``, ``~/save_frame``) are thin wrappers around
these, and they run the same way from Python. ``source`` is whatever the node was started on: an
engine folder or its ``model.onnx`` / ``model.plan``, a retrain output, a run directory or its
``pytorch/`` folder. An engine folder carries its weights and arrays (``convtrt``), so the chain
retrain -> convert -> retrain -> convert works on the Jetson from the engine folder alone.

Outputs go beside the bundle folder (``retrained_<stamp>/``, ``engine_<stamp>/``) and must lie
inside ``root`` (the node's ``models_root``); saved frames must lie inside the data root.
"""

from __future__ import annotations

import datetime as _dt
import io
import threading
from pathlib import Path

import numpy as np

from ad_core.bundle import bundle_dir, read_meta
from ad_core.errors import ConfigError
from ad_core.fileio import write_bytes_atomic
from ad_core.models.registry import get_spec


def confined(path: str | Path, root: str | Path, what: str) -> Path:
    """``path`` resolved, refused unless it lies inside ``root``."""
    p, r = Path(path).expanduser().resolve(), Path(root).expanduser().resolve()
    if p != r and r not in p.parents:
        raise ConfigError(f"{what} {p} is outside the configured root {r}")
    return p


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d_%H%M%S")


def retrain_next(
    source: str | Path,
    data_root: str | Path,
    *,
    root: str | Path,
    category: str | None = None,
    epochs: int | None = 1,
    batch_size: int = 8,
    merge: bool = True,
    stop: threading.Event | None = None,
    device: str = "auto",
) -> Path:
    """Retrain the bundle ``source`` stands for on ``data_root/train/<category>`` into a new folder.

    ``merge``: PatchCore extends its bank and PaDiM merges its statistics (their spec's
    ``merge_flag``); otherwise the arrays are rebuilt. EfficientAD and the VAE fine-tune for ``epochs``.
    ``device``: ``auto`` (the Jetson's GPU when PyTorch sees it), ``cpu``, ``cuda`` or ``cuda:N``.
    Returns the new bundle folder.
    """
    from ad_core.retrain import retrain

    folder = bundle_dir(source)
    meta = read_meta(folder)
    spec = get_spec(meta["model"])
    out = confined(folder.parent / f"retrained_{_stamp()}", root, "retrain output")
    merge_with = {}
    if merge and spec.merge_flag and meta.get(spec.artifact_key):
        merge_with[spec.merge_flag] = folder / meta[spec.artifact_key]
    return retrain(
        meta["model"],
        None,
        folder,
        category or meta["category"],
        data_root,
        out,
        epochs=epochs,
        batch_size=batch_size,
        log=False,
        stop=stop,
        device=device,
        **merge_with,
    )


def convert_next(source: str | Path, *, root: str | Path, fp16: bool = False) -> Path:
    """Convert the bundle ``source`` stands for into a new engine folder; returns the file to run.

    That is ``model.plan`` where TensorRT and a GPU are present, otherwise ``model.onnx``.
    """
    from ad_core.convert import convtrt

    folder = bundle_dir(source)
    meta = read_meta(folder)
    out = confined(folder.parent / f"engine_{_stamp()}", root, "convert output")
    result = convtrt(meta["model"], None, folder, out, fp16=fp16)
    return result.plan or result.onnx


def save_frame(rgb: np.ndarray, data_root: str | Path, category: str, name: str) -> Path:
    """Write an RGB frame as ``data_root/train/<category>/<name>.png`` (atomically) for the next retrain."""
    from PIL import Image

    root = Path(data_root)
    folder = confined(root / "train" / category, root, "save_frame folder")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    path = folder / f"{name}.png"
    write_bytes_atomic(path, buf.getvalue())
    return path
