"""Runs Josev (`iso15118` 0.31.2) SECCs or EVCCs bridged to an evfleet station. NOT for the main venv.

This file runs under `.iso15118-venv/bin/python` (pydantic 1.10, Java EXI codec) as a
plain script; it imports only the standard library and `iso15118`. Three sub-commands:

- `netns --pair vethS0:vethE0 ...`: inside a fresh network namespace (`unshare -rn`),
  create the veth pairs, bring them up with IPv6 link-local addresses (DAD off), then
  spawn children in that namespace on request: one JSON command per stdin line
  (`{"spawn": [argv...], "log": path}`); exits (killing its children) on stdin EOF.
- `secc --bridge SOCK --port NAME=IFACE ...`: one SECC handler per interface, one JVM.
- `evcc --bridge SOCK --port NAME=IFACE`: one EVCC session on the interface.

Each SECC/EVCC opens its own JSON-lines connection to the bridge (a Unix socket served by
the evfleet station in the main venv, see `evse_sim/iso15118/bridge.py`) and says hello
`{"op": "hello", "role": ..., "name": ...}`. Requests carry an `id`; the bridge answers
`{"id": n, "result": ...}`. The bridge pushes `{"op": "renegotiate"}` and `{"op": "stop"}`.

Josev 0.31.2 quirks designed around here:
- returning None ("still processing") from `get_sa_schedule_list` breaks the session, so
  the SECC always answers within `SCHEDULE_WAIT_S` with the bridge's schedule or a default;
- the EV's ChargingProfile (PowerDeliveryReq) is not handed to the controller, so
  `PowerDelivery.process_message` is wrapped to forward it;
- the SECC never sets EVSENotification=ReNegotiation itself; `ChargingStatus` is wrapped
  so that `get_ac_evse_status` raises it only in a ChargingStatusRes;
- the Java codec is slow when cold: `warm_up_codec` runs a few encode/decode cycles first;
- a busy SECC that answers SDP late could strand the EV (`josev_sdp.py`): the SECC keeps its
  listening TCP server across repeated SDPRequests, the EVCC sends another SDPRequest when an
  SDPResponse gave no session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

if __package__:  # imported as a package module (the main venv's tools)
    from evse_sim.iso15118.josev_dc import dc_ev_class, dc_secc_class, patch_evcc_states
    from evse_sim.iso15118.josev_sdp import patch_evcc_sdp, patch_evcc_session_stop, patch_secc_sdp
    from evse_sim.iso15118.josev_v20 import (
        encode_v20,
        patch_evcc_v20_states,
        patch_secc_v20_states,
        v20_ev_class,
        v20_secc_class,
    )
    from evse_sim.iso15118.josev_wire import (
        BRIDGE_TIMEOUT_S,
        BridgeClient,
        default_schedule,
        encode_v2,
        needs_from_context,
        pv,
        tuples_from_josev,
        tuples_to_josev,
    )
else:  # run as a script in the Josev venv: the sibling module is on sys.path[0]
    from josev_dc import dc_ev_class, dc_secc_class, patch_evcc_states  # type: ignore[no-redef]
    from josev_sdp import patch_evcc_sdp, patch_evcc_session_stop, patch_secc_sdp  # type: ignore[no-redef]
    from josev_v20 import (  # type: ignore[no-redef]
        encode_v20,
        patch_evcc_v20_states,
        patch_secc_v20_states,
        v20_ev_class,
        v20_secc_class,
    )
    from josev_wire import (  # type: ignore[no-redef]
        BRIDGE_TIMEOUT_S,
        BridgeClient,
        default_schedule,
        encode_v2,
        needs_from_context,
        pv,
        tuples_from_josev,
        tuples_to_josev,
    )

log = logging.getLogger("evfleet.josev")
SCHEDULE_WAIT_S = 1.5
# Josev's EXI codec is a JVM (py4j) per runner: C1-only JIT and the serial GC start it in ~2/3 of the
# wall time on a 2-core machine (5 start-ups each way at load 15: median 11.1 vs 15.8 s); its few
# messages a second need no C2. A JAVA_TOOL_OPTIONS already set is kept.
JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData"
PROTOCOL = "ISO_15118_2"  # `--protocol`: ISO_15118_2 (AC, DC) or ISO_15118_20_AC (docs/iso15118.md)
V20_AC = "ISO_15118_20_AC"


# --- SECC side ------------------------------------------------------------------------
def make_secc_controller(bridge: BridgeClient, evse_max_power_w: float, voltage_v: float,
                         phases: int, dc: bool = False, protocol: str = PROTOCOL) -> Any:
    """A SimEVSEController whose schedule, status and EV-profile hooks go through the bridge
    (DC: the DC hooks of `josev_dc.dc_secc_class` on top; -20 AC: `josev_v20.v20_secc_class`)."""
    from iso15118.secc.controller.simulator import SimEVSEController
    from iso15118.shared.messages.datatypes import (
        EVSENotification,
        PVEVSEMaxCurrent,
        PVEVSEMaxCurrentLimit,
        PVEVSENominalVoltage,
    )
    from iso15118.shared.messages.enums import UnitSymbol
    from iso15118.shared.messages.iso15118_2.datatypes import ACEVSEChargeParameter, ACEVSEStatus

    max_current_a = evse_max_power_w / (voltage_v * phases)

    class BridgedEVSEController(SimEVSEController):
        """The evfleet station behind a Josev SECC."""

        def __init__(self) -> None:
            super().__init__()
            self.renegotiate = False
            self.in_charging_status = False

        async def get_evse_id(self, protocol: Any) -> str:
            return "DE*EVF*E" + bridge.name.replace("-", "")[:20]

        async def get_sa_schedule_list(self, ev_data_context: Any, is_free_charging_service: bool,
                                       max_schedule_entries: Any, departure_time: int = 0) -> Any:
            needs = needs_from_context(ev_data_context, departure_time, max_schedule_entries)
            started = time.monotonic()
            try:
                result = await bridge.request("schedules", SCHEDULE_WAIT_S, needs=needs)
            except TimeoutError:
                log.warning("bridge gave no schedule within %.1f s: offering the default", SCHEDULE_WAIT_S)
                result = None
            tuples = tuples_to_josev(result["tuples"]) if result and result.get("tuples") else None
            log.info("SAScheduleList after %.3f s: %s", time.monotonic() - started,
                     "bridge" if tuples else "default")
            return tuples or default_schedule(evse_max_power_w, departure_time)

        async def get_ac_evse_status(self) -> Any:
            notification = EVSENotification.NONE
            if self.renegotiate and self.in_charging_status:
                notification = EVSENotification.RE_NEGOTIATION
                self.renegotiate = False
                bridge.notify("renegotiation_requested")
            return ACEVSEStatus(notification_max_delay=0, evse_notification=notification, rcd=False)

        async def get_ac_charge_params_v2(self) -> Any:
            return ACEVSEChargeParameter(
                ac_evse_status=await self.get_ac_evse_status(),
                evse_nominal_voltage=pv(PVEVSENominalVoltage, voltage_v, UnitSymbol.VOLTAGE),
                evse_max_current=pv(PVEVSEMaxCurrent, max_current_a, UnitSymbol.AMPERE))

        async def get_evse_max_current_limit(self) -> Any:
            return pv(PVEVSEMaxCurrentLimit, max_current_a, "A")

        async def session_ended(self, current_state: str, reason: str) -> None:
            bridge.notify("session_ended", state=str(current_state), reason=str(reason))
            await super().session_ended(current_state, reason)

    cls: Any = BridgedEVSEController
    if dc:
        cls = dc_secc_class(BridgedEVSEController, bridge, evse_max_power_w, voltage_v, BRIDGE_TIMEOUT_S)
    elif protocol == V20_AC:
        cls = v20_secc_class(BridgedEVSEController, bridge, evse_max_power_w, SCHEDULE_WAIT_S,
                             BRIDGE_TIMEOUT_S)
    controller = cls()

    def on_push(msg: dict) -> None:
        if msg.get("op") == "renegotiate":
            controller.renegotiate = True
    bridge.on_push = on_push
    return controller


_patched = False


def patch_secc_states() -> None:
    """Wrap Josev's PowerDelivery/ChargingStatus SECC states (see the module docstring)."""
    global _patched
    if _patched:
        return
    _patched = True
    from iso15118.secc.states import iso15118_2_states as states

    original_pd = states.PowerDelivery.process_message
    original_cs = states.ChargingStatus.process_message

    async def power_delivery(self: Any, message: Any, message_exi: bytes = None) -> None:  # type: ignore[assignment]
        await original_pd(self, message, message_exi)
        body = getattr(message, "body", None)
        req = getattr(body, "power_delivery_req", None) if body is not None else None
        controller = self.comm_session.evse_controller
        hook = getattr(controller, "bridge_power_delivery", None)
        from iso15118.shared.states import Terminate
        if req is not None and hook is not None and self.next_state is not Terminate:
            entries = None
            if req.charging_profile is not None:
                entries = [[e.start, e.max_power.get_decimal_value()]
                           for e in req.charging_profile.profile_entries]
            hook(str(req.charge_progress.value), req.sa_schedule_tuple_id, entries)

    async def charging_status(self: Any, message: Any, message_exi: bytes = None) -> None:  # type: ignore[assignment]
        controller = self.comm_session.evse_controller
        controller.in_charging_status = True
        try:
            await original_cs(self, message, message_exi)
        finally:
            controller.in_charging_status = False

    states.PowerDelivery.process_message = power_delivery
    states.ChargingStatus.process_message = charging_status


