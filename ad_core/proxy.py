"""The proxy objective: how well a model separates held-out normal images from synthetic anomalies.

With no labelled defects (the usual case on a new line), ``ad-core select`` / ``--model auto`` and
``ad-core tune --objective proxy`` need something to rank configurations by. :class:`ProxySet` takes
normal images the model never saw, makes synthetic anomalies from them
(:mod:`ad_core.data.synthetic`: cut-paste, scar, texture blend, blobs) and scores both on the model's
deployed scoring path: the proxy is the image AUROC of that set (and, per kind, of each kind
against the normals). ``bench/bench_quality.py --proxy`` reports how well it ranks configurations
against their real test AUROC.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ad_core.data.images import read_image
from ad_core.data.synthetic import GENERATORS, KINDS, synthetic_set
from ad_core.errors import ConfigError, DataError
from ad_core.scoring import image_auroc

MIN_NORMALS = 4


def check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    """The synthetic kinds to make (``--proxy_kinds``; default :data:`KINDS`), checked against the generators.

    Where the expected defects are known to be of one shape, naming it ranks better: on ELPV mono,
    thin faint ``crack`` lines alone rank 13 configurations with Spearman +0.87 against the test
    split, the four default kinds −0.16 (docs/benchmarks.md).
    """
    if not kinds:
        return KINDS
    unknown = [k for k in kinds if k not in GENERATORS]
    if unknown:
        raise ConfigError(f"--proxy_kinds {' '.join(unknown)}: choose from {', '.join(GENERATORS)}")
    return tuple(dict.fromkeys(kinds))


class ProxySet:
    """Held-out normal images and synthetic anomalies made from them (labels, masks and kinds)."""

    def __init__(
        self, normal_paths: Sequence[Path], per_image: int = 2, kinds: tuple[str, ...] = KINDS, seed: int = 0
    ) -> None:
        if len(normal_paths) < MIN_NORMALS:
            raise DataError(
                f"the proxy needs at least {MIN_NORMALS} held-out normal images, got {len(normal_paths)}; "
                f"add normal images to the training folder"
            )
        self.normal_paths = list(normal_paths)
        normals = [read_image(p) for p in self.normal_paths]
        made = synthetic_set(normals, per_image, kinds, seed)
        self.images = [*normals, *(m[0] for m in made)]
        self.masks = [np.zeros(n.shape[:2], bool) for n in normals] + [m[1] for m in made]
        self.kinds = ["normal"] * len(normals) + [m[2] for m in made]
        self.labels = np.array([0] * len(normals) + [1] * len(made))

    def __len__(self) -> int:
        return len(self.images)

    def raw_scores(self, model, batch_size: int = 8) -> np.ndarray:
        """Raw scores of every image on the model's scoring path (torch graph + head)."""
        scorer = model.scorer()
        pre = model.preprocess
        out = []
        for i in range(0, len(self.images), batch_size):
            batch = np.concatenate([pre.tile_arrays(im) for im in self.images[i : i + batch_size]])
            out.append(pre.merge_tiles(*scorer.raw(batch))[0])
        return np.concatenate(out)

    def evaluate(self, scores: np.ndarray) -> dict[str, Any]:
        """Proxy AUROC overall and per kind (each kind against the normal images)."""
        scores = np.asarray(scores, np.float64)
        if not np.all(np.isfinite(scores)):
            return {"auroc": 0.0, "per_kind": {}, "normals": int((self.labels == 0).sum()), "anomalies": 0}
        kinds = np.array(self.kinds)
        normal = kinds == "normal"
        per_kind = {}
        for kind in dict.fromkeys(k for k in self.kinds if k != "normal"):
            sel = normal | (kinds == kind)
            per_kind[kind] = image_auroc(self.labels[sel], scores[sel])
        return {
            "auroc": image_auroc(self.labels, scores),
            "per_kind": per_kind,
            "normals": int(normal.sum()),
            "anomalies": int((~normal).sum()),
        }

    def score(self, model, batch_size: int = 8) -> dict[str, Any]:
        """:meth:`evaluate` of :meth:`raw_scores`."""
        return self.evaluate(self.raw_scores(model, batch_size))


def held_out(paths: Sequence[Path], fraction: float, seed: int, low: int = 6, high: int = 60) -> tuple[list, list]:
    """``(fit, held_out)``: a seeded ``fraction`` of normal images (at least ``low``, at most ``high``) held out."""
    paths = sorted(paths)
    n = int(np.clip(round(len(paths) * fraction), min(low, len(paths) // 2), high))
    if n < MIN_NORMALS or len(paths) - n < 2:
        raise DataError(
            f"{len(paths)} normal images are too few to hold {MIN_NORMALS} out for the proxy and still fit a model; "
            f"add normal images"
        )
    order = np.random.default_rng(seed).permutation(len(paths))
    hold = sorted(paths[i] for i in order[:n])
    fit = sorted(paths[i] for i in order[n:])
    return fit, hold
