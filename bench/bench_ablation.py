"""Ideas for PaDiM's head, measured on the quality harness's sets and split in one run (issue 16's research log).

The backbone's features of every training and test image are extracted once per set (today's
pre-processing, ``tf_efficientnet_lite0`` ``blocks.2 blocks.4`` at 256 px, as ``train`` computes them),
then every variant is fitted and scored on them by PaDiM's own code (``Padim.feature_moments``, its
shrunk Gaussian, ``PadimGraph.score_features``), so a variant differs from today's model only in what it
names. The ``default`` variant is today's model: it equals ``train`` + ``evaluate`` (training absorbs
its held-out images, so both fit on every training image; ``tests/test_bench_ablation.py`` checks the
two agree), and ``anomalib`` is anomalib's estimator (100 seeded random channels, no pooling, no
shrinkage; the harness's anomalib row up to its pre-processor).

A variant is a name from ``VARIANTS`` or several joined by ``+`` (``cbrt+p99``): their
hyperparameters are merged, their feature transforms applied in order, the last image score used.
Sets are named as in ``bench/bench_quality.py`` (``bottle``, ``elpv_mono``, ``elpv_poly``,
``sample``, ``DATA_ROOT:CATEGORY`` for a labelled set of your own) and capped to the same seeded
``--max_train`` subset. This is how to check, on a set of your own, whether an idea that won here
generalises: nothing here tunes anything, it reports every variant's test AUROC.

Usage::

    python bench/bench_ablation.py                                   # every variant, the harness's sets
    python bench/bench_ablation.py --sets elpv_poly /data/tiles:MT_tile --variants default anomalib cbrt cbrt+p99
    python bench/bench_ablation.py --backbone tf_efficientnet_lite2 --variants default anomalib   # both heads on Lite2

Prints per set the image (and pixel) AUROC of each variant, then a table of Δ against today's default
with the mean over the real sets (the sample textures are synthetic and reported apart) and whether a
variant gains on every set; writes ``bench/results/ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality  # the harness's sets, capping and anomalib settings

Features = dict[str, torch.Tensor]
SIZE = bench_quality.SIZE


def _signed_power(p: float) -> Callable[[Features], Features]:
    return lambda f: {k: v.sign() * v.abs().pow(p) for k, v in f.items()}


def _signed_log(f: Features) -> Features:
    return {k: v.sign() * v.abs().log1p() for k, v in f.items()}


def _unit_layers(f: Features) -> Features:
    """Each layer's feature vector at each position scaled to a root mean square of 1 over its channels."""
    return {k: v / v.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-6) for k, v in f.items()}