def warm_up_codec(codec: Any, rounds: int = 30) -> float:
    """Encode/decode a SessionSetupReq a few times so the JVM has compiled the codec; return seconds."""
    from iso15118.shared.exi_codec import EXI
    from iso15118.shared.messages.enums import Namespace
    from iso15118.shared.messages.iso15118_2.body import Body, SessionSetupReq
    from iso15118.shared.messages.iso15118_2.header import MessageHeader
    from iso15118.shared.messages.iso15118_2.msgdef import V2GMessage
    from iso15118.shared.settings import load_shared_settings, shared_settings

    if not shared_settings:
        load_shared_settings(os.path.join(os.path.dirname(os.path.abspath(__file__)), "no-such.env"))
    EXI().set_exi_codec(codec)
    msg = V2GMessage(header=MessageHeader(session_id="00"),
                     body=Body(session_setup_req=SessionSetupReq(evcc_id="0A0B0C0D0E0F")))
    started = time.monotonic()
    for _ in range(rounds):
        EXI().from_exi(EXI().to_exi(msg, Namespace.ISO_V2_MSG_DEF), Namespace.ISO_V2_MSG_DEF)
    return time.monotonic() - started


def quiet_josev_logs() -> None:
    """Josev logs every message at INFO; keep it at INFO only when EVFLEET_JOSEV_DEBUG is set."""
    if not os.environ.get("EVFLEET_JOSEV_DEBUG"):
        for name in ("iso15118.shared.exi_codec", "iso15118.shared.comm_session", "iso15118.shared.states"):
            logging.getLogger(name).setLevel(logging.WARNING)


