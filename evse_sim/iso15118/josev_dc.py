"""ISO 15118-2 DC for the Josev runner: the SECC's and the EV's DC hooks, bridged to evfleet.

Like `josev_wire.py`, this runs under `.iso15118-venv/bin/python` and imports only the standard
library and `iso15118`; `josev_runner.py` finds it beside itself.

The DC loop over the bridge (the bridge side is `evse_sim/iso15118/bridge.py`):

- CableCheck: the simulated EVSE reports isolation valid at once.
- PreCharge: the SECC's `send_charging_command` asks the bridge (`dc_demand`, precharge) and
  reports the EV's target voltage as present voltage, 0 A; the EV is precharged when the two are
  within 20 V (IEC 61851-23).
- CurrentDemand: each CurrentDemandReq's target voltage and current go to the bridge
  (`dc_demand`); the bridge answers with the EVSE's power limit now (the TxProfile's limit, capped
  at the EVSE maximum) and what the EVSE delivers, min(target, limit). The SECC puts the limit in
  CurrentDemandRes (EVSEMaxPowerLimit, EVSEMaxCurrentLimit). The EV reads the limit from the
  decoded CurrentDemandRes and asks the bridge (`dc_state`) for its next target current, at most
  its own maximum and the EVSE's limit.

Josev 0.31.2 limits designed around here:
- the EVCC's CurrentDemand state ignores EVSENotification=ReNegotiation (it handles only
  StopCharging, `evcc/states/iso15118_2_states.py` `CurrentDemand.process_message`), and the
  SECC's never sets it ("TODO Check if a renegotiation is wanted"): a DC session does not
  renegotiate; a new TxProfile reaches the EV as the EVSE's limit in the next CurrentDemandRes;
- the EVCC does not hand CurrentDemandRes to its controller: `patch_evcc_states` wraps it;
- the EVCC's DC PowerDeliveryReq carries no ChargingProfile ("TODO"), so a DC EV's plan never
  reaches the SECC (no NotifyEVChargingSchedule, no K17 check for DC);
- `SimEVController.get_dc_ev_power_delivery_parameter` sets ChargingComplete from
  `continue_charging()` (inverted); `is_precharged` compares with a fixed 20 kV.
"""

from __future__ import annotations

from typing import Any

if __package__:  # imported as a package module (the main venv's tools)
    from evse_sim.iso15118.josev_wire import pv
else:  # run from the script in the Josev venv: the sibling module is on sys.path[0]
    from josev_wire import pv  # type: ignore[no-redef]

DC_EVSE_MAX_VOLTAGE_V = 500.0
DC_EVSE_MIN_VOLTAGE_V = 150.0
PRECHARGE_TOLERANCE_V = 20.0  # IEC 61851-23: precharge ends within 20 V of the EV's target


