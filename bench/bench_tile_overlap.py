"""Overlapping tiles (``--tile_overlap``) where a defect sits on the tiles' crossing, and where it does not.

Two sets, both from the bundled sample brick (``ad_core.data.sample.build_mosaics``, built in a temporary folder):

* ``crossing``: 2x2 mosaics of 128-px crops (8 training mosaics of normal crops, 12 normal test
  mosaics); each defective test mosaic is a normal one with a sample defect (its mask, grown by two
  pixels) pasted so that its centre is the frame's centre, where a 2x2 grid cuts it into four;
* ``quarters``: the mosaics of ``tests/test_tiles.py``: a whole defective crop as one quarter, so a
  defect never crosses a tile's edge.

Each model is trained with ``--tiles 2x2`` at overlaps 0, 0.25 and 0.5, and on the whole frame, at
64 and 128 px, through ``train`` + ``evaluate`` (image and pixel AUROC). On a 2x2 grid any overlap
up to 0.5 places the same 3x3 tiles (a stride of half a tile), so those two columns agree; they
differ on larger grids. Both sets are mosaics, so their frames have seams where the crops meet,
which the tiles between the grid's get and real frames do not. There is no anomalib row:
anomalib's ``Tiler`` is not part of its PatchCore or PaDiM defaults.

Usage::

    python bench/bench_tile_overlap.py [--models padim patchcore] [--sizes 64 128]

Writes ``bench/results/tile_overlap.json`` and prints a markdown table for ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq

OVERLAPS = (0.0, 0.25, 0.5)


def run(model: str, root: Path, models: Path, **hparams) -> dict:
    from ad_core import evaluate, train

    report = evaluate(
        train(model, "Mosaic", root, models, progress=False, **hparams), root, save_images=False, progress=False
    )
    return {"image_auroc": report["image_auroc"], "pixel_auroc": report["pixel_auroc"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["padim", "patchcore"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    args = ap.parse_args()
    from ad_core.data.sample import build_mosaics, build_sample_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_sample_dataset(tmp / "sample")
        for name in ("crossing", "quarters"):
            build_mosaics(tmp / "sample", tmp / name, crossing=name == "crossing")
            for model in args.models:
                for size in args.sizes:
                    row = {"set": name, "model": model, "image_size": size}
                    row["whole"] = run(model, tmp / name, tmp / "models", image_size=size)
                    for o in OVERLAPS:
                        row[f"overlap {o}"] = run(
                            model, tmp / name, tmp / "models", image_size=size, tiles="2x2", tile_overlap=o
                        )
                    rows.append(row)
                    cells = [row["whole"], *(row[f"overlap {o}"] for o in OVERLAPS)]
                    print(name, model, size, " ".join(f"{c['image_auroc']:.3f}/{c['pixel_auroc']:.3f}" for c in cells))
    bq.RESULTS.mkdir(parents=True, exist_ok=True)
    (bq.RESULTS / "tile_overlap.json").write_text(json.dumps(rows, indent=1))
    print("\n| set | model | px | whole frame | 2x2, no overlap | 2x2, overlap 0.25 | 2x2, overlap 0.5 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [r["whole"], *(r[f"overlap {o}"] for o in OVERLAPS)]
        text = " | ".join(f"{c['image_auroc']:.3f} ({c['pixel_auroc']:.3f})" for c in cells)
        print(f"| {r['set']} | {r['model']} | {r['image_size']} | {text} |")


if __name__ == "__main__":
    main()