async def run_secc(args: argparse.Namespace) -> None:
    """Start one SECC handler per NAME=IFACE, sharing one Java codec."""
    os.environ.update({"PROTOCOLS": args.protocol, "AUTH_MODES": "EIM", "FREE_CHARGING_SERVICE": "False",
                       "ALLOW_CERT_INSTALL_SERVICE": "False", "LOG_LEVEL": args.log_level,
                       "MESSAGE_LOG_JSON": "False"})
    from iso15118.secc import SECCHandler
    from iso15118.secc.controller.interface import ServiceStatus
    from iso15118.secc.secc_settings import Config
    from iso15118.shared.exificient_exi_codec import ExificientEXICodec

    patch_secc_states()
    patch_secc_v20_states()
    patch_secc_sdp()
    codec = ExificientEXICodec()
    quiet_josev_logs()
    log.info("SECC codec warm-up took %.2f s", warm_up_codec(codec))
    handlers = []
    for port in args.port:
        name, iface = port.split("=", 1)
        bridge = BridgeClient(args.bridge, "secc", name)
        await bridge.connect()
        controller = make_secc_controller(bridge, args.evse_max_power_w, args.voltage_v, args.phases,
                                          dc=args.kind == "DC", protocol=args.protocol)
        controller.bridge_power_delivery = _power_delivery_forwarder(bridge)
        await controller.set_status(ServiceStatus.STARTING)
        config = Config()
        config.load_envs(os.path.join(os.path.dirname(os.path.abspath(__file__)), "no-such.env"))
        handlers.append(SECCHandler(exi_codec=codec, evse_controller=controller, config=config).start(iface))
        bridge.notify("ready", iface=iface)
    await asyncio.gather(*handlers)


def _iso_mode(mode: str) -> str:
    """OCPP energy transfer mode -> ISO 15118-2 name (AC_three_phase_core; DC -> DC_extended, CCS)."""
    if mode.startswith("DC"):
        return "DC_extended"
    return mode if mode.endswith("_core") else f"{mode}_core"


def _power_delivery_forwarder(bridge: BridgeClient) -> Any:
    def forward(charge_progress: str, tuple_id: int, entries: list | None) -> None:
        bridge.notify("power_delivery", charge_progress=charge_progress, tuple_id=tuple_id, entries=entries)
    return forward


