"""Site leases of the smart-charging service (`service`): which node acts for a site.

A node acts only for the sites whose lease (`lease:smart-charging:{site}`, `SET NX PX`, TTL 15 s,
renewed every TTL / 3) it holds. The lease's value is the node's liveness *token*: its node id, or
``{node id}~{hex}`` after its liveness lapsed once (below). Every renewal also asks again for the
sites another node was found holding, so a lease that expired is taken within a TTL / 3.

Fast take-over (`steal_loop`; the figures here are for a liveness TTL of 4.5 s, the setting
`smart_charging_alive_ttl_s`, whose default, 10 s, keeps the 10 s stall tolerance of the 15 s
lease and takes over within about 10.3 s). Waiting for a dead node's leases to expire left its sites with no
node acting for them for 10-20 s after a SIGKILL: a limit lowered meanwhile was enforced only at
the take-over. So each node also keeps a liveness key (`Keys.node_alive`, value = its token, PX
`ALIVE_TTL_S`, compare-and-set refreshed every `ALIVE_REFRESH_S`), and every `STEAL_POLL_S` reads
the liveness keys of the nodes holding the leases it was refused. A lease whose holder's token it
once saw there and that is gone now (expired, or replaced by a new token) is taken by a
compare-and-set on the lease key alone ("still held by that token?", `StateStore.steal_leases`;
every command touches one key, so one slot on a Redis Cluster). Take-over: at most `ALIVE_TTL_S` +
`STEAL_POLL_S` (+ a round trip) after the holder's last refresh.

Why two nodes never act for one site (the timing invariant). A node acts without asking Redis
only while `trusted`: its lease was renewed (with its current token) less than TTL / 3 ago AND
its liveness key was set or refreshed, by a request sent at monotonic time `a`, less than
`ALIVE_TRUST_S` ago. That request ran in Redis at `w >= a`, so the key lives until at least
`w + ALIVE_TTL_S`: another node can see it gone, and steal, only after `a + ALIVE_TTL_S`, that is
at least `ALIVE_TTL_S - ALIVE_TRUST_S` (3.5 s) after the holder's trust ended (the clocks' rates
differ by far less). Once a token's key has expired it never comes back: the refresh is a
compare-and-set, and a node whose refresh fails drops every lease (`lease_lost`) and takes a new
token before it announces itself again, so it never renews a lease written with the old token
(it compares the value with its new token) and the stealer's compare-and-set and the node's own
take-over (it steals from its old token like any other node) are ordered on the lease key: one
wins. A renewal or take that was asked with a token the node has dropped meanwhile is ignored.
The expiry path is unchanged (TTL 15 s, trusted for TTL / 3).

Stalls. A node that stalls (a collection at 20,000 stations: 0.4-3.9 s) keeps its sites while the
stall is shorter than `ALIVE_TTL_S - ALIVE_REFRESH_S` (4.25 s): its key is still there when it
refreshes. On resume it does not act on trust it no longer has (`holds` refreshes first, and the
site task re-checks `holds` before each work item). A longer stall moves its sites to another
node (a RECONCILE there), and it learns so before it acts again. Only a node that stalls longer
than that *in the middle of* one work item can still send that item's remaining calls after the
take-over (with the 15 s lease alone that needed a 10 s stall).

`holds` answers from memory while `trusted`; a lease another node holds is asked for again only
after `LEASE_RECHECK_S`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from csms.smart_charging.work import Work
from evfleet.tasks import raise_if_cancelling

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)

LEASE_RECHECK_S = 1.0
"""How long a node takes another node's site lease as held without asking Redis again."""
ALIVE_TTL_S = 4.5
"""TTL of a node's liveness key: how long after its last refresh its leases can be taken (the
service's comes from the setting `smart_charging_alive_ttl_s`, default 10 s; figures in the
module doc are for 4.5 s)."""
ALIVE_REFRESH_S = 0.25
"""How often a node refreshes its liveness key (a stall under TTL - this keeps its sites)."""
ALIVE_TRUST_S = 1.0
"""How long after sending a successful refresh a node trusts it is alive without asking again
(must stay well under `ALIVE_TTL_S`: the difference is the margin of the invariant)."""
STEAL_POLL_S = 0.25
"""How often a node reads the liveness keys of the holders of the leases it was refused."""
TOKEN_SEP = "~"


