"""The processes of a load_harness run (not a benchmark): provisioned stations, csms nodes,
optimizer workers, HAProxy and the bare `ocpp`-library server (benchmarks/load_harness.py)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from types import SimpleNamespace

import httpx

REPO = Path(__file__).resolve().parents[1]
STATIONS_PY = str(Path(__file__).with_name("load_stations.py"))
PASSWORD = "load-harness-secret-0123456789"  # machine-generated length: the fast hash scheme
HAPROXY_MAX_PER_PROC = 9_900


def provision(redis_url: str, n: int, site_size: int = 0) -> None:
    """N stations with one credential (one salt for all: a benchmark shortcut): all on the default
    site (`site_size` 0), or `site_size` stations per site (sites S0000, S0001, ...)."""
    import redis

    from csms.core.security import hash_password
    from evfleet.keys import Keys
    from evfleet.store.client import hmap

    keys = Keys()
    cred = hmap({**hash_password(PASSWORD).to_fields(), "security_profile": "1"})
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        sid = f"L{i:05d}"
        pipe.sadd(keys.stations(), sid)
        pipe.hset(keys.station_credentials(sid), mapping=cred)
        pipe.hset(keys.station(sid), mapping={"compat": "0", "online": "0",
                                              "last_boot": "2026-01-01T00:00:00+00:00"})
        if site_size:  # as `provision_station` does it (csms.store.provisioning)
            site = f"S{i // site_size:04d}"
            pipe.hset(keys.station(sid), "site_id", site)
            pipe.sadd(keys.site_stations(site), sid)
            pipe.hsetnx(keys.site(site), "name", site)
            pipe.sadd(keys.sites(), site)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    r.close()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Until GET url answers 200 (SystemExit when `proc` dies or time is up)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: process exited with {proc.returncode}")
        with suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} not healthy within {timeout_s:.0f} s")


def start_nodes(stack: ExitStack, m: int, args: argparse.Namespace, tmp: Path,
                redis_url: str) -> list[SimpleNamespace]:
    """M csms nodes on free ports (killed when `stack` closes)."""
    from csms.store.embedded import free_port

    env = {**os.environ, "PYTHONPATH": str(REPO), "EVFLEET_LOG_LEVEL": "WARNING",
           "EVFLEET_OCPP_MAX_CONNECTIONS": str(args.max_per_node), "HOME": str(tmp)}
    env.update(dict(kv.split("=", 1) for kv in args.node_env))
    nodes = []
    for i in range(1, m + 1):
        node = SimpleNamespace(node_id=f"node-{i}", ocpp_port=free_port(), api_port=free_port())
        log = (tmp / f"{node.node_id}.log").open("ab")
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "csms", "--redis-url", redis_url, "--host", "127.0.0.1", "--port",
             str(node.ocpp_port), "--api-port", str(node.api_port), "--node-id", node.node_id,
             "--no-api-auth"], env=env, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT)
        stack.callback(stop, node.proc)
        nodes.append(node)
    for node in nodes:
        wait_http(f"http://127.0.0.1:{node.api_port}/healthz", node.proc)
    return nodes


def start_workers(stack: ExitStack, count: int, tmp: Path, redis_url: str,
                  log_level: str = "WARNING", metrics_urls: list[str] | None = None) -> list[int]:
    """`count` `evfleet optimizer` workers on the run's Redis, as production runs them (killed when
    `stack` closes): plans arrive, so the sites leave fallback mode. Returns their pids; each serves
    /metrics (`--metrics-port`), whose URLs are appended to `metrics_urls`."""
    from csms.store.embedded import free_port

    pids = []
    for i in range(1, count + 1):
        log = (tmp / f"optimizer-{i}.log").open("ab")
        port = free_port()
        if metrics_urls is not None:
            metrics_urls.append(f"http://127.0.0.1:{port}/metrics")
        proc = subprocess.Popen([str(Path(sys.executable).with_name("evfleet")), "optimizer", "--redis-url",
                                 redis_url, "--consumer", f"optimizer-{i}", "--log-level", log_level,
                                 "--metrics-port", str(port)],
                                env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=str(REPO), stdout=log,
                                stderr=subprocess.STDOUT)
        stack.callback(stop, proc)
        pids.append(proc.pid)
    return pids


def start_haproxy(stack: ExitStack, nodes: list[SimpleNamespace], procs: int,
                  tmp: Path) -> tuple[str, list[int]]:
    """`procs` HAProxy processes on one port (SO_REUSEPORT) in front of `nodes`: (url, pids)."""
    from csms.store.embedded import free_port
    from tests.scale.topology import HAPROXY, haproxy_config

    port, api_port, stats_port = free_port(), free_port(), free_port()
    text = haproxy_config(port, nodes, stats_port, api_port)  # type: ignore[arg-type]
    text = text.replace("maxconn 8000", f"maxconn {HAPROXY_MAX_PER_PROC}")
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(text)
    pids = []
    for i in range(procs):
        log = (tmp / f"haproxy-{i}.log").open("ab")
        proc = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=log, stderr=subprocess.STDOUT)
        stack.callback(stop, proc)
        wait_http(f"http://127.0.0.1:{stats_port}/healthz", proc)
        pids.append(proc.pid)
    time.sleep(1.5)  # first health checks (rise 2, inter 500 ms)
    return f"ws://127.0.0.1:{port}/ocpp/", pids


def start_bare(stack: ExitStack, tmp: Path) -> tuple[str, int]:
    """The bare `ocpp`-library server: (url, pid)."""
    port_file = tmp / "bare.port"
    proc = subprocess.Popen([sys.executable, STATIONS_PY, "bare", str(port_file)], cwd=str(REPO))
    stack.callback(stop, proc)
    deadline = time.time() + 30
    while not (port_file.exists() and port_file.read_text()):
        if time.time() > deadline or proc.poll() is not None:
            raise SystemExit("bare server did not start")
        time.sleep(0.05)
    return f"ws://127.0.0.1:{port_file.read_text()}/ocpp/", proc.pid


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process; kill it if it has not exited after 15 s."""
    with suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