# --- EVCC side --------------------------------------------------------------------------
def make_evcc_controller(bridge: BridgeClient, evcc_config: Any, protocol: str = PROTOCOL) -> Any:
    """A SimEVController whose needs, schedule choice and loop come from the simulated EV."""
    from iso15118.evcc.controller.interface import ChargeParamsV2
    from iso15118.evcc.controller.simulator import SimEVController
    from iso15118.shared.messages.datatypes import (
        PVEAmount,
        PVEVMaxCurrent,
        PVEVMaxVoltage,
        PVEVMinCurrent,
        PVPMax,
    )
    from iso15118.shared.messages.enums import UnitSymbol
    from iso15118.shared.messages.iso15118_2.datatypes import (
        ACEVChargeParameter,
        ChargeProgress,
        ChargingProfile,
        ProfileEntryDetails,
    )

    class BridgedEVController(SimEVController):
        """The simulated evfleet EV behind a Josev EVCC."""

        def __init__(self) -> None:
            super().__init__(evcc_config)
            self.stop = False

        async def get_charge_params_v2(self, protocol: Any) -> Any:
            n = await bridge.request("ev_params", BRIDGE_TIMEOUT_S)
            ac = ACEVChargeParameter(
                departure_time=int(n["departure_time_s"] or 0),
                e_amount=pv(PVEAmount, n["e_amount_wh"], UnitSymbol.WATT_HOURS),
                ev_max_voltage=pv(PVEVMaxVoltage, n["ev_max_voltage_v"], UnitSymbol.VOLTAGE),
                ev_max_current=pv(PVEVMaxCurrent, n["ev_max_current_a"], UnitSymbol.AMPERE),
                ev_min_current=pv(PVEVMinCurrent, n["ev_min_current_a"], UnitSymbol.AMPERE))
            return ChargeParamsV2(await self.get_energy_transfer_mode(protocol), ac, None)

        async def process_sa_schedules_v2(self, sa_schedules: list[Any]) -> Any:
            plan = await bridge.request("plan", BRIDGE_TIMEOUT_S, tuples=tuples_from_josev(sa_schedules))
            entries = [ProfileEntryDetails(start=int(s), max_power=pv(PVPMax, w, UnitSymbol.WATT))
                       for s, w in plan["entries"]]
            return ChargeProgress.START, plan["tuple_id"], ChargingProfile(profile_entries=entries)

        async def continue_charging(self) -> bool:
            if self.stop:
                return False
            return bool(await bridge.request("continue", BRIDGE_TIMEOUT_S))

        async def charge_loop_delay(self) -> int:
            return 1

    cls: Any = BridgedEVController
    if str(evcc_config.energy_transfer_mode.value).startswith("DC"):
        cls = dc_ev_class(BridgedEVController, bridge, BRIDGE_TIMEOUT_S)
    elif protocol == V20_AC:
        cls = v20_ev_class(BridgedEVController, bridge, BRIDGE_TIMEOUT_S)
    controller = cls()

    def on_push(msg: dict) -> None:
        if msg.get("op") == "stop":
            controller.stop = True
    bridge.on_push = on_push
    return controller


async def run_evcc(args: argparse.Namespace) -> None:
    """Run one EVCC session on the interface (SDP, TCP, ISO 15118-2 AC with EIM)."""
    from iso15118.evcc import EVCCHandler
    from iso15118.evcc.evcc_config import EVCCConfig
    from iso15118.shared.exificient_exi_codec import ExificientEXICodec

    patch_evcc_states()
    patch_evcc_v20_states()
    codec = ExificientEXICodec()
    quiet_josev_logs()
    log.info("EVCC codec warm-up took %.2f s", warm_up_codec(codec))
    name, iface = args.port[0].split("=", 1)
    dc = args.energy_mode.startswith("DC")
    bridge = BridgeClient(args.bridge, "evcc", name)
    await bridge.connect()
    patch_evcc_sdp(lambda reason: bridge.notify("hlc_gave_up", reason=reason))  # the station restarts us
    patch_evcc_session_stop(lambda reason: bridge.notify("ev_session_stopped", reason=reason[:300]))
    config = EVCCConfig(**{"supportedProtocols": [args.protocol],
                           "supportedEnergyServices": ["DC" if dc else "AC"],
                           "useTls": False, "enforceTls": False, "isCertInstallNeeded": False,
                           "energyTransferMode": _iso_mode(args.energy_mode), "sdpRetryCycles": 5,
                           "chargeLoopCycle": 1000000, "chargeLoopDelay": 1})
    config.load_raw_values()
    controller = make_evcc_controller(bridge, config, args.protocol)
    bridge.notify("ready", iface=iface)
    await EVCCHandler(evcc_config=config, iface=iface, exi_codec=codec, ev_controller=controller).start()


