"""MQTT bridge: publishes telemetry from the event stream, receives site limits and prices.

Three independent loops, so a broker outage never blocks anything else:

- `read_events`: XREAD from `$` on `{prefix}:events`; marks stations, sessions and sites
  stale (per `topics.EVENT_SUBJECTS`); once per tick loads each stale document once from
  Redis and puts its messages in the bounded `Outbox` (coalesced per topic, oldest dropped
  and counted when full). Every `site_every_s` it also refreshes all sites.
- `connect_loop`: connects to the broker, publishes `{prefix}/status` = online (last will:
  offline), subscribes to `sites/+/limit/set` and `sites/+/prices/set`, drains the outbox and
  handles inbound messages; on broker loss it reconnects with exponential backoff.
- inbound handling validates payloads (`inbound.parse_site_input`) and writes the same keys
  and events as the HTTP API (`SiteInputWriter`); a bad payload is logged, reported on
  `{prefix}/sites/{site}/{kind}/error` and changes nothing.

Stopping (cancelling `run`) publishes a retained `offline` (bounded: 2 s), disconnects and ends
within `STOP_TIMEOUT_S` even when aiomqtt swallowed the cancellation (Python 3.11's `wait_for`
race on a PUBACK: `evfleet.tasks`): each loop raises it again, and `run` stops its loops bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import aiomqtt
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from csms.api.reader import StateReader, read_new_events
from csms.api.site_inputs import PriceSeriesInput, SiteInputWriter, SiteLimitInput
from csms.api.views import session_summary
from csms.telemetry.inbound import InboundError, parse_site_input
from csms.telemetry.outbox import Message, Outbox
from csms.telemetry.topics import (
    EVENT_SUBJECTS,
    SESSION_MEASURES,
    SITE_MEASURES,
    STATION_MEASURES,
    Subject,
    Topics,
    format_value,
)
from evfleet.backoff import Backoff
from evfleet.events import Event
from evfleet.store.lag import StreamLag, track
from evfleet.tasks import raise_if_cancelling, stop_tasks

log = logging.getLogger(__name__)

MQTT_PUBLISHED = Counter("evfleet_mqtt_published_total", "MQTT messages published")
MQTT_DROPPED = Counter("evfleet_mqtt_dropped_total", "telemetry messages dropped (outbox full)")
MQTT_CONNECTED = Gauge("evfleet_mqtt_connected", "1 while connected to the MQTT broker")
MQTT_RECONNECTS = Counter("evfleet_mqtt_reconnects_total", "MQTT connection attempts after a loss")
MQTT_INBOUND = Counter("evfleet_mqtt_inbound_total", "inbound site inputs", ["kind", "result"])


STOP_GRACE_S = 3.0
"""`run` gives its loops this long to stop cleanly (`_say_offline` takes up to 2 s), then cancels again."""
STOP_TIMEOUT_S = 5.0
"""... and waits this long in all before it gives up on them (and logs where they are)."""


class MqttUrlError(ValueError):
    """The MQTT broker URL cannot be used."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_mqtt_url(url: str) -> BrokerAddress:
    """`mqtt://[user:pass@]host[:1883]` or `mqtts://...[:8883]`."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parsed.hostname:
        raise MqttUrlError(f"invalid MQTT URL {url!r}: use mqtt://host:port or mqtts://host:port")
    tls = parsed.scheme in ("mqtts", "ssl")
    try:
        port = parsed.port or (8883 if tls else 1883)
    except ValueError as err:
        raise MqttUrlError(f"invalid port in MQTT URL {url!r}") from err
    return BrokerAddress(parsed.hostname, port, parsed.username, parsed.password, tls)


@dataclass
class Stale:
    """Documents to republish at the next tick."""

    stations: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    sites: set[str] = field(default_factory=set)
    plans: set[str] = field(default_factory=set)
    all_sites: bool = False


def station_messages(topics: Topics, doc: dict[str, Any]) -> list[Message]:
    """Station JSON (retained) plus its plain-value measures."""
    sid = doc["station_id"]
    body = {k: doc.get(k) for k in ("station_id", "site_id", "status", "online", "power_kw", "last_seen",
                                    "firmware_version", "vendor", "model")}
    body["evses"] = [{"evse_id": e["evse_id"], "transaction_id": e["transaction_id"],
                      "power_kw": e.get("power_kw"), "connectors": e["connectors"]}
                     for e in doc.get("evses", [])]
    out = [Message(topics.station_status(sid), _json(body), retain=True)]
    out += [Message(topics.station_measure(sid, m.key), format_value(m.value_fn(doc)), retain=m.retain)
            for m in STATION_MEASURES]
    return out


def session_messages(topics: Topics, doc: dict[str, Any]) -> list[Message]:
    """Session JSON plus its plain-value measures."""
    sid, tx = doc["station_id"], doc["transaction_id"]
    summary = session_summary(doc)
    out = [Message(topics.session(sid, tx), _json(summary))]
    out += [Message(topics.session_measure(sid, tx, m.key), format_value(m.value_fn(summary)),
                    retain=m.retain) for m in SESSION_MEASURES]
    return out


def site_messages(topics: Topics, doc: dict[str, Any], ts: str) -> list[Message]:
    """Site power JSON (retained) plus its plain-value measures."""
    site = doc["site_id"]
    body = {"site_id": site, "power_kw": doc["power_kw"], "limit_kw": doc["limit_kw"],
            "headroom_kw": doc["headroom_kw"], "planned_kw": doc["planned_kw_now"],
            "active_sessions": doc["active_sessions"], "ts": ts}
    out = [Message(topics.site_power(site), _json(body), retain=True)]
    out += [Message(topics.site_measure(site, m.key), format_value(m.value_fn(doc)), retain=m.retain)
            for m in SITE_MEASURES]
    return out


def plan_message(topics: Topics, site_id: str, plan: Any) -> Message | None:
    """Summary of the optimizer's plan (retained)."""
    if not isinstance(plan, dict):
        return None
    body = {k: plan.get(k) for k in ("plan_id", "start", "step_s", "planned_kw", "limit_kw", "strategy",
                                     "status", "objective", "computed_at", "solve_s")}
    return Message(topics.site_plan(site_id), _json(body), retain=True)


