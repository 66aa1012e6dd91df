"""What the csms sends with prices encodes on a real SECC: the TxProfile built from a price series
(levels-only SalesTariff) -> SAScheduleList (the station's conversion) -> Josev 0.31.2 EXI codec,
encoded the way its SECC does (SalesTariff alone for the signature, then ChargeParameterDiscoveryRes).

Before: `PVStartValue(unit="Wh")` failed validation and a ConsumptionCost failed the SalesTariff
fragment encoding ("JSONObject["Multiplier"] is not a string"): every priced session ended.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from evfleet.txprofile import EvLimits, EvseElectrical, build_tx_profile
from evse_sim.iso15118.bridge import tuples_to_json
from evse_sim.iso15118.netns import RUNNER, check, josev_python
from evse_sim.iso15118.schedules import SecLimits, profile_to_sa_schedules

CAP = check()
pytestmark = [pytest.mark.iso15118, pytest.mark.timeout(120),
              pytest.mark.skipif(not (CAP.java and CAP.josev), reason=CAP.explain())]


class Encoder:
    """One `josev_runner.py encode --stream` process for the module: Josev's import and its JVM (the
    EXI codec) start once, not once per case (each start took 4-20 s of the suite)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([str(josev_python()), str(RUNNER), "encode", "--stream"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, tuples: list[dict[str, object]], iso15118: str = "2") -> dict[str, object]:
        """Encode and decode `tuples` as the ISO 15118-`iso15118` SECC sends them (90 s at most)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"iso15118": iso15118, "tuples": tuples}) + "\n")
        self.proc.stdin.flush()
        line = _readline(self.proc, 90)
        assert line, f"the encoder exited with {self.proc.poll()}"
        return dict(json.loads(line))

    def close(self) -> None:
        """End the process (stdin EOF ends its loop)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _readline(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """One line of `proc`'s output; kill it (and fail) if none comes within `timeout_s`."""
    assert proc.stdout is not None
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        return proc.stdout.readline()
    finally:
        timer.cancel()


@pytest.fixture(scope="module")
def _encode() -> Iterator[Encoder]:
    encoder = Encoder()
    yield encoder
    encoder.close()


def test_priced_tx_profile_encodes_as_josev_secc_sends_it(_encode: Encoder) -> None:
    start = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)
    prices = [0.40] * 8 + [0.10] * 8 + [0.25] * 8 + [0.40] * 8  # peak, cheap window, shoulder, peak
    payload = build_tx_profile(evse_id=1, transaction_id="tx-1", start=start, step_s=900,
                               limits_kw=[11.0] * 32, evse=EvseElectrical(rate_unit="A", phases=3),
                               ev=EvLimits(max_current_a=16, max_schedule_tuples=5), profile_id=42,
                               prices=prices)
    schedule = payload["chargingProfile"]["chargingSchedule"][0]
    tariff = schedule["salesTariff"]
    assert all("consumptionCost" not in e for e in tariff["salesTariffEntry"])  # levels only
    assert len(tariff["salesTariffEntry"]) <= 5  # no more entries than the EV announced
    tuples = profile_to_sa_schedules(payload["chargingProfile"], start, SecLimits(11_000.0), 8 * 3600, 5)
    assert tuples[0].sales_tariff is not None
    assert len(tuples[0].sales_tariff.entries) <= 5 and len(tuples[0].pmax_schedule) <= 5
    result = _encode(tuples_to_json(tuples))
    assert result["ok"], result
    decoded = result["decoded"]
    assert isinstance(decoded, list)
    levels = [e[1] for e in decoded[0]["tariff"]["entries"]]
    assert levels == [3, 1, 2, 3]  # the cheap window is the lowest level on the wire


def test_a_tariff_with_prices_only_still_encodes_as_levels(_encode: Encoder) -> None:
    """A csms that sends consumptionCost without levels: the station turns prices into levels."""
    start = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)
    entries = [{"relativeTimeInterval": {"start": s}, "consumptionCost": [
        {"startValue": 0, "cost": [{"costKind": "RelativePricePercentage", "amount": a}]}]}
        for s, a in [(0, 140), (3600, 60), (7200, 100)]]
    profile = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
               "chargingProfileKind": "Absolute",
               "chargingSchedule": [{"id": 1, "startSchedule": start.isoformat(), "chargingRateUnit": "W",
                                     "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000}],
                                     "salesTariff": {"id": 1, "salesTariffEntry": entries}}]}
    tuples = profile_to_sa_schedules(profile, start, SecLimits(11_000.0), 4 * 3600)
    result = _encode(tuples_to_json(tuples))
    assert result["ok"], result
    assert [e[1] for e in result["decoded"][0]["tariff"]["entries"]] == [3, 1, 2]  # type: ignore[index]


def test_priced_tx_profile_encodes_as_iso15118_20_schedule_exchange_res(_encode: Encoder) -> None:
    """ISO 15118-20 AC: the same tuples as the -20 SECC sends them (PowerSchedule + PriceLevelSchedule
    in a ScheduleExchangeRes) encode, and decode to the same PMax and price levels."""
    start = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)
    prices = [0.40] * 8 + [0.10] * 8 + [0.25] * 8 + [0.40] * 8
    payload = build_tx_profile(evse_id=1, transaction_id="tx-1", start=start, step_s=900,
                               limits_kw=[11.0] * 8 + [7.4] * 24,
                               evse=EvseElectrical(rate_unit="A", phases=3),
                               ev=EvLimits(max_current_a=16, max_schedule_tuples=12), profile_id=42,
                               prices=prices)
    tuples = profile_to_sa_schedules(payload["chargingProfile"], start, SecLimits(11_000.0), 8 * 3600, 12)
    sent = tuples_to_json(tuples)
    result = _encode(sent, "20")
    assert result["ok"], result
    decoded: Any = result["decoded"]
    assert [round(w) for _, w, _ in decoded[0]["pmax"]] == [round(w) for _, w, _ in sent[0]["pmax"]]
    assert [e[1] for e in decoded[0]["tariff"]["entries"]] == [3, 1, 2, 3]  # cheap window lowest
