"""Kolektor surface-defect sets (KolektorSDD, KolektorSDD2) into the seed layout: ``ad-core data kolektor``.

Both are downloads from vicos.si that this tool never fetches (CC BY-NC-SA 4.0: never commit their
images). Each image lies beside its pixel mask, and an image is defective when its mask marks any
pixel; which of the two sets a folder holds is told from its files:

- **KolektorSDD** (399 grayscale commutator photos, 500x1240 px): ``kos01/Part0.jpg`` beside
  ``kos01/Part0_label.bmp``, 50 folders, no split. The importer holds out ``test_fraction`` of the
  normal images (a seeded permutation of the sorted names) and tests on them and every defective one.
  Category ``Kolektor_SDD``; files are named ``kos01_Part0.jpg``.
- **KolektorSDD2** (3,335 colour photos, about 230x630 px): ``train/10000.png`` beside
  ``train/10000_GT.png``, and ``test/`` the same. Its own split is kept: the normal images of
  ``train/`` are the training set, ``test/`` the test set; the defective images of ``train/`` are
  kept out of training (anomaly detection trains on normal images only) in
  ``test/Kolektor_SDD2/train_defects/``, which ``ad-core test`` does not read. Category ``Kolektor_SDD2``.

Masks are written as 0/255 PNGs named after their image, as the seed layout reads them.
"""

from __future__ import annotations

from pathlib import Path

from ad_core.data.images import is_image_file, read_mask
from ad_core.data.importing import Item, check_fraction, held_out, write_category
from ad_core.errors import DataError

EXPECTED = (
    "KolektorSDD's folder (kos01/Part0.jpg beside kos01/Part0_label.bmp ...) "
    "or KolektorSDD2's (train/ and test/, 10000.png beside 10000_GT.png ...)"
)

SDD2_SPLITS = {"train": ("train", "train_defects"), "test": ("normal", "anomaly")}  # [part][defective]


def _pairs(folder: Path, suffix: str) -> list[tuple[Path, Path]]:
    """``(image, mask)`` in one folder, the mask named ``<stem><suffix>.*``; an image without one is named."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    masks = {p.stem[: -len(suffix)]: p for p in files if p.stem.endswith(suffix)}
    images = [p for p in files if not p.stem.endswith(suffix)]
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise DataError(
            f"{folder}: no mask for {', '.join(missing[:3])}; expected {missing[0]}'s mask as <stem>{suffix}"
        )
    return [(p, masks[p.stem]) for p in images]


def _defective(mask: Path) -> bool:
    return bool(read_mask(mask).any())


def import_kolektor(
    source: str | Path,
    data_root: str | Path = "data",
    test_fraction: float = 0.25,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Write ``Kolektor_SDD`` or ``Kolektor_SDD2`` (whichever ``source`` holds) in the seed layout; return the counts.

    ``test_fraction`` and ``seed`` apply to KolektorSDD, which has no split of its own.
    """
    src = Path(source)
    if not src.is_dir():
        raise DataError(f"{src} does not exist; expected {EXPECTED}")
    if (src / "train").is_dir() and (src / "test").is_dir():
        name, items = "Kolektor_SDD2", _sdd2(src)
    else:
        folders = sorted(p for p in src.iterdir() if p.is_dir() and p.name.startswith("kos"))
        if not folders:
            raise DataError(f"{src} holds neither Kolektor set; expected {EXPECTED}")
        check_fraction(test_fraction, "normal images")
        name, items = "Kolektor_SDD", _sdd1(src, folders, test_fraction, seed)
    counts = write_category(Path(data_root), name, items, progress)
    return {name: counts}


def _sdd1(src: Path, folders: list[Path], test_fraction: float, seed: int) -> list[Item]:
    pairs = [
        (f"{folder.name}_{image.name}", image, mask) for folder in folders for image, mask in _pairs(folder, "_label")
    ]
    defective = {dest: _defective(mask) for dest, _, mask in pairs}
    held = held_out([dest for dest, _, _ in pairs if not defective[dest]], test_fraction, seed)
    items = []
    for dest, image, mask in pairs:
        split = "anomaly" if defective[dest] else ("normal" if dest in held else "train")
        row = {"source": image.relative_to(src).as_posix()}
        items.append(Item(image, split, dest, mask if defective[dest] else None, row))
    return items


def _sdd2(src: Path) -> list[Item]:
    items = []
    for part in SDD2_SPLITS:
        for image, mask in _pairs(src / part, "_GT"):
            bad = _defective(mask)
            split = SDD2_SPLITS[part][bad]
            row = {"source": image.relative_to(src).as_posix()}
            items.append(Item(image, split, image.name, mask if split == "anomaly" else None, row))
    return items
