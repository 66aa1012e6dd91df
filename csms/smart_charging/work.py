"""Queue items of a site's serial task that are not stream events (`service`)."""

from __future__ import annotations

from enum import StrEnum


class Work(StrEnum):
    """Queue items that are not stream events."""

    RECONCILE = "reconcile"
    """Lease taken (start, take-over): the configured limit holds at once, then the plan."""
    TICK = "tick"
    DEFAULTS = "defaults"
    DEFAULTS_DONE = "defaults-done"
    """A wave of defaults answered (or one refused): starved provisional shares and blocked plans retry."""
    ASIDE_DONE = "aside-done"
    """A call beside the site's task (`aside`) was answered after a pass left its EVSE alone:
    blocked plans and starved provisional shares retry."""
    INTERIM = "interim"
    RESHARE = "reshare"
    """Sessions started or ended on a site in fallback mode: one re-share (`reshare_soon`)."""
    HANDOVER = "handover"
    """Hand the site's lease to a less loaded node (`balance`; payload: that node's token)."""
    ARRIVALS = "arrivals"
    """Needs flagged from a read of the stream (`flag_needs`): an idle site task serves them now."""
