"""A real single-node SLURM on localhost for the tests: munge, slurmctld and slurmd.

Installs the Debian packages when they are missing (root and apt-get needed),
writes a minimal slurm.conf for this host and starts the daemons in the
foreground as children of the test session, so they are stopped by PID at the
end. A SLURM already running on the machine is used as it is.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import apt_install as apt

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
CONF = Path("/etc/slurm/slurm.conf")
# slurm.conf lines both test SLURMs share: munge, no cgroups, no accounting, CPUs as the unit.
PLUGINS = [
    "SlurmUser=slurm",
    "AuthType=auth/munge",
    "ProctrackType=proctrack/linuxproc",
    "TaskPlugin=task/none",
    "SelectType=select/cons_tres",
    "SelectTypeParameters=CR_CPU",
    "MpiDefault=none",
    "SwitchType=switch/none",
    "AccountingStorageType=accounting_storage/none",
    "JobAcctGatherType=jobacct_gather/none",
    "JobCompType=jobcomp/none",
    "ReturnToService=2",
    "KillWait=10",
    "JobRequeue=1",  # the default, said out loud: ray-cluster.sbatch requeues itself
]


def unavailable() -> Optional[str]:
    """Why SLURM cannot run here, or None."""
    if shutil.which("sbatch") and shutil.which("slurmctld"):
        return None
    return apt.missing_reason(PACKAGES)


def install() -> None:
    if not (shutil.which("sbatch") and shutil.which("slurmctld") and shutil.which("slurmd")):
        apt.install(PACKAGES)


def _node_line() -> str:
    out = subprocess.run(["slurmd", "-C"], check=True, capture_output=True, text=True).stdout
    line = next(w for w in out.splitlines() if w.startswith("NodeName="))
    fields = [f for f in line.split() if not f.startswith("RealMemory=")]
    return " ".join(fields) + " RealMemory=2000 State=UNKNOWN"


def _write_conf(host: str) -> None:
    state = Path("/var/spool/cnnc-slurm")
    for sub in ("ctld", "d"):
        (state / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(state / sub, "slurm", "slurm")
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text("\n".join([
        "# written by cnnc's tests: a single-node SLURM on localhost",
        "ClusterName=cnnc-test",
        f"SlurmctldHost={host}",
        *PLUGINS,
        f"StateSaveLocation={state / 'ctld'}",
        f"SlurmdSpoolDir={state / 'd'}",
        "SlurmctldPidFile=/run/cnnc-slurmctld.pid",
        "SlurmdPidFile=/run/cnnc-slurmd.pid",
        _node_line(),
        # A job in "urgent" preempts one in "debug", which SLURM requeues (tests/test_slurm.py).
        "PreemptType=preempt/partition_prio",
        "PreemptMode=REQUEUE",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP PriorityTier=1",
        f"PartitionName=urgent Nodes={host} MaxTime=INFINITE State=UP PriorityTier=2",
        "",
    ]))


def _ensure_hosts(host: str) -> None:
    try:
        socket.gethostbyname(host)
    except OSError:
        with open("/etc/hosts", "a") as f:
            f.write(f"127.0.0.1 {host}\n")


def munge_key() -> None:
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create"], check=True)
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "munge", "munge")


def _idle(timeout: float) -> bool:
    if not shutil.which("sinfo"):  # a fresh machine: SLURM not installed yet, so nothing runs
        return False
    end = time.time() + timeout
    while time.time() < end:
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() in ("idle", "mix", "alloc"):
            return True
        time.sleep(0.5)
    return False


class LocalSlurm:
    """Started daemons (children of this process) or an already running SLURM."""

    def __init__(self, logs: Path):
        self.procs: list[subprocess.Popen] = []
        if _idle(2):
            return
        install()
        host = socket.gethostname().split(".")[0]
        _ensure_hosts(host)
        munge_key()
        _write_conf(host)
        self._start(logs, "munged", ["runuser", "-u", "munge", "--", "/usr/sbin/munged", "-F"])
        time.sleep(0.5)
        self._start(logs, "slurmctld", ["/usr/sbin/slurmctld", "-D", "-c", "-i"])
        self._start(logs, "slurmd", ["/usr/sbin/slurmd", "-D"])
        if not _idle(60):
            self.stop()
            raise RuntimeError(f"SLURM did not become idle; see {logs}")
        subprocess.run(["scontrol", "update", f"nodename={host}", "state=resume"], capture_output=True)

    def _start(self, logs: Path, name: str, cmd: list[str]) -> None:
        out = open(logs / f"{name}.log", "w")
        self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()


def job_fields(job: str, env: Optional[dict] = None) -> dict:
    """``scontrol show job``'s fields (JobState, Restarts, Reason, ExitCode, ...); ``env`` picks the
    cluster (SLURM_CONF), as for every client command."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, env=env).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def until(what: Callable[[], bool], job: str, log: Path, timeout: float, env: Optional[dict] = None,
          nudge: bool = True) -> None:
    """Wait for ``what()``. SLURM holds a requeued job about 2 minutes before it may start again
    (BeginTime): with ``nudge`` the wait lifts that hold, so a test need not sit through it; the
    requeue itself stays the job's or SLURM's own."""
    end, pending_since = time.time() + timeout, {}
    while time.time() < end:
        if what():
            return
        info = job_fields(job, env)
        if nudge and info.get("JobState") == "PENDING":
            since = pending_since.setdefault(info.get("Restarts"), time.time())
            if time.time() - since > 5:  # sooner, slurmd may still refuse the start (credential revoked)
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, env=env)
        time.sleep(1)
    raise AssertionError(f"timed out; job {job_fields(job, env)}\n{log.read_text() if log.exists() else ''}")
