"""The composition root: supervised services, clean shutdown, embedded Redis, the real CLI process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from csms.app import running_csms
from csms.context import CsmsContext
from csms.protocol import server as ocpp_server
from csms.protocol.station import StationHandler
from csms.store.provisioning import provision_station
from evfleet.keys import Keys
from evfleet.store.client import as_str
from tests.csms.conftest import PASSWORD, TEST_ITERATIONS, make_settings
from tests.csms.helpers import RawStation, wait_for

REPO = Path(__file__).resolve().parents[2]


async def test_crashing_service_is_restarted_and_ocpp_keeps_working(
        redis_url: str, provision: Callable[..., Awaitable[None]]) -> None:
    runs: list[CsmsContext] = []
    healthy = asyncio.Event()

    async def flaky(ctx: CsmsContext) -> None:
        runs.append(ctx)
        if len(runs) < 3:
            raise RuntimeError("boom")
        healthy.set()
        await asyncio.Event().wait()

    async with running_csms(make_settings(redis_url), services=[flaky], service_backoff_s=0.05) as node:
        await asyncio.wait_for(healthy.wait(), 5)
        assert len(runs) == 3
        ctx = runs[-1]
        assert ctx.ocpp_port == node.ocpp_port and ctx.node_id == "test-node"
        assert "commands" in ctx.extras and "registry" in ctx.extras
        await provision("CP-1")
        st = await RawStation.connect(node.url, "CP-1", PASSWORD)
        await st.ok("Heartbeat", {})
        await st.close()


async def test_shutdown_closes_connections_marks_offline_and_drops_node_key(
        redis_url: str, redis: Redis, provision: Callable[..., Awaitable[None]]) -> None:
    await provision("CP-1")
    async with running_csms(make_settings(redis_url), services=[]) as node:
        st = await RawStation.connect(node.url, "CP-1", PASSWORD)
        await st.ok("Heartbeat", {})
        assert await redis.exists("evfleet:node:test-node") == 1
        assert 0 < await redis.ttl("evfleet:node:test-node") <= 15
        assert await redis.hget("evfleet:station:CP-1", "online") == "1"
    await asyncio.wait_for(st.ws.wait_closed(), 5)
    assert st.ws.close_code == 1001
    assert await redis.hget("evfleet:station:CP-1", "online") == "0"
    assert await redis.exists("evfleet:node:test-node") == 0


async def test_shutdown_is_bounded_when_a_station_handler_never_returns(
        redis_url: str, provision: Callable[..., Awaitable[None]], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A handler stuck inside a message (it never reads its closed connection again) cannot hang the
    node's shutdown: websockets waits for every handler without a bound, the node for CLOSE_WAIT_S,
    then cancels it and says so."""
    monkeypatch.setattr(ocpp_server, "CLOSE_WAIT_S", 1.0)
    entered = asyncio.Event()

    async def never_returns(self: StationHandler) -> None:
        entered.set()
        await asyncio.Event().wait()  # e.g. a write that never completes

    monkeypatch.setattr(StationHandler, "start", never_returns)
    await provision("CP-1")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(30):  # without the bound this waited for ever (pytest's 300 s)
        async with running_csms(make_settings(redis_url), services=[]) as node:
            st = await RawStation.connect(node.url, "CP-1", PASSWORD)
            async with asyncio.timeout(5):
                await entered.wait()
            t0 = loop.time()
    assert loop.time() - t0 < 12  # close handshake + CLOSE_WAIT_S + cancelling
    assert "station handler(s) still running 1 s after close" in caplog.text
    await st.close()


async def test_embedded_redis_when_no_url(tmp_path: Path) -> None:
    settings = make_settings(None, data_dir=tmp_path)  # type: ignore[arg-type]
    async with running_csms(settings, services=[]) as node:
        assert node.embedded is not None and node.redis_url.startswith("redis://127.0.0.1:")
        assert node.redis_url != "redis://127.0.0.1:6379/0"
        assert (tmp_path / "redis.url").read_text().strip() == node.redis_url
        await provision_station(node.ctx.redis, node.ctx.keys, "CP-E", PASSWORD, iterations=TEST_ITERATIONS)
        st = await RawStation.connect(node.url, "CP-E", PASSWORD)
        await st.ok("Heartbeat", {})
        await st.close()
        url = node.redis_url
    with pytest.raises(sync_redis.ConnectionError):
        sync_redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    assert not (tmp_path / "redis.url").exists()
    # state persisted in the data dir: a second run still knows the station
    async with running_csms(settings, services=[]) as node:
        assert await node.ctx.redis.sismember("evfleet:stations", "CP-E")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cli_process_stops_cleanly_on_signal(redis_url: str, redis: Redis, sig: signal.Signals) -> None:
    await provision_station(redis, Keys(), "CP-1", PASSWORD, iterations=TEST_ITERATIONS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "EVFLEET_REDIS_URL": redis_url,
           "EVFLEET_NODE_ID": "cli-node"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "csms", "--port", "0", "--host", "127.0.0.1", "--api-port", "0",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(REPO))
    await wait_for(lambda: _node_up(redis), timeout=20)
    port = await _node_port(redis)
    st = await RawStation.connect(f"ws://127.0.0.1:{port}/ocpp/", "CP-1", PASSWORD)
    await st.ok("Heartbeat", {})
    proc.send_signal(sig)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    output = out.decode() + err.decode()
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "could not clean up" not in output, output
    assert await redis.hget("evfleet:station:CP-1", "online") == "0"
    assert await redis.exists("evfleet:node:cli-node") == 0