@dataclass
class Liveness:
    """A node's liveness token and what it knows of the other holders' (module doc)."""

    node_id: str
    token: str = ""
    ttl_s: float = ALIVE_TTL_S
    refresh_s: float = ALIVE_REFRESH_S
    trust_s: float = ALIVE_TRUST_S
    poll_s: float = STEAL_POLL_S
    announced: bool = False
    fresh_until: float = 0.0
    """Monotonic time until which the node trusts its liveness key is there."""
    refreshed_at: float = 0.0
    """Monotonic time the last successful refresh (or announce) was sent: a lapse says how long
    before it the key was last extended, and how long the refresh that found it gone took."""
    holders: dict[str, str] = field(default_factory=dict)
    """site -> the token another holder had when last asked."""
    seen_alive: set[str] = field(default_factory=set)
    """Tokens whose liveness key this node has seen: only those are ever taken from."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.token = self.token or self.node_id


def node_of(token: str) -> str:
    """The node id of a lease holder's token."""
    return token.split(TOKEN_SEP, 1)[0]


def trusted(svc: SmartChargingService, site_id: str, mono: float) -> bool:
    """The node holds the site's lease without asking Redis (module doc: the invariant)."""
    return (site_id in svc.held and mono < svc._lease_fresh_until.get(site_id, 0.0)
            and mono < svc.liveness.fresh_until)


async def holds(svc: SmartChargingService, site_id: str, renew: bool = False, aside: bool = False) -> bool:
    """True if this node holds (or just took) the site's lease.

    Answered from memory while `trusted` (a lease runs a full TTL from before its renewal, and the
    liveness key `ALIVE_TTL_S` from before its refresh), so the stream loop does not pay a round
    trip per event; `renew` always asks. A node whose liveness trust ran out refreshes it first.
    A lease another node holds is asked for again only after `LEASE_RECHECK_S` (the idle node's
    stream loop asked Redis for every event of the other node's sites: 4 % of its CPU at 4,000
    stations).

    `aside` (the stream loop): a lease another node held, due to be asked for again, is asked for
    by a task beside the caller (`recheck_aside`), which gets False at once. On a busy node every
    round trip awaited in the stream loop is a turn of the whole event loop (0.3-0.6 s under load):
    one a second per foreign site put a node 60-76 s behind the stream. Taken there, the site is
    brought to its limit (`Work.RECONCILE`), as by the renewal."""
    mono = time.monotonic()
    if not renew and trusted(svc, site_id, mono):
        return True
    if not renew and site_id not in svc.held and mono < svc._lease_taken_until.get(site_id, 0.0):
        return False
    if aside and not renew and site_id not in svc.held and site_id in svc._lease_taken_until:
        recheck_aside(svc, site_id, mono)
        return False
    await ensure_alive(svc)
    if not renew and trusted(svc, site_id, time.monotonic()):
        return True
    token, seen = svc.liveness.token, dict[str, str]()
    held = await svc.store.hold_lease(site_id, token, int(svc.lease_ttl_s * 1000), seen)
    if token != svc.liveness.token:  # the node's liveness lapsed meanwhile: it asked as another
        return False
    if held:
        _held(svc, site_id, mono)
        return True
    _refused(svc, site_id, mono, seen)
    return False


def recheck_aside(svc: SmartChargingService, site_id: str, mono: float) -> None:
    """Ask for a lease another node held in a task of its own (at most one per site at a time);
    until it answers, the site counts as held elsewhere for another `lease_recheck_s`."""
    if site_id in svc.lease_rechecks:
        return
    svc._lease_taken_until[site_id] = mono + svc.lease_recheck_s
    task = asyncio.create_task(holds(svc, site_id, renew=True), name=f"smart-charging:recheck:{site_id}")
    svc.lease_rechecks[site_id] = task

    def done(t: asyncio.Task[bool]) -> None:
        svc.lease_rechecks.pop(site_id, None)
        if not t.cancelled() and t.exception() is not None:  # asked again at the next recheck or renewal
            log.warning("smart charging: lease recheck of site %s failed: %r", site_id, t.exception())

    task.add_done_callback(done)


