"""The search space: which hyperparameters a study varies, their ranges, and how a trial suggests them.

A search-space YAML gives each hyperparameter a fixed value, ``choices`` (categorical) or
``low/high[/log/step]`` (a range); layers may list choices per backbone. Everything is checked
against the model's registry entry (and the offline backbones) before a study starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ad_core.errors import ConfigError
from ad_core.models import get_spec
from ad_core.models.registry import ModelSpec, Param

# layer combinations offered per backbone (each has >= 152 channels, so every n_features below fits)
LAYER_CHOICES = {
    **{
        b: [["blocks.2", "blocks.4"], ["blocks.1", "blocks.2", "blocks.4"], ["blocks.2", "blocks.4", "blocks.6"]]
        for b in ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
    },
    **{
        b: [["layer2", "layer3"], ["layer1", "layer2", "layer3"], ["layer3"]]
        for b in ("resnet18", "resnet34", "resnet50", "wide_resnet50_2")
    },
}
DEFAULT_RANGES: dict[str, dict[str, Any]] = {
    "coreset_ratio": {"low": 0.01, "high": 0.25, "log": True},
    "n_features": {"low": 32, "high": 152, "step": 8},  # its top is the default for lite0/1: all 152 channels
    "model_size": {"choices": ["small", "medium"]},
    "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
    "latent_dim": {"choices": [16, 32, 64, 128, 256]},
}
METRICS = {"auroc": ("image_auroc", "image_f1"), "f1": ("image_f1", "image_auroc")}
SEP = "+"  # list values (layers, enc_channels) are categorical strings "a+b"


# -- search space ----------------------------------------------------------------------------------
@dataclass
class Dim:
    """One hyperparameter of the search: fixed, categorical or a numeric range."""

    name: str
    kind: str  # "fixed" | "categorical" | "int" | "float"
    value: Any = None  # fixed value
    choices: list | dict | None = None  # categorical (layers: per backbone)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def to_yaml(self) -> Any:
        """The YAML form this dimension was (or could have been) written in."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return {"choices": self.choices}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass
