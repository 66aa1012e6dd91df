"""Stress: stop the MQTT bridge right after an inbound price, N times (not a test).

    .venv/bin/python benchmarks/bridge_stop_stress.py 300

What tests/telemetry/test_mqtt_broker.py::test_prices_over_mqtt_land_in_redis does, in a loop in one
process, against a private Mosquitto and redis-server: start a bridge, publish prices over MQTT,
wait until they are stored, cancel the bridge (while it publishes the prices' state message) and
wait up to 20 s for it to end. On Python 3.11 a cancellation that meets aiomqtt's publish
confirmation in one event-loop iteration was lost and the stop never ended (evfleet.tasks); on
78143af 6 of the first 24 stops hung at load 18-22. Prints how many stops hung, the median and
longest stop, how many swallowed cancellations the bridge re-raised, and the load.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

import csms.telemetry.bridge as bridge_module  # noqa: E402
from csms.api.reader import StateReader  # noqa: E402
from csms.api.site_inputs import SiteInputWriter  # noqa: E402
from csms.store.embedded import EmbeddedRedis  # noqa: E402
from evfleet.clock import RealClock  # noqa: E402
from evfleet.keys import Keys  # noqa: E402
from evfleet.tasks import describe  # noqa: E402
from tests.conftest import MqttBroker  # noqa: E402

KEYS = Keys("evfleet")
reraised = 0
_check = bridge_module.raise_if_cancelling


def _counting_check() -> None:
    global reraised
    try:
        _check()
    except asyncio.CancelledError:
        reraised += 1
        raise


bridge_module.raise_if_cancelling = _counting_check  # type: ignore[assignment]


async def one_stop(i: int, redis: Redis, broker: MqttBroker, watcher: aiomqtt.Client) -> tuple[float, bool]:
    """Seconds the stop took, and whether it ended within 20 s."""
    prefix = "s" + uuid.uuid4().hex[:8]
    clock = RealClock()
    await redis.delete(KEYS.site_prices("yard"))
    bridge = bridge_module.MqttBridge(StateReader(redis, KEYS, clock), SiteInputWriter(redis, KEYS, clock),
                                      broker.url, prefix=prefix, client_id=f"bridge-{i}")
    task = asyncio.create_task(bridge.run())
    deadline = time.monotonic() + 30
    while not bridge.connected:
        if time.monotonic() > deadline:
            raise RuntimeError("the bridge did not connect within 30 s")
        await asyncio.sleep(0.01)
    body = {"start": "2026-01-01T00:00:00Z", "step_minutes": 60, "import_price": [0.3, 0.1]}
    await watcher.publish(f"{prefix}/sites/yard/prices/set", json.dumps(body), qos=1)
    while not await redis.get(KEYS.site_prices("yard")):
        await asyncio.sleep(0.05 if i % 2 else 0.001)
    await redis.xrange(KEYS.events(), count=1)
    task.cancel()
    t0 = time.monotonic()
    done, _ = await asyncio.wait({task}, timeout=20)
    if not done:
        stuck = [t for t in asyncio.all_tasks() if t.get_name().startswith("mqtt")]
        print(f"stop {i} HUNG: " + "; ".join(describe(t) for t in stuck), flush=True)
    return time.monotonic() - t0, bool(done)


async def main(n: int) -> None:
    server = EmbeddedRedis().start()
    broker = MqttBroker().start()
    redis = Redis.from_url(server.url, decode_responses=True)
    hung, durations = 0, []
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="stress-watch") as watcher:
            for i in range(n):
                seconds, ended = await one_stop(i, redis, broker, watcher)
                durations.append(seconds)
                hung += not ended
    finally:
        await redis.aclose()
        broker.stop()
        server.stop()
    durations.sort()
    print(f"N={n} hung={hung} swallowed-cancellations-re-raised={reraised} "
          f"stop median={durations[len(durations) // 2]:.3f}s max={durations[-1]:.3f}s "
          f"load={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
