"""`ad-core data magnetic-tile`: the magnetic-tile defect set's folders into the seed layout.

The real set is a manual download; these tests stage a copy of its layout made from the bundled
brick (grayscale JPEG tiles of every size, each beside its PNG mask, in ``MT_<Kind>/Imgs/``).
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ad_core import evaluate, train
from ad_core.data.images import read_mask
from ad_core.data.layout import resolve_category
from ad_core.data.magnetic_tile import import_magnetic_tile
from ad_core.errors import DataError

CAT = "Sample_brick"
FLAGS = ("--per_defect", "--data_root")


@pytest.fixture(scope="module")
def mt_source(sample_root: Path, tmp_path_factory) -> Path:
    """The bundled brick in the magnetic-tile layout: normals in MT_Free, defects split between two kinds."""
    out = tmp_path_factory.mktemp("mt") / "Magnetic-tile-defect-datasets."
    rng = np.random.default_rng(0)
    normals = sorted((sample_root / "train" / CAT).glob("*.png")) + sorted(
        (sample_root / "test" / CAT / "normal").glob("*.png")
    )
    defects = sorted((sample_root / "test" / CAT / "anomaly").glob("*.png"))
    kinds = [("Free", p, None) for p in normals] + [
        ("Crack" if i % 2 else "Blowhole", p, sample_root / "test" / CAT / "masks" / p.name)
        for i, p in enumerate(defects)
    ]
    for n, (kind, path, mask) in enumerate(kinds):
        folder = out / f"MT_{kind}" / "Imgs"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = (int(v) for v in rng.integers(96, 240, size=2))
        stem = f"exp{n % 3}_num_{1000 + n}"
        Image.open(path).convert("L").resize((w, h), Image.BILINEAR).save(folder / f"{stem}.jpg", quality=95)
        truth = Image.open(mask).convert("L") if mask else Image.new("L", Image.open(path).size)
        truth.resize((w, h), Image.NEAREST).save(folder / f"{stem}.png")
    (out / "MT_Free" / "Imgs" / "Thumbs.db").write_bytes(b"not an image")
    return out


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_cli_writes_the_seed_layout_with_masks(mt_source, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ad_core.cli",
            "data",
            "magnetic-tile",
            "--source",
            str(mt_source),
            *FLAGS,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "MT_tile" in out.stdout and "MT_Crack" in out.stdout and "MT_Blowhole" in out.stdout
    n_free = len(list((mt_source / "MT_Free" / "Imgs").glob("*.jpg")))
    n_crack = len(list((mt_source / "MT_Crack" / "Imgs").glob("*.jpg")))
    n_hole = len(list((mt_source / "MT_Blowhole" / "Imgs").glob("*.jpg")))

    data = resolve_category(tmp_path, "MT_tile", require_test=True)
    counts = data.counts()
    assert len(data.train) + counts["test_normal"] == n_free
    assert counts["test_normal"] == round(0.25 * n_free)
    assert counts["test_anomaly"] == n_crack + n_hole
    assert data.has_masks
    for s in data.test:
        if s.label:  # each defect's mask is its own: same size, and marks something
            image, mask = Image.open(s.path), Image.open(s.mask)
            assert image.size == mask.size and np.asarray(mask).max() > 0
            kind, stem = s.path.stem.split("_", 1)
            assert (read_mask(mt_source / f"MT_{kind}" / "Imgs" / f"{stem}.png") == read_mask(s.mask)).all()

    with open(tmp_path / "test" / "MT_tile" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n_free + n_crack + n_hole == len({r["file"] for r in rows})
    assert {r["file"] for r in rows if r["split"] == "train"} == {p.name for p in data.train}
    assert {r["defect"] for r in rows if r["split"] == "anomaly"} == {"Crack", "Blowhole"}

    crack = resolve_category(tmp_path, "MT_Crack", require_test=True)
    assert crack.counts()["test_anomaly"] == n_crack
    assert all(s.path.name.startswith("Crack_") for s in crack.test if s.label)
    assert [p.name for p in crack.train] == [p.name for p in data.train]  # the same normal split


def test_split_is_deterministic(mt_source, tmp_path):
    import_magnetic_tile(mt_source, tmp_path / "a", progress=False)
    import_magnetic_tile(mt_source, tmp_path / "b", progress=False)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    import_magnetic_tile(mt_source, tmp_path / "c", seed=1, progress=False)
    names = {p.name for p in (tmp_path / "a" / "train" / "MT_tile").iterdir()}
    assert names != {p.name for p in (tmp_path / "c" / "train" / "MT_tile").iterdir()}


def test_imported_tiles_train_and_evaluate(mt_source, tmp_path):
    import_magnetic_tile(mt_source, tmp_path / "data", progress=False)
    run = train("padim", "MT_tile", tmp_path / "data", tmp_path / "models", image_size=128, progress=False)
    report = evaluate(run, tmp_path / "data", progress=False)
    # the masks are found and scored; the defects separate (measured 0.886 image, 0.893 pixel AUROC;
    # a model blind to the defects scores about 0.5)
    assert report["pixel_auroc"] >= 0.8 and report["image_auroc"] >= 0.75


def test_bad_source_is_named_and_nothing_is_half_written(mt_source, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        import_magnetic_tile(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty" / "MT_Crack").mkdir(parents=True)
    with pytest.raises(DataError, match="no MT_Free"):
        import_magnetic_tile(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(DataError, match="test_fraction"):
        import_magnetic_tile(mt_source, tmp_path / "out", test_fraction=1.0)

    root = tmp_path / "data"
    import_magnetic_tile(mt_source, root, progress=False)
    before = _tree(root)
    broken = tmp_path / "broken"
    shutil.copytree(mt_source, broken)
    lost = sorted((broken / "MT_Crack" / "Imgs").glob("*.png"))[0]
    lost.unlink()
    with pytest.raises(DataError, match=f"MT_Crack: no mask for {lost.stem}.jpg"):
        import_magnetic_tile(broken, root, seed=3, progress=False)
    assert _tree(root) == before  # the earlier import is untouched
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # and no partial folder is left
