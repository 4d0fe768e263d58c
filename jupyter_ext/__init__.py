"""JupyterLab panels over ad_core: data, training, tuning, threshold exploration, export and review.

``AnomalyStudio()`` shows them all as tabs; each panel also works alone. Long work runs on a
background thread (the kernel stays responsive), Stop really stops it, and errors appear in the
panel. The panels call ad_core's public API only.
"""

from jupyter_ext.data import DataPanel
from jupyter_ext.export import ExportPanel, package_for_jetson
from jupyter_ext.review import ReviewPanel
from jupyter_ext.studio import AnomalyStudio
from jupyter_ext.threshold import ThresholdExplorer
from jupyter_ext.train import TrainPanel
from jupyter_ext.tune import TunePanel

__all__ = [
    "AnomalyStudio",
    "DataPanel",
    "ExportPanel",
    "ReviewPanel",
    "ThresholdExplorer",
    "TrainPanel",
    "TunePanel",
    "package_for_jetson",
]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lies (``jupyter labextension develop`` for editable installs)."""
    return [{"src": "labextension", "dest": "ad-inspect-studio"}]
