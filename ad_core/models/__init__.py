"""Anomaly models: one registry, one factory."""

from ad_core.models.base import AnomalyModel, FitConfig, TrainingStopped
from ad_core.models.registry import ModelSpec, Param, create_model, get_spec, list_models, register_model

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
