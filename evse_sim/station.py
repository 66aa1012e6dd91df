"""A simulated OCPP charging station connected to a CSMS: the connection driver of a `StationCore`.

The station's behaviour (EVs, physics, messages, reactions to CSMS requests, the outbound queue
and what survives a lost link) is the sans-IO `evse_sim.core.StationCore`. `SimStation` owns one
core and keeps it connected: `run()` holds a WebSocket to the CSMS (``{csms_url}/{station_id}``,
subprotocol ``ocpp2.0.1``, or ``ocpp1.6`` for `StationConfig.ocpp_version` "1.6"):

- connect with Basic auth (security profile 1: user = station id) and optionally TLS with
  a custom CA (profile 2) or a client certificate (profile 3); on failure, reconnect with
  exponential backoff and full jitter;
- BootNotification on the first connection and after a Reset; retry while Pending/Rejected;
- one sender task per connection drains the core's outbox, one CALL at a time. Handlers of
  CSMS requests (`evse_sim.ocpp_link`, `evse_sim.ocpp16_link`) never await an outbound call:
  they ask the core, which queues messages;
- a message in flight when the link drops stays queued and is re-sent with the same seqNo on
  the next connection (the CSMS treats that as an idempotent replay).

Timing uses the shared `evfleet.clock.Clock`: a `ScaledClock` runs the station faster than
real time. Reconnect back-off and response timeouts are network timings in real seconds.
A fleet drives `tick` for thousands of stations from one timer (`evse_sim.fleet`); a lone
station can run its own timer with `run(tick_s=...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import websockets
from ocpp.exceptions import OCPPError

from evfleet.backoff import Backoff
from evfleet.clock import Clock
from evfleet.tasks import raise_if_cancelling
from evse_sim.core import StationCore
from evse_sim.device_model import DeviceModel
from evse_sim.ev import Ev
from evse_sim.hlc import HlcContext, HlcLink
from evse_sim.smart_charging import ChargingProfile, ProfileStore
from evse_sim.station_types import (
    QUIRKS,
    ConnectionConfig,
    EvseState,
    OutMsg,
    StationConfig,
    StationError,
    StationStats,
    TxState,
    VisitLog,
)

if TYPE_CHECKING:  # pragma: no cover
    from evse_sim.ocpp16_link import StationLink16
    from evse_sim.ocpp_link import StationLink

LOG = logging.getLogger("evse_sim.station")
T = TypeVar("T")


class _Core(Generic[T]):
    """A `SimStation` attribute that is the core's attribute of the same name (read and write)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Core[T]: ...
    @overload
    def __get__(self, obj: SimStation, objtype: type | None = None) -> T: ...
    def __get__(self, obj: SimStation | None, objtype: type | None = None) -> T | _Core[T]:
        if obj is None:
            return self
        value: T = getattr(obj.core, self.name)
        return value

    def __set__(self, obj: SimStation, value: T) -> None:
        setattr(obj.core, self.name, value)


