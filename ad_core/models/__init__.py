"""Anomaly models: one registry, one factory.

The registry (names, hyperparameters) imports nothing heavy; the model classes and their base
(torch, anomalib) are imported on first use.
"""

from ad_core.errors import TrainingStopped
from ad_core.models.registry import ModelSpec, Param, create_model, get_spec, list_models, register_model

_FROM_BASE = ("AnomalyModel", "FitConfig")

__all__ = [
    "AnomalyModel",
    "FitConfig",
    "ModelSpec",
    "Param",
    "TrainingStopped",
    "create_model",
    "get_spec",
    "list_models",
    "register_model",
]


def __getattr__(name: str):
    if name in _FROM_BASE:
        from ad_core.models import base

        return getattr(base, name)
    raise AttributeError(f"module 'ad_core.models' has no attribute {name!r}")
