"""The test topology starts a process again on fresh ports when the one `free_port()` gave was
taken before it bound it (another test's clients or a harness beside it use ephemeral ports: the
failover test failed twice in six runs that way, "Address already in use", with a harness running)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scale import topology as topology_module
from tests.scale.topology import HAPROXY, topology

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None and not Path(HAPROXY).exists(),
                                reason="haproxy not installed (scripts/setup.sh --dev installs it)")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other process holds (listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_a_node_whose_port_was_taken_starts_again_on_fresh_ports(
        redis_url: str, tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = topology_module.free_port, [0]

    def free_port() -> int:  # the 4th port asked for is node-1's OCPP port (after HAProxy's 3)
        calls[0] += 1
        return taken_port if calls[0] == 4 else real()

    monkeypatch.setattr(topology_module, "free_port", free_port)
    async with topology(redis_url, tmp_path, nodes=1) as topo:
        assert topo.nodes[0].ocpp_port != taken_port
        assert topo.nodes[0].proc.poll() is None
    assert "address already in use" in (tmp_path / "node-1.log").read_text().lower()  # lost at first