# --- encode check -------------------------------------------------------------------------
def run_encode(args: argparse.Namespace) -> None:
    """Read bridge JSON tuples on stdin; EXI-encode them as Josev's SECC does (`encode_v2`,
    `encode_v20`); print {"ok": ..., "bytes"/"error"}. `--stream`: one request per stdin line,
    {"iso15118": "2"|"20", "tuples": [...]}, one answer line each (one Josev import and JVM for many)."""
    from iso15118.shared.exi_codec import EXI
    from iso15118.shared.exificient_exi_codec import ExificientEXICodec
    from iso15118.shared.settings import load_shared_settings, shared_settings

    if not shared_settings:
        load_shared_settings(os.path.join(os.path.dirname(os.path.abspath(__file__)), "no-such.env"))
    quiet_josev_logs()
    logging.getLogger("iso15118.shared.exi_codec").setLevel(logging.CRITICAL)
    EXI().set_exi_codec(ExificientEXICodec())
    for text in (sys.stdin if args.stream else [sys.stdin.read()]):
        try:
            req = json.loads(text) if args.stream else {"iso15118": args.iso15118, "tuples": json.loads(text)}
            answer = (encode_v20 if req.get("iso15118") == "20" else encode_v2)(req["tuples"])
        except Exception as err:  # noqa: BLE001 - the answer is the error
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(answer), flush=True)


# --- network namespace holder ---------------------------------------------------------
def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def run_netns(args: argparse.Namespace) -> None:
    """Create veth pairs in the current (fresh) namespace; spawn children on stdin commands."""
    _sh("ip", "link", "set", "lo", "up")
    for pair in args.pair:
        a, b = pair.split(":")
        _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        for iface in (a, b):
            try:
                with open(f"/proc/sys/net/ipv6/conf/{iface}/accept_dad", "w") as f:
                    f.write("0")
            except OSError as err:  # DAD then just takes ~2 s
                print(json.dumps({"warning": f"cannot disable DAD on {iface}: {err}"}), flush=True)
            _sh("ip", "link", "set", iface, "up")
    deadline = time.monotonic() + 10
    wanted = {i for p in args.pair for i in p.split(":")}
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "-6", "-o", "addr", "show", "scope", "link"], capture_output=True,
                             text=True).stdout
        ready = {line.split()[1].split("@")[0] for line in out.splitlines() if "tentative" not in line}
        if wanted <= ready:
            break
        time.sleep(0.05)
    else:
        print(json.dumps({"error": "link-local addresses did not come up"}), flush=True)
        sys.exit(2)
    print(json.dumps({"ready": sorted(wanted)}), flush=True)
    children: list[subprocess.Popen] = []
    for line in sys.stdin:
        cmd = json.loads(line)
        logf = open(cmd["log"], "ab") if cmd.get("log") else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(cmd["spawn"], stdout=logf, stderr=subprocess.STDOUT, env=cmd.get("env"))
        children.append(proc)
        print(json.dumps({"spawned": proc.pid}), flush=True)
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in children:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    """Command line of the runner."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    ns = sub.add_parser("netns")
    ns.add_argument("--pair", action="append", required=True)
    enc = sub.add_parser("encode")
    enc.add_argument("--iso15118", default="2", choices=("2", "20"))
    enc.add_argument("--stream", action="store_true", help="one JSON document per line, answered each")
    for role in ("secc", "evcc"):
        p = sub.add_parser(role)
        p.add_argument("--bridge", required=True)
        p.add_argument("--port", action="append", required=True, help="NAME=IFACE")
        p.add_argument("--log-level", default="INFO")
        p.add_argument("--evse-max-power-w", type=float, default=11000.0)
        p.add_argument("--voltage-v", type=float, default=230.0)
        p.add_argument("--phases", type=int, default=3)
        p.add_argument("--energy-mode", default="AC_three_phase")
        p.add_argument("--kind", default="AC", choices=("AC", "DC"))
        p.add_argument("--protocol", default=PROTOCOL, choices=("ISO_15118_2", V20_AC))
    args = parser.parse_args()
    os.environ.setdefault("JAVA_TOOL_OPTIONS", JVM_OPTIONS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.cmd == "netns":
        run_netns(args)
    elif args.cmd == "encode":
        run_encode(args)
    elif args.cmd == "secc":
        asyncio.run(run_secc(args))
    else:
        asyncio.run(run_evcc(args))


if __name__ == "__main__":
    main()
