"""Where a category's images live: the seed layout and MVTec AD's layout.

Seed layout (seed 002, one ``<CATEGORY>`` is ``<dataset>_<category>``, e.g. ``VisA_pipe_fryum``)::

    <data_root>/train/<CATEGORY>/*.png              normal images only
    <data_root>/test/<CATEGORY>/normal/*.png
    <data_root>/test/<CATEGORY>/anomaly/*.png
    <data_root>/test/<CATEGORY>/masks/<stem>.png    optional pixel masks for anomaly images
                                                     (``<stem>_mask.png`` is accepted too)

MVTec AD layout, read as it is: ``<data_root>/<category>/{train/good, test/<defect>,
ground_truth/<defect>/<stem>_mask.png}``. ``--category bottle`` and ``--category MVTec_bottle``
both find it. The sets that share its shape are read the same way: MPDD; BTAD, whose normal folders
are ``ok`` (``train/ok``, ``test/ok``, ``test/ko``, ``ground_truth/ko/<stem>.png``); and MVTec AD 2,
whose labelled test split is ``test_public/{good,bad}`` with ``test_public/ground_truth/bad/``
(its ``validation/`` and unlabelled ``test_private*/`` folders are not read); MVTec LOCO and AutoVI,
whose masks are folders ``ground_truth/<defect>/<stem>/`` of one file per defect (their union is the mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ad_core.data.images import list_images
from ad_core.errors import DataError


@dataclass(frozen=True)
class Sample:
    """One test image with its label (0 normal, 1 anomaly), optional mask and defect type."""

    path: Path
    label: int
    mask: Path | None = None
    defect: str = "good"


@dataclass
class CategoryData:
    """The resolved image lists of one category."""

    name: str
    data_root: Path
    layout: str
    train_dir: Path
    train: list[Path]
    test: list[Sample] = field(default_factory=list)

    @property
    def has_masks(self) -> bool:
        """True when every anomalous test image has a mask."""
        anomalies = [s for s in self.test if s.label == 1]
        return bool(anomalies) and all(s.mask is not None for s in anomalies)

    def counts(self) -> dict[str, int]:
        """Number of train, test-normal and test-anomaly images."""
        return {
            "train": len(self.train),
            "test_normal": sum(s.label == 0 for s in self.test),
            "test_anomaly": sum(s.label == 1 for s in self.test),
        }


def _find_mask(mask_dirs: list[Path], stem: str) -> Path | None:
    """``<stem>.png`` or ``<stem>_mask.png``, or a folder ``<stem>/`` of masks (MVTec LOCO, AutoVI: read as their union)."""
    for folder in mask_dirs:
        for name in (f"{stem}.png", f"{stem}_mask.png"):
            if (folder / name).is_file():
                return folder / name
        if (folder / stem).is_dir() and list_images(folder / stem):
            return folder / stem
    return None


def _seed_layout(root: Path, category: str) -> CategoryData:
    train_dir = root / "train" / category
    train = list_images(train_dir)
    test_dir = root / "test" / category
    samples: list[Sample] = []
    if test_dir.is_dir():
        for label, sub in ((0, "normal"), (1, "anomaly")):
            folder = test_dir / sub
            if not folder.is_dir():
                continue
            for path in list_images(folder):
                mask = _find_mask([test_dir / "masks", test_dir / "ground_truth"], path.stem) if label else None
                samples.append(Sample(path, label, mask, "good" if label == 0 else "anomaly"))
    return CategoryData(category, root, "seed", train_dir, train, samples)


NORMAL_FOLDERS = ("good", "ok")  # MVTec AD, MPDD, MVTec AD 2: good; BTAD: ok
TEST_FOLDERS = ("test", "test_public")  # MVTec AD 2's labelled test split is test_public/


def _mvtec_train_dir(category_dir: Path) -> Path | None:
    """``train/good`` (or BTAD's ``train/ok``) of an MVTec-shaped category folder, if it has one."""
    return next((category_dir / "train" / n for n in NORMAL_FOLDERS if (category_dir / "train" / n).is_dir()), None)


def _mvtec_test_dir(category_dir: Path) -> Path:
    """``test/`` (or MVTec AD 2's ``test_public/``) of an MVTec-shaped category folder; ``test/`` if neither exists."""
    return next((category_dir / n for n in TEST_FOLDERS if (category_dir / n).is_dir()), category_dir / "test")


def _mvtec_layout(root: Path, name: str, train_dir: Path) -> CategoryData:
    """An MVTec-shaped category from its normal training folder (``<category>/train/good`` or ``train/ok``)."""
    category_dir = train_dir.parent.parent
    train = list_images(train_dir)
    samples: list[Sample] = []
    test_dir = _mvtec_test_dir(category_dir)
    if test_dir.is_dir():
        for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and p.name != "ground_truth"):
            label = 0 if defect_dir.name in NORMAL_FOLDERS else 1
            gt_dirs = [category_dir / "ground_truth" / defect_dir.name, test_dir / "ground_truth" / defect_dir.name]
            for path in list_images(defect_dir):
                mask = _find_mask(gt_dirs, path.stem) if label else None
                samples.append(Sample(path, label, mask, defect_dir.name if label else "good"))
    return CategoryData(name, root, "mvtec", train_dir, train, samples)


def available_categories(data_root: str | Path) -> list[str]:
    """Category names found under ``data_root`` in either layout."""
    root = Path(data_root)
    names: set[str] = set()
    if (root / "train").is_dir():
        names.update(p.name for p in (root / "train").iterdir() if p.is_dir())
    if root.is_dir():
        names.update(p.name for p in root.iterdir() if p.is_dir() and _mvtec_train_dir(p))
    return sorted(names)


def resolve_category(data_root: str | Path, category: str, require_test: bool = False) -> CategoryData:
    """Find a category's images in the seed or MVTec layout.

    Raises:
        DataError: the data root or category is missing, or its training folder has no images
            (or, with ``require_test``, there are no test images of both classes).
    """
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist; expected a folder with train/<CATEGORY>/ in it")
    mvtec_train = _mvtec_train_dir(root / category)
    if mvtec_train is None and category.startswith("MVTec_"):
        mvtec_train = _mvtec_train_dir(root / category[6:])
    if (root / "train" / category).is_dir():
        data = _seed_layout(root, category)
    elif mvtec_train is not None:
        data = _mvtec_layout(root, category, mvtec_train)
    else:
        found = available_categories(root)
        hint = f"; categories found there: {', '.join(found)}" if found else ""
        raise DataError(
            f"category {category!r} not found under {root}: expected {root / 'train' / category}/ "
            f"(seed layout) or {root / category / 'train' / 'good'}/ (MVTec layout; train/ok for BTAD){hint}"
        )
    if not data.train:
        raise DataError(f"{data.train_dir} has no images; expected normal training images (.png, .jpg, ...)")
    if require_test:
        counts = data.counts()
        if counts["test_normal"] == 0 or counts["test_anomaly"] == 0:
            where = root / "test" / category if data.layout == "seed" else _mvtec_test_dir(data.train_dir.parent.parent)
            raise DataError(
                f"{where} needs both normal and anomalous test images to evaluate "
                f"(found {counts['test_normal']} normal, {counts['test_anomaly']} anomalous)"
            )
    return data
