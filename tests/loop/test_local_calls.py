"""`LocalFirst`: the smart-charging service's calls to stations held by its own node go straight
to the node's executor queue; the others go through Redis (stand-ins, no sockets)."""

from __future__ import annotations

from typing import Any

from csms.command_types import CommandReply, Outcome
from csms.smart_charging.calls import LocalFirst


def _reply(station_id: str, how: str) -> CommandReply:
    return CommandReply(request_id=how, station_id=station_id, action="SetChargingProfile",
                        outcome=Outcome.RESULT, payload={"status": "Accepted"})


class Remote:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> CommandReply:
        self.calls.append(station_id)
        return _reply(station_id, "redis")


class Executor:
    stopping = False

    def __init__(self) -> None:
        self.calls: list[tuple[str, float | None]] = []

    async def call_local(self, station_id: str, action: str, payload: dict[str, Any],
                         timeout_s: float | None = None) -> CommandReply:
        self.calls.append((station_id, timeout_s))
        return _reply(station_id, "local")


class Registry:
    def __init__(self, held: set[str]) -> None:
        self.held = held

    def get(self, station_id: str) -> object | None:
        return object() if station_id in self.held else None


async def test_a_station_held_here_is_called_in_process_and_others_through_redis() -> None:
    remote, executor, registry = Remote(), Executor(), Registry({"CP-1"})
    calls = LocalFirst(remote, executor, registry)  # type: ignore[arg-type]
    assert (await calls.call("CP-1", "SetChargingProfile", {}, timeout_s=7.0)).request_id == "local"
    assert (await calls.call("CP-2", "SetChargingProfile", {})).request_id == "redis"
    assert executor.calls == [("CP-1", 7.0)] and remote.calls == ["CP-2"]
    registry.held.clear()  # the station moved to another node
    executor.stopping = True
    assert (await calls.call("CP-1", "SetChargingProfile", {})).request_id == "redis"
    assert remote.calls == ["CP-2", "CP-1"]
