"""Magnetic-tile surface defects (Huang et al. 2018) into the seed layout: ``ad-core data magnetic-tile``.

The dataset (github.com/abin24/Magnetic-tile-defect-datasets., downloaded by hand: this tool
never fetches it) holds 1,344 grayscale crops of magnetic tiles, each its own size, in six folders,
every image (``.jpg``) beside its pixel mask (``.png``, the same name)::

    MT_Free/Imgs/exp1_num_1234.jpg   exp1_num_1234.png      normal tiles
    MT_Blowhole/Imgs/...  MT_Break/  MT_Crack/  MT_Fray/  MT_Uneven/    defective tiles

There is no train/test split. The importer holds out ``test_fraction`` of the normal tiles (a seeded
permutation of the sorted names, the same on every machine) and writes::

    data/train/MT_tile/                           normal tiles not held out
    data/test/MT_tile/normal/                     held-out normal tiles
    data/test/MT_tile/anomaly/<Kind>_<name>.jpg   every defective tile (all five kinds)
    data/test/MT_tile/masks/<Kind>_<name>.png     its mask
    data/test/MT_tile/manifest.csv                every file: split, defect kind, source

With ``per_defect`` it also writes one category per kind (``MT_Blowhole`` ...), each with the same
normal split and only that kind's tiles, so each kind gets its own AUROC (``ad-core test``,
``bench/bench_quality.py --sets DATA_ROOT:MT_Crack``).
"""

from __future__ import annotations

from pathlib import Path

from ad_core.data.images import is_image_file
from ad_core.data.importing import Item, check_fraction, held_out, write_category
from ad_core.errors import DataError

NORMAL = "Free"
CATEGORY = "MT_tile"
EXPECTED = "the Magnetic-tile-defect-datasets folder, with MT_Free/Imgs/ and MT_Blowhole/Imgs/ ... in it"


def find_folders(source: Path) -> dict[str, Path]:
    """Kind (``Free``, ``Blowhole`` ...) -> the folder holding its images and masks."""
    if not source.is_dir():
        raise DataError(f"{source} does not exist; expected {EXPECTED}")
    folders = {}
    for d in sorted(p for p in source.iterdir() if p.is_dir() and p.name.startswith("MT_")):
        folders[d.name[3:]] = d / "Imgs" if (d / "Imgs").is_dir() else d
    if NORMAL not in folders:
        raise DataError(f"{source} has no MT_{NORMAL}/ (the normal tiles); expected {EXPECTED}")
    if len(folders) == 1:
        raise DataError(f"{source} has no defect folders (MT_Blowhole/, MT_Crack/ ...); expected {EXPECTED}")
    return folders


def read_kind(folder: Path) -> list[tuple[Path, Path | None]]:
    """``(image, mask)`` pairs of one folder: every image that is not a ``.png``, and the ``.png`` of its name."""
    images = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and p.suffix.lower() != ".png")
    if not images:
        raise DataError(f"{folder} has no tile images; expected .jpg images, each beside a .png mask of the same name")
    return [(p, p.with_suffix(".png") if p.with_suffix(".png").is_file() else None) for p in images]


def _rel(path: Path, source: Path) -> str:
    return path.relative_to(source).as_posix()


def import_magnetic_tile(
    source: str | Path,
    data_root: str | Path = "data",
    test_fraction: float = 0.25,
    seed: int = 0,
    per_defect: bool = False,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Write ``MT_tile`` (and with ``per_defect`` ``MT_<Kind>`` per kind) in the seed layout; return the counts.

    Every defective tile must have its mask (a missing one is named); each category is assembled in a
    hidden folder under ``data_root`` and replaces an earlier import only when complete.
    """
    check_fraction(test_fraction, "normal tiles")
    src = Path(source)
    kinds = {kind: read_kind(folder) for kind, folder in find_folders(src).items()}
    for kind, pairs in kinds.items():
        missing = [image.name for image, mask in pairs if mask is None and kind != NORMAL]
        if missing:
            raise DataError(
                f"{src / f'MT_{kind}'}: no mask for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; "
                "every defective tile needs the .png mask of its name"
            )
    normals = [image for image, _ in kinds.pop(NORMAL)]
    held = held_out([p.name for p in normals], test_fraction, seed)
    targets = {CATEGORY: kinds, **({f"MT_{k}": {k: v} for k, v in kinds.items()} if per_defect else {})}
    items = [
        Item(p, "normal" if p.name in held else "train", p.name, row={"defect": "good", "source": _rel(p, src)})
        for p in normals
    ]
    root, counts = Path(data_root), {}
    for name, defects in targets.items():
        anomalies = [
            Item(image, "anomaly", f"{kind}_{image.name}", mask, {"defect": kind, "source": _rel(image, src)})
            for kind, pairs in defects.items()
            for image, mask in pairs
        ]
        counts[name] = write_category(root, name, items + anomalies, progress)
    return counts
