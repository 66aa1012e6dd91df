"""What a running csms node hands to each of its services (API, MQTT, smart charging).

Built by the composition root (`csms/app.py`). Services are `async def run(ctx) -> None`
coroutines that run until cancelled; see `csms/app.py` for how they are supervised.

`redis` returns `str` (decode_responses=True). `extras` holds `registry`
(`csms.protocol.registry.Registry`, stations connected to this node), `commands` (a
`csms.commands.CommandClient`), `store` (`csms.store.state.StateStore`) and `redis_url`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from csms.settings import CsmsSettings
from evfleet.clock import Clock
from evfleet.keys import Keys

if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass
class CsmsContext:
    """Shared handles of one csms node."""

    settings: CsmsSettings
    redis: Redis
    keys: Keys
    clock: Clock
    node_id: str
    # Filled by the composition root once the OCPP server is up:
    ocpp_port: int = 0
    api_port: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


Service = Callable[[CsmsContext], Awaitable[None]]
