"""Names of every strategy `optimizer.solve.solve` accepts."""

from __future__ import annotations

from optimizer.baselines import BASELINES

OPTIMIZING = ("cost", "profit", "service_time")
"""Strategies that solve the LP/MILP with that objective kind."""

STRATEGIES: tuple[str, ...] = (*OPTIMIZING, *BASELINES)
"""All strategy names: the optimizing kinds, then the baselines."""


def is_baseline(name: str) -> bool:
    """True if `name` is a baseline (greedy heuristic), not an optimization."""
    return name in BASELINES
