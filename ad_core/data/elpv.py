"""ELPV solar cells (Deitsch et al. 2019) into the seed layout: ``ad-core data elpv``.

The ELPV dataset (``pip install elpv-dataset``; CC BY-NC-SA 4.0, never commit its images) holds 2,624
electroluminescence images of solar cells (300x300, 8-bit grey), each with the probability that it is
defective (0, 1/3, 2/3, 1) and its type (``mono`` or ``poly``). Each type becomes one category::

    data/train/ELPV_<type>/                        normal cells (probability 0) not held out
    data/test/ELPV_<type>/normal/                  held-out normal cells (``test_fraction`` of them)
    data/test/ELPV_<type>/anomaly/                 defective cells (probability 1)
    data/test/ELPV_<type>/uncertain_p67/           cells rated 2/3 defective (read by bench_quality)
    data/test/ELPV_<type>/uncertain_p33/           cells rated 1/3 defective
    data/test/ELPV_<type>/manifest.csv             every file: split, probability, type, source

The held-out normals are chosen by a seeded permutation of the sorted file names, so the split is
the same on every machine. ``ad-core test`` reads ``normal/`` and ``anomaly/``; the uncertain folders
are outside the seed layout and only scored where asked for (``bench/bench_quality.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ad_core.data.importing import Item, check_fraction, held_out, write_category
from ad_core.errors import DataError

TYPES = ("mono", "poly")
LEVELS = {1.0: "anomaly", 2 / 3: "uncertain_p67", 1 / 3: "uncertain_p33"}
INSTALL_HINT = "pip install elpv-dataset (CC BY-NC-SA 4.0: use it, never commit its images)"


@dataclass(frozen=True)
class Cell:
    """One row of ELPV's ``labels.csv``."""

    image: str  # relative path, e.g. images/cell0001.png
    probability: float
    type: str


def default_source() -> Path:
    """The data folder of the installed ``elpv-dataset`` package (``labels.csv`` and ``images/``)."""
    try:
        import elpv_dataset
    except ImportError as exc:
        raise DataError(f"the ELPV dataset is not installed: {INSTALL_HINT}, or pass --source FOLDER") from exc
    return Path(elpv_dataset.__file__).parent / "data"


def read_labels(source: Path) -> list[Cell]:
    """Parse ``labels.csv`` (whitespace-separated: path, probability, type); clear errors for a bad file."""
    labels = source / "labels.csv"
    if not labels.is_file():
        raise DataError(f"{source}: no labels.csv; expected ELPV's data folder (labels.csv and images/)")
    cells = []
    for n, line in enumerate(labels.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise DataError(f"{labels}:{n}: expected 'images/<file> <probability> <mono|poly>', got {line!r}")
        try:
            prob = float(parts[1])
        except ValueError as exc:
            raise DataError(f"{labels}:{n}: probability {parts[1]!r} is not a number") from exc
        if parts[2] not in TYPES:
            raise DataError(f"{labels}:{n}: type {parts[2]!r} is not one of {', '.join(TYPES)}")
        cells.append(Cell(parts[0], prob, parts[2]))
    if not cells:
        raise DataError(f"{labels} lists no images")
    return cells


def _level(prob: float) -> str | None:
    """The folder of a defect probability (None for 0: a normal cell)."""
    if prob <= 0:
        return None
    for level, folder in LEVELS.items():
        if abs(prob - level) < 1e-3:
            return folder
    raise DataError(f"defect probability {prob}: ELPV uses 0, 1/3, 2/3 and 1")


def split_cells(cells: list[Cell], cell_type: str, test_fraction: float, seed: int) -> dict[str, list[Cell]]:
    """Folder name -> cells of one type; the held-out normals come from a seeded permutation of sorted names."""
    mine = sorted((c for c in cells if c.type == cell_type), key=lambda c: c.image)
    held = held_out([c.image for c in mine if _level(c.probability) is None], test_fraction, seed)
    out: dict[str, list[Cell]] = {"train": [], "normal": [], **{f: [] for f in LEVELS.values()}}
    for c in mine:
        level = _level(c.probability)
        out[level or ("normal" if c.image in held else "train")].append(c)
    return out


def _row(c: Cell) -> dict[str, str]:
    return {"probability": f"{c.probability:.4f}", "type": c.type, "source": c.image}


def import_elpv(
    data_root: str | Path = "data",
    source: str | Path | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    types: tuple[str, ...] = TYPES,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Write ``ELPV_mono`` and ``ELPV_poly`` in the seed layout; return the counts per category.

    Each category is assembled in a hidden folder under ``data_root`` and replaces an earlier import
    only when complete.
    """
    check_fraction(test_fraction, "normal cells")
    bad = [t for t in types if t not in TYPES]
    if bad:
        raise DataError(f"ELPV types {bad}: choose from {', '.join(TYPES)}")
    src = Path(source) if source is not None else default_source()
    cells = read_labels(src)
    root = Path(data_root)
    root.mkdir(parents=True, exist_ok=True)
    counts = {}
    for cell_type in types:
        name = f"ELPV_{cell_type}"
        groups = split_cells(cells, cell_type, test_fraction, seed)
        items = [
            Item(src / c.image, folder, Path(c.image).name, None, _row(c))
            for folder, group in groups.items()
            for c in group
        ]
        missing = [item.source for item in items if not item.source.is_file()]
        if missing:
            raise DataError(
                f"{missing[0]} is listed in {src / 'labels.csv'} but missing ({len(missing)} files missing)"
            )
        write_category(root, name, items, progress)
        counts[name] = {k: len(v) for k, v in groups.items()}
    return counts
