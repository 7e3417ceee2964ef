"""Sweeps on a running Ray cluster through the Ray Jobs API: submit, status, logs, stop.

The job carries the project's code and the resolved config in its runtime
environment (``working_dir``), so the cluster runs exactly what the client
validated; ``jobs/sweep.py`` is the entry point. Results land in the config's
output root, which on a cluster is a path of the shared filesystem.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .config import SweepConfig, dump_config
from .errors import CnncError

PACKAGE = Path(__file__).resolve().parent
ENTRY = "jobs/sweep.py"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    run_dir: Path
    address: str


def is_jobs_address(address: Optional[str]) -> bool:
    """An http(s) address is a dashboard (Jobs API); anything else is a GCS address to attach to."""
    return bool(address) and address.startswith(("http://", "https://"))


def use_token(token_file: Optional[Path]) -> None:
    """Point Ray's token loader at a token file; must run before the first Ray client call."""
    if token_file is None:
        return
    path = Path(token_file).expanduser()
    if not path.is_file():
        raise CnncError(f"--token-file {token_file}: no such file")
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path.resolve())
    os.environ["RAY_AUTH_MODE"] = "token"


def client(address: str):
    """A JobSubmissionClient, with unreachable and unauthorised clusters as one-line errors."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - the SDK raises ConnectionError/RuntimeError/ValueError
        raise _explain(address, exc) from None


def _explain(address: str, exc: Exception) -> CnncError:
    text = str(exc)
    if "401" in text or "403" in text or "nauthori" in text or "token" in text.lower():
        return CnncError(f"--address {address}: the cluster refused the request (token authentication): pass "
                         f"--token-file or set RAY_AUTH_TOKEN_PATH to the cluster's token")
    if isinstance(exc, ConnectionError) or "connect" in text.lower():
        return CnncError(f"--address {address}: cannot reach a Ray dashboard there (is the cluster up, and the "
                         f"port tunnelled?)")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return CnncError(f"--address {address}: {first}")


def stage(cfg: SweepConfig, dest: Path) -> Path:
    """The job's working_dir: the package, the entry point and the resolved config."""
    jobs = _jobs_dir()
    shutil.copytree(PACKAGE, dest / PACKAGE.name, ignore=_IGNORE)
    shutil.copytree(jobs, dest / "jobs", ignore=_IGNORE)
    (dest / "config.yaml").write_text(dump_config(cfg))
    return dest


def _jobs_dir() -> Path:
    for root in (PACKAGE.parent, Path.cwd()):
        if (root / ENTRY).is_file():
            return root / "jobs"
    raise CnncError(f"{ENTRY}: not found beside the package or in the current folder; run cnnc from the "
                    f"project checkout (or the image's /app)")


def absolute_paths(cfg: SweepConfig) -> SweepConfig:
    """Relative paths would land in the job's temporary working_dir: make them absolute here."""
    data = cfg.data.model_copy(update={"root": Path(cfg.data.root).expanduser().resolve()}) \
        if cfg.data.root else cfg.data
    output = cfg.output.model_copy(update={"root": Path(cfg.output.root).expanduser().resolve()})
    return cfg.model_copy(update={"data": data, "output": output})


def submit_job(cfg: SweepConfig, run_dir: Path, address: str) -> Submitted:
    """Submit the sweep as a Ray Job; returns at once with the job id."""
    jc = client(address)
    job_id = f"cnnc-{run_dir.name}"
    with tempfile.TemporaryDirectory(prefix="cnnc-job-") as tmp:
        staged = stage(cfg, Path(tmp))
        try:
            jc.submit_job(
                entrypoint=f"python {ENTRY} config.yaml --run-dir {run_dir}",
                submission_id=job_id,
                # PYTHONPATH: the staged package wins over any cnnc installed on the cluster.
                runtime_env={"working_dir": str(staged), "env_vars": {"PYTHONPATH": "."}},
                metadata={"cnnc_run_dir": str(run_dir), "cnnc_name": cfg.name},
            )
        except Exception as exc:  # noqa: BLE001
            raise _explain(address, exc) from None
    return Submitted(job_id, run_dir, address)


def status(address: str, job_id: str) -> dict:
    return _status(client(address), address, job_id)


def _status(jc, address: str, job_id: str) -> dict:
    try:
        info = jc.get_job_info(job_id)
    except Exception as exc:  # noqa: BLE001
        raise _unknown(address, job_id, exc) from None
    return {"job_id": job_id, "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            "message": info.message or "", "run_dir": (info.metadata or {}).get("cnnc_run_dir", ""),
            "start_time": info.start_time, "end_time": info.end_time}


def logs(address: str, job_id: str) -> str:
    jc = client(address)
    try:
        return jc.get_job_logs(job_id)
    except Exception as exc:  # noqa: BLE001
        raise _unknown(address, job_id, exc) from None


def follow(address: str, job_id: str, write: Callable[[str], None]) -> None:
    """Stream the job's output until it ends."""
    jc = client(address)
    _status(jc, address, job_id)  # an unknown id fails here with one line, not inside the websocket

    async def tail() -> None:
        async for chunk in jc.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())


def stop(address: str, job_id: str) -> bool:
    jc = client(address)
    try:
        return bool(jc.stop_job(job_id))
    except Exception as exc:  # noqa: BLE001
        raise _unknown(address, job_id, exc) from None


def _unknown(address: str, job_id: str, exc: Exception) -> CnncError:
    text = str(exc)
    if "does not exist" in text or "404" in text or "not found" in text.lower():
        return CnncError(f"job {job_id}: no such job on {address}")
    return _explain(address, exc)
