"""PaDiM's export graph: anomalib's scoring, the map's resize and 33x33 Gaussian blur as two small products.

The Gaussian (mean, inverse covariance) are constants of the exported graph; ``stats.npz`` is only
needed again to retrain. The numbers are anomalib's (``tests/test_scoring.py`` checks the blur).
"""

from __future__ import annotations

import torch
from torch import nn

from ad_core.filters import resize_blur

SIGMA = 4  # anomalib's PaDiM AnomalyMapGenerator default


class PadimGraph(nn.Module):
    """Image -> (raw score ``(B,)``, anomaly map ``(B, 1, S, S)``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw scores ``(B,)`` and maps ``(B, 1, S, S)``."""
        return self.score_features(self.module.feature_extractor(image), tuple(image.shape[-2:]))

    def score_features(
        self, features: dict[str, torch.Tensor], size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from the backbone's per-layer features (cached ones: ``bench/bench_ablation.py``)."""
        m = self.module
        embedding = m.generate_embedding(features)
        stats = [m.gaussian.mean, m.gaussian.inv_covariance]
        distance = m.anomaly_map_generator.compute_distance(embedding, stats)
        # anomalib's bilinear resize to the image, then its Gaussian: both linear, one (S, h) matrix per axis
        anomaly_map = resize_blur(distance, size, SIGMA, "bilinear")
        return anomaly_map.amax(dim=(-2, -1)).reshape(-1), anomaly_map
