"""The ``tracking`` section checked before Ray starts: each tracker's package, the MLflow server
answering, the token file readable. One line naming the field, as for the rest of the config."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request

from ..config import TrackingConfig
from ..errors import ConfigError

EXTRAS = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboardX"}  # tracker -> module


def check_tracking(tracking: TrackingConfig) -> None:
    for name in ("tensorboard", "mlflow", "wandb"):
        if getattr(tracking, name) and not _installed(EXTRAS[name]):
            raise ConfigError(f"tracking.{name}: the {EXTRAS[name]} package is not installed "
                              f"(pip install 'cnn-cluster[{name}]')")
    if tracking.mlflow is not None:
        from .to_mlflow import resolve_uri, use_credentials

        use_credentials(tracking.mlflow)
        uri = resolve_uri(tracking.mlflow)
        if uri.startswith(("http://", "https://")):
            check_server(uri)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # refused by a finder, or a None in sys.modules: as good as absent
        return False


def check_server(uri: str, timeout: float = 5.0) -> None:
    """MLflow's server answers ``/health`` with OK."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            if r.status == 200:
                return
            reason = f"HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise ConfigError(f"tracking.mlflow.tracking_uri: no MLflow server answers at {uri} ({reason})")
