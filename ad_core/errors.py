"""User-facing errors: each names the file or field at fault and what was expected."""


class ADCoreError(Exception):
    """An error the user can act on; the CLI prints it without a traceback."""


class DataError(ADCoreError):
    """A data folder or image file is missing, empty or unreadable."""


class BundleError(ADCoreError):
    """A run directory or model bundle is incomplete, inconsistent or tampered with."""


class WeightsNotFoundError(ADCoreError):
    """Backbone weights are not available offline and downloading is not allowed."""


class ConfigError(ADCoreError):
    """A hyperparameter or option has an invalid value."""


class ExportError(ADCoreError):
    """ONNX export or TensorRT engine build failed."""


class TrainingStopped(ADCoreError):
    """Training was stopped on request (Stop button, Ctrl-C)."""


class TrainingDiverged(ADCoreError):
    """The loss became NaN or infinite."""


class TuneError(ADCoreError):
    """The study cannot run: storage unreachable, or a study of another model / search space."""
