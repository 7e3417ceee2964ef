"""A real SLURM cluster of several nodes on one machine, each node its own network namespace.

    host (root namespace)                     bridge cnnc-br  10.77.0.1/24
      munged            (one key, its socket shared by every node through the filesystem)
      slurmctld         (listens on 10.77.0.1:6917; conf in a private folder, SLURM_CONF)
          |
          +-- veth --  netns cnnc-n1: eth0 10.77.0.11, hostname cnnc-n1, own /tmp, slurmd -N cnnc-n1
          +-- veth --  netns cnnc-n2: eth0 10.77.0.12, hostname cnnc-n2, own /tmp, slurmd -N cnnc-n2

Each node has its own address, host name (a UTS namespace), loopback and ``/tmp`` (a mount
namespace with an overlay there: the host's ``/tmp`` below, the node's own writes in a tmpfs above,
node-local as on a real cluster); the rest of the filesystem is shared, as a cluster's shared
filesystem is (keep run folders outside ``/tmp``: one node's writes there are not seen by another). Names resolve
through ``/etc/netns/<ns>/hosts``, bound over ``/etc/hosts`` inside the node.
Traffic stays on the bridge between these namespaces.

    with NetnsSlurm(Path("/var/tmp/mn"), nodes=2) as cluster:
        cluster.run(["sbatch", "--nodes=2", "slurm/ray-cluster.sbatch", "sweep.yaml"])

Everything is made by this class and removed by it, by PID and by the names it created: the
daemons (its children), the namespaces, links, bridge, hosts files and spool folders; ``stop``
also runs where ``start`` failed half-way. Root only; SLURM and munge are installed as the
single-node fixture does (``slurm_local.install``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

import slurm_local

BRIDGE = "cnnc-br"
SUBNET = "10.77.0"
CTLD_PORT, SLURMD_PORT = 6917, 6918  # beside a single-node test SLURM's 6817/6818
PREFIX = "cnnc-n"  # namespaces and host names: cnnc-n1, cnnc-n2, ...
NODE_RUN = "/run/cnnc-node"  # in each node's mount namespace, a tmpfs of its own
PRIVATE_TMP = f"{NODE_RUN}/upper"  # what a node wrote to its /tmp (inside the node)


def unavailable() -> Optional[str]:
    if os.geteuid() != 0:
        return "building network namespaces needs root"
    if not shutil.which("ip") or not shutil.which("unshare"):
        return "needs iproute2's ip and util-linux's unshare"
    return slurm_local.unavailable()


class NetnsSlurm:
    def __init__(self, work: Path, nodes: int = 2, cpus: int = 1):
        self.work = Path(work)
        self.names = [f"{PREFIX}{i + 1}" for i in range(nodes)]
        self.addrs = {n: f"{SUBNET}.{11 + i}" for i, n in enumerate(self.names)}
        self.cpus = cpus
        self.conf = self.work / "slurm" / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # ----------------------------------------------------------------------- up

    def __enter__(self) -> "NetnsSlurm":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.stop()  # what a killed earlier run left, by the names this class gives
        self.work.mkdir(parents=True, exist_ok=True)
        for folder in (self.work, *self.work.parents):  # the slurm user must reach its spool folders
            if folder.stat().st_mode & 0o005 != 0o005:
                raise RuntimeError(f"{folder}: not readable by other users (the slurm user needs it)")
        slurm_local.install()
        slurm_local.munge_key()
        self._network()
        self._write_conf()
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if not Path("/run/munge/munge.socket.2").exists():
            self._spawn("munged", ["runuser", "-u", "munge", "--", "/usr/sbin/munged", "-F"], logs)
            time.sleep(0.5)
        self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-c", "-i", "-f", str(self.conf)], logs)
        for n in self.names:
            self._start_slurmd(n, logs)
        if not self.wait_idle(90):
            tails = "\n".join(f"--- {f.name}\n" + "\n".join(f.read_text().splitlines()[-6:])
                              for f in sorted(logs.glob("*.log")))
            raise RuntimeError(f"the SLURM nodes did not become idle:\n{tails}")

    def _start_slurmd(self, n: str, logs: Path) -> None:
        # nsenter: the node's network (ip netns exec would mount a fresh /sys, without the cgroup
        # mounts slurmd reads); unshare: its host name, its /etc/hosts and its own /tmp: an overlay
        # whose lower layer is the host's /tmp (a checkout or venv there stays visible) and whose
        # upper layer, a tmpfs, takes the node's own writes (PRIVATE_TMP, seen by no other node).
        upper, work = f"{NODE_RUN}/upper", f"{NODE_RUN}/work"
        inner = (f"hostname {n} && mount --bind /etc/netns/{n}/hosts /etc/hosts && "
                 f"mkdir -p {NODE_RUN} && mount -t tmpfs -o size=512m tmpfs {NODE_RUN} && mkdir {upper} {work} && "
                 f"mount -t overlay overlay -o lowerdir=/tmp,upperdir={upper},workdir={work} /tmp && "
                 f"exec /usr/sbin/slurmd -D -N {n} -f {self.conf}")
        self._spawn(f"slurmd-{n}", ["nsenter", f"--net=/run/netns/{n}", "unshare", "--uts", "--mount",
                                   "--propagation", "private", "sh", "-c", inner], logs)

    def restart_node(self, node: str) -> None:
        """A lost node back (as after a reboot: a fresh /tmp); SLURM returns it to service."""
        self._start_slurmd(node, self.work / "logs")
        if not self.wait_idle(90):
            raise RuntimeError(f"{node} did not return to service")

    def _network(self) -> None:
        self._ip("link", "add", BRIDGE, "type", "bridge")
        self._ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        self._ip("link", "set", BRIDGE, "up")
        lines = ["127.0.0.1 localhost", f"{SUBNET}.1 cnnc-ctl", *(f"{a} {n}" for n, a in self.addrs.items())]
        for n, addr in self.addrs.items():
            self._ip("netns", "add", n)
            self._ip("link", "add", f"{n}-h", "type", "veth", "peer", "name", f"{n}-c")
            self._ip("link", "set", f"{n}-h", "master", BRIDGE, "up")
            self._ip("link", "set", f"{n}-c", "netns", n)
            self._ip("-n", n, "link", "set", f"{n}-c", "name", "eth0")
            self._ip("-n", n, "addr", "add", f"{addr}/24", "dev", "eth0")
            self._ip("-n", n, "link", "set", "eth0", "up")
            self._ip("-n", n, "link", "set", "lo", "up")
            etc = Path("/etc/netns") / n
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text("\n".join(lines) + "\n")

    def _write_conf(self) -> None:
        spool = self.work / "spool"
        for sub in ("ctld", *self.names):
            (spool / sub).mkdir(parents=True, exist_ok=True)
            shutil.chown(spool / sub, "slurm", "slurm")
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        host = os.uname().nodename.split(".")[0]
        nodes = [f"NodeName={n} NodeAddr={a} CPUs={self.cpus} RealMemory=2000 State=UNKNOWN"
                 for n, a in self.addrs.items()]
        self.conf.write_text("\n".join([
            "# written by cnnc's tests: a SLURM of network-namespace nodes (tests/slurm_netns.py)",
            "ClusterName=cnnc-netns",
            f"SlurmctldHost={host}({SUBNET}.1)",
            f"SlurmctldPort={CTLD_PORT}",
            f"SlurmdPort={SLURMD_PORT}",
            *slurm_local.PLUGINS,
            "SlurmdParameters=config_overrides",  # one CPU per node, whatever the machine has
            "SlurmdTimeout=20",  # a lost node is noticed within the test's patience
            f"StateSaveLocation={spool / 'ctld'}",
            f"SlurmdSpoolDir={spool}/%n",
            f"SlurmctldPidFile={self.work / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.work}/slurmd-%n.pid",
            *nodes,
            f"PartitionName=nodes Nodes={','.join(self.names)} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _spawn(self, name: str, cmd: list[str], logs: Path) -> None:
        out = open(logs / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    # ----------------------------------------------------------------------- use

    def run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        """A SLURM client command (sbatch, squeue, scancel ...) against this cluster."""
        return subprocess.run(cmd, env={**self.env, **kw.pop("env", {})}, capture_output=True, text=True, **kw)

    def in_node(self, node: str, cmd: list[str]) -> subprocess.CompletedProcess:
        """A command inside a node: its network, host name and /tmp (the namespaces of its slurmd)."""
        pid = self.slurmd_pid(node)
        return subprocess.run(["nsenter", "-t", str(pid), "-n", "-u", "-m", *cmd], capture_output=True, text=True)

    def slurmd_pid(self, node: str) -> int:
        """The slurmd of a node: nsenter, unshare and sh each exec the next, so it is the child's pid."""
        return self.procs[f"slurmd-{node}"].pid

    def wait_idle(self, timeout: float) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            r = self.run(["sinfo", "-h", "-N", "-o", "%N %t"])
            states = dict(line.split() for line in r.stdout.splitlines() if line.strip())
            if r.returncode == 0 and all(states.get(n) in ("idle", "mix", "alloc") for n in self.names):
                return True
            time.sleep(0.5)
        return False

    def kill_node(self, node: str) -> None:
        """The node is lost: its slurmd and every process inside its namespace, SIGKILL."""
        for pid in self.node_pids(node):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def node_pids(self, node: str) -> list[int]:
        """Every process in a node's network namespace (the daemons and what they started)."""
        r = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True)
        return [int(p) for p in r.stdout.split()]

    # ----------------------------------------------------------------------- down

    def stop(self) -> None:
        """Remove everything of this cluster that exists; safe to call at any point, and again."""
        for n in self.names:  # what the jobs left inside the nodes, then the daemons
            for pid in self.node_pids(n):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for name, p in reversed(list(self.procs.items())):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        for n in self.names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
            subprocess.run(["ip", "link", "del", f"{n}-h"], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / n, ignore_errors=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        with contextlib.suppress(OSError):
            Path(NODE_RUN).rmdir()  # the empty mount point on the host
        shutil.rmtree(self.work / "spool", ignore_errors=True)
