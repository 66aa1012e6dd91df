"""The node's WebSocket keepalive pings follow ws_ping_interval_s (library default 20 s: too many)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from csms.app import running_csms
from csms.settings import CsmsSettings
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation


def test_default_ping_interval_is_a_minute() -> None:
    fields = CsmsSettings.model_fields
    assert fields["ws_ping_interval_s"].default == 60.0 and fields["ws_ping_timeout_s"].default == 30.0


async def test_node_pings_stations_at_the_configured_interval(
        redis_url: str, provision: Callable[..., Awaitable[None]]) -> None:
    settings = make_settings(redis_url, ws_ping_interval_s=0.2, ws_ping_timeout_s=5)
    async with running_csms(settings, services=[]) as node:
        await provision("CP-1")
        st = await RawStation.connect(node.url, "CP-1", PASSWORD)
        try:
            assert node.server._server is not None
            conns = list(node.server._server.connections)
            assert len(conns) == 1 and conns[0].latency == 0  # no pong yet
            await asyncio.sleep(0.7)
            assert conns[0].latency > 0  # pinged and ponged
        finally:
            await st.close()
