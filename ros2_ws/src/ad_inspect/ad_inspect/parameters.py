"""The node's parameters: name, default, description and range (``config/params.yaml`` mirrors them)."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange

from ad_core.errors import ADCoreError

BACKENDS = ("onnxruntime", "tensorrt", "torch", "openvino")
FIXED = ("image_topic", "compressed", "output_prefix")  # read once at start


def _range(low: float, high: float) -> dict:
    return {"floating_point_range": [FloatingPointRange(from_value=low, to_value=high, step=0.0)]}


PARAMETERS = (
    (
        "model_path",
        "",
        "bundle or engine folder, meta.json, model.onnx / .plan / .pth (inside models_root), or a registry URI: "
        "models:/NAME/VERSION, models:/NAME@alias, models:/NAME/latest",
        {},
    ),
    ("registry_uri", "", "MLflow tracking URI of the model registry (default $MLFLOW_TRACKING_URI, else ./mlruns)", {}),
    (
        "registry_poll_s",
        0.0,
        "with a models:/ model_path: look for a new version every N s (0: only on ~/reload)",
        _range(0.0, 86400.0),
    ),
    ("backend", "onnxruntime", f"inference backend: {' | '.join(BACKENDS)}", {}),
    (
        "threshold",
        -1.0,
        "normalised decision threshold 0-1 (-1: meta.json's image_threshold); changeable at run time",
        {"floating_point_range": [FloatingPointRange(from_value=-1.0, to_value=1.0, step=0.0)]},
    ),
    ("image_topic", "/camera/image_raw", "input topic", {}),
    ("compressed", False, "subscribe to sensor_msgs/CompressedImage instead of sensor_msgs/Image", {}),
    ("output_prefix", "/anomaly", "prefix of the output topics", {}),
    ("publish_map", True, "publish the anomaly map (32FC1, normalised)", {}),
    ("publish_overlay", True, "publish the heat-map overlay (rgb8)", {}),
    ("publish_mask", True, "publish the defect mask (mono8) at the pixel threshold", {}),
    ("publish_regions", True, "publish the defect regions: MarkerArray for RViz and JSON for a PLC", {}),
    (
        "pixel_threshold",
        -1.0,
        "normalised pixel threshold 0-1 that cuts the map into the defect mask (-1: meta.json's); changeable live",
        {"floating_point_range": [FloatingPointRange(from_value=-1.0, to_value=1.0, step=0.0)]},
    ),
    ("marker_depth", 1.0, "distance (m) at which region markers are drawn in the camera frame", _range(0.01, 100.0)),
    (
        "marker_focal_px",
        0.0,
        "the camera's focal length fx in pixels for the markers (0: the frame width)",
        _range(0.0, 1e6),
    ),
    ("roi", [0, 0, 0, 0], "crop [x, y, width, height] before scoring; width or height 0: the whole frame", {}),
    ("models_root", "models", "model paths (model_path, retrain and convert outputs) must lie inside it", {}),
    ("data_root", "data", "retraining data root (seed layout); save_frame writes into it", {}),
    ("category", "", "category folder for retrain and save_frame (default: meta.json's)", {}),
    ("retrain_epochs", 1, "epochs of ~/retrain for EfficientAD / VAE", {}),
    ("retrain_batch", 8, "batch size of ~/retrain", {}),
    ("extend_bank", True, "~/retrain: PatchCore extends its memory bank, PaDiM merges statistics", {}),
    ("device", "auto", "where ~/retrain trains: auto (the GPU when there is one) | cpu | cuda | cuda:N", {}),
    (
        "capture",
        "flagged",
        "save frames for review into data_root/review/<category>/: off | flagged | all (off when data_root is "
        "not writable)",
        {"dynamic_typing": True},  # `capture:=off` arrives as the YAML boolean false
    ),
    ("capture_max_per_min", 30.0, "at most this many captured frames per minute (0: no cap)", _range(0.0, 6000.0)),
    ("capture_normal_rate", 0.0, "share of normal frames also captured with capture:=flagged (0-1)", _range(0.0, 1.0)),
    ("capture_min_free_mb", 500.0, "capture pauses when data_root's disk has less free (MB)", _range(0.0, 1e9)),
)
CAPTURE = ("capture", "capture_max_per_min", "capture_normal_rate", "capture_min_free_mb", "data_root", "category")


def capture_mode(value: Any) -> str:
    """The capture parameter as a mode: YAML reads ``off`` as false (and ``on`` as true, taken as flagged)."""
    if isinstance(value, bool):
        return "flagged" if value else "off"
    return str(value)


def refusal(name: str, value: Any, models_root: str) -> str:
    """Why a new parameter value is refused (empty: accepted); checked before the node takes it."""
    from ad_core.capture import MODES
    from ad_core.device import resolve
    from ad_core.edge import confined
    from ad_core.inspector import check_roi

    if name == "backend" and value not in BACKENDS:
        return f"backend must be one of {', '.join(BACKENDS)}"
    if name == "capture" and capture_mode(value) not in MODES:
        return f"capture must be one of {', '.join(MODES)}"
    if name in FIXED:
        return f"{name} is fixed after start; restart the node"
    try:
        if name == "roi":
            check_roi(list(value))
        if name == "device":
            resolve(value)
        if name == "model_path" and value and not str(value).startswith("models:/"):
            confined(value, models_root, "model_path")
        if name == "model_path" and str(value).startswith("models:/"):
            from ad_core.fleet import parse_uri

            parse_uri(value)
    except ADCoreError as exc:
        return str(exc)
    return ""