async def lease_loops(svc: SmartChargingService) -> None:
    """The node's lease renewal, liveness refresh and liveness poll, until cancelled."""
    async with asyncio.TaskGroup() as loops:
        for loop in (renew_loop, alive_loop, steal_loop):
            loops.create_task(loop(svc), name=f"smart-charging:{loop.__name__}")


async def renew_loop(svc: SmartChargingService) -> None:
    """Renew the node's leases every TTL / 3 until cancelled."""
    while True:
        await asyncio.sleep(svc.lease_ttl_s / 3)
        await renew_leases(svc)
        raise_if_cancelling()  # redis-py can swallow a cancellation (evfleet.tasks)


async def renew_leases(svc: SmartChargingService) -> None:
    """Renew every held lease and ask for every lease another node held when last asked, in one
    batch (`StateStore.hold_leases`: a few round trips for all the node's sites, so a busy node
    renews them well within the TTL). A lease found lost is dropped as `holds` drops it; one
    found free (its holder died and it expired) is taken as `holds` takes it: the site is brought
    to its limit (`Work.RECONCILE`)."""
    sites = sorted(svc.held | set(svc._lease_taken_until))
    if not sites:
        return
    mono = time.monotonic()  # before asking: a renewed lease runs a full TTL from after this
    token, seen = svc.liveness.token, dict[str, str]()
    kept = await svc.store.hold_leases(sites, token, int(svc.lease_ttl_s * 1000), seen)
    if token != svc.liveness.token:  # lapsed meanwhile: renewed as a token the node dropped
        return
    for site_id in sites:
        if site_id in kept:
            _held(svc, site_id, mono)
        else:
            _refused(svc, site_id, mono, seen)


async def ensure_alive(svc: SmartChargingService) -> None:
    """Make sure the node's liveness key holds its token (refreshing it if the node's trust ran
    out; a lapsed key drops every lease: `_refresh`). While it is trusted, without waiting for the
    refresh loop's lock (held over that loop's round trip)."""
    if time.monotonic() < svc.liveness.fresh_until:
        return
    async with svc.liveness.lock:
        mono = time.monotonic()
        if mono >= svc.liveness.fresh_until:
            await _refresh(svc, mono)


async def alive_loop(svc: SmartChargingService) -> None:
    """Refresh the node's liveness key every `ALIVE_REFRESH_S` until cancelled."""
    while True:
        try:
            async with svc.liveness.lock:
                await _refresh(svc, time.monotonic())
        except Exception:  # Redis unreachable: trust runs out and `holds` asks again
            log.exception("smart charging: liveness refresh of %s failed", svc.node_id)
        raise_if_cancelling()  # redis-py can swallow a cancellation: the loop outlived its node
        await asyncio.sleep(svc.liveness.refresh_s)


async def _refresh(svc: SmartChargingService, mono: float) -> None:
    """Extend the liveness key (compare-and-set); if it lapsed, drop every lease and take a new
    token first (module doc), then announce it. `mono` is before the request."""
    live = svc.liveness
    ttl_ms = int(live.ttl_s * 1000)
    if live.announced and await svc.store.refresh_alive(live.node_id, live.token, ttl_ms):
        live.fresh_until = mono + live.trust_s
        live.refreshed_at = mono
        return
    if live.announced:
        # how long since the last extension, and how long this round trip took: an event-loop stall
        # shows as a long gap with a short round trip, Redis or its connection pool as a long one
        log.warning("smart charging: liveness of %s lapsed (a stall over %.1f s?): last extended %.1f s "
                    "before this refresh, which took %.1f s; its %d site leases are dropped and taken "
                    "again under a new token", svc.node_id, live.ttl_s, mono - live.refreshed_at,
                    time.monotonic() - mono, len(svc.held))
        for site_id in list(svc.held):
            lease_lost(svc, site_id)
            live.holders[site_id] = live.token  # its own old token: taken back by `steal_loop`
            svc._lease_taken_until[site_id] = 0.0
        live.token = f"{live.node_id}{TOKEN_SEP}{secrets.token_hex(4)}"
    await svc.store.announce_alive(live.node_id, live.token, ttl_ms)
    live.announced = True
    live.seen_alive.add(live.token)
    live.fresh_until = mono + live.trust_s
    live.refreshed_at = mono


