"""cnnc: CNN architecture studies and their occlusion analysis as batch jobs on Ray."""

__version__ = "0.1.0"

from .config import Experiment, ModelConfig, SweepConfig, TrainConfig, load_config  # noqa: E402
from .errors import CnncError, ConfigError  # noqa: E402
from .models import CNN, build_model, shapes  # noqa: E402

__all__ = ["CNN", "CnncError", "ConfigError", "Experiment", "ModelConfig", "SweepConfig", "TrainConfig",
           "build_model", "load_config", "shapes", "__version__"]
