"""Fixtures: a csms node on a real private Redis, provisioned stations, raw station clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from csms.app import CsmsNode, running_csms
from csms.settings import CsmsSettings
from csms.store.provisioning import provision_station
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from tests.csms.helpers import RawStation

PASSWORD = "s3cret-pass"
TEST_ITERATIONS = 1000  # fast hashing in tests; production default is 100k


def make_settings(redis_url: str, **overrides: Any) -> CsmsSettings:
    """Settings for a test node on a free port, no side services."""
    base: dict[str, Any] = dict(redis_url=redis_url, host="127.0.0.1", port=0, node_id="test-node",
                                api_enabled=False, heartbeat_interval_s=60,
                                # raw test stations see exactly the CALLs a test sends
                                fetch_device_model_on_boot=False)
    base.update(overrides)
    return CsmsSettings(**base)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys("evfleet")


@pytest.fixture
async def node(redis_url: str) -> AsyncIterator[CsmsNode]:
    async with running_csms(make_settings(redis_url), services=[]) as n:
        yield n


@pytest.fixture
def provision(redis: Redis, keys: Keys) -> Callable[..., Awaitable[None]]:
    async def _provision(station_id: str, password: str = PASSWORD, **kwargs: Any) -> None:
        kwargs.setdefault("iterations", TEST_ITERATIONS)
        await provision_station(redis, keys, station_id, password, **kwargs)
    return _provision


@pytest.fixture
async def station(node: CsmsNode, provision: Callable[..., Awaitable[None]]) -> AsyncIterator[RawStation]:
    """A provisioned, connected and booted station CP-1."""
    await provision("CP-1", site_id="depot")
    st = await RawStation.connect(node.url, "CP-1", PASSWORD)
    await st.ok("BootNotification", {"reason": "PowerUp",
                                     "chargingStation": {"model": "M1", "vendorName": "V1"}})
    yield st
    await st.close()
