"""Attributes every block mixin may use (provided by `StationHandler`).

Public names: `BlockBase`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from csms.protocol.env import NodeEnv


class BlockBase:
    """Typing base of the functional-block mixins."""

    id: str
    env: NodeEnv
    site_id: str
    payload: dict[str, Any]
    booted: asyncio.Event
    """Set once a BootNotification was accepted on this connection."""

    def after_answer(self, callback: Callable[[], None]) -> None:
        """Run `callback` right after the answer to the CALL being handled was sent."""
        raise NotImplementedError  # StationHandler provides it

    def now_iso(self) -> str:
        """Clock time as ISO 8601 UTC."""
        return self.env.clock.now().isoformat()
