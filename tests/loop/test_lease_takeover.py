"""A site whose node died is taken over by the next lease renewal, with or without events (issue 14:
a node SIGKILLed while its site's EVs kept charging left the site with no node acting for it)."""

from __future__ import annotations

from csms.smart_charging.service import Work
from evfleet.store.memory import InMemoryStateStore
from tests.loop.test_service_unit import SITE, FixedClock, Stations, _service


async def test_the_renewal_takes_over_the_site_of_a_node_that_died() -> None:
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "20"}
    store.sites["other"] = {"limit_kw": "20"}
    svc = _service(store, Stations(clock, 20_000.0), clock)
    store.leases[SITE] = store.leases["other"] = "node-b"
    assert not await svc.holds(SITE) and not await svc.holds("other")
    await svc.renew_leases()
    assert svc.held == set() and not svc.sites  # node-b is alive: nothing taken
    del store.leases[SITE]  # node-b died and the lease expired; no event of the site comes
    await svc.renew_leases()
    assert svc.held == {SITE} and store.leases[SITE] == "node-a" and store.leases["other"] == "node-b"
    assert svc.sites[SITE].queue.get_nowait() == (Work.RECONCILE, None)  # brought to its limit
    assert await svc.holds(SITE)
    for site in svc.sites.values():
        if site.task:
            site.task.cancel()
