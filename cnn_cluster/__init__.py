"""cnnc: CNN architecture studies and their occlusion analysis as batch jobs on Ray."""

__version__ = "0.1.0"

from .config import Experiment, ModelConfig, SweepConfig, TrainConfig, load_config  # noqa: E402
from .errors import CnncError, ConfigError  # noqa: E402

__all__ = ["CNN", "CnncError", "ConfigError", "Experiment", "ModelConfig", "SweepConfig", "TrainConfig",
           "build_model", "load_config", "shapes", "__version__"]
_FROM_MODELS = {"CNN", "build_model", "shapes"}


def __getattr__(name: str):
    # torch only when a model is asked for: the CLI's help, reports and config checks
    # should not pay torch's import (~2 s on a small machine).
    if name in _FROM_MODELS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'cnn_cluster' has no attribute {name!r}")
