"""Site-lease balancing (`service`): a node holding more than its fair share of the sites hands
the excess, one site at a time, to the least loaded live node.

Why. A node takes every site lease it finds free (`leases`): the first node to start took them
all, and kept them. Issue 14's production topology (5,000 stations, 101 sites, 2 nodes) ran with
one node acting for 93-101 sites: 2,000 us of CPU per message against 1,099 on the other, a
smart-charging stream lag of 4-92 s there, and every profile to a station connected to the other
node (half of them) a round trip through Redis through the busy node's loop.

The rule. Every `svc.balance_s` (0.5 s) each node lists the live nodes (`StateStore.live_nodes`:
announced, liveness key present) and reads the holder of every site lease it knows of
(`lease_holders`, one pipelined read). The fair share is ceil(sites / live nodes). A node holding
more than the fair share + `svc.lease_slack` picks one of its sites (the one with the fewest of its
stations connected to this node, so that sites move towards the nodes their stations connect to)
and queues a `Work.HANDOVER` for it, naming the live node with the fewest sites (if that one holds
fewer than the fair share). One hand-over at a time per node; the next is chosen after it ends.

The hand-over (`hand_over`, a step of the site's own serial task). Exactly one node acts for a
site at any instant, and during the hand-over none does:

1. the giver's site task finishes its current item (the step is an item of the site's queue); the
   site is handed only while quiet: nothing else in its queue (a limit change queued behind the
   step is enforced by the giver), no call beside the site task out (`aside`), no default profile
   in flight, no refusal or arrival waiting for its turn; else it is left, and not chosen again
   for `RETRY_AFTER_S`;
2. the giver rewrites the lease from its own token to the taker's by compare-and-set
   (`StateStore.steal_leases`: one key, one slot) and drops the site (`leases.lease_lost`) before
   its next await: from the compare-and-set on, the giver's site task drops every item
   (`leases.may_act`: the site is not held), and nothing else of the giver sends for the site;
3. the taker learns it at its next balance round (`pick_up`: a lease holding its own token that it
   does not hold), on the site's next `site.limit` event (asked at once, `intake.dispatch`), or on
   its next other event (`leases.holds`, after `LEASE_RECHECK_S`), by renewing the lease
   (`holds(renew=True)`: trusted only from that renewal on, as any lease), and runs the site's
   `Work.RECONCILE`: defaults, the limit in force, then the latest plan.

Meanwhile the stations keep the limits they last accepted, which are within the site limit (the
giver counted them so). A limit lowered during the hand-over is enforced by the taker's RECONCILE
as soon as the taker reads its `site.limit` event (its stream lag + a round trip + the pass), or,
if it read the event before the compare-and-set, at its next balance round (`BALANCE_S`); one
lowered before the hand-over step ran is enforced by the giver (its queue was not empty). Other
events of the site that arrive in between reach neither node's site queue; RECONCILE rereads what
they changed (state in Redis), as at any take-over (`site_task._on_reconcile` lists each kind: a
station that booted meanwhile gets its default again from its stored `booted_at`). A taker that
dies before it picks the site up leaves a lease holding its token, which the other nodes take when
its liveness lapses (`leases.steal_dead`), as any lease of a dead node.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter as MetricCounter

from csms.smart_charging import leases
from csms.smart_charging.work import Work
from evfleet.tasks import raise_if_cancelling

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)

BALANCE_S = 0.5
"""How often a node compares its share of the site leases with the others' (setting
`smart_charging_balance_s`; 0 turns balancing off)."""
LEASE_SLACK = 1
"""Sites a node may hold above the fair share before it hands one over (setting
`smart_charging_lease_slack`)."""

RETRY_AFTER_S = 5.0
"""A site whose hand-over was left (it was busy) is not chosen again for this long."""

HANDOVERS = MetricCounter("evfleet_smart_charging_handovers", "Site leases handed to or taken from "
                          "another node by balancing", ["direction"])


async def balance_loop(svc: SmartChargingService) -> None:
    """`balance` every `svc.balance_s` until cancelled (not at all when it is 0)."""
    if svc.balance_s <= 0:
        return
    while True:
        await asyncio.sleep(svc.balance_s)
        try:
            await balance(svc)
        except Exception:  # Redis unreachable: the next round asks again
            log.exception("smart charging: lease balancing of %s failed", svc.node_id)
        raise_if_cancelling()  # redis-py can swallow a cancellation (evfleet.tasks)


async def balance(svc: SmartChargingService) -> str | None:
    """One round (module doc): pick up the sites handed to this node, then hand one over if this
    node holds too many. Returns the site queued for a hand-over, if any."""
    live = await svc.store.live_nodes()
    token = svc.liveness.token
    if live.get(svc.node_id) != token:  # not announced (yet), or lapsed: no view to act on
        return None
    svc.liveness.seen_alive.update(live.values())  # a taker that dies is taken from (`steal_dead`)
    sites = sorted(svc.held | set(svc._lease_taken_until))
    holders = await svc.store.lease_holders(sites)
    await pick_up(svc, holders)
    if svc.handing is not None and svc.handing not in svc.held:
        svc.handing = None  # its lease went before the step ran (the step was dropped, `may_act`)
    if svc.handing is not None or len(live) < 2:
        return None
    count = Counter({node: 0 for node in live})
    for holder in holders.values():
        node = leases.node_of(holder) if holder else ""
        if node in live:
            count[node] += 1
    fair = math.ceil(len(sites) / len(live))
    if count[svc.node_id] <= fair + svc.lease_slack:
        return None
    taker = min((n for n in live if n != svc.node_id), key=lambda n: (count[n], n))
    if count[taker] >= fair:
        return None
    mono = time.monotonic()
    mine = [s for s in sites if holders.get(s) == token and leases.trusted(svc, s, mono)
            and svc.handover_after.get(s, 0.0) <= mono]
    if not mine:
        return None
    local = _local_stations(svc)
    site_id = min(mine, key=lambda s: (local.get(s, 0), s))
    svc.handing = site_id
    log.info("smart charging: %s holds %d of %d sites on %d live nodes (fair share %d + %d): hands "
             "site %s to %s (%d sites)", svc.node_id, count[svc.node_id], len(sites), len(live), fair,
             svc.lease_slack, site_id, taker, count[taker])
    svc.enqueue(site_id, Work.HANDOVER, live[taker])
    return site_id


async def pick_up(svc: SmartChargingService, holders: dict[str, str]) -> set[str]:
    """Take the sites whose lease another node handed to this one (it holds this node's token):
    renewed first, then trusted and reconciled like any lease taken (`leases.holds`)."""
    token = svc.liveness.token
    taken = set()
    for site_id, holder in holders.items():
        if holder == token and site_id not in svc.held and await leases.holds(svc, site_id, renew=True):
            taken.add(site_id)
            HANDOVERS.labels("taken").inc()
            log.info("smart charging: %s took site %s handed over by another node", svc.node_id, site_id)
    return taken


def quiet(svc: SmartChargingService, site_id: str) -> bool:
    """Nothing of the site runs beside its task or waits in its queue (module doc, step 1)."""
    site = svc.sites.get(site_id)
    return ((site is None or site.queue.empty()) and not svc.aside.tasks.get(site_id)
            and not svc.defaults.inflight.get(site_id) and site_id not in svc._refused
            and site_id not in svc.defaults.queued and not svc._provisional_due.get(site_id))


async def hand_over(svc: SmartChargingService, site_id: str, taker: Any) -> bool:
    """The site's `Work.HANDOVER` step: rewrite its lease to the taker's token and drop the site
    (module doc, steps 1-2); False when it was left (not quiet, not trusted, lease not ours)."""
    try:
        mono = time.monotonic()
        if not isinstance(taker, str) or not leases.trusted(svc, site_id, mono) or not quiet(svc, site_id):
            svc.handover_after[site_id] = mono + RETRY_AFTER_S  # busy: another site is chosen meanwhile
            return False
        token = svc.liveness.token
        taken = await svc.store.steal_leases({site_id: token}, taker, int(svc.lease_ttl_s * 1000))
        if site_id not in taken:  # no longer ours (it expired, or was taken): the renewal finds out
            return False
        leases.lease_lost(svc, site_id)
        svc._lease_taken_until[site_id] = time.monotonic() + svc.lease_recheck_s
        svc.liveness.holders[site_id] = taker
        HANDOVERS.labels("handed").inc()
        log.info("smart charging: %s handed site %s to %s", svc.node_id, site_id, leases.node_of(taker))
        return True
    finally:
        if svc.handing == site_id:
            svc.handing = None


def _local_stations(svc: SmartChargingService) -> dict[str, int]:
    """Stations connected to this node, per site (empty when the service has no registry)."""
    registry = getattr(svc.commands, "registry", None)
    if registry is None:
        return {}
    out: Counter[str] = Counter()
    for station_id in registry.station_ids():
        site = svc._station_site.get(station_id)
        if site is not None:
            out[site] += 1
    return dict(out)
