"""A local 3-master Redis Cluster on private ports (redis-server --cluster-enabled yes), for tests."""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from csms.store.embedded import port_free

BUS_OFFSET = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus), so ports stay <= 55535."""

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@contextmanager
def redis_cluster(masters: int = 3, timeout_s: float = 20.0) -> Iterator[list[int]]:
    """Start `masters` cluster-enabled redis-servers, join them (no replicas), yield their ports once
    every node reports `cluster_state:ok`; stop them and remove their files after."""
    home = Path(tempfile.mkdtemp(prefix="evfleet-cluster-"))
    ports = _free_ports(masters)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = home / str(port)
            node_dir.mkdir()
            procs.append(subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000", "--save", "",
                 "--appendonly", "no", "--dir", str(node_dir), "--logfile", str(node_dir / "log.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            _wait(lambda p=port: redis.Redis(port=p).ping(), timeout_s, f"redis-server on {port}")
        subprocess.run([REDIS_CLI, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout_s)
        for port in ports:
            _wait(lambda p=port: redis.Redis(port=p).cluster("info")["cluster_state"] == "ok",
                  timeout_s, f"cluster_state:ok on {port}")
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(home, ignore_errors=True)


def _free_ports(n: int) -> list[int]:
    """`n` ports in 20000-45535 whose cluster-bus port is free too."""
    rng = random.Random()
    out: list[int] = []
    while len(out) < n:
        port = rng.randrange(20_000, 45_535)
        if port not in out and port_free(port) and port_free(port + BUS_OFFSET):
            out.append(port)
    return out


def _wait(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)