def _quantile_score(q: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda maps: torch.quantile(maps.flatten(1), q, dim=1)


def _top_mean_score(share: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def score(maps: torch.Tensor) -> torch.Tensor:
        flat = maps.flatten(1)
        return flat.topk(max(1, int(flat.shape[1] * share)), dim=1).values.mean(1)

    return score


def _shrink_toward(target: Callable[[torch.Tensor], torch.Tensor], s: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(1 - s) S + s T(S)`` per position, in place of PaDiM's shrinkage (the variant sets it to 0)."""
    return lambda cov: (1 - s) * cov + s * target(cov)


def _diagonal(cov: torch.Tensor) -> torch.Tensor:
    """Each position's own variances, no correlations."""
    return torch.diag_embed(cov.diagonal(dim1=-2, dim2=-1))


def _pooled(cov: torch.Tensor) -> torch.Tensor:
    """The covariance within positions, averaged over all positions (one matrix for the whole image)."""
    return cov.mean(0, keepdim=True).expand_as(cov)


@dataclass(frozen=True)
class Variant:
    """What a variant changes: PaDiM hyperparameters, a transform of the features, the covariance, the image score."""

    doc: str
    hparams: dict = field(default_factory=dict)
    transforms: tuple[Callable[[Features], Features], ...] = ()
    score: Callable[[torch.Tensor], torch.Tensor] | None = None
    covariance: Callable[[torch.Tensor], torch.Tensor] | None = None


VARIANTS: dict[str, Variant] = {
    "default": Variant("today's defaults: all 152 channels, 3x3 pooling of maps >= 16 across, shrinkage 0.1"),
    "anomalib": Variant(
        "anomalib's estimator: 100 seeded random channels, no pooling, no shrinkage",
        {"n_features": 100, "shrinkage": 0.0, "feature_pool": 1},
    ),
    "no_pool": Variant("no 3x3 pooling (feature_pool 1)", {"feature_pool": 1}),
    "pool_all": Variant("pool every layer, however coarse (pool_min_side 0)", {"pool_min_side": 0}),
    "no_shrink": Variant("no shrinkage (shrinkage 0)", {"shrinkage": 0.0}),
    "shrink_0.3": Variant("shrinkage 0.3", {"shrinkage": 0.3}),
    "n100": Variant("a seeded random 100 of the 152 channels", {"n_features": 100}),
    "sqrt": Variant("features sign(x) sqrt|x| before the Gaussian", transforms=(_signed_power(0.5),)),
    "cbrt": Variant("features sign(x) |x|^(1/3) before the Gaussian", transforms=(_signed_power(1 / 3),)),
    "slog": Variant("features sign(x) log(1 + |x|) before the Gaussian", transforms=(_signed_log,)),
    "unit_layers": Variant("each layer scaled to unit RMS over its channels, per position", transforms=(_unit_layers,)),
    "shrink_diag": Variant(
        "shrinkage 0.1 toward each position's own variances (not their mean)",
        {"shrinkage": 0.0},
        covariance=_shrink_toward(_diagonal, 0.1),
    ),
    "shrink_pooled": Variant(
        "shrinkage 0.1 toward the covariance averaged over all positions",
        {"shrinkage": 0.0},
        covariance=_shrink_toward(_pooled, 0.1),
    ),
    "shrink_pooled_0.3": Variant(
        "shrinkage 0.3 toward the covariance averaged over all positions",
        {"shrinkage": 0.0},
        covariance=_shrink_toward(_pooled, 0.3),
    ),
    "p99": Variant("image score: the map's 99th percentile, not its maximum", score=_quantile_score(0.99)),
    "top1pct": Variant("image score: the mean of the map's top 1 %", score=_top_mean_score(0.01)),
}


def parse_variant(name: str) -> Variant:
    """A name from :data:`VARIANTS`, or several joined by ``+`` (merged hparams, chained transforms, the last
    score and covariance target given)."""
    parts = name.split("+")
    unknown = [p for p in parts if p not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r} in {name!r}; choose from {', '.join(VARIANTS)} (join with +)")
    vs = [VARIANTS[p] for p in parts]
    return Variant(
        " + ".join(v.doc for v in vs),
        reduce(lambda a, v: {**a, **v.hparams}, vs, {}),
        tuple(t for v in vs for t in v.transforms),
        next((v.score for v in reversed(vs) if v.score is not None), None),
        next((v.covariance for v in reversed(vs) if v.covariance is not None), None),
    )


@dataclass
class CachedSet:
    """One set's backbone features (CPU tensors, batches of 8) with its test labels and masks."""

    label: str
    train: list[Features]
    test: list[Features]
    labels: np.ndarray
    masks: list[Path | None]
    extract_s: float
    image_size: int = SIZE
    backbone: str | None = None  # None: today's default backbone


def _padim(image_size: int, backbone: str | None = None, **overrides):
    from ad_core.models.registry import create_model

    if backbone is not None:
        overrides["backbone"] = backbone
    return create_model("padim", image_size=image_size, **overrides)


@torch.no_grad()
def cache_features(
    label: str, data_root: Path, category: str, image_size: int = SIZE, backbone: str | None = None
) -> CachedSet:
    """Extract every training and test image's features once, with today's pre-processing and weights
    (``backbone``: another of the offline ImageNet backbones, for both today's head and anomalib's)."""
    from ad_core.data.dataset import ImageDataset, make_loader
    from ad_core.data.layout import resolve_category
    from ad_core.options import TrainOptions
    from ad_core.runners import ieee_fp32

    data = resolve_category(data_root, category, require_test=True)
    model = _padim(image_size, backbone)
    model.prepare_pretrained(TrainOptions(progress=False))
    extractor = model.module.feature_extractor.eval()
    t0 = time.perf_counter()

    def run(paths: list[Path]) -> list[Features]:
        out = []
        for batch in make_loader(ImageDataset(paths, model.preprocess), 8, 0):
            with ieee_fp32():
                out.append({k: v.clone() for k, v in extractor(batch["image"]).items()})
        return out

    train, test = run(list(data.train)), run([s.path for s in data.test])
    return CachedSet(
        label,
        train,
        test,
        np.array([s.label for s in data.test]),
        [s.mask for s in data.test],
        time.perf_counter() - t0,
        image_size,
        backbone,
    )


@torch.no_grad()
def run_variant(variant: Variant, cached: CachedSet) -> dict:
    """Fit PaDiM with the variant on the cached training features and score the cached test features."""
    from ad_core.evaluate import pixel_auroc
    from ad_core.scoring import image_auroc

    t0 = time.perf_counter()
    model = _padim(cached.image_size, cached.backbone, **variant.hparams)

    def transformed(batches: list[Features]):
        for f in batches:
            yield reduce(lambda acc, t: t(acc), variant.transforms, f)

    n, total, outer = model.feature_moments(transformed(cached.train))
    mean, cov = model.sample_gaussian(n, total, outer)
    # a covariance variant replaces PaDiM's shrinkage (it sets shrinkage 0); the +0.01 I is kept
    model._set_gaussian(n, mean, cov if variant.covariance is None else variant.covariance(cov))
    graph = model.scoring_graph()
    has_masks = any(m is not None for m in cached.masks)
    scores, maps = [], []
    for f in transformed(cached.test):
        raw, amap = graph.score_features(f, (cached.image_size,) * 2)
        scores.append(raw if variant.score is None else variant.score(amap))
        if has_masks:  # ELPV has none: 632 maps at 256 px would be 166 MB kept for nothing
            maps.append(amap[:, 0].numpy())
    scores_np = torch.cat(scores).numpy()
    return {
        "image_auroc": image_auroc(cached.labels, scores_np),
        "pixel_auroc": pixel_auroc(np.concatenate(maps), cached.masks) if has_masks else None,
        "seconds": time.perf_counter() - t0,
    }


@torch.no_grad()
def position_share(cached: CachedSet) -> float:
    """How much of the training embeddings' variance lies between positions (0: a texture, 1: only position).

    Today's embedding (pooled, all channels) of every training image; per channel, the variance of
    the per-position means over the total variance, averaged over channels. No test labels: a product
    with a low share looks the same everywhere, which is where a covariance shared by all positions
    (``shrink_pooled``) helped.
    """
    module = _padim(cached.image_size, cached.backbone).module
    emb = torch.cat([module.generate_embedding(f).flatten(2) for f in cached.train]).double()  # (N, C, HW)
    total = emb.var(dim=(0, 2))
    between = emb.mean(0).var(dim=1)
    return float((between / total.clamp_min(1e-12)).mean())


def summary(results: dict[str, dict[str, dict]], names: list[str]) -> list[str]:
    """Markdown: image AUROC per set and variant, Δ against ``default``, mean over the real sets, wins everywhere."""
    sets = list(results)
    real = [s for s in sets if not s.startswith("sample")]
    head = "| variant | " + " | ".join(sets) + " | mean Δ real (pt) | worst Δ (pt) | gains on every set |"
    lines = [head, "|---|" + "---:|" * len(sets) + "---:|---:|---|"]
    for name in names:
        cells, deltas, real_deltas = [], [], []
        for s in sets:
            r, base = results[s].get(name), results[s].get("default")
            if r is None:
                cells.append("—")
                continue
            cell = f"{r['image_auroc']:.3f}"
            if base is not None and name != "default":
                d = 100 * (r["image_auroc"] - base["image_auroc"])
                deltas.append(d)
                if s in real:
                    real_deltas.append(d)
                cell += f" ({d:+.1f})"
            cells.append(cell)
        mean = f"{np.mean(real_deltas):+.2f}" if real_deltas else "—"
        worst = f"{min(deltas):+.1f}" if deltas else "—"
        every = "—" if not deltas else ("yes" if min(deltas) > 0 else "no")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} | {worst} | {every} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["bottle", "elpv_mono", "elpv_poly", "sample"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), help="names from VARIANTS, or joined by +")
    ap.add_argument("--data_root", default=str(Path(tempfile.gettempdir()) / "ad_quality_data"))
    ap.add_argument("--max_train", type=int, default=200, help="at most this many training images (the harness's 200)")
    ap.add_argument("--out", default=str(bench_quality.RESULTS / "ablation.json"))
    ap.add_argument(
        "--backbone",
        default=None,
        help="another offline ImageNet backbone for every variant, anomalib's included (tf_efficientnet_lite1 / lite2)",
    )
    ap.add_argument("--list", action="store_true", help="list the variants and exit")
    args = ap.parse_args()
    if args.list:
        for name, v in VARIANTS.items():
            print(f"{name:<12} {v.doc}")
        return
    variants = {name: parse_variant(name) for name in dict.fromkeys(["default", *args.variants])}
    results: dict[str, dict[str, dict]] = {}
    shares: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_ablation_") as tmp:
        for label, full_root, full_category in bench_quality.prepare_sets(args.sets, Path(args.data_root)):
            root, category = bench_quality.capped(label, full_root, full_category, args.max_train, Path(tmp))
            cached = cache_features(label, root, category, backbone=args.backbone)
            share = position_share(cached)
            print(
                f"{label}: features of {len(cached.labels)} test images cached in {cached.extract_s:.0f} s; "
                f"variance between positions {share:.1%}"
            )
            shares[label] = share
            results[label] = {}
            for name, variant in variants.items():
                r = results[label][name] = run_variant(variant, cached)
                pixel = "" if r["pixel_auroc"] is None else f"  pixel {r['pixel_auroc']:.3f}"
                print(f"  {name:<24} image {r['image_auroc']:.3f}{pixel}  ({r['seconds']:.0f} s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"variants": {n: v.doc for n, v in variants.items()}, "position_share": shares, "results": results},
            indent=1,
        )
    )
    print()
    print("\n".join(summary(results, list(variants))))


if __name__ == "__main__":
    main()
