"""ISO 15118-2 messages (AC, EIM subset) as frozen dataclasses, with SI units in field names.

Only what the schedule loop needs: session setup, service discovery, payment selection,
authorization, ChargeParameterDiscovery (with the EV's departure time and energy),
PowerDelivery (with the EV's ChargingProfile), ChargingStatus (with the SECC's
renegotiation notification) and SessionStop. Times in a schedule are seconds relative to
the ChargeParameterDiscoveryRes, like ISO 15118-2's RelativeTimeInterval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from evfleet.profile import a_to_w


class ResponseCode(StrEnum):
    """ISO 15118-2 ResponseCodeType values used here."""

    OK = "OK"
    FAILED = "FAILED"
    FAILED_SEQUENCE_ERROR = "FAILED_SequenceError"
    FAILED_TARIFF_SELECTION_INVALID = "FAILED_TariffSelectionInvalid"
    FAILED_CHARGING_PROFILE_INVALID = "FAILED_ChargingProfileInvalid"
    FAILED_WRONG_ENERGY_TRANSFER_MODE = "FAILED_WrongEnergyTransferMode"


class EvseProcessing(StrEnum):
    """EVSEProcessingType."""

    FINISHED = "Finished"
    ONGOING = "Ongoing"


class EvseNotification(StrEnum):
    """EVSENotificationType: what the SECC asks of the EV in a status."""

    NONE = "None"
    STOP_CHARGING = "StopCharging"
    RE_NEGOTIATION = "ReNegotiation"


class ChargeProgress(StrEnum):
    """ChargeProgressType of a PowerDeliveryReq."""

    START = "Start"
    STOP = "Stop"
    RENEGOTIATE = "Renegotiate"


class EnergyTransferMode(StrEnum):
    """EnergyTransferModeType; values match OCPP's EnergyTransferModeEnumType (ISO 15118-2's
    DC_extended/DC_core/DC_combo_core/DC_unique are all OCPP "DC")."""

    AC_SINGLE_PHASE = "AC_single_phase"
    AC_THREE_PHASE = "AC_three_phase"
    DC = "DC"


# --- schedule data ---------------------------------------------------------------------


@dataclass(frozen=True)
class PMaxScheduleEntry:
    """One PMaxScheduleEntry: from `start_s` the EV may draw at most `pmax_w`."""

    start_s: int
    pmax_w: float
    duration_s: int | None = None


@dataclass(frozen=True)
class SalesTariffEntry:
    """One SalesTariffEntry: price level (and optional price per kWh) from `start_s`."""

    start_s: int
    e_price_level: int | None = None
    duration_s: int | None = None
    price_per_kwh: float | None = None


@dataclass(frozen=True)
class SalesTariff:
    """A SalesTariff: the price signal the EV may optimise its own plan against."""

    sales_tariff_id: int
    entries: tuple[SalesTariffEntry, ...]
    num_e_price_levels: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class SAScheduleTuple:
    """One offered schedule: PMax entries plus an optional sales tariff."""

    sa_schedule_tuple_id: int
    pmax_schedule: tuple[PMaxScheduleEntry, ...]
    sales_tariff: SalesTariff | None = None

    def end_s(self) -> int:
        """Relative end of the schedule in seconds (last entry's start + duration)."""
        last = self.pmax_schedule[-1]
        return last.start_s + (last.duration_s or 0)

    def pmax_at(self, t_s: float) -> float:
        """PMax in W that applies `t_s` seconds after the schedule's time base (0 after its end)."""
        if t_s >= self.end_s():
            return 0.0
        value = self.pmax_schedule[0].pmax_w
        for entry in self.pmax_schedule:
            if entry.start_s <= t_s:
                value = entry.pmax_w
        return value


@dataclass(frozen=True)
class ProfileEntry:
    """One ProfileEntry of the EV's ChargingProfile: at most `max_power_w` from `start_s`."""

    start_s: int
    max_power_w: float


# --- messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class EvChargeParameter:
    """What the EV needs, common to AC and DC (departure relative to the request)."""

    departure_time_s: int | None
    e_amount_wh: float
    ev_max_voltage_v: float
    ev_max_current_a: float
    ev_min_current_a: float


@dataclass(frozen=True)
class AcEvChargeParameter(EvChargeParameter):
    """AC_EVChargeParameter."""


@dataclass(frozen=True)
class DcEvChargeParameter(EvChargeParameter):
    """DC_EVChargeParameter: adds the EV's power limit, state of charge and battery capacity
    (`e_amount_wh` is EVEnergyRequest, `ev_min_current_a` is 0: DC has no minimum)."""

    ev_max_power_w: float | None = None
    soc_pct: int | None = None
    ev_energy_capacity_wh: float | None = None
    full_soc_pct: int | None = None
    bulk_soc_pct: int | None = None


@dataclass(frozen=True)
class SessionSetupReq:
    """SessionSetupReq."""

    evcc_id: str


@dataclass(frozen=True)
class SessionSetupRes:
    """SessionSetupRes."""

    response_code: ResponseCode
    session_id: str
    evse_id: str


@dataclass(frozen=True)
class ServiceDiscoveryReq:
    """ServiceDiscoveryReq."""


@dataclass(frozen=True)
class ServiceDiscoveryRes:
    """ServiceDiscoveryRes (EIM only; AC modes offered)."""

    response_code: ResponseCode
    payment_options: tuple[str, ...] = ("ExternalPayment",)
    energy_transfer_modes: tuple[EnergyTransferMode, ...] = (
        EnergyTransferMode.AC_THREE_PHASE, EnergyTransferMode.AC_SINGLE_PHASE)


@dataclass(frozen=True)
class PaymentServiceSelectionReq:
    """PaymentServiceSelectionReq."""

    selected_payment_option: str = "ExternalPayment"


@dataclass(frozen=True)
class PaymentServiceSelectionRes:
    """PaymentServiceSelectionRes."""

    response_code: ResponseCode


@dataclass(frozen=True)
class AuthorizationReq:
    """AuthorizationReq (EIM: no contract signature)."""


@dataclass(frozen=True)
class AuthorizationRes:
    """AuthorizationRes."""

    response_code: ResponseCode
    evse_processing: EvseProcessing


@dataclass(frozen=True)
class ChargeParameterDiscoveryReq:
    """ChargeParameterDiscoveryReq with the EV's needs (AC or DC parameters)."""

    requested_energy_transfer_mode: EnergyTransferMode
    ev_charge_parameter: AcEvChargeParameter | DcEvChargeParameter
    max_entries_sa_schedule_tuple: int | None = None


@dataclass(frozen=True)
class ChargeParameterDiscoveryRes:
    """ChargeParameterDiscoveryRes with the offered SAScheduleList."""

    response_code: ResponseCode
    evse_processing: EvseProcessing
    sa_schedule_list: tuple[SAScheduleTuple, ...] = ()
    evse_max_current_a: float = 0.0
    evse_nominal_voltage_v: float = 230.0


@dataclass(frozen=True)
class PowerDeliveryReq:
    """PowerDeliveryReq: start/stop/renegotiate, with the EV's own ChargingProfile."""

    charge_progress: ChargeProgress
    sa_schedule_tuple_id: int
    charging_profile: tuple[ProfileEntry, ...] | None = None


@dataclass(frozen=True)
class PowerDeliveryRes:
    """PowerDeliveryRes."""

    response_code: ResponseCode
    evse_notification: EvseNotification = EvseNotification.NONE


@dataclass(frozen=True)
class ChargingStatusReq:
    """ChargingStatusReq (AC charge loop)."""


@dataclass(frozen=True)
class ChargingStatusRes:
    """ChargingStatusRes; `evse_notification` = ReNegotiation asks the EV to renegotiate."""

    response_code: ResponseCode
    evse_id: str
    sa_schedule_tuple_id: int
    evse_notification: EvseNotification = EvseNotification.NONE
    evse_max_current_a: float | None = None


@dataclass(frozen=True)
class SessionStopReq:
    """SessionStopReq."""

    terminate: bool = True


@dataclass(frozen=True)
class SessionStopRes:
    """SessionStopRes."""

    response_code: ResponseCode


EvRequest = (SessionSetupReq | ServiceDiscoveryReq | PaymentServiceSelectionReq | AuthorizationReq
             | ChargeParameterDiscoveryReq | PowerDeliveryReq | ChargingStatusReq | SessionStopReq)
SeccResponse = (SessionSetupRes | ServiceDiscoveryRes | PaymentServiceSelectionRes | AuthorizationRes
                | ChargeParameterDiscoveryRes | PowerDeliveryRes | ChargingStatusRes | SessionStopRes)


@dataclass(frozen=True)
class EvNeeds:
    """What a simulated EV wants from a session (input of the EVCC model)."""

    departure_time_s: int | None
    energy_wh: float
    ev_max_current_a: float
    ev_min_current_a: float = 6.0
    ev_max_voltage_v: float = 400.0
    phases: int = 3
    voltage_v: float = 230.0
    max_entries_sa_schedule_tuple: int | None = 24
    evcc_id: str = "EVCC000001"
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    dc: DcNeeds | None = None  # set for a DC EV on a DC EVSE

    @property
    def ev_max_power_w(self) -> float:
        """Maximum power the EV can draw, W (DC: its announced power limit)."""
        if self.dc is not None:
            return self.dc.ev_max_power_w
        return a_to_w(self.ev_max_current_a, self.phases, self.voltage_v)

    @property
    def energy_transfer_mode(self) -> EnergyTransferMode:
        """DC, or the AC mode matching the EV's phases."""
        if self.dc is not None:
            return EnergyTransferMode.DC
        return EnergyTransferMode.AC_SINGLE_PHASE if self.phases == 1 else EnergyTransferMode.AC_THREE_PHASE


@dataclass(frozen=True)
class DcNeeds:
    """The DC part of a simulated EV's needs (DC_EVChargeParameter, DC_EVStatus)."""

    ev_max_power_w: float
    soc_pct: int
    ev_energy_capacity_wh: float
    full_soc_pct: int
    dc_voltage_v: float = 400.0  # the battery voltage the EV asks for in PreCharge/CurrentDemand
