"""How the smart-charging service reaches stations: in process when this node holds the station.

The service runs on every node and acts for the sites whose lease it holds; their stations are
mostly connected to the same node. Through Redis (`CommandClient`) one SetChargingProfile costs
a station lookup, a liveness check, an LPUSH, the executor's BRPOP, parsing, the reply's LPUSH and
the caller's BRPOP; at a fleet's boot (a TxDefaultProfile per EVSE) and at a wave of plug-ins
that is most of the node's work. `LocalFirst` hands a call for a station held here straight to
the executor's queue for that station (`CommandExecutor.call_local`: the same per-station FIFO,
schema check, timeout and `command.result` event as a call through Redis) and sends the others
through Redis. Answers mean the same either way (`CommandReply`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from csms.command_types import CommandReply
    from csms.protocol.commands import CommandExecutor
    from csms.protocol.registry import Registry


class Caller(Protocol):
    """What the service needs of a command client."""

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> CommandReply:
        """One CALL to a station and its reply (never raises for outcomes)."""
        ...


class LocalFirst:
    """Calls in process for the stations this node holds, else through `remote` (module doc)."""

    def __init__(self, remote: Caller, executor: CommandExecutor, registry: Registry) -> None:
        self.remote = remote
        self.executor = executor
        self.registry = registry

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> CommandReply:
        """The executor's own queue when the station is connected here, Redis otherwise."""
        if self.registry.get(station_id) is not None and not self.executor.stopping:
            return await self.executor.call_local(station_id, action, payload, timeout_s)
        return await self.remote.call(station_id, action, payload, timeout_s)
