"""`ad-core data kolektor`: KolektorSDD and KolektorSDD2's folders into the seed layout.

Both sets are manual downloads; these tests stage copies of their layouts made from the bundled brick
(KolektorSDD: grayscale JPEGs in ``kosNN/`` beside ``_label.bmp`` masks, no split; KolektorSDD2: colour
PNGs beside ``_GT.png`` masks in ``train/`` and ``test/``), every image tall and narrow as theirs are.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ad_core import evaluate, train
from ad_core.data.images import read_mask
from ad_core.data.kolektor import import_kolektor
from ad_core.data.layout import resolve_category
from ad_core.errors import DataError

CAT = "Sample_brick"


def _brick(sample_root: Path) -> tuple[list[Path], list[tuple[Path, Path]]]:
    normals = sorted((sample_root / "train" / CAT).glob("*.png")) + sorted(
        (sample_root / "test" / CAT / "normal").glob("*.png")
    )
    masks = sample_root / "test" / CAT / "masks"
    return normals, [(p, masks / p.name) for p in sorted((sample_root / "test" / CAT / "anomaly").glob("*.png"))]


def _save(image: Path, mask: Path | None, dest: Path, mask_dest: Path, gray: bool) -> None:
    """The image stretched to a tall frame (as Kolektor's are) and its mask (all black for a normal one)."""
    size = (96, 240)
    img = Image.open(image)
    (img.convert("L") if gray else img.convert("RGB")).resize(size, Image.BILINEAR).save(dest)
    truth = Image.open(mask).convert("L") if mask else Image.new("L", img.size)
    truth.resize(size, Image.NEAREST).save(mask_dest)


@pytest.fixture(scope="module")
def sdd1(sample_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ksdd") / "KolektorSDD"
    normals, defects = _brick(sample_root)
    todo = [(p, None) for p in normals] + defects
    for n, (image, mask) in enumerate(todo):
        folder = out / f"kos{n // 8 + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        _save(image, mask, folder / f"Part{n % 8}.jpg", folder / f"Part{n % 8}_label.bmp", gray=True)
    return out


@pytest.fixture(scope="module")
def sdd2(sample_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ksdd2") / "KolektorSDD2"
    normals, defects = _brick(sample_root)
    n_train = 32  # the training normals and two defects in train/, the rest in test/
    parts = [("train", p, None) for p in normals[:n_train]] + [("train", *d) for d in defects[:2]]
    parts += [("test", p, None) for p in normals[n_train:]] + [("test", *d) for d in defects[2:]]
    for n, (part, image, mask) in enumerate(parts):
        (out / part).mkdir(parents=True, exist_ok=True)
        stem = f"{10000 + n}"
        _save(image, mask, out / part / f"{stem}.png", out / part / f"{stem}_GT.png", gray=False)
    return out


def test_kolektor_sdd_is_split_by_its_masks(sdd1, sample_root, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "ad_core.cli", "data", "kolektor", "--source", str(sdd1), "--data_root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Kolektor_SDD in" in out.stdout
    normals, defects = _brick(sample_root)
    data = resolve_category(tmp_path, "Kolektor_SDD", require_test=True)
    assert len(data.train) + data.counts()["test_normal"] == len(normals)
    assert data.counts()["test_normal"] == round(0.25 * len(normals))
    assert data.counts()["test_anomaly"] == len(defects) and data.has_masks
    for s in data.test:
        if s.label:  # the .bmp mask became a PNG of the image's size that marks the same pixels
            folder, part = s.path.stem.split("_", 1)
            source = read_mask(sdd1 / folder / f"{part}_label.bmp")
            assert source.any() and (read_mask(s.mask) == source).all()
            assert Image.open(s.path).size == Image.open(s.mask).size
    again = import_kolektor(sdd1, tmp_path / "again", progress=False)
    assert again["Kolektor_SDD"] == {
        "train": len(data.train),
        "normal": data.counts()["test_normal"],
        "anomaly": len(defects),
    }
    assert sorted(p.name for p in (tmp_path / "again" / "train" / "Kolektor_SDD").iterdir()) == sorted(
        p.name for p in data.train
    )  # the same split every time


def test_kolektor_sdd2_keeps_its_own_split_and_trains(sdd2, tmp_path):
    counts = import_kolektor(sdd2, tmp_path / "data", progress=False)["Kolektor_SDD2"]
    assert counts == {"train": 32, "train_defects": 2, "normal": 12, "anomaly": 14}
    data = resolve_category(tmp_path / "data", "Kolektor_SDD2", require_test=True)
    assert {p.name for p in data.train} == {f"{10000 + n}.png" for n in range(32)}  # train/'s normal images
    with open(tmp_path / "data" / "test" / "Kolektor_SDD2" / "manifest.csv", newline="") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    assert rows["10032.png"]["split"] == "train_defects" and rows["10032.png"]["source"] == "train/10032.png"
    assert (tmp_path / "data" / "test" / "Kolektor_SDD2" / "train_defects" / "10033.png").is_file()

    run = train("padim", "Kolektor_SDD2", tmp_path / "data", tmp_path / "models", image_size=96, progress=False)
    report = evaluate(run, tmp_path / "data", progress=False)
    # the masks are found and scored; the defects separate (measured 1.000 image, 0.981 pixel AUROC;
    # a model blind to the defects scores about 0.5)
    assert report["pixel_auroc"] >= 0.8 and report["image_auroc"] >= 0.75, report


def test_bad_sources_are_named(sdd2, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        import_kolektor(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match="holds neither Kolektor set"):
        import_kolektor(tmp_path / "photos", tmp_path / "out")
    broken = tmp_path / "KolektorSDD2"
    for part in ("train", "test"):
        (broken / part).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(broken / "train" / "10000.png")
    with pytest.raises(DataError, match=r"train: no mask for 10000\.png"):
        import_kolektor(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
