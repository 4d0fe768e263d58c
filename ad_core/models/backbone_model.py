"""Shared parts of the models built on an ImageNet backbone (PatchCore, PaDiM)."""

from __future__ import annotations

import functools
from typing import Any

from ad_core.backbones import DEFAULT_LAYERS, load_backbone_weights, resolve_weights
from ad_core.errors import ConfigError
from ad_core.models.base import AnomalyModel, FitConfig


@functools.cache
def _feature_info(backbone: str) -> tuple[dict, ...]:
    """The feature maps ``backbone`` offers, as timm describes them (``features_only``), built once."""
    import timm

    probe = timm.create_model(backbone, pretrained=False, features_only=True)
    return tuple(probe.feature_info.info)


def feature_layers(backbone: str) -> tuple[str, ...]:
    """Names of the layers ``backbone`` offers as feature maps."""
    return tuple(info["module"] for info in _feature_info(backbone))


def layer_channels(backbone: str) -> dict[str, int]:
    """Channels of each layer ``backbone`` offers as a feature map."""
    return {info["module"]: int(info["num_chs"]) for info in _feature_info(backbone)}


def layer_reductions(backbone: str) -> dict[str, int]:
    """How many input pixels one position of each offered layer's map spans (its stride)."""
    return {info["module"]: int(info["reduction"]) for info in _feature_info(backbone)}


def check_layers(backbone: str, layers: list[str]) -> None:
    """Refuse layers the backbone does not offer, listing those it does."""
    names = list(feature_layers(backbone))
    bad = [layer for layer in layers if layer not in names]
    if bad:
        raise ConfigError(f"layers: {bad} not in backbone {backbone}; it offers {names}")


class BackboneModel(AnomalyModel):
    """A model whose module has ``feature_extractor.feature_extractor`` from timm."""

    def __init__(self, **hparams: Any) -> None:
        if not hparams.get("layers"):
            hparams["layers"] = list(DEFAULT_LAYERS.get(hparams["backbone"], ["layer2", "layer3"]))
        check_layers(hparams["backbone"], hparams["layers"])
        super().__init__(**hparams)

    def prepare_pretrained(self, cfg: FitConfig) -> None:
        """Resolve ImageNet weights offline-first and load them into the feature extractor."""
        backbone = self.hparams["backbone"]
        resolved = resolve_weights(backbone, cfg.weights, cfg.allow_download)
        load_backbone_weights(self.module.feature_extractor.feature_extractor, resolved, backbone)
        self.fit_info["backbone_weights"] = resolved.source
