"""The compose topology as local processes: HAProxy in front of csms nodes, optimizer workers, one Redis.

Every part is the real thing: `haproxy` (Debian package, installed by `scripts/setup.sh --dev`),
`evfleet csms` and `evfleet optimizer` processes, the test session's private redis-server. Ports
are free ports on 127.0.0.1. `deploy/haproxy/haproxy.cfg` is the file the production compose uses;
here its `csms-N` servers are the local nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from csms.store.embedded import free_port

EVFLEET = str(Path(sys.executable).with_name("evfleet"))
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Node:
    """One `evfleet csms` process."""

    node_id: str
    ocpp_port: int
    api_port: int
    proc: subprocess.Popen[bytes]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no offline marking."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@dataclass
class Worker:
    """One `evfleet optimizer` process."""

    consumer: str
    proc: subprocess.Popen[bytes]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@dataclass
class Topology:
    """HAProxy on `ocpp_port` in front of `nodes`; `workers` on the same Redis."""

    redis_url: str
    ocpp_port: int
    api_port: int
    nodes: list[Node] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = None
    tls_port: int = 0
    """HAProxy's TLS pass-through port (the shipped :9443) in front of `tls_nodes`."""
    tls_nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Base OCPP URL through HAProxy (append the station id)."""
        return f"ws://127.0.0.1:{self.ocpp_port}/ocpp/"

    @property
    def tls_url(self) -> str:
        """Base wss:// URL through HAProxy's TLS pass-through (append the station id)."""
        return f"wss://127.0.0.1:{self.tls_port}/ocpp/"

    @property
    def api(self) -> str:
        """The operator API through HAProxy."""
        return f"http://127.0.0.1:{self.api_port}"

    tmp: Path = Path(".")
    env: dict[str, str] = field(default_factory=dict)

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start_worker(self, consumer: str, debounce_s: float = 0.2) -> Worker:
        """Start one more `evfleet optimizer` process on the topology's Redis."""
        proc = _spawn([EVFLEET, "optimizer", "--redis-url", self.redis_url, "--consumer", consumer,
                       "--debounce-s", str(debounce_s)], self.tmp / f"{consumer}.log", self.env)
        worker = Worker(consumer, proc)
        self.workers.append(worker)
        return worker


def _server_line(line: str, name: str, nodes: list[Node]) -> str | None:
    """A `server {name}-N` line pointed at the local node N (None: there is no node N)."""
    index = int(line.split()[1].removeprefix(f"{name}-"))
    if index > len(nodes):
        return None
    node = nodes[index - 1]
    for port in (9000, 9443):
        line = line.replace(f"{name}-{index}:{port}", f"127.0.0.1:{node.ocpp_port}")
    return (line.replace(f"{name}-{index}:8080", f"127.0.0.1:{node.api_port}")
            .replace("check port 8080", f"check port {node.api_port}")
            .replace(f"server {name}-{index} ", f"server {node.node_id} "))


