"""VisA: download (seed ``download_VisA.sh``) and per-category split (seed ``move_VisA.sh``).

The split follows VisA's own ``split_csv/1cls.csv`` (columns ``object, split, label, image,
mask``) and writes the seed layout::

    data/train/VisA_<category>/                normal training images
    data/test/VisA_<category>/normal/          normal test images
    data/test/VisA_<category>/anomaly/         anomalous test images
    data/test/VisA_<category>/masks/<stem>.png their pixel masks

It works on the downloaded ``VisA_20220922.tar`` or on its extracted folder.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ad_core.errors import DataError

VISA_URL = "https://amazon-visual-anomaly.s3.amazonaws.com/VisA_20220922.tar"
ARCHIVE_NAME = "VisA_20220922.tar"
SPLIT_CSV = "split_csv/1cls.csv"


def download_visa(download_dir: str | Path = "data/download", url: str = VISA_URL, extract: bool = True) -> Path:
    """Download the VisA archive (about 1.8 GB) and extract it to ``download_dir/VisA``.

    Offline, the error says what to fetch and where to put it; an interrupted download leaves
    only a ``.part`` file, never a truncated archive under the final name.
    """
    folder = Path(download_dir)
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / ARCHIVE_NAME
    if not archive.is_file():
        part = archive.with_suffix(".tar.part")
        try:
            with urllib.request.urlopen(url, timeout=30) as resp, open(part, "wb") as fh:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=ARCHIVE_NAME) as bar:
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        fh.write(chunk)
                        bar.update(len(chunk))
            os.replace(part, archive)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            part.unlink(missing_ok=True)
            raise DataError(
                f"could not download VisA from {url} ({exc}). Fetch {ARCHIVE_NAME} on a machine with internet "
                f"access, put it at {archive}, then run: ad-core data visa-split <category> --download_dir {folder}"
            ) from exc
    if extract:
        target = folder / "VisA"
        if not (target / SPLIT_CSV).is_file():
            with tempfile.TemporaryDirectory(dir=folder, prefix=".visa-") as tmp:
                with tarfile.open(archive) as tar:
                    tar.extractall(tmp, filter="data")
                root = _find_root(Path(tmp))
                if target.exists():
                    shutil.rmtree(target)
                os.replace(root, target)
        return target
    return archive


def _find_root(folder: Path) -> Path:
    for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if (candidate / SPLIT_CSV).is_file():
            return candidate
    raise DataError(f"{folder}: no {SPLIT_CSV} found; expected the VisA release layout")


class _Source:
    """Reads files from an extracted VisA folder or directly from the tar archive."""

    def __init__(self, path: Path) -> None:
        self.tar: tarfile.TarFile | None = None
        if path.is_file() and tarfile.is_tarfile(path):
            self.tar = tarfile.open(path)  # noqa: SIM115 - closed in __exit__
            names = self.tar.getnames()
            hits = [n for n in names if n.endswith(SPLIT_CSV)]
            if not hits:
                raise DataError(f"{path}: the archive holds no {SPLIT_CSV}; is it the VisA release?")
            self.prefix = hits[0][: -len(SPLIT_CSV)]
            self.members = set(names)
        elif path.is_dir():
            self.root = _find_root(path)
        else:
            raise DataError(
                f"{path}: no VisA archive or folder there; run `ad-core data visa-download` or put "
                f"{ARCHIVE_NAME} (or its extracted folder) at that path"
            )

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tar is not None:
            self.tar.close()

    def read(self, rel: str) -> bytes:
        if self.tar is not None:
            name = self.prefix + rel
            if name not in self.members:
                raise DataError(f"{name} is listed in {SPLIT_CSV} but missing from the archive")
            fh = self.tar.extractfile(name)
            assert fh is not None
            return fh.read()
        p = self.root / rel
        if not p.is_file():
            raise DataError(f"{p} is listed in {SPLIT_CSV} but missing")
        return p.read_bytes()


def split_visa(
    category: str, source: str | Path = "data/download/VisA", data_root: str | Path = "data"
) -> dict[str, int]:
    """Copy one VisA category into the seed layout as ``VisA_<category>``; return the counts.

    The category is written to a temporary folder first and moved into place at the end.
    """
    with _Source(Path(source)) as src:
        return _split(src, category, Path(data_root))


def _split(src: _Source, category: str, root: Path) -> dict[str, int]:
    rows = list(csv.DictReader(io.StringIO(src.read(SPLIT_CSV).decode("utf-8"))))
    objects = sorted({r["object"] for r in rows})
    mine = [r for r in rows if r["object"] == category]
    if not mine:
        raise DataError(f"VisA has no category {category!r}; choose one of {', '.join(objects)}")
    name = f"VisA_{category}"
    root.mkdir(parents=True, exist_ok=True)
    counts = {"train": 0, "test_normal": 0, "test_anomaly": 0, "masks": 0}
    with tempfile.TemporaryDirectory(dir=root, prefix=".visa-split-") as tmp:
        t = Path(tmp)
        for r in tqdm(mine, desc=f"VisA {category}", leave=False):
            image = r["image"]
            fname = Path(image).name
            if r["split"] == "train":
                dest, key = t / "train" / name / fname, "train"
            elif r["label"] == "normal":
                dest, key = t / "test" / name / "normal" / fname, "test_normal"
            else:
                dest, key = t / "test" / name / "anomaly" / fname, "test_anomaly"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(src.read(image))
            counts[key] += 1
            if key == "test_anomaly" and r.get("mask"):
                mask_dest = t / "test" / name / "masks" / f"{Path(fname).stem}.png"
                mask_dest.parent.mkdir(parents=True, exist_ok=True)
                mask_dest.write_bytes(src.read(r["mask"]))
                counts["masks"] += 1
        for split in ("train", "test"):
            final = root / split / name
            if final.exists():
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            if (t / split / name).exists():
                os.replace(t / split / name, final)
    return counts
