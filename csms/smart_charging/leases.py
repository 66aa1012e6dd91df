"""Site leases of the smart-charging service (`service`): which node acts for a site.

A node acts only for the sites whose lease (`lease:smart-charging:{site}`, `SET NX PX`, renewed
every TTL / 3) it holds; `holds` answers from memory while a renewal is fresh, and a lease another
node holds is asked for again only after `LEASE_RECHECK_S`. Every renewal also asks again for the
sites another node was found holding, so the lease of a node that died is taken over within a
TTL / 3 of its expiry, whatever events the site has (before, only a plug-in, unplug, plan, boot or
limit event after the expiry made a node take it: a site whose EVs just kept charging was left
with no node acting for it, its new sessions unadmitted and its lowered limits not enforced)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from csms.smart_charging.work import Work

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

LEASE_RECHECK_S = 1.0
"""How long a node takes another node's site lease as held without asking Redis again."""


async def holds(svc: SmartChargingService, site_id: str, renew: bool = False) -> bool:
    """True if this node holds (or just took) the site's lease.

    A lease renewed less than a third of its TTL ago counts as held without asking Redis (it
    cannot have expired: it runs a full TTL from before the renewal), so the stream loop does
    not pay a round trip per event; `renew` always asks (the renewal loop, every TTL / 3). A lease
    another node holds is asked for again only after `LEASE_RECHECK_S` (the idle node's stream
    loop asked Redis for every event of the other node's sites: 4 % of its CPU at 4,000
    stations); a take-over after a node died is thus at most that much later."""
    mono = time.monotonic()
    if not renew and site_id in svc.held and mono < svc._lease_fresh_until.get(site_id, 0.0):
        return True
    if not renew and site_id not in svc.held and mono < svc._lease_taken_until.get(site_id, 0.0):
        return False
    if await svc.store.hold_lease(site_id, svc.node_id, int(svc.lease_ttl_s * 1000)):
        _held(svc, site_id, mono)
        return True
    lease_lost(svc, site_id)
    svc._lease_taken_until[site_id] = mono + svc.lease_recheck_s
    return False


async def renew_loop(svc: SmartChargingService) -> None:
    """Renew the node's leases every TTL / 3 until cancelled."""
    while True:
        await asyncio.sleep(svc.lease_ttl_s / 3)
        await renew_leases(svc)


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
    kept = await svc.store.hold_leases(sites, svc.node_id, int(svc.lease_ttl_s * 1000))
    for site_id in sites:
        if site_id in kept:
            _held(svc, site_id, mono)
        else:
            lease_lost(svc, site_id)
            svc._lease_taken_until[site_id] = mono + svc.lease_recheck_s


def _held(svc: SmartChargingService, site_id: str, mono: float) -> None:
    """The site's lease was taken or renewed at `mono`: a new one brings the site to its limit."""
    svc._lease_fresh_until[site_id] = mono + svc.lease_ttl_s / 3
    svc._lease_taken_until.pop(site_id, None)
    if site_id not in svc.held:  # taken or handed to this node: bring the site to its limit
        svc.held.add(site_id)
        svc.enqueue(site_id, Work.RECONCILE, None)


def lease_lost(svc: SmartChargingService, site_id: str) -> None:
    """Another node acts for the site now: its calls beside the site task stop (`aside`)."""
    svc.held.discard(site_id)
    svc._lease_fresh_until.pop(site_id, None)
    svc.aside.cancel(site_id)
