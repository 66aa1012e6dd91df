"""SDP robustness for Josev 0.31.2 (SECC and EVCC), in the Josev venv. NOT for the main venv.

Like `josev_runner.py` (its only user), this runs under `.iso15118-venv/bin/python` and imports only
the standard library and `iso15118`.

The stranded-EV race (docs/iso15118.md, "A slow SDP answer"): an EVCC waits 250 ms for each
SDPResponse and sends another SDPRequest on every timeout. A busy SECC then finds several requests
queued and, for each, Josev's `start_tcp_server` closes its listening TCP server and opens it again.
The EVCC connects with the first response, often while the server is closed for the next one, gets
ConnectionRefusedError, and Josev's EVCC `start_comm_session` only logs it: no new SDPRequest, no
session, the EV waits forever (the process stays up). Two fixes, one per side:

- SECC (`patch_secc_sdp`): a repeated SDPRequest while the TCP server is listening is answered with
  that server's address; the server is not restarted (a charger has one TCP server per EVSE).
- EVCC (`patch_evcc_sdp`): when no session came out of an SDPResponse (the TCP connect or the
  SupportedAppProtocolReq failed), the EV sends its next SDPRequest, within Josev's own bound of 50
  requests per cycle, as after an SDP timeout.

When Josev's EVCC gives up for good (50 SDPRequests unanswered, or its SDP retry cycles used up by
sessions that failed, e.g. on its 2 s timeouts at a busy SECC: "Unplug and plug in the cable again"),
`on_give_up` tells the station, which restarts the EV's communication as a charger does (bridge.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("evfleet.josev")
_patched: set[str] = set()
_on_give_up: list[Callable[[str], None]] = []


def keeps_listening_server(handler: Any, with_tls: bool) -> bool:
    """Whether the SECC handler's TCP server already listens as asked (same TLS): answer with it."""
    task, server = getattr(handler, "tcp_server_handler", None), getattr(handler, "tcp_server", None)
    listening = getattr(server, "server", None)
    return (task is not None and not task.done() and listening is not None and listening.is_serving()
            and bool(getattr(server, "is_tls_enabled", False)) == bool(with_tls))


def patch_secc_sdp() -> None:
    """Keep the SECC's listening TCP server across repeated SDPRequests (see the module docstring)."""
    if "secc" in _patched:
        return
    _patched.add("secc")
    from iso15118.secc.comm_session_handler import CommunicationSessionHandler

    original = CommunicationSessionHandler.start_tcp_server

    async def start_tcp_server(self: Any, with_tls: bool) -> None:
        if keeps_listening_server(self, with_tls):
            log.info("SDPRequest again: the TCP server on port %s keeps listening", self.tcp_server.port)
            return
        await original(self, with_tls)

    CommunicationSessionHandler.start_tcp_server = start_tcp_server


def patch_evcc_sdp(on_give_up: Callable[[str], None] | None = None) -> None:
    """The EVCC sends its next SDPRequest when an SDPResponse gave no session, and calls `on_give_up`
    with Josev's reason when it gives up (module docstring)."""
    _on_give_up[:] = [on_give_up] if on_give_up is not None else []
    if "evcc" in _patched:
        return
    _patched.add("evcc")
    from iso15118.evcc.comm_session_handler import CommunicationSessionHandler
    from iso15118.shared.exceptions import SDPFailedError

    original = CommunicationSessionHandler.start_comm_session
    original_restart = CommunicationSessionHandler.restart_sdp

    async def restart_sdp(self: Any, new_sdp_cycle: bool) -> None:
        try:
            await original_restart(self, new_sdp_cycle)
        except SDPFailedError as err:
            for hook in _on_give_up:
                hook(str(err))
            raise

    async def start_comm_session(self: Any, host: Any, port: int, is_tls: bool) -> None:
        before = getattr(self, "comm_session", None)
        await original(self, host, port, is_tls)
        if getattr(self, "comm_session", None) is not before:
            return  # a session started
        log.warning("no session with the SECC at port %s: sending the next SDPRequest", port)
        try:
            await self.restart_sdp(False)
        except SDPFailedError as err:  # Josev's bound (50 requests) reached: it gives up, as on timeouts
            log.error("SDP gave up: %s", err)

    CommunicationSessionHandler.start_comm_session = start_comm_session
    CommunicationSessionHandler.restart_sdp = restart_sdp


_on_stop: list[Callable[[str], None]] = []


def patch_evcc_session_stop(on_stop: Callable[[str], None]) -> None:
    """Call `on_stop` with the EVCC's reason each time its V2G session stops (e.g. Josev's "TimeoutError
    occurred. Waited for 2 s after sending last message: ChargingStatusReq"). The SECC only sees the
    TCP connection close; the station needs the EV's reason to tell a timeout from an error."""
    _on_stop[:] = [on_stop]
    if "evcc_stop" in _patched:
        return
    _patched.add("evcc_stop")
    from iso15118.evcc.comm_session_handler import EVCCCommunicationSession

    original = EVCCCommunicationSession.stop

    async def stop(self: Any, reason: str) -> None:
        for hook in _on_stop:
            hook(str(reason))
        await original(self, reason)

    EVCCCommunicationSession.stop = stop
