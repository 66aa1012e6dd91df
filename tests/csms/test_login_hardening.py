"""Station logins: password schemes and migration, backoff per id and per IP, equal timing for
unknown ids and wrong passwords, wrong-password floods that cannot hold up a real station, and
separate connection budgets for OCPP and the API. Real node, real Redis, real WebSockets."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from csms.app import running_csms
from csms.core.login_guard import GuardPolicy, LoginGuard
from csms.core.security import (
    FAST_SCHEME,
    SCHEME,
    PasswordHash,
    hash_password,
    needs_rehash,
    verify_password,
)
from evfleet.keys import Keys
from evfleet.store.client import hmap
from tests.csms.conftest import make_settings
from tests.csms.helpers import RawStation, wait_for

Provision = Callable[..., Awaitable[None]]
LONG_PASSWORD = "machine-made-secret-0123456789"  # 30 characters


async def _attempt(url: str, station_id: str, password: str, source_ip: str = "127.0.0.1",
                   timeout: float = 60) -> tuple[int, str, float]:
    """(HTTP status or 101, body, seconds) of one handshake from `source_ip`."""
    from csms.core.security import basic_auth_header

    started = time.monotonic()
    try:
        ws = await connect(url + station_id, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                           additional_headers={"Authorization": basic_auth_header(station_id, password)},
                           open_timeout=timeout, local_addr=(source_ip, 0))
    except InvalidStatus as err:
        return err.response.status_code, err.response.body.decode(), time.monotonic() - started
    elapsed = time.monotonic() - started
    await ws.close()
    return 101, "", elapsed


# --- pure parts --------------------------------------------------------------------------------
def test_long_passwords_get_the_fast_scheme_short_ones_pbkdf2() -> None:
    fast = hash_password(LONG_PASSWORD)
    slow = hash_password("short-pw-1", 1000)
    assert fast.scheme == FAST_SCHEME and slow.scheme == SCHEME and slow.iterations == 1000
    assert verify_password(LONG_PASSWORD, fast) and not verify_password(LONG_PASSWORD + "x", fast)
    assert verify_password("short-pw-1", slow) and not verify_password("short-pw-2", slow)
    assert hash_password(LONG_PASSWORD).hash_hex != fast.hash_hex  # salted
    legacy = hash_password(LONG_PASSWORD, 1000, scheme=SCHEME)
    assert needs_rehash(LONG_PASSWORD, legacy) and not needs_rehash(LONG_PASSWORD, fast)
    assert not needs_rehash("short-pw-1", slow)
    assert not verify_password(LONG_PASSWORD, PasswordHash(fast.salt_hex, fast.hash_hex, 1, "md5"))
    t = time.perf_counter()
    for _ in range(1000):
        verify_password(LONG_PASSWORD, fast)
    assert time.perf_counter() - t < 0.5  # microseconds each (PBKDF2 at 100k: ~23 ms each)


def test_guard_backoff_grows_per_id_and_per_ip_and_a_success_resets_the_id() -> None:
    guard = LoginGuard(GuardPolicy(failure_delay_s=0.5, free_failures=2, base_delay_s=2.0,
                                   max_delay_s=8.0))
    # per id, from different addresses
    delays = [guard.failure("CP-1", f"10.0.0.{i}", arrived=100.0, now=100.0) for i in range(6)]
    assert delays == [0.5, 0.5, 2.0, 4.0, 8.0, 8.0]
    guard.success("CP-1", "10.0.0.9")
    assert guard.failure("CP-1", "10.0.0.10", 100.0, 100.0) == 0.5
    # per IP, different ids
    delays = [guard.failure(f"X-{i}", "10.9.9.9", 100.0, 100.0) for i in range(4)]
    assert delays == [0.5, 0.5, 2.0, 4.0]
    # forgotten after the window
    assert guard.failure("X-99", "10.9.9.9", 100.0 + 601, 100.0 + 601) == 0.5
    # pending cap per IP, with the exemption of a known-good pair
    guard = LoginGuard(GuardPolicy(max_pending_per_ip=2))
    guard.success("GOOD", "10.1.1.1")
    guard.pending_started("10.1.1.1")
    assert guard.admit_attempt("BAD", "10.1.1.1", 0.0)
    guard.pending_started("10.1.1.1")
    assert not guard.admit_attempt("BAD", "10.1.1.1", 0.0)
    assert guard.admit_attempt("GOOD", "10.1.1.1", 0.0) and guard.admit_attempt("BAD", "10.1.1.2", 0.0)
    guard.pending_ended("10.1.1.1")
    assert guard.admit_attempt("BAD", "10.1.1.1", 0.0)


def test_guard_memory_is_bounded() -> None:
    guard = LoginGuard(GuardPolicy(max_keys=100))
    for i in range(1000):
        guard.failure(f"id-{i}", f"ip-{i}", 0.0, 0.0)
        guard.success(f"id-{i}", f"ip-{i}")
    assert len(guard._failures) <= 100 and len(guard._good) <= 100


# --- live node ---------------------------------------------------------------------------------
async def test_unknown_station_and_wrong_password_answer_alike(redis_url: str, provision: Provision) -> None:
    settings = make_settings(redis_url, login_failure_delay_s=0.5, login_free_failures=50)
    async with running_csms(settings, services=[]) as node:
        await provision("CP-1", LONG_PASSWORD)
        # both kinds in one interleaved batch, so a pause of the machine hits them alike
        attempts = []
        for i in range(10):
            attempts.append(_attempt(node.url, "CP-1", f"wrong-{i}-0123456789abc", f"127.0.1.{i + 1}"))
            attempts.append(_attempt(node.url, f"CP-X{i}", LONG_PASSWORD, f"127.0.2.{i + 1}"))
        results = await asyncio.gather(*attempts)
        wrong, unknown = results[0::2], results[1::2]
        assert {(s, b) for s, b, _ in wrong} == {(401, "invalid credentials\n")}
        assert {(s, b) for s, b, _ in unknown} == {(401, "invalid credentials\n")}
        wrong_s = [t for _, _, t in wrong]
        unknown_s = [t for _, _, t in unknown]
        assert min(wrong_s + unknown_s) >= 0.5
        assert abs(statistics.median(wrong_s) - statistics.median(unknown_s)) < 0.15, (wrong_s, unknown_s)


async def test_failed_logins_back_off_per_id_but_the_right_password_is_never_delayed(
        redis_url: str, provision: Provision) -> None:
    settings = make_settings(redis_url, login_failure_delay_s=0.1, login_free_failures=2)
    async with running_csms(settings, services=[]) as node:
        await provision("CP-1", LONG_PASSWORD)
        times = []
        for i in range(4):  # each from its own address: only the per-id counter grows
            status, _, elapsed = await _attempt(node.url, "CP-1", "not-the-password-123", f"127.0.3.{i + 1}")
            assert status == 401
            times.append(elapsed)
        assert max(times[:2]) < 1.5 and times[2] >= 2.0 and times[3] >= 4.0, times
        status, _, elapsed = await _attempt(node.url, "CP-1", LONG_PASSWORD, "127.0.3.99")
        assert status == 101 and elapsed < 1.5
        # the success reset the id's counter
        status, _, elapsed = await _attempt(node.url, "CP-1", "not-the-password-123", "127.0.3.98")
        assert status == 401 and elapsed < 1.5


async def test_an_address_with_many_pending_failures_gets_429(redis_url: str, provision: Provision) -> None:
    settings = make_settings(redis_url, login_failure_delay_s=3.0, login_max_pending_per_ip=3)
    async with running_csms(settings, services=[]) as node:
        await provision("CP-1", LONG_PASSWORD)
        await provision("CP-2", LONG_PASSWORD)
        # CP-2 logged in from 127.0.4.1 before: a known-good pair
        assert (await _attempt(node.url, "CP-2", LONG_PASSWORD, "127.0.4.1"))[0] == 101
        pending = [asyncio.create_task(_attempt(node.url, f"GUESS-{i}", LONG_PASSWORD, "127.0.4.1"))
                   for i in range(3)]
        await wait_for(lambda: _pending_is(node, "127.0.4.1", 3), timeout=10)
        status, body, elapsed = await _attempt(node.url, "CP-1", LONG_PASSWORD, "127.0.4.1")
        assert status == 429 and elapsed < 2.0, body
        assert (await _attempt(node.url, "CP-1", LONG_PASSWORD, "127.0.4.2"))[0] == 101  # other address
        assert (await _attempt(node.url, "CP-2", LONG_PASSWORD, "127.0.4.1"))[0] == 101  # known-good pair
        assert [s for s, _, _ in await asyncio.gather(*pending)] == [401, 401, 401]


async def _pending_is(node: Any, ip: str, n: int) -> bool:
    return bool(node.server.gate.guard._pending.get(ip, 0) == n)


async def test_300_wrong_password_handshakes_do_not_hold_up_a_real_station(redis_url: str,
                                                                            provision: Provision) -> None:
    settings = make_settings(redis_url, login_failure_delay_s=5.0, login_backoff_max_s=8.0)
    async with running_csms(settings, services=[]) as node:
        await provision("CP-REAL", LONG_PASSWORD)
        await provision("CP-1", LONG_PASSWORD)
        flood = [asyncio.create_task(_attempt(node.url, "CP-1", f"guess-{i:04d}-abcdefghijkl",
                                              f"127.0.5.{i % 15 + 1}"))  # 20 per address, under the cap
                 for i in range(300)]
        await wait_for(lambda: _total_pending(node, 300), timeout=60)
        started = time.monotonic()
        st = await RawStation.connect(node.url, "CP-REAL", LONG_PASSWORD)
        await st.ok("BootNotification", {"reason": "PowerUp",
                                         "chargingStation": {"model": "M", "vendorName": "V"}})
        real_s = time.monotonic() - started
        # the real station was in while every wrong guess was still waiting for its answer
        assert not any(t.done() for t in flood), real_s
        assert real_s < 4.0, real_s
        results = await asyncio.gather(*flood)
        assert {s for s, _, _ in results} == {401}
        await st.close()


async def _total_pending(node: Any, n: int) -> bool:
    return sum(node.server.gate.guard._pending.values()) >= n


async def test_stored_pbkdf2_hash_is_migrated_on_login(redis_url: str, redis: Redis) -> None:
    keys = Keys()
    legacy = hash_password(LONG_PASSWORD, 2000, scheme=SCHEME)
    await redis.sadd(keys.stations(), "CP-OLD")
    await redis.hset(keys.station_credentials("CP-OLD"),
                     mapping=hmap({**legacy.to_fields(), "security_profile": "1"}))
    await redis.hset(keys.station("CP-OLD"), mapping={"site_id": "default", "online": "0"})
    async with running_csms(make_settings(redis_url, login_failure_delay_s=0.1), services=[]) as node:
        st = await RawStation.connect(node.url, "CP-OLD", LONG_PASSWORD)
        await st.close()

        async def migrated() -> bool:
            return await redis.hget(keys.station_credentials("CP-OLD"), "scheme") == FAST_SCHEME

        await wait_for(migrated, timeout=10)
        fields = await redis.hgetall(keys.station_credentials("CP-OLD"))
        assert fields["hash"] != legacy.hash_hex and fields["security_profile"] == "1"
        st = await RawStation.connect(node.url, "CP-OLD", LONG_PASSWORD)  # still logs in
        await st.close()
        assert (await _attempt(node.url, "CP-OLD", LONG_PASSWORD + "x"))[0] == 401


async def test_ocpp_connection_budget(redis_url: str, provision: Provision) -> None:
    async with running_csms(make_settings(redis_url, ocpp_max_connections=3), services=[]) as node:
        for i in range(4):
            await provision(f"CP-{i}", LONG_PASSWORD)
        held = [await RawStation.connect(node.url, f"CP-{i}", LONG_PASSWORD) for i in range(3)]
        status, body, _ = await _attempt(node.url, "CP-3", LONG_PASSWORD)
        assert status == 503 and "maximum of 3" in body
        await held[0].close()
        await asyncio.sleep(0.2)
        assert (await _attempt(node.url, "CP-3", LONG_PASSWORD))[0] == 101
        for st in held[1:]:
            await st.close()


async def test_api_has_its_own_connection_budget(redis_url: str, provision: Provision) -> None:
    settings = make_settings(redis_url, api_enabled=True, api_host="127.0.0.1", api_port=0, api_auth=False,
                             api_max_connections=2, ocpp_max_connections=100)
    async with running_csms(settings, services=["csms.api.service:run"]) as node:
        await wait_for(lambda: _api_up(node), timeout=20)
        url = f"http://127.0.0.1:{node.ctx.api_port}/api/v1/stations"
        idle = [socket.create_connection(("127.0.0.1", node.ctx.api_port)) for _ in range(2)]
        try:
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient() as client:
                assert (await client.get(url)).status_code == 503
            # stations are not affected by the API's budget
            await provision("CP-1", LONG_PASSWORD)
            st = await RawStation.connect(node.url, "CP-1", LONG_PASSWORD)
            await st.close()
        finally:
            for s in idle:
                s.close()
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).status_code == 200


async def _api_up(node: Any) -> bool:
    if not node.ctx.api_port:
        return False
    try:
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{node.ctx.api_port}/api/v1/stations")
    except httpx.TransportError:
        return False
    return True


async def test_unbooted_station_is_closed_but_a_booted_one_reconnecting_is_not(
        redis_url: str, provision: Provision, redis: Redis) -> None:
    async with running_csms(make_settings(redis_url, boot_timeout_s=1.0), services=[]) as node:
        await provision("CP-NEW", LONG_PASSWORD)
        await provision("CP-BOOTED", LONG_PASSWORD)
        await redis.hset("evfleet:station:CP-BOOTED", "last_boot", "2026-01-01T00:00:00+00:00")
        new = await RawStation.connect(node.url, "CP-NEW", LONG_PASSWORD)
        old = await RawStation.connect(node.url, "CP-BOOTED", LONG_PASSWORD)
        await new.ok("Heartbeat", {})  # any message but BootNotification does not count
        await asyncio.wait_for(new.ws.wait_closed(), 10)
        assert new.ws.close_code == 1008 and "no BootNotification" in (new.ws.close_reason or "")
        await wait_for(lambda: _offline(redis, "CP-NEW"))
        assert node.registry.get("CP-NEW") is None
        await asyncio.sleep(0.5)
        assert old.ws.close_code is None  # booted before: a reconnect needs no new BootNotification
        await old.ok("Heartbeat", {})
        await old.close()


async def _offline(redis: Redis, sid: str) -> bool:
    return await redis.hget(f"evfleet:station:{sid}", "online") == "0"



async def test_cached_route_map_equals_the_libraries(redis_url: str) -> None:
    """The per-class route plan gives what `ocpp.routing.create_route_map` gives (v2.0.1 and 1.6)."""
    from ocpp.routing import create_route_map

    from csms.protocol.station import StationHandler, route_map
    from csms.protocol.v16.station import StationHandler16

    async with running_csms(make_settings(redis_url), services=[]) as node:
        env = node.server.env
        for cls in (StationHandler, StationHandler16):
            handler = cls("CP-X", None, env, "default")  # type: ignore[arg-type]
            assert route_map(handler) == create_route_map(handler)
            assert handler.route_map == create_route_map(handler) and len(handler.route_map) > 5
