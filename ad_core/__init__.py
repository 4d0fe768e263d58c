"""ad_core: ROS-free, Jupyter-free anomaly detection core (data, models, training, evaluation).

The public functions are imported on first use, so ``import ad_core.runtime`` (the deployed
path: ONNX Runtime, TensorRT) does not pay for torch, anomalib and Lightning.
"""

import importlib
import sys
import types
import warnings

__version__ = "0.1.0"

# anomalib imports every model family, which triggers deprecation notices that are not ours.
warnings.filterwarnings("ignore", message=r"Importing from timm\.models\.layers is deprecated")
warnings.filterwarnings("ignore", message=r"The anomalib\.models\.components\.dinov2 package is deprecated")

_LAZY = {
    "Bundle": "ad_core.bundle",
    "load_bundle": "ad_core.bundle",
    "evaluate": "ad_core.evaluate",
    "create_model": "ad_core.models",
    "list_models": "ad_core.models",
    "predict": "ad_core.predict",
    "train": "ad_core.train",
    "load_best_params": "ad_core.tune",
    "tune": "ad_core.tune",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ad_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """Keeps ``ad_core.train`` (and tune, predict, evaluate) the function, as an eager import did.

    Importing the submodule ``ad_core.train`` makes Python set the package attribute ``train`` to that
    submodule; the function of the same name is what ``from ad_core import train`` must give.
    """

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}" and name in _LAZY:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