async def test_cli_fails_fast_with_a_message_when_the_api_port_is_taken(
        redis_url: str, redis: Redis) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO), "EVFLEET_REDIS_URL": redis_url,
               "EVFLEET_NODE_ID": "busy-node"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "csms", "--port", "0", "--host", "127.0.0.1",
            "--api-host", "127.0.0.1", "--api-port", str(busy_port),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(REPO))
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    output = out.decode() + err.decode()
    assert proc.returncode == 1, output
    assert f"operator API address 127.0.0.1:{busy_port}" in output, output
    assert "Traceback" not in output, output
    assert await redis.exists("evfleet:node:busy-node") == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cli_with_embedded_redis_stops_cleanly_on_group_signal(
        tmp_path: Path, sig: signal.Signals) -> None:
    """A terminal's Ctrl-C reaches the whole foreground process group: the embedded
    redis-server must outlive the node's cleanup (stations offline, node key deleted)."""
    from csms.store.embedded import EmbeddedRedis
    from evfleet.store.client import connect_redis

    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVFLEET_")}
    env.update(PYTHONPATH=str(REPO), EVFLEET_NODE_ID="cli-node")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "csms", "--port", "0", "--host", "127.0.0.1", "--api-port", "0",
        "--data-dir", str(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        cwd=str(REPO), start_new_session=True)
    url_file = data_dir / "redis.url"
    try:
        await wait_for(lambda: _true(url_file.exists()), timeout=20)
        redis = connect_redis(url_file.read_text().strip())
        try:
            await wait_for(lambda: _node_up(redis), timeout=20)
            await provision_station(redis, Keys(), "CP-1", PASSWORD, iterations=TEST_ITERATIONS)
            st = await RawStation.connect(f"ws://127.0.0.1:{await _node_port(redis)}/ocpp/", "CP-1", PASSWORD)
            await st.ok("Heartbeat", {})
            assert await redis.hget("evfleet:station:CP-1", "online") == "1"
        finally:
            await redis.aclose()
        os.killpg(proc.pid, sig)  # like Ctrl-C: the csms and every child in its group
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = out.decode() + err.decode()
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "could not clean up" not in output, output
    assert not url_file.exists()
    # the node's cleanup reached the (persistent) embedded Redis before it stopped
    with EmbeddedRedis(data_dir=str(data_dir / "redis"), persist=True) as server:
        check = connect_redis(server.url)
        try:
            assert await check.hget("evfleet:station:CP-1", "online") == "0"
            assert await check.exists("evfleet:node:cli-node") == 0
        finally:
            await check.aclose()


async def _true(value: bool) -> bool:
    return value


async def _node_up(redis: Redis) -> bool:
    return bool(await redis.exists("evfleet:node:cli-node"))


async def _node_port(redis: Redis) -> int:
    import json

    return int(json.loads(as_str(await redis.get("evfleet:node:cli-node")))["ocpp_port"])


async def test_stations_of_a_crashed_node_are_marked_offline_at_start(
        redis_url: str, redis: Redis, provision: Callable[..., Awaitable[None]]) -> None:
    await provision("CP-A")
    await provision("CP-B")
    await redis.hset("evfleet:station:CP-A", mapping={"online": "1", "node": "dead-node"})
    await redis.hset("evfleet:station:CP-B", mapping={"online": "1", "node": "live-node"})
    await redis.set("evfleet:node:live-node", "{}", ex=30)
    async with running_csms(make_settings(redis_url), services=[]):
        assert await redis.hget("evfleet:station:CP-A", "online") == "0"
        assert await redis.hget("evfleet:station:CP-B", "online") == "1"


async def test_redis_outage_gives_no_answer_and_close_then_recovers(tmp_path: Path) -> None:
    """Not stored, so not acknowledged: no CALLERROR (a station drops a refused message), the
    connection is closed with 1013 and handshakes get 503 until Redis is back."""
    from websockets.exceptions import InvalidStatus

    from csms.store.embedded import EmbeddedRedis

    server = EmbeddedRedis(data_dir=str(tmp_path), persist=True).start()
    try:
        async with running_csms(make_settings(server.url), services=[]) as node:
            await provision_station(node.ctx.redis, node.ctx.keys, "CP-R", PASSWORD,
                                    iterations=TEST_ITERATIONS)
            st = await RawStation.connect(node.url, "CP-R", PASSWORD)
            await st.ok("Heartbeat", {})
            await asyncio.to_thread(server.stop)
            with pytest.raises(ConnectionError):
                await st.call("StatusNotification", {"timestamp": "2026-01-01T00:00:00Z",
                                                     "connectorStatus": "Available", "evseId": 1,
                                                     "connectorId": 1}, timeout=15)
            await asyncio.wait_for(st.ws.wait_closed(), 5)
            assert st.ws.close_code == 1013 and st.unsolicited == []
            with pytest.raises(InvalidStatus) as refused:
                await RawStation.connect(node.url, "CP-R", PASSWORD)
            assert refused.value.response.status_code == 503
            await asyncio.to_thread(server.start)
            st = await RawStation.connect(node.url, "CP-R", PASSWORD)
            await st.ok("Heartbeat", {})  # Redis back: a new connection is served
            await st.close()
    finally:
        server.stop()
