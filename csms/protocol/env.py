"""What every station handler on a node shares (built once by the server).

Public names: `NodeEnv`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from csms.settings import CsmsSettings
from csms.store.state import StateStore
from evfleet.clock import Clock
from evfleet.keys import Keys


@dataclass(frozen=True)
class NodeEnv:
    """Settings, clock and store handed to each `StationHandler`."""

    settings: CsmsSettings
    clock: Clock
    keys: Keys
    store: StateStore
    node_id: str
    boot_accepted: list[Callable[[str], None]] = field(default_factory=list)
    """Called with the station id once an Accepted BootNotification answer was sent (must not
    block: start a task). The node registers the device-model fetch here."""
