"""`ad-core data elpv`: ELPV solar cells into the seed layout, split the same way every time."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from ad_core.data.elpv import import_elpv, read_labels
from ad_core.data.layout import resolve_category
from ad_core.errors import DataError

elpv = pytest.importorskip("elpv_dataset", reason="pip install elpv-dataset (a dev dependency) for the ELPV importer")


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("elpv")
    out = subprocess.run(
        [sys.executable, "-m", "ad_core.cli", "data", "elpv", "--data_root", str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    return root, out.stdout


def test_split_follows_the_labels(imported):
    root, stdout = imported
    assert "ELPV_mono" in stdout and "ELPV_poly" in stdout
    cells = read_labels(Path(elpv.__file__).parent / "data")
    for kind in ("mono", "poly"):
        data = resolve_category(root, f"ELPV_{kind}", require_test=True)
        mine = [c for c in cells if c.type == kind]
        normal = sum(c.probability == 0 for c in mine)
        assert len(data.train) + data.counts()["test_normal"] == normal
        assert data.counts()["test_anomaly"] == sum(c.probability == 1 for c in mine)
        assert abs(data.counts()["test_normal"] - round(0.25 * normal)) <= 1
        for folder, prob in (("uncertain_p67", 2 / 3), ("uncertain_p33", 1 / 3)):
            n = len(list((root / "test" / f"ELPV_{kind}" / folder).iterdir()))
            assert n == sum(abs(c.probability - prob) < 1e-3 for c in mine)
        # no cell in two places, and the manifest lists each file with its split and probability
        with open(root / "test" / f"ELPV_{kind}" / "manifest.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == len(mine) == len({r["file"] for r in rows})
        train_names = {p.name for p in data.train}
        assert {r["file"] for r in rows if r["split"] == "train"} == train_names
        assert all(float(r["probability"]) == 0 for r in rows if r["split"] in ("train", "normal"))


def test_split_is_deterministic(imported, tmp_path):
    root, _ = imported
    import_elpv(tmp_path, progress=False)
    assert _tree(tmp_path / "train") == _tree(root / "train")
    assert _tree(tmp_path / "test") == _tree(root / "test")
    other = tmp_path / "other"
    import_elpv(other, seed=1, types=("mono",), progress=False)
    assert {p.name for p in (other / "train" / "ELPV_mono").iterdir()} != {
        p.name for p in (root / "train" / "ELPV_mono").iterdir()
    }


def test_bad_source_and_fraction(tmp_path):
    with pytest.raises(DataError, match=r"no labels\.csv"):
        import_elpv(tmp_path / "out", source=tmp_path)
    (tmp_path / "labels.csv").write_text("images/a.png 0.5 mono\n")
    with pytest.raises(DataError, match="ELPV uses 0, 1/3, 2/3 and 1"):
        import_elpv(tmp_path / "out", source=tmp_path, progress=False)
    (tmp_path / "labels.csv").write_text("images/a.png 0.0 amorphous\n")
    with pytest.raises(DataError, match=r"labels.csv:1: type 'amorphous'"):
        import_elpv(tmp_path / "out", source=tmp_path)
    with pytest.raises(DataError, match="test_fraction"):
        import_elpv(tmp_path / "out", test_fraction=1.5)
    (tmp_path / "labels.csv").write_text("images/missing.png 0.0 mono\nimages/missing2.png 0.0 mono\n")
    with pytest.raises(DataError, match=r"missing\.png is listed"):
        import_elpv(tmp_path / "out", source=tmp_path, progress=False)
    assert not (tmp_path / "out" / "train").exists(), "a failed import left a half-written category"
