"""One explicit registry of anomaly models and one factory (timm's ``register_model``/``create_model``).

Each model lives in its own folder, ``ad_core/models/<name>/``, whose ``spec.py`` declares its
hyperparameters as :class:`Param` rows (default, range, help) and names its classes; the CLI, the
tuner and the panels are generated from the specs. Adding a model means adding its folder and one
line to :data:`MODEL_SPECS`. Nothing here imports torch or anomalib: listing models, building the
CLI and validating hyperparameters stay fast; a model's classes are imported on first use.
"""

from __future__ import annotations

from typing import Any

from ad_core.errors import ConfigError
from ad_core.models.efficientad.spec import SPEC as EFFICIENTAD
from ad_core.models.padim.spec import SPEC as PADIM
from ad_core.models.patchcore.spec import SPEC as PATCHCORE
from ad_core.models.spec import COMMON_PARAMS, ModelSpec, Param
from ad_core.models.vae.spec import SPEC as VAE

__all__ = [
    "COMMON_PARAMS",
    "ModelSpec",
    "Param",
    "create_model",
    "flag_owner_error",
    "get_spec",
    "list_models",
    "owners",
    "register_model",
]

MODEL_SPECS: tuple[ModelSpec, ...] = (PATCHCORE, PADIM, EFFICIENTAD, VAE)
"""The registered models, in listing order."""

_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (the four built-in ones are added below; plug-ins call this)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


for _spec in MODEL_SPECS:
    register_model(_spec)


def list_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; a clear error for an unknown name."""
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def owners(field: str, value: Any) -> str:
    """The models whose spec has ``field == value``, as a phrase ("PatchCore", "PatchCore or PaDiM")."""
    names = [s.dir_name for s in _REGISTRY.values() if getattr(s, field) == value]
    return " or ".join(names) if names else "no model"


def flag_owner_error(flag: str, field: str, value: Any, model: str) -> ConfigError:
    """``--flag is for <owners> only; this is <model>`` for a flag that belongs to other models."""
    return ConfigError(f"{flag} is for {owners(field, value)} only; this is a {model} model")


def create_model(name: str, **hparams: Any):
    """Build an untrained model by name with validated hyperparameters."""
    spec = get_spec(name)
    return spec.model_class(**spec.validate(hparams))
