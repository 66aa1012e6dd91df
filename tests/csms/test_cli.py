"""`evfleet stations / sites / idtokens` against a real Redis: effects and clear errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
import redis
import websockets
from typer.testing import CliRunner

from csms.app import CsmsNode
from csms.core.security import PasswordHash, verify_password
from evfleet.app.cli import app
from tests.csms.conftest import PASSWORD
from tests.csms.helpers import RawStation

runner = CliRunner()


def test_stations_add_list_compat_remove(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    out = runner.invoke(app, ["stations", "add", "CP-7", "--password", "secret-pw-7", "--site", "depot",
                              "--redis-url", redis_url])
    assert out.exit_code == 0, out.output
    cred = r.hgetall("evfleet:station:CP-7:cred")
    assert cred["scheme"] == "pbkdf2_sha256" and "secret-pw-7" not in json.dumps(cred)
    assert verify_password("secret-pw-7", PasswordHash.from_fields(cast(dict[str, str], cred)))
    assert r.sismember("evfleet:site:depot:stations", "CP-7")
    assert r.hget("evfleet:station:CP-7", "site_id") == "depot"
    listed = runner.invoke(app, ["stations", "list", "--json", "--redis-url", redis_url])
    rows = json.loads(listed.output)
    assert [row["station_id"] for row in rows] == ["CP-7"] and "hash" not in rows[0]
    assert runner.invoke(app, ["stations", "compat", "CP-7", "--on", "--redis-url", redis_url]).exit_code == 0
    assert r.hget("evfleet:station:CP-7", "compat") == "1"
    out = runner.invoke(app, ["sites", "set", "depot", "--limit-kw", "150", "--redis-url", redis_url])
    assert out.exit_code == 0
    assert r.hget("evfleet:site:depot", "limit_kw") == "150.0"
    assert runner.invoke(app, ["idtokens", "add", "CARD-9", "--redis-url", redis_url]).exit_code == 0
    assert r.hget("evfleet:idtoken:CARD-9", "status") == "Accepted"
    assert runner.invoke(app, ["stations", "remove", "CP-7", "--redis-url", redis_url]).exit_code == 0
    assert not r.sismember("evfleet:stations", "CP-7") and not r.exists("evfleet:station:CP-7:cred")
    r.close()


def test_cli_errors_are_messages_not_tracebacks(redis_url: str) -> None:
    cases = [
        (["stations", "add", "bad id", "--password", "secret-pw-7"], "invalid station id"),
        (["stations", "add", "CP-1", "--password", "short"], "password must be"),
        (["stations", "remove", "CP-404"], "unknown station"),
        (["sites", "set", "s1", "--limit-kw", "-5"], "must be > 0"),
        (["idtokens", "add", "X", "--status", "Maybe"], "status must be one of"),
    ]
    for args, message in cases:
        out = runner.invoke(app, [*args, "--redis-url", redis_url])
        assert out.exit_code != 0 and message in out.output, (args, out.output)
        assert "Traceback" not in out.output
    bad_url = runner.invoke(app, ["stations", "list", "--redis-url", "redis://127.0.0.1:1/0"])
    assert bad_url.exit_code == 1 and "Redis error" in bad_url.output


async def test_stations_remove_disconnects_a_connected_station(
        node: CsmsNode, redis_url: str, provision: Callable[..., Awaitable[None]]) -> None:
    await provision("CP-9")
    st = await RawStation.connect(node.url, "CP-9", PASSWORD)
    await st.ok("Heartbeat", {})
    args = ["stations", "remove", "CP-9", "--redis-url", redis_url]
    out = await asyncio.to_thread(runner.invoke, app, args)
    assert out.exit_code == 0, out.output
    assert "station CP-9 removed; disconnected from node test-node" in out.output
    await asyncio.wait_for(st.ws.wait_closed(), 5)
    assert st.ws.close_code == 1008 and st.ws.close_reason == "station removed"
    assert node.registry.get("CP-9") is None
    with pytest.raises(websockets.InvalidStatus):  # and it cannot come back
        await RawStation.connect(node.url, "CP-9", PASSWORD)
    r: Any = redis.Redis.from_url(redis_url, decode_responses=True)
    assert not r.sismember("evfleet:stations", "CP-9") and not r.exists("evfleet:station:CP-9")
    results = [json.loads(f["data"]) for _, f in r.xrange("evfleet:events") if f["type"] == "command.result"]
    assert [(d["action"], d["outcome"]) for d in results] == [("_Disconnect", "result")]
    r.close()


async def test_stations_remove_of_an_offline_station_sends_nothing(
        node: CsmsNode, redis_url: str, provision: Callable[..., Awaitable[None]]) -> None:
    await provision("CP-8")
    args = ["stations", "remove", "CP-8", "--redis-url", redis_url]
    out = await asyncio.to_thread(runner.invoke, app, args)
    assert out.exit_code == 0 and out.output.strip() == "station CP-8 removed"
    r: Any = redis.Redis.from_url(redis_url, decode_responses=True)
    assert not [f for _, f in r.xrange("evfleet:events") if f["type"] == "command.result"]
    assert r.llen("evfleet:node:test-node:commands") == 0
    r.close()
