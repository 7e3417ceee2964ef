"""A real multi-process Ray cluster for tests: a head and extra nodes started with ``ray start``.

Each node gets its own ports and the cluster its own temp dir and token file, as
slurm/ray-cluster.sbatch does; everything is stopped by PID (never ``ray stop``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


_HANDED_OUT: set[int] = set()


def free_ports(n: int) -> list[int]:
    """``n`` ports free now and never handed out before in this test session. The OS may give
    a just-closed port again, and a node's ports come from two calls: once the head got the
    same port for its GCS and its runtime-env agent and did not start."""
    socks, ports = [], []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)  # held until all are picked: no port twice within this call
        port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            ports.append(port)
            _HANDED_OUT.add(port)
    for s in socks:
        s.close()
    return ports


def processes_using(temp: Path) -> list[int]:
    """Processes of one Ray cluster: daemons name its temp dir in their command line, workers
    (renamed ``ray::...``) hold log files open inside it."""
    marker = str(temp)
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue  # a zombie holds nothing: it only waits for its parent
            args = " ".join(proc.cmdline()) + " "  # the dir itself, not one it is a prefix of
            if marker + "/" in args or marker + " " in args or any(f.path.startswith(marker + "/")
                                                                    for f in proc.open_files()):
                found.append(proc.pid)
        except psutil.Error:  # gone meanwhile, or another user's
            continue
    return found


class RayCluster:
    def __init__(self, root: Path, head_cpus: int = 1, token: bool = True):
        self.root = root
        self.temp = Path(f"/tmp/cnnc-t-{secrets.token_hex(3)}")
        self.token_file = root / "auth_token"
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_DISABLE_USAGE_STATS": "1"}
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
            self.env.pop(key, None)
        if token:
            old = os.umask(0o077)
            self.token_file.write_text(secrets.token_hex(32))
            os.umask(old)
            self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file))
        else:
            self.env["RAY_AUTH_MODE"] = "disabled"
        gcs, dash, client = free_ports(3)
        self.address = f"127.0.0.1:{gcs}"
        self.dashboard = f"http://127.0.0.1:{dash}"
        self._start("head", ["--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
                             "--num-cpus", str(head_cpus)])
        self._wait_dashboard()

    def _start(self, name: str, args: list[str]) -> None:
        nm, om, al, ag, me, re_ = free_ports(6)
        cmd = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
               "--temp-dir", str(self.temp), "--node-manager-port", str(nm), "--object-manager-port", str(om),
               "--dashboard-agent-listen-port", str(al), "--dashboard-agent-grpc-port", str(ag),
               "--metrics-export-port", str(me), "--runtime-env-agent-port", str(re_),
               "--object-store-memory", str(300 * 1024 * 1024), *args]
        log = open(self.root / f"ray-{name}.log", "w")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def add_node(self, cpus: int = 1) -> None:
        before = self.alive_nodes()
        self._start(f"node{len(self.procs)}", ["--address", self.address, "--num-cpus", str(cpus)])
        end = time.time() + 90
        while self.alive_nodes() <= before:
            if time.time() > end:
                raise TimeoutError(f"second node did not join; see {self.root}")
            time.sleep(1)

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"} if self.token_file.exists() else {}

    def alive_nodes(self) -> int:
        import json

        req = urllib.request.Request(f"{self.dashboard}/nodes?view=summary", headers=self.headers())
        with urllib.request.urlopen(req, timeout=10) as r:
            data = json.loads(r.read())
        return sum(n["raylet"]["state"] == "ALIVE" for n in data["data"]["summary"])

    def actor_classes(self) -> list[str]:
        """The class of every actor the cluster has run, dead ones too (the dashboard's state API)."""
        import json

        req = urllib.request.Request(f"{self.dashboard}/api/v0/actors?limit=10000&detail=false",
                                     headers=self.headers())
        with urllib.request.urlopen(req, timeout=30) as r:
            return [a["class_name"] for a in json.loads(r.read())["data"]["result"]["result"]]

    def _wait_dashboard(self) -> None:
        end = time.time() + 120
        while time.time() < end:
            try:
                if self.alive_nodes() >= 1:
                    return
            except OSError:
                pass
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"Ray head did not come up; see {self.root / 'ray-head.log'}")

    def pids(self) -> list[int]:
        """Every live process of this cluster (see ``processes_using``)."""
        return processes_using(self.temp)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        end = time.time() + 5  # a test cluster: a short grace, then SIGKILL
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        end = time.time() + 10
        while (left := self.pids()) and time.time() < end:  # stragglers of our own cluster only
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)  # a killed process lingers until its parent reaps it
        if not self.pids():  # sessions, sockets and logs: a few MB per suite run left in /tmp otherwise
            shutil.rmtree(self.temp, ignore_errors=True)
