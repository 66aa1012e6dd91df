"""deploy/ as shipped: Redis only with its password (and the csms works with that config),
Mosquitto without anonymous access and with the topic ACL (only the grid account may publish
site inputs, only the csms telemetry), compose and Kubernetes saying the same."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import redis as sync_redis
import yaml

from csms.app import running_csms
from csms.settings import CsmsSettings
from csms.store.embedded import find_redis_server, free_port
from csms.store.provisioning import provision_station, set_site_limit
from evfleet.keys import Keys, tx_ref
from evfleet.store.client import connect_redis
from tests.csms.helpers import RawStation
from tests.waiting import until

DEPLOY = Path(__file__).parents[1] / "deploy"
KEYS = Keys("evfleet")
PASSWORDS = {"csms": "csms-pw-Zk3", "grid": "grid-pw-Q81", "viewer": "viewer-pw-7Hd"}


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


@pytest.fixture
def deploy_redis() -> Iterator[str]:
    """redis-server with deploy/redis/redis.conf; only port, bind, dir and the password differ."""
    port, data = free_port(), tempfile.mkdtemp(prefix="evfleet-deploy-redis-")
    conf = Path(data) / "redis.conf"  # `dir /data` is applied while the file is read: point it here
    conf.write_text((DEPLOY / "redis/redis.conf").read_text().replace("dir /data", f"dir {data}"))
    proc = subprocess.Popen([find_redis_server(), str(conf), "--port", str(port),
                             "--bind", "127.0.0.1", "--requirepass", "redis-pw-9x"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, "redis-server")
        yield f"redis://:redis-pw-9x@127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(5)
        shutil.rmtree(data, ignore_errors=True)


def test_redis_refuses_clients_without_the_password_and_dangerous_commands(deploy_redis: str) -> None:
    port = int(deploy_redis.rsplit(":", 1)[1].split("/")[0])
    anonymous = sync_redis.Redis(port=port)
    with pytest.raises(sync_redis.AuthenticationError):
        anonymous.ping()
    with pytest.raises(sync_redis.AuthenticationError):
        sync_redis.Redis(port=port, password="wrong").ping()
    client = sync_redis.Redis.from_url(deploy_redis)
    assert client.ping()
    for command in ("CONFIG GET *", "FLUSHALL", "DEBUG SLEEP 0"):
        with pytest.raises(sync_redis.ResponseError, match="unknown command"):
            client.execute_command(command)
    text = (DEPLOY / "redis/redis.conf").read_text()
    assert "protected-mode no" not in text and not re.search(r"^requirepass", text, re.M)


async def test_csms_runs_on_the_deploy_redis(deploy_redis: str, caplog: pytest.LogCaptureFixture) -> None:
    redis = connect_redis(deploy_redis)
    await provision_station(redis, KEYS, "CP-D", "pw-station", iterations=1000)
    settings = CsmsSettings(redis_url=deploy_redis, host="127.0.0.1", port=0, node_id="deploy-node",
                            api_enabled=False, fetch_device_model_on_boot=False)
    async with running_csms(settings, services=[]) as node:
        st = await RawStation.connect(node.url, "CP-D", "pw-station")
        await st.ok("TransactionEvent", {"eventType": "Started", "timestamp": "2026-03-02T17:00:00Z",
                                         "triggerReason": "Authorized", "seqNo": 0,
                                         "transactionInfo": {"transactionId": "TX-D"},
                                         "evse": {"id": 1, "connectorId": 1}})
        await st.close()
    assert await redis.exists(KEYS.transaction(tx_ref("CP-D", "TX-D"))) == 1
    await redis.aclose()
    assert "redis-pw-9x" not in caplog.text


@contextlib.asynccontextmanager
async def deploy_mosquitto() -> AsyncIterator[int]:
    """Mosquitto started by deploy/mosquitto/entrypoint.sh with deploy/mosquitto/acl."""
    if not shutil.which("mosquitto_passwd") or not (shutil.which("mosquitto") or os.path.exists(
            "/usr/sbin/mosquitto")):
        pytest.skip("mosquitto not installed (scripts/setup.sh --dev installs it)")
    port, work = free_port(), Path(tempfile.mkdtemp(prefix="evfleet-deploy-mqtt-"))
    work.chmod(0o755)  # mosquitto started as root reads its files as the mosquitto user
    conf = (DEPLOY / "mosquitto/mosquitto.conf").read_text()
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/data/passwd", str(work / "passwd"))
    conf = conf.replace("/mosquitto/config/acl", str(DEPLOY / "mosquitto/acl"))
    (work / "mosquitto.conf").write_text(conf)
    env = {**os.environ, "MQTT_CSMS_PASSWORD": PASSWORDS["csms"], "MQTT_GRID_PASSWORD": PASSWORDS["grid"],
           "MQTT_VIEWER_PASSWORD": PASSWORDS["viewer"], "MOSQUITTO_PASSWD_FILE": str(work / "passwd"),
           "MOSQUITTO_CONF": str(work / "mosquitto.conf"),
           "PATH": os.environ.get("PATH", "") + ":/usr/sbin"}
    proc = subprocess.Popen(["sh", str(DEPLOY / "mosquitto/entrypoint.sh")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await asyncio.to_thread(_wait_port, port, proc, "mosquitto")
        yield port
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(work, ignore_errors=True)


def _client(port: int, user: str | None, **kwargs: Any) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, username=user, password=PASSWORDS.get(user or ""),
                          identifier=f"test-{user}-{time.monotonic_ns()}", **kwargs)


async def test_mosquitto_needs_a_login_and_only_grid_may_set_site_inputs(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with deploy_mosquitto() as port:
        with pytest.raises(aiomqtt.MqttError):  # no anonymous access
            async with _client(port, None):
                pass
        with pytest.raises(aiomqtt.MqttError):  # no wrong password
            async with aiomqtt.Client("127.0.0.1", port, username="grid", password="guess"):
                pass
        redis = connect_redis(redis_url)
        await set_site_limit(redis, KEYS, "depot", 50.0)
        settings = CsmsSettings(redis_url=redis_url, host="127.0.0.1", port=0, node_id="mqtt-node",
                                api_enabled=False, smart_charging=False,
                                mqtt_url=f"mqtt://csms:{PASSWORDS['csms']}@127.0.0.1:{port}")
        async with running_csms(settings, services=["csms.telemetry.service:run"]), \
                _client(port, "viewer") as viewer:
            await viewer.subscribe("evfleet/#")
            seen: list[str] = []
            payloads: list[tuple[str, bytes]] = []

            async def read() -> None:
                with contextlib.suppress(aiomqtt.MqttError):
                    async for message in viewer.messages:
                        seen.append(str(message.topic))
                        payloads.append((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]

            reader = asyncio.create_task(read())
            await until(lambda: "evfleet/status" in seen, 15, "csms telemetry reaches the viewer")
            # the viewer (and anyone but grid) cannot set a limit: the broker drops the message
            await viewer.publish("evfleet/sites/depot/limit/set", '{"limit_kw": 1}', qos=1)
            async with _client(port, "csms") as impostor:  # nor can the csms account itself
                await impostor.publish("evfleet/sites/depot/limit/set", '{"limit_kw": 2}', qos=1)
            await asyncio.sleep(1.5)
            assert await redis.hget(KEYS.site("depot"), "limit_kw") == "50.0"
            assert "evfleet/sites/depot/limit/set" not in seen
            async with _client(port, "grid") as grid:
                await grid.publish("evfleet/sites/depot/limit/set", '{"limit_kw": 42}', qos=1)
                await grid.publish("evfleet/sites/depot/power_kw", "999", qos=1)  # fake telemetry
            await until(lambda: _limit_is(redis, "42.0"), 10, "the grid account sets the limit")
            await until(lambda: ("evfleet/sites/depot/limit/state", b"") in
                        [(t, b"") for t, _ in payloads], 10, "the csms confirms the input")
            assert ("evfleet/sites/depot/power_kw", b"999") not in payloads  # dropped by the broker
            reader.cancel()
        await redis.aclose()
    assert PASSWORDS["csms"] not in caplog.text


async def _limit_is(redis: Any, value: str) -> bool:
    return bool(await redis.hget(KEYS.site("depot"), "limit_kw") == value)


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def _k8s() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s/evfleet.yaml").read_text()) if d]


def _strip(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_compose_keeps_redis_and_mosquitto_inside_with_passwords() -> None:
    services = _compose()["services"]
    assert "ports" not in services["redis"] and "ports" not in services["mosquitto"]
    assert "--requirepass" in " ".join(services["redis"]["command"])
    for name, service in services.items():
        env = service.get("environment") or {}
        if "EVFLEET_REDIS_URL" in env:
            assert env["EVFLEET_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD"), name
        if "EVFLEET_MQTT_URL" in env:
            assert env["EVFLEET_MQTT_URL"].startswith("mqtt://csms:${MQTT_CSMS_PASSWORD"), name
    assert not any("--redis-url" in str(s.get("command")) for s in services.values())


def test_k8s_says_what_the_deploy_files_say() -> None:
    docs = _k8s()
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    assert _strip(maps["redis-config"]["redis.conf"]) == _strip((DEPLOY / "redis/redis.conf").read_text())
    assert _strip(maps["mosquitto-config"]["acl"]) == _strip((DEPLOY / "mosquitto/acl").read_text())
    assert _strip(maps["mosquitto-config"]["mosquitto.conf"]) == \
        _strip((DEPLOY / "mosquitto/mosquitto.conf").read_text())
    assert "EVFLEET_REDIS_URL" not in maps["evfleet-config"]  # built from the Secret, per pod
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"]["matchLabels"] == {"app": "redis"} for p in policies)
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in d["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            if "EVFLEET_REDIS_URL" in env:
                assert env["EVFLEET_REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@")
                assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "evfleet-secrets"
            if container["name"] == "redis":
                assert "$(REDIS_PASSWORD)" in container["args"]


def _acl(user: str, access: str) -> list[str]:
    rules: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in _strip((DEPLOY / "mosquitto/acl").read_text()):
        words = line.split()
        if words[0] == "user":
            current = words[1]
        elif words[0] == "topic":
            rules.setdefault(current, []).append((words[1], words[2]))
    return [pattern for kind, pattern in rules.get(user, []) if kind in (access, "readwrite")]


def _matches(pattern: str, topic: str) -> bool:
    p, t = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(p) == len(t)


def test_acl_lets_the_csms_publish_every_topic_it_has() -> None:
    """Every topic `csms.telemetry.topics.Topics` can build is writable by `csms` and by nobody else
    but `csms`; a new topic without its ACL line fails here, not silently in production."""
    import inspect
    import itertools

    from csms.telemetry import topics as t
    from evfleet.events import EventType

    samples: dict[str, list[str]] = {
        "station_id": ["CS-1"], "site_id": ["depot"], "transaction_id": ["TX-1"],
        "event_type": [e.value for e in EventType], "kind": ["limit", "prices"],
    }
    keys = {"station_measure": t.STATION_MEASURES, "session_measure": t.SESSION_MEASURES,
            "site_measure": t.SITE_MEASURES}
    topics = t.Topics("evfleet")
    built: list[str] = []
    for name, method in inspect.getmembers(topics, inspect.ismethod):
        if name.startswith("_") or name in ("site_input_set", "parse_input_topic"):
            continue
        params = list(inspect.signature(method).parameters)
        values: list[list[str]] = []
        for param in params:
            if param == "key":
                values.append([m.key for m in keys[name]])
            else:
                assert param in samples, f"Topics.{name}({param}): add sample values to this test"
                values.append(samples[param])

        built += [method(*combo) for combo in itertools.product(*values)]
    assert len(built) > 20
    for topic in built:
        assert any(_matches(p, topic) for p in _acl("csms", "write")), f"csms may not publish {topic}"
        assert not any(_matches(p, topic) for p in _acl("grid", "write")), topic
    for kind in ("limit", "prices"):
        assert any(_matches(p, f"evfleet/sites/depot/{kind}/set") for p in _acl("grid", "write"))
        assert not any(_matches(p, f"evfleet/sites/depot/{kind}/set") for p in _acl("csms", "write"))
    assert _acl("viewer", "write") == []
