"""The per-station sets of active transaction refs on a 3-master Redis Cluster (sharded layout):
each set lives in its station's slot with its shard's `tx:active`, so the TransactionEvent script
and the check change both in one slot; after any sequence of concurrent transactions and checks,
each station's set equals its members of `tx:active`."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from evfleet.keys import Keys
from tests.csms.test_active_index import OP, STATIONS, Op, run_ops
from tests.scale.redis_cluster import REDIS_SERVER

pytestmark = pytest.mark.skipif(not REDIS_SERVER, reason="redis-server not installed")
K = Keys("evfleet", 4)


def test_each_set_shares_its_stations_slot_and_the_stations_span_masters() -> None:
    """The precondition: one slot per script, and the stations on more than one master."""
    for sid in STATIONS:
        assert key_slot(K.station_active(sid).encode()) == key_slot(K.active_for(sid).encode())
    assert len({key_slot(K.station(sid).encode()) // 5462 for sid in STATIONS}) > 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(OP, min_size=1, max_size=6), min_size=1, max_size=6))
def test_after_any_concurrent_transactions_on_a_cluster_each_set_matches(
        cluster_url: str, batches: list[list[Op]]) -> None:
    """Property on the cluster (fails if a write of a station's set is dropped)."""
    asyncio.run(run_ops(cluster_url, K, batches))
