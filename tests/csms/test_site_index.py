"""The per-site station index (`evfleet.store.site_index`, `evfleet.store.sites.site_station_ids`):
every writer of a station's site keeps it, the reader reads a site's own stations only, leaves
stale members out, and rebuilds what a writer that bypassed the index left out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from csms.store.provisioning import ProvisioningConflict, move_station, provision_station, remove_station
from evfleet.keys import Keys
from evfleet.store import sites as sites_mod
from evfleet.store.client import connect_redis
from evfleet.store.sites import check_site_index, site_station_ids

K = Keys("evfleet")
STATIONS = ["CP-1", "CP-2", "CP-3", "CP-4"]
SITES = ["north", "south", "depot", "default"]


async def scan(redis: Any, keys: Keys, default_site: str = "default") -> dict[str, set[str]]:
    """The truth: every provisioned station by the site its hash names (the whole-fleet scan)."""
    out: dict[str, set[str]] = {}
    for sid in await redis.smembers(keys.stations()):
        site = await redis.hget(keys.station(sid), "site_id")
        out.setdefault(site or default_site, set()).add(sid)
    return out


async def assert_index_complete(redis: Any, keys: Keys, *, exact: bool) -> None:
    """No station is missing from the index of its site (`exact`: and no stale member either),
    read from the raw sets before any reader could repair them; and the reader agrees with the scan."""
    truth = await scan(redis, keys)
    for site in SITES:
        indexed = set(await redis.smembers(keys.site_stations(site)))
        assert truth.get(site, set()) <= indexed, f"{site}: missing {truth.get(site, set()) - indexed}"
        if exact:
            assert indexed == truth.get(site, set()), f"{site}: stale {indexed - truth.get(site, set())}"
    for site in SITES:
        assert await site_station_ids(redis, keys, site) == sorted(truth.get(site, set()))


OP = st.one_of(
    st.tuples(st.just("provision"), st.sampled_from(STATIONS), st.sampled_from([None, *SITES])),
    st.tuples(st.just("move"), st.sampled_from(STATIONS), st.sampled_from(SITES)),
    st.tuples(st.just("remove"), st.sampled_from(STATIONS), st.none()),
)


async def apply(redis: Redis, keys: Keys, op: tuple[str, str, str | None]) -> None:
    """One provisioning operation, as the CLI and the API run it."""
    kind, sid, site = op
    if kind == "provision":
        await provision_station(redis, keys, sid, "s3cret-pass", site, iterations=1000)
    elif kind == "move" and await redis.sismember(keys.stations(), sid):
        with contextlib.suppress(ProvisioningConflict):  # removed by a concurrent operation
            await move_station(redis, keys, sid, site or "default")
    elif kind == "remove":
        await remove_station(redis, keys, sid)


async def run_ops(url: str, keys: Keys, batches: list[list[tuple[str, str, str | None]]], *,
                  exact: bool) -> None:
    """Each batch of operations runs concurrently; the index is checked after each batch."""
    redis = connect_redis(url)
    try:
        await redis.flushall()
        for batch in batches:
            await asyncio.gather(*(apply(redis, keys, op) for op in batch))
            await assert_index_complete(redis, keys, exact=exact)
    finally:
        await redis.aclose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(OP, min_size=1, max_size=4), min_size=1, max_size=8))
def test_after_any_provision_move_remove_sequence_the_index_equals_the_scan(
        redis_url: str, batches: list[list[tuple[str, str, str | None]]]) -> None:
    """Property: concurrent provisions (new site, kept site, default), moves and removals leave
    every site's index equal to the scan of the station hashes (one server: WATCH/MULTI, exact).
    Fails if a writer forgets the index, updates it from a stale read, or a reader repairs it."""
    asyncio.run(run_ops(redis_url, K, batches, exact=True))


async def test_a_site_pass_reads_its_own_stations_not_the_fleet(
        redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first check, a read of a 5-station site looks up 5 station hashes, not 200."""
    pipe = redis.pipeline(transaction=False)
    for i in range(200):
        site = "small" if i < 5 else "big"
        pipe.hset(K.station(f"S{i:03d}"), "site_id", site).sadd(K.site_stations(site), f"S{i:03d}")
        pipe.sadd(K.stations(), f"S{i:03d}")
    await pipe.execute()
    looked_up: list[int] = []
    real = sites_mod._station_fields  # what the check (`station_sites`) and the read look up through

    async def counting(r: Any, keys: Keys, ids: Any, text: str) -> list[Any]:
        looked_up.append(len(ids))
        return await real(r, keys, ids, text)

    monkeypatch.setattr(sites_mod, "_station_fields", counting)
    assert await site_station_ids(redis, K, "small") == [f"S{i:03d}" for i in range(5)]
    assert looked_up == [200, 5]  # the first call per client checks the index against the fleet
    looked_up.clear()
    assert len(await site_station_ids(redis, K, "small")) == 5
    assert looked_up == [5]


