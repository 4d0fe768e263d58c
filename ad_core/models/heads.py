"""The step after a graph that already outputs ``pred_score`` and ``anomaly_map``: none.

A head turns a graph's outputs into raw scores ``(B,)`` and raw maps ``(B, 1, S, S)`` in numpy. It
runs on the calling thread after every backend (torch while training and testing, ONNX Runtime,
OpenVINO, TensorRT once deployed), so there is one scoring path. Heads import no torch.

Interface (duck-typed; PatchCore's :class:`ad_core.models.patchcore.head.PatchcoreHead` is the other one):

* ``open(meta, arrays, source, bank_search, folder, backend)``: build from meta.json and the bundle's
  arrays (``arrays`` is None where the spec keeps its arrays in the graph or has none), knowing the
  folder of the bundle or engine and the backend that runs its graph;
* ``check(output_shapes, source)``: refuse a graph whose outputs do not fit;
* ``head(outputs, image_size) -> (scores, maps)``; ``timings`` holds its stages of the last call (ms).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class ScoreHead:
    """Pass the graph's ``pred_score`` and ``anomaly_map`` through."""

    uses_arrays = False

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @classmethod
    def open(
        cls,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray] | None,
        source: str | Path,
        bank_search: str = "auto",
        folder: str | Path | None = None,
        backend: str | None = None,
    ) -> ScoreHead:
        """No state: the whole score is in the graph."""
        return cls()

    def check(self, output_shapes: dict[str, list], source: str | Path) -> None:
        """Nothing to check beyond the output names (the Scorer checks those)."""

    def __call__(self, outputs: list[np.ndarray], image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(pred_score, anomaly_map)`` as the graph gave them."""
        return outputs[0], outputs[1]
