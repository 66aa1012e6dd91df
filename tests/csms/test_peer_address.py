"""The peer address of a client that left during the handshake (uvloop raises from getpeername)."""

from __future__ import annotations

from typing import Any, cast

from csms.protocol.server import peer_address


class _Gone:
    """A connection whose transport lost its socket: uvloop's get_extra_info('peername') raises."""

    @property
    def remote_address(self) -> Any:
        raise AttributeError("'NoneType' object has no attribute 'getpeername'")


class _Here:
    remote_address = ("10.0.0.7", 50123)


def test_a_client_gone_during_the_handshake_has_no_address_instead_of_a_traceback() -> None:
    assert peer_address(cast(Any, _Gone())) is None
    assert peer_address(cast(Any, _Here())) == ("10.0.0.7", 50123)