def haproxy_config(ocpp_port: int, nodes: list[Node], stats_port: int, api_port: int,
                   tls_port: int = 0, tls_nodes: list[Node] | None = None) -> str:
    """deploy/haproxy/haproxy.cfg with its csms-N (and csms-tls-N) servers rewritten to the local
    `nodes` (`tls_nodes`)."""
    lines = []
    for line in (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith(("server csms-", "server csms-tls-")):
            tls = stripped.startswith("server csms-tls-")
            rewritten = _server_line(line, "csms-tls" if tls else "csms", (tls_nodes or []) if tls else nodes)
            if rewritten is None:
                continue
            line = rewritten
        line = line.replace("bind :9443", f"bind 127.0.0.1:{tls_port or free_port()}")
        line = line.replace("bind :9000", f"bind 127.0.0.1:{ocpp_port}")
        line = line.replace("bind :8080", f"bind 127.0.0.1:{api_port}")
        line = line.replace("bind :8404", f"bind 127.0.0.1:{stats_port}")
        line = line.replace("maxconn 50000", "maxconn 8000")  # within this machine's fd limit
        lines.append(line)
    return "\n".join(lines) + "\n"


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


START_CPU_S = 20.0
"""CPU seconds a process may use before its /healthz answers. Two `evfleet csms` nodes started at
once need 2.0-2.6 s of CPU each here (7-10 s of wall time at load 11, 2026-12-07); HAProxy far
less. A start-up that works 8x that without answering is broken, whatever the load."""
START_BACKSTOP_S = 180.0
"""Wall seconds after which a process that is neither healthy nor over its CPU budget counts as hung
(6x the fixed 30 s bound this replaces: a node waiting on nothing fails here)."""


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _until_healthy(url: str, proc: subprocess.Popen[bytes], log: Path | None = None,
                         cpu_budget_s: float = START_CPU_S, backstop_s: float = START_BACKSTOP_S) -> None:
    """Poll `url` until it answers 200; fail at once if `proc` exits, or once it has used
    `cpu_budget_s` of CPU (or `backstop_s` of wall time) without answering.

    The bound is the work the process did, not the wall time: on the 2-core CI machine at load 12-16
    a node's start-up takes several times its quiet wall time for the same CPU (a node not healthy
    within a fixed 30 s failed the suite there while it was still starting)."""
    t0 = asyncio.get_running_loop().time()
    async with httpx.AsyncClient() as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            where = f" (log: {log})" if log is not None else ""
            if (code := proc.poll()) is not None:
                raise RuntimeError(f"{url}: the process exited with {code} before it was healthy{where}")
            cpu_s, wall_s = proc_cpu_s(proc.pid), asyncio.get_running_loop().time() - t0
            if cpu_s > cpu_budget_s or wall_s > backstop_s:
                raise TimeoutError(f"{url} not healthy after {cpu_s:.1f} s of its CPU, {wall_s:.0f} s of "
                                   f"wall time (budget {cpu_budget_s:g} s CPU, {backstop_s:g} s wall){where}")
            await asyncio.sleep(0.2)


BIND_TRIES = 3
"""Starts of a process whose port was taken between `free_port()` and its bind (another test's
clients or a harness run beside it use ephemeral ports), each on fresh ports."""


def _lost_a_port(log: Path, offset: int) -> bool:
    """The start logged from `offset` on could not bind a port (it was taken meanwhile)."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            return b"address already in use" in f.read().lower()
    except OSError:
        return False


def _log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def _spawn_node(node_id: str, redis_url: str, extra: tuple[str, ...], tmp: Path,
                env: dict[str, str]) -> tuple[Node, int]:
    """Start an `evfleet csms` node on fresh ports (not waiting for it); with its log's size before."""
    ocpp_port, api_port = free_port(), free_port()
    log = tmp / f"{node_id}.log"
    offset = _log_size(log)
    proc = _spawn([EVFLEET, "csms", "--redis-url", redis_url, "--host", "127.0.0.1", "--port", str(ocpp_port),
                   "--api-port", str(api_port), "--node-id", node_id, "--no-api-auth", *extra], log, env)
    return Node(node_id, ocpp_port, api_port, proc), offset


async def _healthy_node(nodes: list[Node], n: int, offset: int, redis_url: str, extra: tuple[str, ...],
                        tmp: Path, env: dict[str, str]) -> None:
    """Wait for `nodes[n]` (started by `_spawn_node`, its log `offset` before); one that lost a port
    is replaced there by a new start on fresh ports (so the topology stops whatever runs)."""
    for attempt in range(1, BIND_TRIES + 1):
        node = nodes[n]
        log = tmp / f"{node.node_id}.log"
        try:
            await _until_healthy(f"{node.api}/healthz", node.proc, log)
            return
        except RuntimeError:
            if attempt == BIND_TRIES or not _lost_a_port(log, offset):
                raise
        nodes[n], offset = _spawn_node(node.node_id, redis_url, extra, tmp, env)


async def _start_haproxy(topo: Topology, tmp: Path, env: dict[str, str]) -> None:
    """HAProxy in front of the topology's nodes; started again on fresh ports if one was taken."""
    log = tmp / "haproxy.log"
    for attempt in range(1, BIND_TRIES + 1):
        offset, stats_port = _log_size(log), free_port()
        cfg = tmp / "haproxy.cfg"
        cfg.write_text(haproxy_config(topo.ocpp_port, topo.nodes, stats_port, topo.api_port,
                                      topo.tls_port, topo.tls_nodes))
        topo.haproxy = _spawn([HAPROXY, "-f", str(cfg), "-db"], log, env)
        try:
            await _until_healthy(f"http://127.0.0.1:{stats_port}/healthz", topo.haproxy, log)
            return
        except RuntimeError:
            if attempt == BIND_TRIES or not _lost_a_port(log, offset):
                raise
        topo.ocpp_port, topo.api_port, topo.tls_port = free_port(), free_port(), free_port()


@contextlib.asynccontextmanager
async def topology(redis_url: str, tmp: Path, nodes: int = 2, workers: int = 0, tls_nodes: int = 0,
                   tls_args: tuple[str, ...] = (), extra_env: Mapping[str, str] | None = None
                   ) -> AsyncIterator[Topology]:
    """Start HAProxy, `nodes` csms nodes, `tls_nodes` TLS csms nodes (`tls_args`: their `--tls-*`
    flags) and `workers` optimizer workers (every process with `extra_env` in its environment); stop
    them all after."""
    env = {**os.environ, "HOME": str(tmp), "EVFLEET_LOG_LEVEL": "INFO", **(extra_env or {})}
    topo = Topology(redis_url, free_port(), free_port(), tmp=tmp, env=env, tls_port=free_port())
    try:
        for prefix, count, extra, into in (("node", nodes, (), topo.nodes),
                                           ("tls", tls_nodes, tls_args, topo.tls_nodes)):
            offsets = []
            for i in range(1, count + 1):
                node, offset = _spawn_node(f"{prefix}-{i}", redis_url, extra, tmp, env)
                into.append(node)
                offsets.append(offset)
            for n, offset in enumerate(offsets):
                await _healthy_node(into, n, offset, redis_url, extra, tmp, env)
        for i in range(1, workers + 1):
            topo.start_worker(f"worker-{i}")
        await _start_haproxy(topo, tmp, env)
        yield topo
    finally:
        procs = [n.proc for n in topo.nodes + topo.tls_nodes] + [w.proc for w in topo.workers]
        procs += [topo.haproxy] if topo.haproxy is not None else []
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
