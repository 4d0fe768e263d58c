"""PatchCore on CPU: ad_core vs anomalib's own PatchcoreModel, same images, backbone, layers and ratio.

Measures, in one run:
  * whole fit (feature extraction + coreset) wall time, and the coreset step alone on identical
    embeddings (anomalib KCenterGreedy, our plain vectorised greedy, our pruned greedy);
  * image AUROC of both fitted models on the test split;
  * per-image CPU latency (batch 1, median) of both.
Prints a table with ratios and writes bench/results/patchcore_<category>.json.

    python bench/bench_patchcore.py --data ../shared/data/mvtec_ad --category bottle --n_train 80 --ratio 0.1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from anomalib.models.components.sampling import KCenterGreedy
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

from ad_core.backbones import load_backbone_weights, resolve_weights
from ad_core.data.dataset import ImageDataset, make_loader
from ad_core.data.layout import resolve_category
from ad_core.models import FitConfig, create_model
from ad_core.models.patchcore.coreset import k_center_greedy, k_center_greedy_plain
from ad_core.scoring import image_auroc


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def latency(predict, images: torch.Tensor, n: int) -> float:
    times = []
    for i in range(n):
        _, dt = timed(lambda i=i: predict(images[i : i + 1]))
        times.append(dt)
    return statistics.median(times[1:]) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/mvtec_ad")
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--n_train", type=int, default=80)
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--image_size", type=int, default=256)
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--layers", nargs="+", default=["blocks.2", "blocks.4"])
    ap.add_argument("--latency_images", type=int, default=21)
    ap.add_argument("--skip_plain", action="store_true", help="skip the plain greedy coreset timing")
    ap.add_argument("--skip_coreset_alone", action="store_true", help="skip timing the coreset step alone (5 min)")
    args = ap.parse_args()
    torch.manual_seed(0)

    data = resolve_category(args.data, args.category, require_test=True)
    train_paths = data.train[: args.n_train]
    ours = create_model(
        "patchcore", image_size=args.image_size, backbone=args.backbone, layers=args.layers, coreset_ratio=args.ratio
    )
    pre = ours.preprocess
    test_x = torch.stack([ImageDataset([s.path for s in data.test], pre)[i]["image"] for i in range(len(data.test))])
    labels = np.array([s.label for s in data.test])
    weights = resolve_weights(args.backbone)

    # anomalib: its own training path (embedding store + KCenterGreedy subsample)
    ref = PatchcoreModel(layers=args.layers, backbone=args.backbone, pre_trained=False, num_neighbors=9)
    load_backbone_weights(ref.feature_extractor.feature_extractor, weights, args.backbone)
    loader = make_loader(ImageDataset(train_paths, pre), 8)

    def fit_anomalib():
        ref.train()
        for batch in loader:
            ref(batch["image"])
        ref.subsample_embedding(args.ratio)
        ref.eval()

    torch.manual_seed(0)
    _, t_fit_ref = timed(fit_anomalib)

    # ours: the wrapper's fit (same embedding code, fast coreset)
    ours.prepare_pretrained(FitConfig(progress=False))
    _, t_fit_ours = timed(lambda: ours.fit(train_paths, [], FitConfig(progress=False)))

    with torch.no_grad():
        ref_scores = np.concatenate([ref(b).pred_score.numpy() for b in test_x.split(8)])
    scorer = ours.scorer()
    our_scores = np.concatenate([scorer.raw(b)[0] for b in test_x.split(8)])

    # coreset step alone on identical embeddings
    emb = torch.cat([ours.embed(b["image"]) for b in loader])
    k = int(len(emb) * args.ratio)
    torch.manual_seed(0)
    if args.skip_coreset_alone:
        t_core_ref = t_core_ours = float("nan")
    else:
        _, t_core_ref = timed(lambda: KCenterGreedy(emb, args.ratio).sample_coreset())
        _, t_core_ours = timed(lambda: k_center_greedy(emb, k))
    t_core_plain = None if args.skip_plain else timed(lambda: k_center_greedy_plain(emb, k))[1]

    with torch.no_grad():
        lat_ref = latency(ref, test_x, args.latency_images)
    lat_ours = latency(scorer.raw, test_x, args.latency_images)  # torch graph + the deployed head

    result = {
        "category": args.category,
        "n_train": len(train_paths),
        "image_size": args.image_size,
        "backbone": args.backbone,
        "layers": args.layers,
        "coreset_ratio": args.ratio,
        "embeddings": len(emb),
        "embedding_dim": int(emb.shape[1]),
        "coreset_size": k,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "fit_s": {"anomalib": t_fit_ref, "ad_core": t_fit_ours},
        "coreset_s": {"anomalib": t_core_ref, "ad_core_plain": t_core_plain, "ad_core": t_core_ours},
        "image_auroc": {"anomalib": image_auroc(labels, ref_scores), "ad_core": image_auroc(labels, our_scores)},
        "latency_ms": {"anomalib": lat_ref, "ad_core": lat_ours},
    }
    out = Path(__file__).parent / "results" / f"patchcore_{args.category}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(
        f"PatchCore, {args.category}: {len(train_paths)} train images at {args.image_size} px, {args.backbone} "
        f"{args.layers}, ratio {args.ratio} ({len(emb)} embeddings -> {k}), {torch.get_num_threads()} threads"
    )
    print(f"{'':<28}{'anomalib':>12}{'ad_core':>12}{'ratio':>10}")
    print(f"{'whole fit (s)':<28}{t_fit_ref:>12.1f}{t_fit_ours:>12.1f}{t_fit_ref / t_fit_ours:>9.1f}x")
    print(f"{'coreset alone (s)':<28}{t_core_ref:>12.1f}{t_core_ours:>12.1f}{t_core_ref / t_core_ours:>9.1f}x")
    if t_core_plain is not None:
        print(f"{'  plain vectorised greedy':<28}{'':>12}{t_core_plain:>12.1f}{t_core_ref / t_core_plain:>9.1f}x")
    a, b = result["image_auroc"]["anomalib"], result["image_auroc"]["ad_core"]
    print(f"{'image AUROC':<28}{a:>12.4f}{b:>12.4f}{(b - a) * 100:>+9.2f} pt")
    print(f"{'latency per image (ms)':<28}{lat_ref:>12.1f}{lat_ours:>12.1f}{lat_ref / lat_ours:>9.2f}x")
    print(f"written {out}")


if __name__ == "__main__":
    main()