def dc_secc_class(base: Any, bridge: Any, evse_max_power_w: float, voltage_v: float,
                  timeout_s: float) -> Any:
    """A subclass of the bridged AC SECC controller `base` that drives ISO 15118-2 DC."""
    from iso15118.shared.messages.datatypes import (
        DCEVSEChargeParameter,
        DCEVSEStatus,
        DCEVSEStatusCode,
        EVSENotification,
        IsolationLevel,
        PVEVSEMaxCurrentLimit,
        PVEVSEMaxPowerLimit,
        PVEVSEMaxVoltageLimit,
        PVEVSEMinCurrentLimit,
        PVEVSEMinVoltageLimit,
        PVEVSEPeakCurrentRipple,
        PVEVSEPresentCurrent,
        PVEVSEPresentVoltage,
    )
    from iso15118.shared.messages.enums import EnergyTransferModeEnum

    class DcBridgedEVSEController(base):
        """The evfleet DC EVSE behind a Josev SECC."""

        def __init__(self) -> None:
            super().__init__()
            self.dc_state: dict[str, float] = {"limit_w": evse_max_power_w, "present_voltage_v": 0.0,
                                               "present_current_a": 0.0, "target_w": 0.0}

        async def get_supported_energy_transfer_modes(self, protocol: Any) -> Any:
            return [EnergyTransferModeEnum.DC_EXTENDED]

        async def get_dc_evse_status(self) -> Any:
            return DCEVSEStatus(evse_notification=EVSENotification.NONE, notification_max_delay=0,
                                evse_isolation_status=IsolationLevel.VALID,
                                evse_status_code=DCEVSEStatusCode.EVSE_READY)

        async def get_dc_charge_parameters(self) -> Any:
            return DCEVSEChargeParameter(
                dc_evse_status=await self.get_dc_evse_status(),
                evse_maximum_power_limit=pv(PVEVSEMaxPowerLimit, evse_max_power_w, "W"),
                evse_maximum_current_limit=pv(PVEVSEMaxCurrentLimit, evse_max_power_w / voltage_v, "A"),
                evse_maximum_voltage_limit=pv(PVEVSEMaxVoltageLimit, DC_EVSE_MAX_VOLTAGE_V, "V"),
                evse_minimum_current_limit=pv(PVEVSEMinCurrentLimit, 0, "A"),
                evse_minimum_voltage_limit=pv(PVEVSEMinVoltageLimit, DC_EVSE_MIN_VOLTAGE_V, "V"),
                evse_peak_current_ripple=pv(PVEVSEPeakCurrentRipple, 2, "A"))

        async def send_charging_command(self, ev_target_voltage: Any, ev_target_current: Any,
                                        is_precharge: bool = False, is_session_bpt: bool = False) -> None:
            self.dc_state = await bridge.request(
                "dc_demand", timeout_s, target_voltage_v=float(ev_target_voltage or 0),
                target_current_a=float(ev_target_current or 0), precharge=bool(is_precharge))

        async def get_evse_present_voltage(self, protocol: Any) -> Any:
            return pv(PVEVSEPresentVoltage, self.dc_state["present_voltage_v"], "V")

        async def get_evse_present_current(self, protocol: Any) -> Any:
            return pv(PVEVSEPresentCurrent, self.dc_state["present_current_a"], "A")

        async def get_evse_max_power_limit(self) -> Any:
            return pv(PVEVSEMaxPowerLimit, self.dc_state["limit_w"], "W")

        async def get_evse_max_current_limit(self) -> Any:
            return pv(PVEVSEMaxCurrentLimit, self.dc_state["limit_w"] / voltage_v, "A")

        async def get_evse_max_voltage_limit(self) -> Any:
            return pv(PVEVSEMaxVoltageLimit, DC_EVSE_MAX_VOLTAGE_V, "V")

        async def is_evse_power_limit_achieved(self) -> bool:
            return self.dc_state["target_w"] > self.dc_state["limit_w"] + 1.0

        async def is_evse_current_limit_achieved(self) -> bool:
            return await self.is_evse_power_limit_achieved()

    return DcBridgedEVSEController


