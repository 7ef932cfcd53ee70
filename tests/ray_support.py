"""A real multi-node Ray cluster on loopback for the ray executor's tests.

The head binds 127.0.0.2 and the workers 127.0.0.3, 127.0.0.4, ... (Ray
rewrites 127.0.0.1 to the machine's external address, which tests must never
use), all with one temp dir. The head has no CPUs, so jobs run on the
workers, and killing a worker's raylet is a node loss that leaves the
cluster (GCS, the dispatcher) alive. Each node runs `ray start --block` in a
session of its own, so that everything it started is found (and killed) by
its session id.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_IP = "127.0.0.2"
# Node loss noticed within a few seconds, not Ray's default of ~30 s.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed")
# Every test that uses a cluster runs in one pytest-xdist worker (see
# scripts/test: --dist loadgroup), so the suite starts one cluster at a time.
in_ray_group = pytest.mark.xdist_group("ray")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])


def _pids_in_session(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _session_of(int(entry)) == sid:
            pids.append(int(entry))
    return pids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True  # (gone: not running either)


class RayCluster:
    def __init__(
        self,
        workers: int = 2,
        cpus: int = 2,
        memory_mib: int = 2048,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = {**FAST_HEALTH_CHECKS, **(env or {})}
        # Short: Ray's unix sockets live under it (sun_path is 108 bytes).
        self.temp = Path(tempfile.mkdtemp(prefix="shoal-ray-", dir="/tmp"))
        self.port = _free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        self.cpus = cpus
        self.memory_mib = memory_mib
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self._start(
            HEAD_IP,
            ["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false"],
        )
        for n in range(workers):
            self.add_worker(f"127.0.0.{3 + n}")

    def _start(self, ip: str, args: list[str]) -> None:
        log = open(self.temp / f"node-{ip}.log", "ab")  # noqa: SIM115 (kept by the child)
        # Under nohup, as nodes are often started by hand: their processes
        # ignore SIGHUP, which shoal's watchdog on the node must not rely on.
        proc = subprocess.Popen(
            [
                "nohup",
                RAY,
                "start",
                "--block",
                f"--node-ip-address={ip}",
                f"--temp-dir={self.temp}",
                "--object-store-memory=80000000",
                "--disable-usage-stats",
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        self.nodes[ip] = proc
        deadline = time.monotonic() + 60
        while self.raylet_pid(ip) is None or not self._listening(ip):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"ray node {ip} did not start: {(self.temp / f'node-{ip}.log').read_text()}"
                )
            time.sleep(0.1)

    def _listening(self, ip: str) -> bool:
        if ip == HEAD_IP:
            with contextlib.suppress(OSError), socket.create_connection((ip, self.port), 1):
                return True
            return False
        return True

    def add_worker(self, ip: str) -> None:
        self._start(
            ip,
            [
                f"--address={self.address}",
                f"--num-cpus={self.cpus}",
                f"--memory={self.memory_mib * 1024 * 1024}",
            ],
        )
        self.wait_for_nodes()

    def wait_for_nodes(self, timeout: float = 60.0) -> None:
        """Until every node started is registered and alive in the cluster."""
        want = len(self.nodes)
        deadline = time.monotonic() + timeout
        while self.alive_nodes() < want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.alive_nodes()} of {want} ray nodes are alive")
            time.sleep(0.2)

    def alive_nodes(self) -> int:
        out = subprocess.run(
            [RAY, "status", f"--address={self.address}"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        active = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if " node_" in line)

    def node_pids(self, ip: str) -> list[int]:
        """The processes of the node at `ip` (its raylet, workers and agents:
        its session; not the jobs, which start sessions of their own)."""
        proc = self.nodes.get(ip)
        return [] if proc is None else _pids_in_session(proc.pid)

    def raylet_pid(self, ip: str) -> int | None:
        """The node's running raylet (a killed one its `ray start` has not
        reaped yet is a zombie: not running)."""
        for pid in self.node_pids(ip):
            if _comm(pid) == "raylet" and not _zombie(pid):
                return pid
        return None

    def node_of(self, pid: int) -> str | None:
        """The worker IP whose raylet `pid` descends from (a job's process)."""
        sid_by_ip = {ip: p.pid for ip, p in self.nodes.items()}
        while pid > 1:
            sid = _session_of(pid)
            for ip, node_sid in sid_by_ip.items():
                if sid == node_sid:
                    return ip
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return None
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        return None

    def kill_raylet(self, ip: str) -> None:
        """SIGKILL a worker's raylet: the node is lost (its `ray start` stays,
        like a machine whose agent died)."""
        pid = self.raylet_pid(ip)
        assert pid is not None, f"no raylet on {ip}"
        os.kill(pid, signal.SIGKILL)

    def remove(self, ip: str) -> None:
        proc = self.nodes.pop(ip)
        _kill_session(proc.pid)
        proc.wait(timeout=10)

    def close(self) -> None:
        for ip in list(self.nodes):
            if ip != HEAD_IP:
                self.remove(ip)
        if HEAD_IP in self.nodes:
            self.remove(HEAD_IP)
        shutil.rmtree(self.temp, ignore_errors=True)


def _kill_session(sid: int) -> None:
    deadline = time.monotonic() + 10
    while (pids := _pids_in_session(sid)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    if not HAVE_RAY:
        pytest.skip("ray is not installed")
    cluster = RayCluster()
    yield cluster
    cluster.close()
