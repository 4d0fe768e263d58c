"""PatchCore's export graph: image -> patch embeddings ``(B, D, h, w)`` (anomalib's feature path).

The graph stops before the memory bank: a real bank inside the graph is what breaks anomalib's
PatchCore ONNX/TensorRT export (anomalib issues #967, #1286). The bank is searched by
:class:`ad_core.models.patchcore.head.PatchcoreHead`, in training, testing and deployment alike.
Fitting embeds its training images through this same module.
"""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingGraph(nn.Module):
    """Pooled, upsampled and concatenated backbone features of anomalib's ``PatchcoreModel``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.embedding_dim = int(sum(module.feature_extractor.out_dims))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, D, h, w)``."""
        m = self.module
        features = m.feature_extractor(image)
        features = {layer: m.feature_pooler(f) for layer, f in features.items()}
        return m.generate_embedding(features)