class SimStation:
    """One simulated charging station connected to a CSMS (see the module docstring)."""

    id: _Core[str] = _Core()
    config: _Core[StationConfig] = _Core()
    clock: _Core[Clock] = _Core()
    evses: _Core[dict[int, EvseState]] = _Core()
    profiles: _Core[ProfileStore] = _Core()
    device: _Core[DeviceModel] = _Core()
    stats: _Core[StationStats] = _Core()
    visits: _Core[list[VisitLog]] = _Core()
    hlc: _Core[HlcLink | None] = _Core()
    on_unplugged: _Core[Callable[[StationCore, int, Ev], None] | None] = _Core()
    heartbeat_s: _Core[int] = _Core()
    tx_updated_s: _Core[int] = _Core()
    csms_clock_skew_s: _Core[float | None] = _Core()
    accepted: _Core[bool] = _Core()

    def __init__(
        self,
        config: StationConfig,
        connection: ConnectionConfig,
        clock: Clock,
        hlc: HlcLink | None = None,
        rng: random.Random | None = None,
        unplug_when_full: bool = False,
    ) -> None:
        self.core = StationCore(config, clock, hlc, rng, unplug_when_full, connection.security_profile)
        self.connection = connection
        self.rng = self.core.rng
        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        """Set by `stop()`: ends a reconnect back-off at once (the back-off is up to `backoff_max_s`)."""
        self.core.outbox.on_push = self._wake.set
        self.core.on_reboot = self.disconnect
        self.core.on_reset_due = self._reset_soon
        self._link: StationLink | StationLink16 | None = None
        self._ws: Any = None
        self._stopping = False
        self._offline_for_s = 0.0
        self._closing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the core's public surface
    @property
    def online(self) -> bool:
        """Connected and booted."""
        return self.core.online

    @property
    def queued(self) -> int:
        """Messages waiting to be sent."""
        return self.core.queued

    @property
    def queued_transaction_events(self) -> int:
        """TransactionEvents waiting to be sent (the offline queue)."""
        return self.core.queued_transaction_events

    def plug_in(self, evse_id: int, ev: Ev) -> str:
        """Plug `ev` into `evse_id` (see `StationCore.plug_in`); return the transaction id."""
        return self.core.plug_in(evse_id, ev)

    def unplug(self, evse_id: int) -> Ev | None:
        """The EV on `evse_id` leaves (see `StationCore.unplug`)."""
        return self.core.unplug(evse_id)

    def tick(self, now: datetime | None = None) -> list[OutMsg]:
        """Advance the station to `now` (see `StationCore.tick`)."""
        return self.core.tick(now)

    def trigger(self, message: str, evse_id: int | None) -> str:
        """TriggerMessage (see `StationCore.trigger`)."""
        return self.core.trigger(message, evse_id)

    def active_transactions(self) -> dict[int, str | None]:
        """EVSE id -> running transaction id (None when idle)."""
        return self.core.active_transactions()

    def profile_accepted(self, evse_id: int, profile: ChargingProfile) -> None:
        """A SetChargingProfile was accepted (see `StationCore.profile_accepted`)."""
        self.core.profile_accepted(evse_id, profile)

    def set_ev_limit(self, evse_id: int, limit_w: float | None) -> None:
        """Cap what the EV itself draws (see `StationCore.set_ev_limit`)."""
        self.core.set_ev_limit(evse_id, limit_w)

    def hlc_context(self, evse_id: int) -> HlcContext | None:
        """The HLC view of the EV on `evse_id` now (see `StationCore.hlc_context`)."""
        return self.core.hlc_context(evse_id)

    # ------------------------------------------------------------------ connection
    def disconnect(self) -> None:
        """Drop the current WebSocket (tests, resets); `run` reconnects with back-off."""
        ws = self._ws
        if ws is not None:
            self._closing = asyncio.get_running_loop().create_task(ws.close())

    def _reset_soon(self) -> None:
        """An OnIdle reset became due: reboot once the answer that ended the last transaction is out."""
        asyncio.get_running_loop().call_later(0.2, self.core.perform_pending_reset)

    def go_offline(self, real_s: float) -> None:
        """Fault injection: drop the link and stay offline for `real_s` real seconds (then reconnect)."""
        self._offline_for_s = max(self._offline_for_s, real_s)
        self.disconnect()

    def stop(self) -> None:
        """Ask `run` to finish after closing the connection."""
        self._stopping = True
        self._stop_requested.set()
        self.disconnect()
        self._wake.set()

    async def run(self, tick_s: float | None = None) -> None:
        """Stay connected to the CSMS until `stop()`; with `tick_s`, also tick every `tick_s` clock s."""
        ticker = asyncio.create_task(self._own_ticker(tick_s)) if tick_s else None
        backoff = Backoff(self.connection.backoff_base_s, self.connection.backoff_max_s, self.rng)
        try:
            while not self._stopping:
                if self._offline_for_s > 0:
                    pause, self._offline_for_s = self._offline_for_s, 0.0
                    await asyncio.sleep(pause)
                    continue
                try:
                    if await self._session():
                        backoff.reset()
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # every connection failure ends here: count it, back off, retry
                    if not self._stopping and self._offline_for_s <= 0:  # not a stop or an injected drop
                        self.stats.note_error(f"{type(err).__name__}: {err}")
                        LOG.info("%s: connection lost or refused: %s", self.id, self.stats.last_error)
                finally:
                    self._went_offline()
                if self._stopping:
                    break
                with contextlib.suppress(TimeoutError):  # the back-off, cut short by a stop
                    async with asyncio.timeout(backoff.next_delay()):
                        await self._stop_requested.wait()
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker

    async def _own_ticker(self, tick_s: float) -> None:
        while True:
            self.core.tick()
            await self.clock.sleep(tick_s)

    def _went_offline(self) -> None:
        self._ws = None
        self._link = None
        self.core.link_down()

    async def _session(self) -> bool:
        """One connection: handshake, boot, then serve until it closes. True if it got connected."""
        from evse_sim.ocpp16_link import StationLink16
        from evse_sim.ocpp_link import StationLink

        conn = self.connection
        v16 = self.config.ocpp_version == "1.6"
        ws = await websockets.connect(
            conn.url_for(self.id),
            subprotocols=[websockets.Subprotocol("ocpp1.6" if v16 else "ocpp2.0.1")],
            additional_headers=conn.headers_for(self.id),
            ssl=conn.ssl_context(self.id),
            open_timeout=conn.open_timeout_s,
            ping_interval=conn.ping_interval_s,
            max_queue=64,
        )
        self._ws = ws
        self.stats.connects += 1
        link: StationLink | StationLink16 = (StationLink16 if v16 else StationLink)(
            self.core, ws, conn.response_timeout_s
        )
        self._link = link
        reader = asyncio.create_task(link.start())
        sender: asyncio.Task[None] | None = None
        try:
            if self.core.needs_boot and not await self._boot(link, reader):
                return True
            self.core.link_up(self.clock.now())
            sender = asyncio.create_task(self._drain(link))
            done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = None if task is reader or task.cancelled() else task.exception()
                if exc is not None:
                    raise exc
            return True
        finally:  # also when run() is cancelled: the sender must not outlive its connection
            for child in (sender, reader):
                if child is not None:
                    child.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await child
            await ws.close()

    async def _boot(self, link: StationLink | StationLink16, reader: asyncio.Task[Any]) -> bool:
        """BootNotification until Accepted (retrying at the CSMS's interval). False if the link closed."""
        while not self._stopping:
            boot = asyncio.create_task(link.call(self.core.boot_request(), suppress=False))
            done, _ = await asyncio.wait({boot, reader}, return_when=asyncio.FIRST_COMPLETED)
            if boot not in done:
                boot.cancel()
                return False
            retry_s = self.core.boot_answered(boot.result())
            if retry_s is None:
                return True
            wait = asyncio.create_task(self.clock.sleep(retry_s))
            done, _ = await asyncio.wait({wait, reader}, return_when=asyncio.FIRST_COMPLETED)
            if wait not in done:
                wait.cancel()
                return False
        return False

    async def _drain(self, link: StationLink | StationLink16) -> None:
        """Send queued CALLs one at a time; the core's outbox decides what an outcome does."""
        outbox = self.core.outbox
        while True:
            msg = outbox.peek()
            while msg is None:
                self._wake.clear()
                await self._wake.wait()
                if self._stopping:
                    return
                msg = outbox.peek()
            try:
                result = await link.call(msg.payload, suppress=False)
            except OCPPError as err:
                outbox.call_error(msg, str(err))
                LOG.warning("%s: %s", self.id, self.stats.last_error)
                continue
            except TimeoutError:
                outbox.timed_out(msg)
                continue
            except websockets.ConnectionClosed:
                raise  # the session ends; the message stays queued for the next connection
            except Exception as err:  # e.g. a CALLRESULT that fails the schema: resending cannot help
                outbox.bad_answer(msg, f"{type(err).__name__}: {err}")
                LOG.warning("%s: %s", self.id, self.stats.last_error[:500])
                continue
            outbox.answered(msg, result)
            raise_if_cancelling()  # the ocpp library waits for the answer with wait_for: evfleet.tasks


__all__ = [
    "QUIRKS",
    "ConnectionConfig",
    "EvseState",
    "SimStation",
    "StationConfig",
    "StationCore",
    "StationError",
    "StationStats",
    "TxState",
    "VisitLog",
]
