"""The types a model declares itself with: its hyperparameters and what the rest of ad_core needs to know.

Each model's folder has a ``spec.py`` that builds one :class:`ModelSpec` from these types and imports
nothing else: the CLI, the tuner's search space and the panels' forms are built from the specs
without importing torch or anomalib. A spec names its classes as ``"module:Class"``, imported on use.
Code outside ``ad_core/models`` dispatches through these fields (``graph_kind``, ``artifact_file``,
``merge_flag``, ``head`` ...) and never compares model names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from ad_core.errors import ConfigError
from ad_core.tiles import MAX_TILE_OVERLAP, tiles_text

GRAPH_KINDS = ("score", "embedding")
NOT_LEGACY = object()  # Param.legacy when a missing key simply means the default


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def import_object(ref: str) -> Any:
    """``"package.module:Name"`` -> the object (the module is imported on first use)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


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
    legacy: Any = NOT_LEGACY
    """the value a bundle whose meta.json predates this parameter (or its new default) was made with"""
    multiple_of: int | None = None
    """values must be a multiple of this (EfficientAD's image size)"""
    expected: str | None = None
    """what a value looks like, for errors, when ``type`` is a parser rather than a plain type"""

    @property
    def rule(self) -> str:
        """What values are allowed, in words ("32 to 1024", "a multiple of 64, at least 256", "one of ...")."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = []
        if self.multiple_of:
            parts.append(f"a multiple of {self.multiple_of}")
        if self.low is not None and self.high is not None:
            parts.append(f"{_num(self.low)} to {_num(self.high)}")
        elif self.low is not None:
            parts.append(f"at least {_num(self.low)}")
        elif self.high is not None:
            parts.append(f"at most {_num(self.high)}")
        return ", ".join(parts)

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
            raise ConfigError(f"{self.name}: expected {self.expected or self.type.__name__}, got {value!r}") from exc
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.name}: {value!r} is not one of {list(self.choices)}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ConfigError(f"{self.name}: {value!r} is outside the allowed range ({self.rule})")
        if self.multiple_of and value % self.multiple_of:
            raise ConfigError(f"{self.name}: {value!r} is not allowed ({self.rule})")
        return value


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: CLI name, run-directory name, class (``"module:Class"``) and hyperparameters."""

    name: str
    dir_name: str
    factory: str
    params: tuple[Param, ...]
    trained: bool
    description: str
    seed_keys: tuple[str, ...] = ()
    """seed 001's hyperparameter keys, written first into meta.json"""
    graph: str = "ad_core.models.graphs:ScoreGraph"
    """the torch module that is exported to ONNX and run by the torch backend (``"module:Class"``)"""
    graph_kind: str = "score"
    """``"score"``: the graph outputs ``pred_score, anomaly_map``; ``"embedding"``: it outputs
    ``embedding`` and the head finishes the score (PatchCore's bank search)"""
    head: str = "ad_core.models.heads:ScoreHead"
    """the numpy step after the graph, the same in training, testing and deployment (``"module:Class"``)"""
    artifact_file: str | None = None
    """the array file beside model.pth (``memory_bank.npz``, ``stats.npz``), None for none"""
    artifact_key: str | None = None
    """the meta.json key that names the array file"""
    artifact_in_graph: bool = False
    """the arrays are constants of the exported graph (PaDiM): an engine needs them only to retrain"""
    merge_flag: str | None = None
    """the retrain flag that merges new images into the old arrays (``load_bank``, ``load_stats``)"""
    tune_dims: tuple[str, ...] = ()
    """the hyperparameters a default tuning study searches (seed 001's table)"""
    demo: dict = field(default_factory=dict)
    """settings ``ad-core demo`` trains with on a 2-core CPU"""
    select_candidates: tuple[dict, ...] = ({},)
    """configurations ``ad-core select`` / ``--model auto`` tries (hyperparameter overrides; ``{}`` = defaults)"""
    proxy_variants: tuple[dict, ...] = ()
    """more configurations, some weaker on purpose, for checking that the proxy ranks like the test split"""

    @property
    def model_class(self) -> type:
        """The model's class, imported on first use (its module imports torch and anomalib)."""
        return import_object(self.factory)

    @property
    def head_class(self) -> type:
        """The deployed head's class (numpy only: importing it never loads torch)."""
        return import_object(self.head)

    @property
    def graph_class(self) -> type:
        """The export graph's class (torch)."""
        return import_object(self.graph)

    @property
    def outputs(self) -> list[str]:
        """The output names of this model's exported graph."""
        from ad_core.graph_io import EMBEDDING_OUTPUT, SCORE_OUTPUTS

        return [EMBEDDING_OUTPUT] if self.graph_kind == "embedding" else list(SCORE_OUTPUTS)

    def all_params(self) -> tuple[Param, ...]:
        """The common parameters (a model's own parameter of the same name replaces one), then the model's."""
        own = {p.name for p in self.params}
        return tuple(p for p in COMMON_PARAMS if p.name not in own) + self.params

    def from_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The hyperparameters a bundle was made with: meta.json's, and for keys it lacks the ``legacy`` value.

        A parameter added (or a default changed) later records what older bundles used, so they keep
        loading and scoring exactly as they did.
        """
        out = {}
        for p in self.all_params():
            if p.name in meta:
                out[p.name] = meta[p.name]
            elif p.legacy is not NOT_LEGACY:
                out[p.name] = p.legacy
        return self.validate(out)

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


COMMON_PARAMS = (
    Param("image_size", int, 256, "side of the square image the model sees (pixels)", low=32, high=1024),
    Param(
        "resize",
        str,
        "bilinear_float",
        "how an image is resized to image_size: bilinear on floats, or rounded to 8 bits as runs before December 2026",
        choices=("bilinear_float", "bilinear"),
        legacy="bilinear",
    ),
    Param(
        "tiles",
        tiles_text,
        "1x1",
        "cut each image into ROWSxCOLS tiles, each resized to image_size (large images, small defects; "
        "score = the highest tile's). 1x1: the whole image",
        expected="ROWSxCOLS, e.g. 1x1 or 2x2, at most 64 tiles",
    ),
    Param(
        "tile_overlap",
        float,
        0.0,
        "with tiles: more tiles of the same size, at a stride of at most (1 - this) of a tile, so a defect on "
        "a tile's edge is also seen whole (anomalib's Tiler stride; 2x2 with 0.5: 3x3 tiles); 0: none",
        low=0.0,
        high=MAX_TILE_OVERLAP,
    ),
)

BACKBONE_PARAMS = (
    Param(
        "backbone",
        str,
        "tf_efficientnet_lite0",
        "ImageNet CNN the features come from (tf_efficientnet_lite0/1/2 work offline; the ResNets need weights)",
        choices=(
            "tf_efficientnet_lite0",
            "tf_efficientnet_lite1",
            "tf_efficientnet_lite2",
            "resnet18",
            "resnet34",
            "resnet50",
            "wide_resnet50_2",
        ),
    ),
    Param(
        "layers",
        str,
        None,
        "backbone layers to take features from (default depends on the backbone)",
        multiple=True,
    ),
)
