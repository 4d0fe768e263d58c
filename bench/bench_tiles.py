"""Non-square frames: stretch, letterbox or tiles, on real defects (strips of two ELPV cells), against anomalib.

A module's electroluminescence image is a grid of cells; a strip of two cells side by side (600x300)
is the simplest real frame that is not square and whose defects are small against it. From the
quality harness's seeded 200-cell training subset (``bench_quality.capped``) this makes 100 normal
training strips; each test strip pairs a test cell with a random normal test cell (normal strips:
two normal cells; defective strips: one 1.0-defect cell on a random side). Ways to feed a strip to a
256-px model, ours at its defaults otherwise:

* ``stretch``: resized to 256x256 as it is (today's default; anomalib's pre-processor does the same);
* ``letterbox``: the aspect kept, padded to a square with black (each cell reaches the model at 128 px);
* ``tiles 1x2``: ``--tiles 1x2``, each cell its own 256-px tile, the strip's score the higher tile's;

and anomalib 2.7 at its defaults on the stretched strips (``bench_quality.run_anomalib``), plus the
per-cell AUROC of a model trained on single cells, for reference. Latency: ms per strip on the
deployed path (``open_scorer``, ONNX Runtime), decoded image to score and map.

Usage::

    python bench/bench_tiles.py [--sets elpv_mono elpv_poly] [--models padim patchcore] [--data_root /tmp/ad_quality_data]
    python bench/bench_tiles.py --overlap   # 1x2 tiles against 1x2 with --tile_overlap 0.5 (a row per set and model)

Adds its rows to ``bench/results/tiles.json`` (replacing the same set and model's) and prints a
markdown table for ``docs/benchmarks.md``. ELPV is CC BY-NC-SA: the strips are written to a temporary
folder and deleted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq

MODES = ("stretch", "letterbox", "tiles 1x2")


def _strip(a: Path, b: Path, letterbox: bool) -> np.ndarray:
    from ad_core.data.images import read_image

    s = np.concatenate([read_image(a), read_image(b)], axis=1)
    if letterbox:
        h, w = s.shape[:2]
        out = np.zeros((w, w, 3), np.uint8)
        out[(w - h) // 2 : (w - h) // 2 + h] = s
        s = out
    return s


def write_strips(root: Path, train_pairs, test_pairs, letterbox: bool) -> None:
    """The strips in the seed layout (category ``strips``)."""
    (root / "train" / "strips").mkdir(parents=True)
    for d in ("normal", "anomaly"):
        (root / "test" / "strips" / d).mkdir(parents=True)
    for i, (a, b) in enumerate(train_pairs):
        Image.fromarray(_strip(a, b, letterbox)).save(root / "train" / "strips" / f"s{i:04d}.png")
    for i, ((a, b), y) in enumerate(test_pairs):
        sub = "anomaly" if y else "normal"
        Image.fromarray(_strip(a, b, letterbox)).save(root / "test" / "strips" / sub / f"t{i:04d}.png")


def pairs(data, rng: np.random.Generator):
    """100 training strips from the subset's cells; normal test strips and one per 1.0-defect cell."""
    train = [data.train[i] for i in rng.permutation(len(data.train))]
    train_pairs = [(train[2 * i], train[2 * i + 1]) for i in range(len(train) // 2)]
    normals = [s.path for s in data.test if s.label == 0]
    defects = [s.path for s in data.test if s.label == 1]
    order = rng.permutation(len(normals))
    test_pairs = [((normals[order[2 * i]], normals[order[2 * i + 1]]), 0) for i in range(len(normals) // 2)]
    for d in defects:
        n = normals[rng.integers(len(normals))]
        test_pairs.append(((d, n) if rng.random() < 0.5 else (n, d), 1))
    return train_pairs, test_pairs


def run_ours(model: str, root: Path, models_root: Path, **hparams) -> dict:
    from ad_core import evaluate, train
    from ad_core.data.images import read_image
    from ad_core.data.layout import resolve_category
    from ad_core.runtime import open_scorer

    t0 = time.perf_counter()
    run = train(model, "strips", root, models_root, progress=False, **hparams)
    fit_s = time.perf_counter() - t0
    report = evaluate(run, root, save_images=False, progress=False)
    data = resolve_category(root, "strips", require_test=True)
    scorer = open_scorer(run)
    images = [read_image(s.path) for s in data.test[:: max(1, len(data.test) // 25)]][:25]
    return {
        "image_auroc": report["image_auroc"],
        "fit_s": fit_s,
        "latency_ms": bq._latency(lambda im: scorer([im]), images),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=["elpv_mono", "elpv_poly"])
    ap.add_argument("--models", nargs="+", default=["padim", "patchcore"])
    ap.add_argument("--data_root", type=Path, default=Path("/tmp/ad_quality_data"))
    ap.add_argument(
        "--overlap",
        action="store_true",
        help="instead: ours with --tiles 1x2 against 1x2 with --tile_overlap 0.5 (1x3 tiles), on the same strips",
    )
    args = ap.parse_args()
    from ad_core import load_bundle, train
    from ad_core.data.layout import resolve_category
    from ad_core.scoring import image_auroc

    rows = []
    for label, full_root, full_cat in bq.prepare_sets(args.sets, args.data_root):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            root, cat = bq.capped(label, full_root, full_cat, 200, tmp)
            data = resolve_category(root, cat, require_test=True)
            train_pairs, test_pairs = pairs(data, np.random.default_rng(0))
            print(
                f"{label}: {len(train_pairs)} training strips, {sum(1 for _, y in test_pairs if not y)} normal and "
                f"{sum(y for _, y in test_pairs)} defective test strips",
                flush=True,
            )
            write_strips(tmp / "stretch", train_pairs, test_pairs, letterbox=False)
            write_strips(tmp / "letterbox", train_pairs, test_pairs, letterbox=True)
            if args.overlap:
                for model in args.models:
                    plain = run_ours(model, tmp / "stretch", tmp / "m5", tiles="1x2")
                    over = run_ours(model, tmp / "stretch", tmp / "m6", tiles="1x2", tile_overlap=0.5)
                    print(
                        f"| {label} strips | {model} | {plain['image_auroc']:.3f} | {over['image_auroc']:.3f} | "
                        f"{100 * (over['image_auroc'] - plain['image_auroc']):+.1f} | {plain['latency_ms']:.1f} | "
                        f"{over['latency_ms']:.1f} |",
                        flush=True,
                    )
                continue
            for model in args.models:
                row = {"set": label, "model": model}
                row["stretch"] = run_ours(model, tmp / "stretch", tmp / "m1")
                row["letterbox"] = run_ours(model, tmp / "letterbox", tmp / "m2")
                row["tiles 1x2"] = run_ours(model, tmp / "stretch", tmp / "m3", tiles="1x2")
                row["anomalib"] = bq.run_anomalib(model, tmp / "stretch", "strips", "ours")
                cells = load_bundle(train(model, cat, root, tmp / "m4", progress=False)).model
                labels = np.array([s.label for s in data.test])
                row["cells"] = image_auroc(labels, cells.score_paths([s.path for s in data.test])[0])
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.overlap:
        return
    bq.RESULTS.mkdir(parents=True, exist_ok=True)
    out = bq.RESULTS / "tiles.json"  # rows of earlier runs stay unless this run measured them again
    done = {(r["set"], r["model"]) for r in rows}
    kept = [r for r in (json.loads(out.read_text()) if out.is_file() else []) if (r["set"], r["model"]) not in done]
    out.write_text(json.dumps(kept + rows, indent=1))
    print(
        "\n| set | model | anomalib (stretch) | "
        + " | ".join(f"ours {m}" for m in MODES)
        + " | tiles − anomalib, pt | ms stretch | ms tiles 1x2 | ratio | per cell |"
    )
    print("|---|---|---:|" + "---:|" * len(MODES) + "---:|---:|---:|---:|---:|")
    for r in rows:
        a = r["anomalib"]["image_auroc"]
        t = r["tiles 1x2"]
        print(
            f"| {r['set']} strips | {r['model']} | {a:.3f} | "
            + " | ".join(f"{r[m]['image_auroc']:.3f}" for m in MODES)
            + f" | {100 * (t['image_auroc'] - a):+.1f} | {r['stretch']['latency_ms']:.1f} | {t['latency_ms']:.1f} | "
            f"{t['latency_ms'] / r['stretch']['latency_ms']:.2f}x | {r['cells']:.3f} |"
        )


if __name__ == "__main__":
    main()
