"""What the dataset importers share: a seeded held-out split, and a category installed only when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ad_core.errors import DataError


def check_fraction(test_fraction: float, what: str = "normal images") -> None:
    """A held-out fraction strictly between 0 and 1, or a clear error."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction {test_fraction}: give a fraction of the {what} between 0 and 1")


def held_out(names: list[str], test_fraction: float, seed: int) -> set[str]:
    """The names held out for testing: a seeded permutation of the sorted names, the same on every machine."""
    ordered = sorted(names)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[i] for i in order[: round(len(ordered) * test_fraction)]}


@contextmanager
def staged_category(root: Path, name: str) -> Iterator[Path]:
    """A hidden folder under ``root`` to assemble ``train/`` and ``test/`` of category ``name`` in.

    When the block ends without an error, they replace ``root/train/<name>`` and ``root/test/<name>``;
    on an error nothing already there is touched and the partial folder is removed.
    """
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}.partial-") as tmp:
        t = Path(tmp)
        yield t
        for split in ("train", "test"):
            (t / split).mkdir(exist_ok=True)
            final = root / split / name
            if final.exists():
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(t / split, final)
