"""PaDiM's export graph: anomalib's scoring with the map's 33x33 Gaussian blur as two 1-D passes.

The Gaussian (mean, inverse covariance) are constants of the exported graph; ``stats.npz`` is only
needed again to retrain. The numbers are anomalib's (``tests/test_scoring.py`` checks the blur).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.filters import blur, gaussian_kernel

SIGMA = 4  # anomalib's PaDiM AnomalyMapGenerator default


class PadimGraph(nn.Module):
    """Image -> (raw score ``(B,)``, anomaly map ``(B, 1, S, S)``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("kernel", gaussian_kernel(SIGMA), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw scores ``(B,)`` and maps ``(B, 1, S, S)``."""
        m = self.module
        embedding = m.generate_embedding(m.feature_extractor(image))
        stats = [m.gaussian.mean, m.gaussian.inv_covariance]
        distance = m.anomaly_map_generator.compute_distance(embedding, stats)
        upsampled = F.interpolate(distance, size=image.shape[-2:], mode="bilinear", align_corners=False)
        anomaly_map = blur(upsampled, self.kernel)
        return anomaly_map.amax(dim=(-2, -1)).reshape(-1), anomaly_map
