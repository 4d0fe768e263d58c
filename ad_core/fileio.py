"""Atomic writes: every file goes to a temporary name in the same folder, then is renamed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# PNG pictures (test results, predictions, captured frames) are written at zlib level 1: lossless, 2.5x
# (camera frames) to 4x (test overlays) faster than PIL's default 6, for files 15-26 % larger
# (bench/bench_pictures.py): a test run writes its pictures in seconds, the capture thread takes less of
# a Jetson's CPU and drops fewer frames
PNG_COMPRESS_LEVEL = 1


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    """JSON with two-space indent, written atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def save_torch_atomic(path: str | Path, obj: Any) -> None:
    """``torch.save`` a state dict (tensors and plain data only) atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def save_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` atomically (uncompressed: memory banks load fast)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` without allowing pickled objects."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
