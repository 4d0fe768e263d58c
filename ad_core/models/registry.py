"""One explicit registry of anomaly models and one factory (timm's ``register_model``/``create_model``).

Each model declares its hyperparameters as :class:`Param` rows (default, range, help); the CLI,
the tuner and the panels are generated from them. The specs live in :mod:`ad_core.models.specs`,
which imports nothing heavy: listing models, building the CLI and validating hyperparameters never
import anomalib or torch. A spec names its class as ``"module:Class"``, imported on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from ad_core.errors import ConfigError


@dataclass(frozen=True)
class Param:
    """A hyperparameter: type, default, allowed values and a one-line help text."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    multiple: bool = False  # a list of values (e.g. layers, enc_channels)

    def validate(self, value: Any) -> Any:
        """Coerce and check one value; raise :class:`ConfigError` naming the parameter."""
        if value is None:
            return None
        if self.multiple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            if not isinstance(value, list | tuple) or not value:
                raise ConfigError(f"{self.name}: expected a non-empty list, got {value!r}")
            return [self._one(v) for v in value]
        return self._one(value)

    def _one(self, value: Any) -> Any:
        try:
            value = self.type(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.name}: expected {self.type.__name__}, got {value!r}") from exc
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.name}: {value!r} is not one of {list(self.choices)}")
        if self.low is not None and value < self.low:
            raise ConfigError(f"{self.name}: {value!r} is below the minimum {self.low}")
        if self.high is not None and value > self.high:
            raise ConfigError(f"{self.name}: {value!r} is above the maximum {self.high}")
        return value


COMMON_PARAMS = (Param("image_size", int, 256, "side of the square image the model sees (pixels)", low=32, high=1024),)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: CLI name, run-directory name, class (``"module:Class"``) and hyperparameters."""

    name: str
    dir_name: str
    factory: str
    params: tuple[Param, ...]
    trained: bool
    description: str
    defaults: dict = field(default_factory=dict)

    @property
    def model_class(self) -> type:
        """The model's class, imported on first use (its module imports torch and anomalib)."""
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)

    def all_params(self) -> tuple[Param, ...]:
        """The model's own parameters plus the common ones."""
        return COMMON_PARAMS + self.params

    def validate(self, hparams: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults, coerce and range-check; unknown names are an error."""
        params = {p.name: p for p in self.all_params()}
        unknown = sorted(set(hparams) - set(params))
        if unknown:
            raise ConfigError(
                f"model {self.name!r} has no hyperparameter {', '.join(unknown)}; it takes {', '.join(params)}"
            )
        out = {}
        for name, p in params.items():
            value = hparams.get(name)
            out[name] = p.validate(value) if value is not None else p.default
        return out


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (explicitly, from its module)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Registered model names, in registration order."""
    _ensure_loaded()
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; a clear error for an unknown name."""
    _ensure_loaded()
    key = name.lower()
    if key not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def create_model(name: str, **hparams: Any):
    """Build an untrained model by name with validated hyperparameters."""
    spec = get_spec(name)
    return spec.model_class(**spec.validate(hparams))


def _ensure_loaded() -> None:
    if not _REGISTRY:
        importlib.import_module("ad_core.models.specs")
