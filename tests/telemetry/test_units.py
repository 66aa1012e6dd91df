"""Pure parts of the MQTT bridge: outbox, inbound parsing, topic table."""

from __future__ import annotations

import json

import pytest

from csms.telemetry.bridge import MqttUrlError, parse_mqtt_url, session_messages, site_messages
from csms.telemetry.inbound import InboundError, parse_site_input
from csms.telemetry.outbox import Message, Outbox
from csms.telemetry.topics import EVENT_SUBJECTS, Subject, Topics, format_value
from evfleet.events import EventType


def test_outbox_coalesces_by_topic_and_drops_oldest_when_full() -> None:
    box = Outbox(max_messages=3)
    for i in range(3):
        box.put(Message(f"t/{i}", str(i)))
    box.put(Message("t/1", "newer"))  # replaces in place, keeps its position
    assert box.coalesced == 1 and box.dropped == 0
    assert box.put(Message("t/3", "3")) == 1  # full: t/0 (oldest) goes
    assert box.dropped == 1
    taken = [box.take() for _ in range(3)]
    assert [(m.topic, m.payload) for m in taken if m] == [("t/1", "newer"), ("t/2", "2"), ("t/3", "3")]
    assert box.take() is None


def test_outbox_requeue_puts_a_failed_message_first_unless_superseded() -> None:
    box = Outbox(4)
    box.put(Message("a", "1"))
    box.put(Message("b", "1"))
    first = box.take()
    assert first is not None
    box.requeue(first)
    assert box.take() == Message("a", "1")
    box.put(Message("b", "2"))
    box.requeue(Message("b", "old"))
    assert box.take() == Message("b", "2")


def test_outbox_keeps_every_event_on_a_topic_but_only_the_latest_state() -> None:
    box = Outbox(max_messages=5)
    for i in range(3):  # three refused inputs on one error topic: each one is news
        box.put(Message("s/limit/error", f"e{i}", coalesce=False))
    box.put(Message("s/power", "1"))
    box.put(Message("s/power", "2"))  # state: the newer value replaces the waiting one
    taken = [box.take() for _ in range(4)]
    assert [m.payload for m in taken if m] == ["e0", "e1", "e2", "2"]
    assert box.take() is None
    for i in range(7):  # still bounded: the oldest events go first
        box.put(Message("s/limit/error", f"x{i}", coalesce=False))
    assert len(box) == 5 and box.dropped == 2
    first = box.take()
    assert first is not None and first.payload == "x2"
    box.requeue(first)
    assert len(box) == 5 and box.take() == first


@pytest.mark.parametrize(("payload", "limit"), [(b'{"limit_kw": 42.5}', 42.5), (b"17", 17.0)])
def test_limit_payloads(payload: bytes, limit: float) -> None:
    parsed = parse_site_input("depot", "limit", payload)
    assert parsed.value.limit_kw == limit  # type: ignore[union-attr]


@pytest.mark.parametrize(("site", "kind", "payload", "reason"), [
    ("depot", "limit", b"not json", "not JSON"),
    ("depot", "limit", b'{"limit_kw": -1}', "greater than 0"),
    ("depot", "limit", b"true", "must be a number"),
    ("depot", "limit", b'{"limit": 5}', "limit_kw"),
    ("bad site", "limit", b"5", "invalid site id"),
    ("depot", "prices", b'{"start": "2026-01-01T00:00:00Z", "step_minutes": 15}', "import_price"),
    ("depot", "prices", b'{"start": "2026-01-01", "step_minutes": 15, "import_price": [1]}', "timezone"),
    ("depot", "limit", b"\xff\xfe", "not JSON"),
    ("depot", "limit", b'{"limit_kw": NaN}', "NaN"),
    ("depot", "limit", b"Infinity", "NaN, Infinity"),
    ("depot", "limit", b'{"limit_kw": 1e400}', "out of range"),
    ("depot", "limit", b"[" * 100_000, "nested deeper than 32"),
    ("depot", "prices", b'{"start": "2026-01-01T00:00:00Z", "step_minutes": 15, "import_price": [NaN]}',
     "NaN"),
])
def test_bad_inbound_payloads_are_refused_with_a_reason(site: str, kind: str, payload: bytes,
                                                        reason: str) -> None:
    with pytest.raises(InboundError, match=reason):
        parse_site_input(site, kind, payload)


def test_topics_and_input_topic_parsing() -> None:
    t = Topics("fleet")
    assert t.station_status("CS-1") == "fleet/stations/CS-1/status"
    assert t.session("CS-1", "TX1") == "fleet/sessions/CS-1/TX1"
    assert t.session("CS-1", "a/b+#") == "fleet/sessions/CS-1/a%2Fb%2B%23"  # no extra level, no wildcard
    assert t.site_power("depot") == "fleet/sites/depot/power"
    assert t.event("tx.started") == "fleet/events/tx/started"
    assert t.parse_input_topic("fleet/sites/depot/limit/set") == ("depot", "limit")
    assert t.parse_input_topic("fleet/sites/depot/prices/set") == ("depot", "prices")
    assert t.parse_input_topic("fleet/sites/depot/limit") is None
    assert t.parse_input_topic("other/sites/depot/limit/set") is None
    assert format_value(None) == "" and format_value(1.5) == "1.5" and format_value("x") == "x"


def test_every_event_that_changes_telemetry_is_mapped() -> None:
    assert Subject.SESSION in EVENT_SUBJECTS[EventType.METER_VALUES]
    assert Subject.SITE in EVENT_SUBJECTS[EventType.METER_VALUES]
    assert Subject.STATION in EVENT_SUBJECTS[EventType.CONNECTOR_STATUS]
    assert Subject.SITE in EVENT_SUBJECTS[EventType.SITE_LIMIT]
    assert Subject.PLAN in EVENT_SUBJECTS[EventType.SCHEDULE_PLANNED]


def test_documents_fan_out_to_json_and_measure_topics() -> None:
    t = Topics("evfleet")
    site = {"site_id": "depot", "power_kw": 11.0, "limit_kw": 50.0, "headroom_kw": 39.0,
            "planned_kw_now": 20.0, "active_sessions": 1}
    msgs = {m.topic: m for m in site_messages(t, site, "2026-01-01T00:00:00+00:00")}
    assert json.loads(msgs["evfleet/sites/depot/power"].payload)["power_kw"] == 11.0
    assert msgs["evfleet/sites/depot/power"].retain
    assert msgs["evfleet/sites/depot/limit_kw"].payload == "50.0"
    session = {"station_id": "CS1", "transaction_id": "TX1", "power_kw": 7.4, "energy_kwh": 3.2, "soc": 55.0,
               "current_a": 10.7,
               "progress": 0.5, "applied_profile": {"limit_w": 7400}}
    smsgs = {m.topic: m.payload for m in session_messages(t, session)}
    assert smsgs["evfleet/sessions/CS1/TX1/power_kw"] == "7.4"
    assert smsgs["evfleet/sessions/CS1/TX1/applied_limit_kw"] == "7.4"
    assert json.loads(smsgs["evfleet/sessions/CS1/TX1"])["soc"] == 55.0


def test_mqtt_urls() -> None:
    assert parse_mqtt_url("mqtt://127.0.0.1:1999").port == 1999
    assert parse_mqtt_url("mqtts://u:p@broker").port == 8883
    with pytest.raises(MqttUrlError):
        parse_mqtt_url("http://broker")
