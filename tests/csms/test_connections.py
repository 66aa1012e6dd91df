"""Handshake refusals, security profiles 1 and 2 (TLS), frame size, flood, duplicate connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus

from csms import metrics
from csms.app import CsmsNode, running_csms
from csms.core.security import basic_auth_header
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation, wait_for

Provision = Callable[..., Awaitable[None]]


def auth(sid: str, password: str) -> dict[str, str]:
    return {"Authorization": basic_auth_header(sid, password)}


async def refused(url: str, **kwargs: object) -> tuple[int, str, Headers]:
    with pytest.raises(InvalidStatus) as info:
        await connect(url, open_timeout=5, **kwargs)  # type: ignore[arg-type]
    response = info.value.response
    return response.status_code, response.body.decode(), response.headers


async def test_handshake_refusals(node: CsmsNode, provision: Provision, redis: Redis) -> None:
    await provision("CP-1")
    good = auth("CP-1", PASSWORD)
    url = node.station_url("CP-1")
    status, body, _ = await refused(url, additional_headers=good)  # no subprotocol offered
    assert status == 400 and "ocpp2.0.1" in body
    status, _, _ = await refused(url, additional_headers=good, subprotocols=["ocpp1.5"])  # 1.6 and 2.0.1 only
    assert status == 400
    status, _, headers = await refused(url, subprotocols=["ocpp2.0.1"])  # no credentials
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    status, body, _ = await refused(url, subprotocols=["ocpp2.0.1"],
                                    additional_headers=auth("CP-1", "wrong-pw"))
    assert status == 401 and "invalid credentials" in body
    status, body, _ = await refused(node.station_url("CP-404"), subprotocols=["ocpp2.0.1"],
                                    additional_headers=auth("CP-404", PASSWORD))
    assert status == 401 and "invalid credentials" in body
    status, _, _ = await refused(url, subprotocols=["ocpp2.0.1"],  # credentials of another station
                                 additional_headers=auth("CP-2", PASSWORD))
    assert status == 401
    status, _, _ = await refused(node.url.replace("/ocpp/", "/other/") + "CP-1", subprotocols=["ocpp2.0.1"],
                                 additional_headers=good)
    assert status == 404
    # none of this created state for the unknown station or marked CP-1 online
    assert await redis.exists("evfleet:station:CP-404") == 0
    assert await redis.hget("evfleet:station:CP-1", "online") == "0"
    # and the right credentials work
    st = await RawStation.connect(node.url, "CP-1", PASSWORD)
    assert st.ws.subprotocol == "ocpp2.0.1"
    await st.close()


async def test_auto_register_is_off_by_default_and_works_when_on(redis_url: str, redis: Redis) -> None:
    async with running_csms(make_settings(redis_url, auto_register=True), services=[]) as node:
        st = await RawStation.connect(node.url, "NEW-1", "first-password")
        await st.ok("Heartbeat", {})
        await st.close()
        assert await redis.sismember("evfleet:stations", "NEW-1")
        status, _, _ = await refused(node.station_url("NEW-1"), subprotocols=["ocpp2.0.1"],
                                     additional_headers=auth("NEW-1", "other-pw1"))
        assert status == 401


async def test_frame_size_limit_closes_with_1009(redis_url: str, provision: Provision) -> None:
    async with running_csms(make_settings(redis_url, max_frame_bytes=2048), services=[]) as node:
        await provision("CP-1")
        st = await RawStation.connect(node.url, "CP-1", PASSWORD)
        await st.ok("DataTransfer", {"vendorId": "v", "data": "x" * 1000})  # under the limit
        await st.ws.send(json.dumps([2, "big", "DataTransfer", {"vendorId": "v", "data": "x" * 5000}]))
        await asyncio.wait_for(st.ws.wait_closed(), 5)
        assert st.ws.close_code == 1009


async def test_flooding_station_is_throttled_then_disconnected(redis_url: str, provision: Provision,
                                                               redis: Redis) -> None:
    settings = make_settings(redis_url, rate_limit_per_s=20, rate_limit_burst=5, flood_disconnect_after=10)
    async with running_csms(settings, services=[]) as node:
        await provision("CP-1")
        st = await RawStation.connect(node.url, "CP-1", PASSWORD)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # 10 messages: 5 burst + 5 throttled at 20/s -> about 0.25 s, connection kept
        answers = await asyncio.gather(*(st.send_raw(json.dumps([2, f"h{i}", "Heartbeat", {}]),
                                                     expect_id=f"h{i}") for i in range(10)))
        assert [a[0] for a in answers] == [3] * 10
        assert loop.time() - t0 >= 0.2
        # a flood: disconnected with 1008 once more than 10 messages in a row were throttled
        with contextlib.suppress(ConnectionClosed):
            for i in range(200):
                await st.ws.send(json.dumps([2, f"f{i}", "Heartbeat", {}]))
        await asyncio.wait_for(st.ws.wait_closed(), 5)
        assert st.ws.close_code == 1008 and "rate" in (st.ws.close_reason or "")
        await wait_for(lambda: _is_offline(redis, "CP-1"))


async def _is_offline(redis: Redis, sid: str) -> bool:
    return await redis.hget(f"evfleet:station:{sid}", "online") == "0"


async def test_second_connection_replaces_the_first(node: CsmsNode, provision: Provision,
                                                    redis: Redis) -> None:
    await provision("CP-1")
    first = await RawStation.connect(node.url, "CP-1", PASSWORD)
    await first.ok("Heartbeat", {})
    second = await RawStation.connect(node.url, "CP-1", PASSWORD)
    await asyncio.wait_for(first.ws.wait_closed(), 5)
    assert first.ws.close_code == 1000 and "replaced" in (first.ws.close_reason or "")
    await second.ok("Heartbeat", {})
    await asyncio.sleep(0.1)  # the old handler's cleanup must not mark the station offline
    assert await redis.hget("evfleet:station:CP-1", "online") == "1"
    assert node.registry.get("CP-1") is not None and len(node.registry) == 1
    await second.close()
    await wait_for(lambda: _is_offline(redis, "CP-1"))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


async def test_security_profile_2_over_tls(redis_url: str, provision: Provision, redis: Redis,
                                           tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    settings = make_settings(redis_url, tls_cert=cert, tls_key=key)
    async with running_csms(settings, services=[]) as node:
        assert node.url.startswith("wss://")
        await provision("CP-TLS", security_profile=2)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        st = await RawStation.connect(node.url, "CP-TLS", PASSWORD, ssl_ctx=client_ctx)
        await st.ok("BootNotification", {"reason": "PowerUp",
                                         "chargingStation": {"model": "M", "vendorName": "V"}})
        assert await redis.hget("evfleet:station:CP-TLS", "security_profile") == "2"
        await st.close()
        # wrong password over TLS: still 401
        status, _, _ = await refused(node.station_url("CP-TLS"), subprotocols=["ocpp2.0.1"], ssl=client_ctx,
                                     additional_headers=auth("CP-TLS", "nope-nope"))
        assert status == 401
        # a client that does not trust the certificate cannot connect
        with pytest.raises(ssl.SSLCertVerificationError):
            await RawStation.connect(node.url, "CP-TLS", PASSWORD, ssl_ctx=ssl.create_default_context())


async def test_profile_2_station_refused_on_plain_listener(node: CsmsNode, provision: Provision) -> None:
    await provision("CP-TLS", security_profile=2)
    status, body, _ = await refused(node.station_url("CP-TLS"), subprotocols=["ocpp2.0.1"],
                                    additional_headers=auth("CP-TLS", PASSWORD))
    assert status == 401 and "TLS" in body


async def test_station_waiting_for_answers_is_slowed_not_disconnected(redis_url: str,
                                                                     provision: Provision) -> None:
    """An offline queue flushed one message at a time faster than the limit: throttled only."""
    settings = make_settings(redis_url, rate_limit_per_s=40, rate_limit_burst=5, flood_disconnect_after=10)
    async with running_csms(settings, services=[]) as node:
        await provision("CP-1")
        st = await RawStation.connect(node.url, "CP-1", PASSWORD)
        throttled_before = metrics.OCPP_THROTTLED._value.get()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(60):
            await st.ok("Heartbeat", {})
        assert loop.time() - t0 >= (60 - 5) / 40 * 0.9  # paced by the limiter
        assert metrics.OCPP_THROTTLED._value.get() - throttled_before > 10  # more than disconnect_after
        assert st.ws.close_code is None
        await st.close()
