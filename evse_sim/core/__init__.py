"""Sans-IO core of a simulated station: state, physics, messages and reactions, no connection.

`StationCore` (`evse_sim.core.station`) is driven by `evse_sim.station.SimStation` over a
WebSocket, or directly by unit tests; `Outbox` is its outbound queue.
"""

from evse_sim.core.outbox import Outbox
from evse_sim.core.station import StationCore

__all__ = ["Outbox", "StationCore"]
