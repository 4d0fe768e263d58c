"""What the dataset importers share: a seeded held-out split, and a category written whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

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


@dataclass(frozen=True)
class Item:
    """One image to import: where it is, where it goes (``train`` or a test folder), and its mask."""

    source: Path
    split: str  # "train", or a folder under test/: "normal", "anomaly", ELPV's "uncertain_p67" ...
    name: str  # its file name in the category
    mask: Path | None = None
    row: dict = field(default_factory=dict)  # more columns for manifest.csv


def write_category(root: Path, name: str, items: list[Item], progress: bool = True) -> dict[str, int]:
    """Copy ``items`` into category ``name`` of the seed layout under ``root``; return the count per split.

    Masks are written as 0/255 PNGs named after their image (``test/<name>/masks/<stem>.png``, what the
    seed layout reads) whatever their source format; ``test/<name>/manifest.csv`` lists every file with
    its split and source. Assembled in a hidden folder (:func:`staged_category`).
    """
    from PIL import Image

    from ad_core.data.images import read_mask
    from ad_core.data.manifest import write_manifest

    seen: dict[tuple[str, str], Path] = {}
    for item in items:
        other = seen.setdefault((item.split, item.name), item.source)
        if other != item.source:
            raise DataError(f"{other} and {item.source} would both become {item.split}/{item.name} in {name}")
    counts: dict[str, int] = {}
    with staged_category(root, name) as t:
        rows = []
        for item in tqdm(items, desc=name, disable=not progress, leave=False):
            dest = t / "train" if item.split == "train" else t / "test" / item.split
            dest.mkdir(parents=True, exist_ok=True)
            if not item.source.is_file():
                raise DataError(f"{item.source}: no such image file")
            shutil.copyfile(item.source, dest / item.name)
            if item.mask is not None:
                (t / "test" / "masks").mkdir(parents=True, exist_ok=True)
                mask = read_mask(item.mask).astype(np.uint8) * 255
                Image.fromarray(mask).save(t / "test" / "masks" / f"{Path(item.name).stem}.png")
            rows.append({"file": item.name, "split": item.split, **item.row})
            counts[item.split] = counts.get(item.split, 0) + 1
        (t / "test").mkdir(exist_ok=True)
        write_manifest(t / "test", rows)
    return counts
