"""Probes of refusing EVSEs (steerable=0), run by the watchdog (`watchdog.tick`): once an EVSE's
backoff has passed it is tried again, idle with its default (`defaults`), with a session with a
TxProfile at its maximum, sent beside the site's task (`aside`). A probe never raises the budget:
the EVSE counts at its maximum while it refuses, and the probe limits it to at most that."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from csms.smart_charging.evse import EvseInfo

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)


def refusing_due(svc: SmartChargingService, site_id: str, now_s: float) -> list[tuple[str, int]]:
    """The refusing EVSEs to read in this pass: all of them when the set changed since the last
    read or a retry fell due, else none (module `metered`, `probe_at`)."""
    members = frozenset(svc._refusing.get(site_id, set()))
    if not members:
        svc.metered.probe_at.pop(site_id, None)
        return []
    seen = svc.metered.probe_at.get(site_id)
    if seen is not None and seen[0] == members and now_s < seen[1]:
        return []
    return sorted(members)


async def probe_refusing(svc: SmartChargingService, site_id: str, refusing: list[tuple[str, int]],
                          infos: Mapping[str, EvseInfo], now_s: float) -> None:
    """Refusing EVSEs read in this pass: those steerable again leave the set, the rest are probed
    once their backoff passed; the earliest next retry is remembered."""
    for sid, eid in refusing:
        if infos[f"{sid}/{eid}"].steerable:
            svc._refusing.get(site_id, set()).discard((sid, eid))
    still = {k: v for k, v in infos.items() if (v.station_id, v.evse_id) in refusing}
    await probe(svc, site_id, still, now_s)
    left = frozenset(svc._refusing.get(site_id, set()))
    later = [i.retry_after_s for i in still.values() if not i.steerable and i.retry_after_s > now_s]
    svc.metered.probe_at[site_id] = (left, min(later) if len(later) == len(left) else now_s)


async def probe(svc: SmartChargingService, site_id: str, evses: Mapping[str, EvseInfo], now_s: float) -> None:
    """Try refusing EVSEs again once their backoff passed (idle: default; session: TxProfile at max).

    A probe never raises the budget: the EVSE is counted at its maximum while it refuses, and
    the probe limits it to at most that. Accepted -> steerable again, re-planned.
    """
    due = [i for i in evses.values() if not i.steerable and i.online and i.retry_after_s <= now_s]
    if not due:
        return
    idle = [i for i in due if not i.tx_ref]
    if idle:
        await svc.ensure_defaults(site_id)
    for info in due:
        if not info.tx_ref:
            continue
        top_w = max(info.electrical.max_power_w, info.metered_max_w)
        try:
            payload = svc._build(info, info.transaction_id, svc.clock.now(), 900, [top_w / 1000.0])
        except Exception as err:  # the probe of one EVSE must not stop the watchdog
            log.error("site %s: no probe for %s: %r", site_id, info.key, err)
            continue
        # beside the site's task (`aside`): a station that does not answer holds up nothing else
        svc.aside.start(svc, site_id, info, payload, f"probe-{int(now_s)}", "probe")
