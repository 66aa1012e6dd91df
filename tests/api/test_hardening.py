"""Operator-side hardening: security headers, revocation ends live feeds, slowloris-proof API,
strict id checks, no secrets in logs."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import time

import httpx
import pytest

from csms.api.site_inputs import InvalidSiteId, check_site_id
from csms.api.tokens import TokenStore
from csms.store.provisioning import ProvisioningError, validate_station_id
from evfleet.clock import RealClock
from evfleet.logs import RedactFilter, configure_logging, redact
from tests.api.conftest import KEYS, Tokens
from tests.api.harness import live_csms


async def test_security_headers_on_dashboard_api_and_docs(client: httpx.AsyncClient, tokens: Tokens) -> None:
    for path, headers in [("/", {}), ("/api/v1/stations", tokens.viewer), ("/static/app.js", {}),
                          ("/docs", {}), ("/api/v1/nothing-here", tokens.viewer)]:
        r = await client.get(path, headers=headers)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["x-frame-options"] == "DENY", path
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, path
        if path != "/docs":
            assert "'unsafe-inline'" not in csp and "script-src 'self'" in csp, (path, csp)


async def test_revoking_a_token_ends_its_open_live_feed(redis_url: str) -> None:
    async with live_csms(redis_url, ["CS-R"]) as live, httpx.AsyncClient(base_url=live.api_url) as http:
        store = TokenStore(live.redis, KEYS, RealClock())
        token, _ = await store.create("temp-viewer", "viewer")
        events: list[str] = []
        async with http.stream("GET", f"/api/v1/live?access_token={token}", timeout=20) as stream:
            lines = stream.aiter_lines()
            while "snapshot" not in events:
                line = await asyncio.wait_for(anext(lines), 10)
                if line.startswith("event: "):
                    events.append(line[7:])
            await store.revoke("temp-viewer")
            revoked_at = time.monotonic()
            async def rest() -> None:
                async for line in lines:
                    if line.startswith("event: "):
                        events.append(line[7:])
            await asyncio.wait_for(rest(), 10)  # the server ends the stream
            ended_after = time.monotonic() - revoked_at
        assert events[-1] == "revoked" and ended_after < 5, (events, ended_after)
        r = await http.get(f"/api/v1/live?access_token={token}")
        assert r.status_code == 401


async def test_slow_headers_and_idle_connections_are_closed(redis_url: str) -> None:
    async with live_csms(redis_url, ["CS-S"], api_header_timeout_s=1.0, api_keepalive_timeout_s=1.0) as live:
        port = int(live.api_url.rsplit(":", 1)[1])

        def slowloris() -> float:
            """Send a header line every 0.3 s; return when the server closes the connection."""
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                try:
                    for i in range(100):
                        sock.sendall(f"X-Slow-{i}: y\r\n".encode())
                        time.sleep(0.3)
                except OSError:
                    return time.monotonic() - started
            return time.monotonic() - started

        held = await asyncio.to_thread(slowloris)
        assert held < 5, f"a slowloris client held a connection for {held:.1f} s"

        def idle_after_request() -> float:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while b'{"ok":true}' not in answer:
                    chunk = sock.recv(4096)
                    assert chunk, answer
                    answer += chunk
                assert b"200 OK" in answer
                started = time.monotonic()
                assert sock.recv(4096) == b""  # closed by the server
                return time.monotonic() - started

        assert await asyncio.to_thread(idle_after_request) < 4
        async with httpx.AsyncClient(base_url=live.api_url) as http:  # normal clients still served
            assert (await http.get("/healthz")).status_code == 200


@pytest.mark.parametrize("bad", ["CP-1\n", "CP-1\r\n", "CP 1", "", "-CP", "x" * 49])
def test_station_ids_are_checked_to_the_end(bad: str) -> None:
    with pytest.raises(ProvisioningError):
        validate_station_id(bad)


@pytest.mark.parametrize("bad", ["depot\n", "depot/x", "", "x" * 65])
def test_site_ids_are_checked_to_the_end(bad: str) -> None:
    with pytest.raises(InvalidSiteId):
        check_site_id(bad)


async def test_site_id_with_trailing_newline_refused_by_the_api(client: httpx.AsyncClient,
                                                                tokens: Tokens) -> None:
    r = await client.put("/api/v1/sites/depot%0A/limit", json={"limit_kw": 50}, headers=tokens.operator)
    assert 400 <= r.status_code < 500, r.text


def test_url_passwords_never_reach_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    assert redact("mqtt://evfleet:s3cr3t@broker:1883/x") == "mqtt://evfleet:***@broker:1883/x"
    assert redact("redis://:hunter2@redis:6379/0 and rediss://u:p%40ss@h") == \
        "redis://:***@redis:6379/0 and rediss://u:***@h"
    configure_logging("INFO")
    try:
        logging.getLogger("evfleet.test").warning("connecting to %s", "redis://:hunter2@redis:6379/0")
        try:
            raise ConnectionError("cannot reach mqtt://csms:s3cr3t@broker")
        except ConnectionError:
            logging.getLogger("evfleet.test").exception("failed")
        err = capsys.readouterr().err
        assert "hunter2" not in err and "s3cr3t" not in err and "redis://:***@redis" in err
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_evfleet", False)]:
            root.removeHandler(handler)


def test_redact_filter_on_any_handler() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("evfleet.redact-test")
    logger.addHandler(handler)
    try:
        logger.error("mqtt url %s", "mqtts://csms:pw-123@mqtt:8883")
    finally:
        logger.removeHandler(handler)
    assert "pw-123" not in stream.getvalue() and "csms:***@mqtt" in stream.getvalue()
