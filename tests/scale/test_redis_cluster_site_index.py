"""The per-site station index on a 3-master Redis Cluster (sharded layout): a station and its sites
live in different slots, so a site change is the ordered, per-station-locked protocol of
`evfleet.store.site_index`, not one MULTI. After any sequence of concurrent provisions, moves and
removals, no station is missing from its site's index, and the reader agrees with the scan."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from evfleet.keys import Keys
from evfleet.store import site_index
from evfleet.store.client import connect_redis
from evfleet.store.site_index import change_site
from tests.csms.test_site_index import OP, SITES, STATIONS, assert_index_complete, run_ops
from tests.scale.redis_cluster import REDIS_SERVER

pytestmark = pytest.mark.skipif(not REDIS_SERVER, reason="redis-server not installed")
K = Keys("evfleet", 4)


def test_the_sites_and_stations_are_in_several_slots() -> None:
    """The precondition of the tests below: site changes cross slots (and masters)."""
    site_slots = {key_slot(K.site_stations(s).encode()) for s in SITES}
    assert len(site_slots) == 3 and {s // 5462 for s in site_slots} == {0, 1, 2}
    assert len({key_slot(K.station(s).encode()) for s in STATIONS} | site_slots) > 3


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(OP, min_size=1, max_size=4), min_size=1, max_size=6))
def test_after_any_sequence_on_a_cluster_no_station_is_missing_from_its_index(
        cluster_url: str, batches: list[list[tuple[str, str, str | None]]]) -> None:
    """Property on the cluster: concurrent operations (the lock serialises those of one station)
    leave every site's index equal to the scan; fails if a step of the ordered protocol is dropped."""
    asyncio.run(run_ops(cluster_url, K, batches, exact=True))


async def test_concurrent_moves_of_one_station_across_slots_keep_one_site(cluster_url: str) -> None:
    """Twenty concurrent moves of one station between sites on three masters: the station ends on
    exactly one site's index, the one its hash names."""
    redis = connect_redis(cluster_url)
    try:
        await redis.flushall()
        await change_site(redis, K, "CP-1", "north")
        await redis.sadd(K.stations(), "CP-1")
        await asyncio.gather(*(change_site(redis, K, "CP-1", SITES[i % 3]) for i in range(20)))
        await assert_index_complete(redis, K, exact=True)
    finally:
        await redis.aclose()



async def test_a_site_change_waits_for_the_stations_lock(cluster_url: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Site changes of one station never interleave on a cluster: while another change holds the
    station's lock, a change waits, and gives up after SITE_LOCK_WAIT_S without writing anything."""
    monkeypatch.setattr(site_index, "SITE_LOCK_WAIT_S", 0.2)
    redis = connect_redis(cluster_url)
    try:
        await redis.flushall()
        await change_site(redis, K, "CP-1", "north")
        await redis.set(K.station_site_lock("CP-1"), "other-writer", px=5_000)
        with pytest.raises(site_index.SiteChangeBusy):
            await change_site(redis, K, "CP-1", "south")
        assert await redis.hget(K.station("CP-1"), "site_id") == "north"
        assert not await redis.sismember(K.site_stations("south"), "CP-1")
        await redis.delete(K.station_site_lock("CP-1"))
        assert await change_site(redis, K, "CP-1", "south") == ("north", "south")
        assert not await redis.exists(K.station_site_lock("CP-1"))  # released by its holder
    finally:
        await redis.aclose()


async def test_the_fleet_loads_are_read_by_slot_on_a_cluster(cluster_url: str) -> None:
    """`StateReader.site_loads` reads the sessions' hashes by one script per slot (`hash_fields`):
    on three masters every session is counted at its site, none lost to a cross-slot script."""
    from csms.api.reader import StateReader
    from evfleet.clock import RealClock

    redis = connect_redis(cluster_url)
    try:
        await redis.flushall()
        refs = [f"CP-{i}:t{i}" for i in range(40)]
        assert len({key_slot(K.transaction(ref).encode()) for ref in refs}) > 1
        for i, ref in enumerate(refs):
            await redis.hset(K.transaction(ref), mapping={"station_id": f"CP-{i}", "power_w": "1000"})
            await redis.sadd(K.active_for(f"CP-{i}"), ref)
        site_of = {f"CP-{i}": SITES[i % 2] for i in range(40)}
        loads = await StateReader(redis, K, RealClock()).site_loads(site_of)
        assert loads == {SITES[0]: (20.0, 20), SITES[1]: (20.0, 20)}
    finally:
        await redis.aclose()