def event_message(topics: Topics, event: Event) -> Message:
    """A notable event as JSON."""
    return Message(topics.event(event.type.value), _json({
        "type": event.type.value, "station_id": event.station_id or None, "evse_id": event.evse_id,
        "transaction_id": event.transaction_id or None, "tx_ref": event.tx_ref or None,
        "site_id": event.site_id or None,
        "ts": event.ts.isoformat(), "data": event.data}))


def _json(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str)


class MqttBridge:
    """Event stream -> MQTT topics, and MQTT site inputs -> Redis (see module docstring)."""

    def __init__(self, reader: StateReader, writer: SiteInputWriter, url: str, prefix: str = "evfleet",
                 client_id: str = "evfleet-csms", tick_s: float = 1.0, site_every_s: float = 10.0,
                 max_messages: int = 10_000, backoff_max_s: float = 30.0,
                 site_min_interval_s: float = 2.0) -> None:
        self.reader = reader
        self.writer = writer
        self.address = parse_mqtt_url(url)
        self.topics = Topics(prefix)
        self.client_id = client_id
        self.tick_s = tick_s
        self.site_every_s = site_every_s
        self.site_min_interval_s = site_min_interval_s
        self._sites_at = float("-inf")
        self.outbox = Outbox(max_messages)
        self.backoff_max_s = backoff_max_s
        self.connected = False
        self.connections = 0
        self.last_id = "$"
        self._stale = Stale(all_sites=True)

    # --- outbound ---------------------------------------------------------------------
    def enqueue(self, messages: Iterable[Message]) -> None:
        """Put messages in the outbox, counting drops."""
        for message in messages:
            if self.outbox.put(message):
                MQTT_DROPPED.inc()

    def note(self, event: Event) -> None:
        """Mark the documents an event makes stale (and queue notable events at once)."""
        for subject in EVENT_SUBJECTS.get(event.type, ()):
            if subject is Subject.STATION and event.station_id:
                self._stale.stations.add(event.station_id)
            elif subject is Subject.SESSION and event.tx_ref:
                self._stale.sessions.add(event.tx_ref)
            elif subject is Subject.SITE:
                if event.site_id:
                    self._stale.sites.add(event.site_id)
                else:
                    self._stale.all_sites = True
            elif subject is Subject.PLAN and event.site_id:
                self._stale.plans.add(event.site_id)
            elif subject is Subject.EVENT:
                self.enqueue([event_message(self.topics, event)])

    async def flush(self) -> None:
        """Load each stale document once and queue its messages."""
        stale, self._stale = self._stale, Stale()
        if stale.stations:
            for doc in await self.reader.stations(sorted(stale.stations)):
                self.enqueue(station_messages(self.topics, doc))
        if stale.sessions:
            for doc in await self.reader.sessions(sorted(stale.sessions)):
                self.enqueue(session_messages(self.topics, doc))
        now = asyncio.get_running_loop().time()
        if (stale.all_sites or stale.sites) and now - self._sites_at < self.site_min_interval_s:
            # session traffic makes sites stale every tick: publish them at most every interval
            self._stale.all_sites |= stale.all_sites
            self._stale.sites |= stale.sites
        elif stale.all_sites or stale.sites:
            self._sites_at = now
            ids = None if stale.all_sites else sorted(stale.sites)
            ts = self.reader.clock.now().isoformat()
            for doc in await self.reader.sites(ids):
                self.enqueue(site_messages(self.topics, doc, ts))
        for site in sorted(stale.plans):
            message = plan_message(self.topics, site, await self.reader.site_plan(site))
            if message:
                self.enqueue([message])

    async def read_events(self) -> None:
        """XREAD loop feeding `note`; flushes once per tick; refreshes all sites periodically."""
        loop = asyncio.get_running_loop()
        next_flush = loop.time()
        next_sites = loop.time() + self.site_every_s
        lag = track("mqtt_bridge")  # evfleet_stream_lag_seconds (evfleet.store.lag)
        try:
            await self._read_loop(lag, next_flush, next_sites)
        finally:
            lag.close()

    async def _read_loop(self, lag: StreamLag, next_flush: float, next_sites: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            raise_if_cancelling()
            try:
                block_ms = max(1, int((next_flush - loop.time()) * 1000))
                self.last_id, events = await read_new_events(
                    self.reader.redis, self.reader.keys.event_streams(), self.last_id, block_ms, lag=lag)
                for _entry_id, event in events:
                    self.note(event)
                now = loop.time()
                if now >= next_sites:
                    self._stale.all_sites = True
                    next_sites = now + self.site_every_s
                if now >= next_flush:
                    next_flush = now + self.tick_s
                    await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mqtt: reading events failed; retrying")
                await asyncio.sleep(1.0)

    # --- broker connection ---------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        a = self.address
        will = aiomqtt.Will(self.topics.bridge_status(), "offline", qos=1, retain=True)
        tls = None
        if a.tls:
            import ssl
            tls = ssl.create_default_context()
        return aiomqtt.Client(a.host, a.port, username=a.username, password=a.password,
                              identifier=self.client_id, will=will, keepalive=30, timeout=10, tls_context=tls)

    async def connect_loop(self) -> None:
        """Connect, serve, and reconnect with exponential backoff (full jitter) forever."""
        backoff = Backoff(0.5, self.backoff_max_s)
        while True:
            raise_if_cancelling()
            try:
                async with self._client() as client:
                    await client.subscribe(self.topics.site_input_set("limit"), qos=1)
                    await client.subscribe(self.topics.site_input_set("prices"), qos=1)
                    await client.publish(self.topics.bridge_status(), "online", qos=1, retain=True)
                    raise_if_cancelling()  # aiomqtt waits with wait_for: see evfleet.tasks
                    self.connected = True
                    self.connections += 1
                    MQTT_CONNECTED.set(1)
                    backoff.reset()
                    log.info("mqtt: connected to %s:%d", self.address.host, self.address.port)
                    await self._serve(client)
            except asyncio.CancelledError:
                raise
            except (aiomqtt.MqttError, OSError) as err:
                log.warning("mqtt: broker %s:%d unavailable (%s); retrying within %.1f s",
                            self.address.host, self.address.port, _reason(err), backoff.cap())
            finally:
                if self.connected:
                    MQTT_RECONNECTS.inc()
                self.connected = False
                MQTT_CONNECTED.set(0)
            await backoff.sleep()

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish and listen until one of them fails (the broker is lost: its error is raised) or
        until cancelled (clean shutdown: the retained `offline` goes out first).

        Two tasks and `asyncio.wait`, not a TaskGroup: in Python 3.11 a TaskGroup whose child fails
        while it waits in `__aexit__` cancels its parent and never uncancels it, so this task's
        `cancelling()` would stay raised through every reconnect (and `raise_if_cancelling` stop it).
        """
        tasks = [asyncio.create_task(self._publish(client), name="mqtt-publish"),
                 asyncio.create_task(self._listen(client), name="mqtt-listen")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # clean shutdown: the last will only covers a crash
            await _cancel_and_wait(tasks)
            await self._say_offline(client)
            raise
        await _cancel_and_wait(tasks)
        for task in done:
            task.result()  # neither returns: raises what ended it

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Publish the retained `offline` status before a clean disconnect (bounded: 2 s)."""
        try:
            async with asyncio.timeout(2):
                await client.publish(self.topics.bridge_status(), "offline", qos=1, retain=True)
        except (aiomqtt.MqttError, TimeoutError) as err:
            log.warning("mqtt: could not publish offline status on shutdown: %s", _reason(err))

    async def _publish(self, client: aiomqtt.Client) -> None:
        while True:
            await self.outbox.wait()
            message = self.outbox.take()
            if message is None:
                continue
            try:
                await client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
            except aiomqtt.MqttError:
                self.outbox.requeue(message)
                raise
            MQTT_PUBLISHED.inc()
            raise_if_cancelling()  # aiomqtt waits for the PUBACK with wait_for: see evfleet.tasks

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            raw = payload if isinstance(payload, bytes) else str(payload or "").encode()
            await self.handle_inbound(message.topic.value, raw)
            raise_if_cancelling()

    # --- inbound ----------------------------------------------------------------------
    async def handle_inbound(self, topic: str, payload: bytes) -> bool:
        """Validate and store one inbound site input; report errors on the error topic."""
        parsed_topic = self.topics.parse_input_topic(topic)
        if parsed_topic is None:
            return False
        site_id, kind = parsed_topic
        try:
            value = parse_site_input(site_id, kind, payload)
        except InboundError as err:
            MQTT_INBOUND.labels(kind, "invalid").inc()
            log.warning("mqtt: refused %s on %s: %s", kind, topic, err)
            self.enqueue([Message(self.topics.site_input_error(site_id, kind), _json({
                "error": str(err), "topic": topic, "payload": payload[:512].decode("utf-8", "replace"),
                "ts": self.reader.clock.now().isoformat()}), coalesce=False)])
            return False
        try:
            if isinstance(value.value, SiteLimitInput):
                data = await self.writer.set_limit(site_id, value.value, source="mqtt")
            else:
                assert isinstance(value.value, PriceSeriesInput)
                doc = await self.writer.set_prices(site_id, value.value, source="mqtt")
                data = {"start": doc["start"], "step_minutes": doc["step_minutes"],
                        "steps": len(doc["import_price"])}
        except RedisError as err:  # one MULTI: nothing was written
            MQTT_INBOUND.labels(kind, "error").inc()
            log.error("mqtt: could not store %s for site %s: %s", kind, site_id, err)
            self.enqueue([Message(self.topics.site_input_error(site_id, kind), _json({
                "error": f"not stored, Redis unavailable: {err}", "topic": topic,
                "ts": self.reader.clock.now().isoformat()}), coalesce=False)])
            return False
        MQTT_INBOUND.labels(kind, "accepted").inc()
        log.info("mqtt: %s for site %s accepted", kind, site_id, extra={"site": site_id, kind: data})
        self.enqueue([Message(self.topics.site_input_state(site_id, kind),
                              _json({**data, "ts": self.reader.clock.now().isoformat()}), retain=True)])
        return True

    async def run(self) -> None:
        """Run the event reader and the broker connection until cancelled; then stop both, bounded
        (`STOP_TIMEOUT_S`, even if a library swallowed a cancellation: `evfleet.tasks`)."""
        tasks = [asyncio.create_task(self.read_events(), name="mqtt-events"),
                 asyncio.create_task(self.connect_loop(), name="mqtt-connection")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # neither loop returns; an error ends the bridge (the supervisor restarts it)
        finally:
            await stop_tasks(tasks, STOP_TIMEOUT_S, "mqtt bridge tasks", grace_s=STOP_GRACE_S)
            MQTT_CONNECTED.set(0)


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


async def _cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the publish and listen tasks and give them `STOP_GRACE_S` to end (they re-raise a
    swallowed cancellation; `run` bounds the rest)."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=STOP_GRACE_S)
