"""ad_core: ROS-free, Jupyter-free anomaly detection core (data, models, training, evaluation)."""

__version__ = "0.1.0"

import warnings

# anomalib imports every model family, which triggers deprecation notices that are not ours.
warnings.filterwarnings("ignore", message=r"Importing from timm\.models\.layers is deprecated")
warnings.filterwarnings("ignore", message=r"The anomalib\.models\.components\.dinov2 package is deprecated")

from ad_core.bundle import Bundle, load_bundle  # noqa: E402
from ad_core.evaluate import evaluate  # noqa: E402
from ad_core.models import create_model, list_models  # noqa: E402
from ad_core.predict import predict  # noqa: E402
from ad_core.train import train  # noqa: E402
from ad_core.tune import load_best_params, tune  # noqa: E402

__all__ = [
    "Bundle",
    "__version__",
    "create_model",
    "evaluate",
    "list_models",
    "load_best_params",
    "load_bundle",
    "predict",
    "train",
    "tune",
]