def dc_ev_class(base: Any, bridge: Any, timeout_s: float) -> Any:
    """A subclass of the bridged AC EV controller `base` that drives ISO 15118-2 DC."""
    from iso15118.evcc.controller.interface import ChargeParamsV2
    from iso15118.shared.messages.datatypes import (
        DCEVChargeParams,
        PVEVEnergyCapacity,
        PVEVEnergyRequest,
        PVEVMaxCurrentLimit,
        PVEVMaxPowerLimit,
        PVEVMaxVoltageLimit,
        PVEVTargetCurrent,
        PVEVTargetVoltage,
    )
    from iso15118.shared.messages.enums import DCEVErrorCode
    from iso15118.shared.messages.iso15118_2.datatypes import (
        DCEVChargeParameter,
        DCEVPowerDeliveryParameter,
        DCEVStatus,
    )

    class DcBridgedEVController(base):
        """The simulated evfleet EV on a DC EVSE behind a Josev EVCC."""

        def __init__(self) -> None:
            super().__init__()
            self.ev: dict[str, Any] = {"soc": 0, "target_current_a": 0.0, "target_voltage_v": 400.0,
                                       "max_current_a": 0.0, "max_power_w": 0.0, "max_voltage_v": 500.0,
                                       "capacity_wh": 0.0, "complete": False}
            self.evse_limit_w: float | None = None  # EVSEMaxPowerLimit of the last CurrentDemandRes

        async def get_charge_params_v2(self, protocol: Any) -> Any:
            n = await bridge.request("ev_params", timeout_s)
            dc = n["dc"]
            self.ev.update(soc=dc["soc"], max_current_a=n["ev_max_current_a"], max_power_w=dc["max_power_w"],
                           max_voltage_v=n["ev_max_voltage_v"], capacity_wh=dc["capacity_wh"],
                           target_voltage_v=dc["voltage_v"], target_current_a=0.0)
            param = DCEVChargeParameter(
                departure_time=int(n["departure_time_s"] or 0), dc_ev_status=await self.get_dc_ev_status(),
                ev_maximum_current_limit=pv(PVEVMaxCurrentLimit, n["ev_max_current_a"], "A"),
                ev_maximum_power_limit=pv(PVEVMaxPowerLimit, dc["max_power_w"], "W"),
                ev_maximum_voltage_limit=pv(PVEVMaxVoltageLimit, n["ev_max_voltage_v"], "V"),
                ev_energy_capacity=pv(PVEVEnergyCapacity, dc["capacity_wh"], "Wh"),
                ev_energy_request=pv(PVEVEnergyRequest, n["e_amount_wh"], "Wh"),
                full_soc=int(dc["full_soc"]), bulk_soc=min(int(dc["full_soc"]), 80))
            return ChargeParamsV2(await self.get_energy_transfer_mode(protocol), None, param)

        async def get_dc_ev_status(self) -> Any:
            return DCEVStatus(ev_ready=True, ev_error_code=DCEVErrorCode.NO_ERROR,
                              ev_ress_soc=max(0, min(100, int(self.ev["soc"]))))

        async def get_dc_charge_params(self) -> Any:
            e = self.ev
            return DCEVChargeParams(
                dc_max_current_limit=pv(PVEVMaxCurrentLimit, e["max_current_a"], "A"),
                dc_max_power_limit=pv(PVEVMaxPowerLimit, e["max_power_w"], "W"),
                dc_max_voltage_limit=pv(PVEVMaxVoltageLimit, e["max_voltage_v"], "V"),
                dc_energy_capacity=pv(PVEVEnergyCapacity, e["capacity_wh"], "Wh"),
                dc_target_current=pv(PVEVTargetCurrent, e["target_current_a"], "A"),
                dc_target_voltage=pv(PVEVTargetVoltage, e["target_voltage_v"], "V"))

        async def is_precharged(self, present_voltage_evse: Any) -> bool:
            return abs(present_voltage_evse.get_decimal_value() - self.ev["target_voltage_v"]) \
                <= PRECHARGE_TOLERANCE_V

        async def get_dc_ev_power_delivery_parameter(self) -> Any:
            return DCEVPowerDeliveryParameter(dc_ev_status=await self.get_dc_ev_status(),
                                              bulk_charging_complete=False,
                                              charging_complete=bool(self.ev["complete"]))

        async def is_charging_complete(self) -> bool:
            return bool(self.ev["complete"])

        async def continue_charging(self) -> bool:
            if self.stop:
                return False
            state = await bridge.request("dc_state", timeout_s, evse_limit_w=self.evse_limit_w)
            self.ev.update(state)
            return bool(state["continue"])

        def on_current_demand_res(self, res: Any) -> None:
            """What the EVSE said in a CurrentDemandRes (called by the patched EVCC state)."""
            if res.evse_max_power_limit is not None:
                self.evse_limit_w = float(res.evse_max_power_limit.get_decimal_value())
            bridge.notify("dc_res", limit_w=self.evse_limit_w,
                          present_current_a=float(res.evse_present_current.get_decimal_value()),
                          present_voltage_v=float(res.evse_present_voltage.get_decimal_value()))

    return DcBridgedEVController


_patched = False


def patch_evcc_states() -> None:
    """Hand each decoded CurrentDemandRes to the EV controller (Josev's EVCC does not)."""
    global _patched
    if _patched:
        return
    _patched = True
    from iso15118.evcc.states import iso15118_2_states as states

    original = states.CurrentDemand.process_message

    async def current_demand(self: Any, message: Any, message_exi: bytes | None = None) -> None:
        body = getattr(message, "body", None)
        res = getattr(body, "current_demand_res", None) if body is not None else None
        hook = getattr(self.comm_session.ev_controller, "on_current_demand_res", None)
        if res is not None and hook is not None:
            hook(res)
        await original(self, message, message_exi)

    states.CurrentDemand.process_message = current_demand
