"""The export graph of the models whose whole scoring is one torch module (EfficientAD, the VAE).

A graph maps a preprocessed batch ``image (B, 3, S, S)`` to the outputs its spec's ``graph_kind``
names. It is what ``convtrt`` exports to ONNX and what the torch backend runs during training and
testing, so the scores that set a threshold come from the graph that is deployed.
"""

from __future__ import annotations

import torch
from torch import nn


class ScoreGraph(nn.Module):
    """Image -> (raw score ``(B,)``, anomaly map ``(B, 1, S, S)``) through the module's own forward."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw scores ``(B,)`` and maps ``(B, 1, S, S)``."""
        out = self.module(image)
        return out.pred_score.reshape(-1), out.anomaly_map
