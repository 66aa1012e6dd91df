"""Helpers for optimizer tests: tiny instances built from dicts."""

from __future__ import annotations

from typing import Any

from optimizer.problem import Instance


def make_instance(**overrides: Any) -> Instance:
    """A 1-hour-step instance with defaults that tests override."""
    base: dict[str, Any] = {
        "start": "2026-01-01T00:00:00Z",
        "step_minutes": 60,
        "steps": 2,
        "site": {"import_limit_kw": 100},
        "tariff": {"import_price": 0.1},
        "chargers": [],
        "evs": [],
    }
    base.update(overrides)
    return Instance.model_validate(base)


def ev(id: str, **kw: Any) -> dict[str, Any]:
    """An EV dict with sensible defaults (fixed to charger `c_<id>` unless given)."""
    out: dict[str, Any] = {
        "id": id,
        "charger": f"c_{id}",
        "arrival": 0,
        "departure": 2,
        "energy_kwh": 0,
        "max_kw": 10,
        "capacity_kwh": 50,
        "initial_kwh": 10,
    }
    out.update(kw)
    return out


def charger(id: str, max_kw: float = 10, bidirectional: bool = False) -> dict[str, Any]:
    """A charger dict."""
    return {"id": id, "max_kw": max_kw, "bidirectional": bidirectional}
