"""Stations connected to this node.

Public names: `Registry`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from csms import metrics

if TYPE_CHECKING:
    from csms.protocol.station import StationConnection


class Registry:
    """station id -> the current `StationConnection` (at most one per id)."""

    def __init__(self) -> None:
        self._handlers: dict[str, StationConnection] = {}

    def get(self, station_id: str) -> StationConnection | None:
        """The live handler of a station, or None."""
        return self._handlers.get(station_id)

    def replace(self, handler: StationConnection) -> StationConnection | None:
        """Make `handler` current for its station; returns the one it replaces."""
        old = self._handlers.get(handler.id)
        self._handlers[handler.id] = handler
        metrics.CONNECTED_STATIONS.set(len(self._handlers))
        return old

    def remove(self, handler: StationConnection) -> bool:
        """Forget `handler` if it is still current. True if it was."""
        if self._handlers.get(handler.id) is not handler:
            return False
        del self._handlers[handler.id]
        metrics.CONNECTED_STATIONS.set(len(self._handlers))
        return True

    def station_ids(self) -> list[str]:
        """Ids of connected stations."""
        return list(self._handlers)

    def handlers(self) -> list[StationConnection]:
        """Live handlers."""
        return list(self._handlers.values())

    def __len__(self) -> int:
        return len(self._handlers)