class SearchSpace:
    """The validated search space of one model."""

    model: str
    dims: dict[str, Dim] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to ``param/search_space.yaml``."""
        return {name: d.to_yaml() for name, d in self.dims.items()}

    def suggest(self, trial) -> dict[str, Any]:
        """Hyperparameters for one trial (lists decoded, layers chosen for the trial's backbone)."""
        spec = get_spec(self.model)
        params = {p.name: p for p in spec.all_params()}
        out: dict[str, Any] = {}
        for name, d in self.dims.items():
            if name == "layers":
                continue
            out[name] = _suggest_one(trial, d, params[name])
        if "layers" in self.dims:
            d = self.dims["layers"]
            if d.kind == "fixed":
                out["layers"] = d.value
            else:
                options = d.choices[out["backbone"]]
                key = f"layers[{out['backbone']}]" if len(d.choices) > 1 else "layers"
                out["layers"] = trial.suggest_categorical(key, [SEP.join(c) for c in options]).split(SEP)
        return out

    def default_trial(self) -> dict[str, Any]:
        """The model's defaults as Optuna parameters of this space: the study's first trial.

        A tuned model should never come out worse than an untuned one, so a new study starts from
        the defaults. Numbers are clipped into their range and snapped to its step; a default that
        is not among a dimension's choices is left to the sampler, as are fixed dimensions.
        """
        from ad_core.backbones import DEFAULT_LAYERS

        params = {p.name: p for p in get_spec(self.model).all_params()}
        out: dict[str, Any] = {}
        for name, d in self.dims.items():
            default = params[name].default
            if name == "layers" or d.kind == "fixed":
                continue
            if default is None:  # "as many as there are" (PaDiM's n_features: all channels): the range's top
                if d.kind not in ("int", "float"):
                    continue
                default = d.high
            if d.kind == "categorical":
                options = [SEP.join(map(str, c)) for c in d.choices] if params[name].multiple else list(d.choices)
                value = SEP.join(map(str, default)) if params[name].multiple else default
                if value in options:
                    out[name] = value
                continue
            value = min(max(default, d.low), d.high)
            if d.step:
                steps = min(round((value - d.low) / d.step), int((d.high - d.low) // d.step))
                value = round(d.low + steps * d.step, 12)
            out[name] = int(value) if d.kind == "int" else float(value)
        layers, backbone = self.dims.get("layers"), self.dims.get("backbone")
        if layers is not None and layers.kind == "categorical" and backbone is not None:
            chosen = backbone.value if backbone.kind == "fixed" else out.get("backbone")
            wanted = params["layers"].default or DEFAULT_LAYERS.get(chosen)
            if chosen in layers.choices and wanted and list(wanted) in layers.choices[chosen]:
                key = f"layers[{chosen}]" if len(layers.choices) > 1 else "layers"
                out[key] = SEP.join(wanted)
        return out


def _suggest_one(trial, d: Dim, p: Param) -> Any:
    if d.kind == "fixed":
        return d.value
    if d.kind == "categorical":
        if p.multiple:
            picked = trial.suggest_categorical(d.name, [SEP.join(str(v) for v in c) for c in d.choices])
            return p.validate(picked.split(SEP))
        return trial.suggest_categorical(d.name, list(d.choices))
    if d.kind == "int":
        return trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
    return trial.suggest_float(d.name, float(d.low), float(d.high), step=d.step, log=d.log)


def _offline_backbones(spec: ModelSpec) -> list[str]:
    from ad_core.backbones import available_offline

    backbone = next(p for p in spec.params if p.name == "backbone")
    return [b for b in backbone.choices if available_offline(b)]


def default_search_space(model: str) -> dict[str, Any]:
    """The seed 001 hyperparameters of ``model`` with their default ranges (offline backbones only)."""
    spec = get_spec(model)
    out: dict[str, Any] = {}
    for name in spec.tune_dims:  # seed 001's table, in each model's spec
        if name == "backbone":
            out["backbone"] = {"choices": _offline_backbones(spec)}
        elif name == "layers":
            out["layers"] = {"choices": {b: LAYER_CHOICES[b] for b in out["backbone"]["choices"]}}
        else:
            out[name] = dict(DEFAULT_RANGES[name])
    return out


def parse_search_space(
    model: str,
    raw: dict[str, Any] | None = None,
    fixed: dict[str, Any] | None = None,
    *,
    where: str = "search space",
    allow_download: bool = False,
) -> SearchSpace:
    """Validate a search space (YAML data) against the registry; ``fixed`` adds fixed values.

    Hyperparameters the space does not name keep the model's defaults.
    Unknown parameters, values out of a parameter's range, and backbones whose weights are not
    available offline (unless ``allow_download``) are errors that name ``where`` and the entry.
    """
    spec = get_spec(model)
    params = {p.name: p for p in spec.all_params()}
    raw = default_search_space(model) if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of hyperparameter names, got {type(raw).__name__}")
    merged = {**raw, **(fixed or {})}
    unknown = sorted(set(merged) - set(params))
    if unknown:
        raise ConfigError(
            f"{where}: model {spec.name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(params)}"
        )
    space = SearchSpace(spec.name)
    for name, value in merged.items():
        if name == "layers":
            continue
        space.dims[name] = _parse_dim(params[name], value, where)
    if "layers" in merged and "backbone" not in space.dims:  # layers are checked against the backbone
        space.dims["backbone"] = Dim("backbone", "fixed", value=params["backbone"].default)
    if "backbone" in space.dims:
        _check_backbones(space.dims["backbone"], where, allow_download)
    if "layers" in merged:
        space.dims["layers"] = _parse_layers(merged["layers"], space.dims["backbone"], params, where)
    return space


def _parse_dim(p: Param, value: Any, where: str) -> Dim:
    def check(v: Any, what: str) -> Any:
        try:
            return p.validate(v)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {what}: {exc}") from exc

    if isinstance(value, dict) and "choices" in value:
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: {p.name}: 'choices' must be a non-empty list")
        return Dim(p.name, "categorical", choices=[check(c, p.name) for c in choices])
    if isinstance(value, dict) and ("low" in value or "high" in value):
        extra = sorted(set(value) - {"low", "high", "log", "step"})
        if extra or "low" not in value or "high" not in value:
            raise ConfigError(
                f"{where}: {p.name}: a range needs 'low' and 'high' (optional 'log', 'step'), got {value}"
            )
        if p.type not in (int, float) or p.multiple:
            raise ConfigError(f"{where}: {p.name} is not numeric; give 'choices' instead of a range")
        low, high = check(value["low"], p.name), check(value["high"], p.name)
        if low > high:
            raise ConfigError(f"{where}: {p.name}: low {low} is above high {high}")
        kind = "int" if p.type is int else "float"
        return Dim(p.name, kind, low=low, high=high, log=bool(value.get("log", False)), step=value.get("step"))
    if isinstance(value, dict):
        raise ConfigError(f"{where}: {p.name}: expected a value, {{choices: [...]}} or {{low: .., high: ..}}")
    return Dim(p.name, "fixed", value=check(value, p.name))


def _check_backbones(d: Dim, where: str, allow_download: bool) -> None:
    from ad_core.backbones import available_offline, downloads_allowed

    names = d.choices if d.kind == "categorical" else [d.value]
    if not names or names == [None]:
        raise ConfigError(f"{where}: backbone: no backbone with weights available offline; stage weights first")
    if downloads_allowed(allow_download):
        return
    missing = [b for b in names if not available_offline(b)]
    if missing:
        raise ConfigError(
            f"{where}: backbone {', '.join(missing)}: no ImageNet weights available offline. Stage them "
            f"(see `ad-core train --help`, --weights) or pass --allow_download; offline now: "
            f"{', '.join(b for b in names if b not in missing) or 'tf_efficientnet_lite0'}"
        )


def _parse_layers(value: Any, backbone: Dim | None, params: dict[str, Param], where: str) -> Dim:
    from ad_core.models.backbone_model import check_layers

    backbones = (backbone.choices if backbone.kind == "categorical" else [backbone.value]) if backbone else []
    if value is not None and not isinstance(value, dict):
        value = params["layers"].validate(value)
        for b in backbones:
            _layers_ok(check_layers, b, value, where)
        return Dim("layers", "fixed", value=value)
    choices = (value or {}).get("choices")
    if choices is None:
        choices = {b: LAYER_CHOICES.get(b) for b in backbones}
    elif isinstance(choices, list):  # one list for every backbone
        choices = {b: choices for b in backbones}
    if not isinstance(choices, dict):
        raise ConfigError(f"{where}: layers: 'choices' must be a list of layer lists or a mapping backbone -> list")
    extra = sorted(set(choices) - set(backbones))
    if extra:
        raise ConfigError(f"{where}: layers: choices for {', '.join(extra)}, which is not a backbone choice")
    out: dict[str, list[list[str]]] = {}
    for b in backbones:
        options = choices.get(b) or LAYER_CHOICES.get(b)
        if not options:
            raise ConfigError(f"{where}: layers: no layer choices for backbone {b}")
        out[b] = [_layers_ok(check_layers, b, params["layers"].validate(o), where) for o in options]
    return Dim("layers", "categorical", choices=out)


def _layers_ok(check, backbone: str, layers: list[str], where: str) -> list[str]:
    try:
        check(backbone, layers)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return layers


def read_yaml(path: Path, where: str) -> Any:
    """A YAML file, or a ConfigError naming it and the line at fault."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from exc


def load_search_space(path: str | Path, model: str, fixed: dict[str, Any] | None = None, **kw: Any) -> SearchSpace:
    """Read and validate a search-space YAML file (a mapping: name -> value / choices / range)."""
    path = Path(path)
    raw = read_yaml(path, f"search space {path}")
    if isinstance(raw, dict) and "params" in raw and isinstance(raw["params"], dict):
        raw = raw["params"]
    return parse_search_space(model, raw or {}, fixed, where=f"search space {path}", **kw)
