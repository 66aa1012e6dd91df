"""`evfleet iso15118 ...`: the Josev environment, a capability check, and a real-session demo."""

from __future__ import annotations

import subprocess
from pathlib import Path

import typer

iso_app = typer.Typer(help="ISO 15118 for simulated stations (Josev environment, checks, demo).",
                      no_args_is_help=True)


@iso_app.command("setup")
def setup() -> None:
    """Create or update .iso15118-venv (iso15118==0.31.2, aiofile, pydantic<2); quick when done."""
    from evse_sim.iso15118.netns import REPO_ROOT, josev_venv

    script = REPO_ROOT / "scripts" / "setup-iso15118.sh"
    if not script.exists():
        typer.echo(f"error: {script} not found (run from a source checkout)", err=True)
        raise typer.Exit(2)
    env_venv = str(josev_venv())
    proc = subprocess.run(["bash", str(script)], env={**_env(), "ISO15118_VENV": env_venv})
    if proc.returncode != 0:
        typer.echo("error: setting up the Josev environment failed (see the output above)", err=True)
        raise typer.Exit(proc.returncode)


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


@iso_app.command("check")
def check_cmd() -> None:
    """Say whether real ISO 15118 (veth pairs in a namespace, Java, Josev venv) is possible here."""
    from evse_sim.iso15118.netns import check

    cap = check()
    typer.echo(cap.explain())
    if cap.ok:
        typer.echo("modelled HLC is always available; real ISO 15118 sessions can run on this machine.")
    else:
        typer.echo("modelled HLC is still available (evfleet sim uses it); real sessions are not.")
        raise typer.Exit(1)


@iso_app.command("demo")
def demo(
    energy_kwh: float = typer.Option(20.0, help="Energy the EV asks for [kWh]."),
    hours: float = typer.Option(4.0, help="Hours until the EV leaves."),
    limit_kw: float = typer.Option(7.0, help="TxProfile limit handed to the SECC after 3 s [kW]."),
    workdir: Path | None = typer.Option(None, help="Directory for the Josev logs (default: a temp dir)."),
    iso15118: str = typer.Option("2", "--iso15118", help="2 (ISO 15118-2 AC) or 20 (ISO 15118-20 AC, "
                                                        "scheduled control mode)."),
) -> None:
    """Run one real ISO 15118 AC session (Josev SECC + EVCC over a veth pair), no CSMS: print the exchange."""
    import asyncio

    from evse_sim.iso15118.netns import Iso15118UnavailableError
    from evse_sim.iso15118.v20 import PROTOCOLS

    if iso15118 not in PROTOCOLS:
        typer.echo(f"error: --iso15118 {iso15118!r} is not one of {', '.join(PROTOCOLS)}", err=True)
        raise typer.Exit(2)
    try:
        asyncio.run(_demo(energy_kwh, hours, limit_kw, workdir, iso15118))
    except Iso15118UnavailableError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


async def _demo(energy_kwh: float, hours: float, limit_kw: float, workdir: Path | None,
                protocol: str = "2") -> None:
    import asyncio
    import json
    from datetime import UTC, datetime
    from typing import Any

    from evfleet.clock import RealClock
    from evse_sim.iso15118.bridge import JosevHlc
    from evse_sim.iso15118.messages import EvNeeds
    from evse_sim.iso15118.session import SeccConfig

    class PrintPort:
        async def notify_ev_charging_needs(self, evse_id: int, payload: dict[str, Any]) -> None:
            typer.echo(f"-> CSMS NotifyEVChargingNeeds {json.dumps(payload)}")

        async def notify_ev_charging_schedule(self, evse_id: int, payload: dict[str, Any]) -> None:
            typer.echo(f"-> CSMS NotifyEVChargingSchedule {json.dumps(payload)}")

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    clock = RealClock()
    hlc = JosevHlc(PrintPort(), clock, SeccConfig(), workdir=workdir, protocol=protocol)
    hlc.on_event = lambda kind, data: typer.echo(f"   {kind}: {json.dumps(data)[:300]}")
    await hlc.open()
    typer.echo(f"Josev logs in {hlc.workdir}")
    try:
        hlc.start(EvNeeds(departure_time_s=int(hours * 3600), energy_wh=energy_kwh * 1000,
                          ev_max_current_a=16))
        for _ in range(600):
            await asyncio.sleep(0.1)
            if hlc.state == "charging":
                break
        await asyncio.sleep(3)
        schedule = {"id": 1, "chargingRateUnit": "W", "startSchedule": datetime.now(UTC).isoformat(),
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_kw * 1000}]}
        profile = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
                   "chargingProfileKind": "Absolute", "chargingSchedule": [schedule]}
        hlc.on_tx_profile(profile)
        for _ in range(200):
            await asyncio.sleep(0.1)
            if hlc.v20 and hlc.v20_target_w is not None and abs(hlc.v20_target_w - limit_kw * 1000) < 1:
                break  # -20: the limit reached the EV as EVSETargetActivePower (no renegotiation)
            if hlc.renegotiations and hlc.state == "charging" and len(hlc.plans) >= 2:
                break
        hlc.stop()
        await asyncio.sleep(3)
        typer.echo(f"renegotiations: {hlc.renegotiations}, EV plans: {len(hlc.plans)}, "
                   f"-20 EV target: {hlc.v20_target_w}, errors: {hlc.errors}")
    finally:
        await hlc.close()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(iso_app, name="iso15118")
