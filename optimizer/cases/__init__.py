"""Instance generators for the seed papers' cases (pure functions returning an `Instance`).

`python -m optimizer.cases NAME [FILE]` writes one as JSON (stdout without FILE).
"""

from __future__ import annotations

from collections.abc import Callable

from optimizer.cases.seed001 import fleet
from optimizer.cases.seed002 import aggregator
from optimizer.cases.seed003 import company_fleet
from optimizer.cases.seed004 import shared_source
from optimizer.problem import Instance

CASES: dict[str, Callable[[], Instance]] = {
    "seed001_fleet278": fleet,
    "seed002_v2g_profit": aggregator,
    "seed003_company_fleet": company_fleet,
    "seed003_company_fleet_15min": lambda: company_fleet(step_minutes=15),
    "seed004_shared_source": shared_source,
}
"""Case name -> generator (default arguments reproduce the documented figures)."""