async def steal_loop(svc: SmartChargingService) -> None:
    """Take the leases of holders whose liveness lapsed, every `STEAL_POLL_S` until cancelled."""
    while True:
        await asyncio.sleep(svc.liveness.poll_s)
        try:
            await steal_dead(svc)
        except Exception:  # Redis unreachable: the next poll asks again
            log.exception("smart charging: liveness poll of %s failed", svc.node_id)
        raise_if_cancelling()


async def steal_dead(svc: SmartChargingService) -> set[str]:
    """Read the liveness keys of the holders of the leases this node was refused, and take (by
    compare-and-set) each lease whose holder's token was seen alive and is gone now; returns the
    sites taken (each brought to its limit: `Work.RECONCILE`)."""
    live = svc.liveness
    if not live.holders:
        return set()
    tokens = await svc.store.alive_tokens(sorted({node_of(h) for h in live.holders.values()}))
    live.seen_alive.update(tokens.values())
    dead = {s: h for s, h in live.holders.items()
            if h in live.seen_alive and tokens.get(node_of(h)) != h and h != live.token}
    if not dead:
        return set()
    await ensure_alive(svc)
    mono, token = time.monotonic(), live.token
    taken = await svc.store.steal_leases(dead, token, int(svc.lease_ttl_s * 1000))
    for site_id in dead:
        if live.holders.get(site_id) == dead[site_id]:
            del live.holders[site_id]  # taken, or held by another now: the renewal asks again
    if token != live.token:  # lapsed meanwhile: taken as a token the node dropped (taken back later)
        return set()
    for site_id in sorted(taken):
        log.warning("smart charging: took site %s over from %s (its liveness lapsed)", site_id, dead[site_id])
        _held(svc, site_id, mono)
    return taken


def _held(svc: SmartChargingService, site_id: str, mono: float) -> None:
    """The site's lease was taken or renewed at `mono`: a new one brings the site to its limit."""
    svc._lease_fresh_until[site_id] = mono + svc.lease_ttl_s / 3
    svc._lease_taken_until.pop(site_id, None)
    svc.liveness.holders.pop(site_id, None)
    if site_id not in svc.held:  # taken or handed to this node: bring the site to its limit
        svc.held.add(site_id)
        svc.enqueue(site_id, Work.RECONCILE, None)


def _refused(svc: SmartChargingService, site_id: str, mono: float, seen: dict[str, str]) -> None:
    """Another holder has the site's lease (`seen`: its token, if the store said)."""
    lease_lost(svc, site_id)
    svc._lease_taken_until[site_id] = mono + svc.lease_recheck_s
    if site_id in seen:
        svc.liveness.holders[site_id] = seen[site_id]


async def may_act(svc: SmartChargingService, site_id: str) -> bool:
    """Whether the site's task may handle its next work item: not if the node lost the site's
    lease since the item was queued (a node that stalled past its trust asks again first, so it
    does not act on resume for a site another node took meanwhile). The item is then dropped,
    with the marks that keep a second such item from being queued (taken again, the site gets a
    RECONCILE). A site the node never asked for (unit tests driving the steps) is not checked."""
    if site_id in svc.held and not trusted(svc, site_id, time.monotonic()):
        await holds(svc, site_id)
    if site_id in svc.held or site_id not in svc._lease_taken_until:
        return True
    svc._tick_queued.discard(site_id)
    svc.defaults.done_queued.discard(site_id)
    svc.pacing.reshare_queued.discard(site_id)
    return False


def lease_lost(svc: SmartChargingService, site_id: str) -> None:
    """Another node acts for the site now: its calls beside the site task stop (`aside`)."""
    svc.held.discard(site_id)
    svc._lease_fresh_until.pop(site_id, None)
    svc.aside.cancel(site_id)