async def test_stale_members_are_left_out(redis: Redis) -> None:
    """A member whose hash names another site, or whose hash is gone, is not a station of the site."""
    await provision_station(redis, K, "CP-1", "s3cret-pass", "north", iterations=1000)
    await provision_station(redis, K, "CP-2", "s3cret-pass", "south", iterations=1000)
    await redis.sadd(K.site_stations("north"), "CP-2", "GONE")
    assert await site_station_ids(redis, K, "north") == ["CP-1"]
    assert await site_station_ids(redis, K, "south") == ["CP-2"]


async def test_a_station_written_past_the_index_is_added_and_logged(
        redis: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A writer that sets a station's site without the index (an old version, a script): the
    periodic check adds it, logs it, and from then on the site's limit counts it."""
    await provision_station(redis, K, "CP-1", "s3cret-pass", "north", iterations=1000)
    assert await site_station_ids(redis, K, "north") == ["CP-1"]
    await redis.hset(K.station("CP-9"), "site_id", "north")  # past the index
    await redis.sadd(K.stations(), "CP-9")
    assert await site_station_ids(redis, K, "north") == ["CP-1"]  # within INDEX_CHECK_S: not yet
    monkeypatch.setattr(sites_mod, "INDEX_CHECK_S", 0.0)
    with caplog.at_level(logging.WARNING, logger="evfleet.store.sites"):
        assert await site_station_ids(redis, K, "north") == ["CP-1", "CP-9"]
    assert "CP-9" in caplog.text and "missing from their site's index" in caplog.text
    assert await redis.sismember(K.site_stations("north"), "CP-9")


async def test_check_rebuilds_the_index_of_a_redis_written_before_it(redis: Redis) -> None:
    """Migration: station hashes with no site index (and one with no site_id: the default site)
    get the index the reader needs, once; a second check adds nothing."""
    pipe = redis.pipeline(transaction=False)
    for sid, site in [("CP-1", "north"), ("CP-2", "north"), ("CP-3", "south"), ("CP-4", "")]:
        pipe.hset(K.station(sid), mapping={"online": "0", **({"site_id": site} if site else {})})
        pipe.sadd(K.stations(), sid)
    await pipe.execute()
    added = await check_site_index(redis, K, "depot")
    assert added == {"north": ["CP-1", "CP-2"], "south": ["CP-3"], "depot": ["CP-4"]}
    assert await check_site_index(redis, K, "depot") == {}
    assert await site_station_ids(redis, K, "depot", "depot") == ["CP-4"]


async def test_passes_that_start_during_the_first_check_wait_for_it(redis: Redis) -> None:
    """Start-up on a Redis written before the index: site passes that run while the first check
    builds it wait for it, so none sees a site without its stations."""
    pipe = redis.pipeline(transaction=False)
    for i in range(300):
        pipe.hset(K.station(f"S{i:03d}"), "site_id", f"site-{i % 3}").sadd(K.stations(), f"S{i:03d}")
    await pipe.execute()
    reads = await asyncio.gather(*(site_station_ids(redis, K, f"site-{i % 3}") for i in range(12)))
    assert [len(r) for r in reads] == [100] * 12
