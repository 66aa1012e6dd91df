"""`evfleet demo` end to end, headless, as a user runs it: a real process, real Redis, real sockets.

A short demo (small fleet, high speed) must account for every car, never exceed the site
limit in the optimized run (measured from the stations' meter values), cost less than the
same cars replayed uncontrolled, and leave nothing running. A second run is stopped with
SIGTERM half-way and must still shut down cleanly and write a (partial) report.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from csms.store.embedded import free_port

EVFLEET = [sys.executable, "-c", "from evfleet.app.cli import main; main()"]
START = "2026-03-02T12:00:00Z"


def redis_children(tmp: Path) -> set[int]:
    """Pids of redis-server processes whose data dir is an evfleet one under `tmp`.

    redis-server rewrites its command line (`/usr/bin/redis-server 127.0.0.1:PORT`), so it is
    known by its name and its working directory, which is its `--dir`. Each demo run gets its own
    TMPDIR (`demo_env`), so only the Redis that run started can match: another test or program on
    the machine starting its own Redis cannot fail the check.
    """
    marker = str(tmp / "evfleet-redis-")
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "redis-server":
                continue
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(marker):
            pids.add(int(entry.name))
    return pids


def demo_env(tmp: Path) -> dict[str, str]:
    """Environment of a demo run: wide plain output, no display, its own TMPDIR (`redis_children`)."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1", "TMPDIR": str(tmp)}
    env.pop("DISPLAY", None)
    return env


def private_ports(args: list[str]) -> list[str]:
    """`--port`/`--api-port` options on free private ports for those `args` leave unset.

    The demo's defaults (8080 for the dashboard if free) collide with anything else on a shared
    machine; every demo run in the tests gets its own ports.
    """
    extra = []
    for opt in ("--port", "--api-port"):
        if opt not in args:
            extra += [opt, str(free_port())]
    return extra


def run_demo(args: list[str], out: Path, timeout_s: float, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = demo_env(tmp)
    cmd = [*EVFLEET, "demo", "--no-browser", "--output", str(out), *args, *private_ports(args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)


def check_clean(output: str) -> None:
    assert "Traceback" not in output, output
    assert "Task was destroyed" not in output, output
    assert "Unclosed" not in output, output


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> dict[str, Any]:
    """One short headless demo (8 stations, a simulated day from noon to 09:00 at 2400x) and its report."""
    base = tmp_path_factory.mktemp("demo")
    out = base / "report"
    t0 = time.monotonic()
    proc = run_demo(["--stations", "8", "--speed", "2400", "--duration", "21h", "--seed", "3"], out,
                    timeout_s=150, tmp=base / "tmp")
    wall_s = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    log = (out / "demo.log").read_text() if (out / "demo.log").exists() else ""
    assert proc.returncode == 0, output + log[-5000:]
    check_clean(output)
    assert not redis_children(base / "tmp"), "the demo left a redis-server running"
    report = json.loads((out / "report.json").read_text())
    (artifacts_dir / "demo-report.json").write_text(json.dumps(report, indent=2))
    png = (out / "report.png").read_bytes()
    (artifacts_dir / "demo-report.png").write_bytes(png)
    return {"report": report, "png": png, "stdout": proc.stdout, "wall_s": wall_s}


def test_demo_runs_headless_and_writes_both_files(short_demo: dict[str, Any]) -> None:
    assert short_demo["png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert short_demo["wall_s"] < 80  # 31.5 s of simulated window at 2400x + the same 47 s as at 1200x (<110)
    report = short_demo["report"]
    assert report["complete"] is True
    # the figures are printed
    assert f"{report['summary']['saving_percent']:.1f} %" in short_demo["stdout"]
    assert f"{report['runs']['optimized']['energy_cost']:.2f} EUR" in short_demo["stdout"]


def test_every_car_is_accounted_for(short_demo: dict[str, Any]) -> None:
    report = short_demo["report"]
    opt, unc = report["runs"]["optimized"], report["runs"]["uncontrolled"]
    assert report["cars"] == 8
    opt_ids = [c["id"] for c in opt["cars"]]
    assert len(opt_ids) == report["cars"] == len(set(opt_ids))
    assert sorted(opt_ids) == sorted(c["id"] for c in unc["cars"])
    for car in opt["cars"]:
        assert {"arrival", "departure", "need_kwh", "delivered_kwh"} <= car.keys()
        assert car["left"], "every car of the window left before it ended"
    assert opt["cars_without_transaction"] == [], "a car's session never reached the csms"
    assert opt["unmatched_transactions"] == []
    assert opt["transactions"] == report["cars"]


def test_site_limit_never_exceeded_in_the_measured_optimized_run(short_demo: dict[str, Any]) -> None:
    report = short_demo["report"]
    opt = report["runs"]["optimized"]
    assert opt["source"].startswith("measured")
    assert opt["energy_delivered_kwh"] > 0
    assert not opt["limit_exceeded"]
    assert opt["max_site_load_kw"] <= report["site_limit_kw"]
    assert max(opt["load"]["load_kw"]) <= report["site_limit_kw"]


def test_optimized_energy_costs_less(short_demo: dict[str, Any]) -> None:
    report = short_demo["report"]
    opt, unc = report["runs"]["optimized"], report["runs"]["uncontrolled"]
    assert opt["energy_cost"] < unc["energy_cost"]
    assert opt["average_price_per_kwh"] < unc["average_price_per_kwh"]  # not only less energy
    assert report["summary"]["saving_percent"] > 0


def test_every_car_gets_its_need_like_uncontrolled(short_demo: dict[str, Any]) -> None:
    # a full car without ISO 15118 needs reports SuspendedEV and 0 W, so the optimizer plans no
    # energy for it (before, it kept a phantom 20 kWh need that crowded out ISO 15118 cars)
    report = short_demo["report"]
    opt, unc = report["runs"]["optimized"], report["runs"]["uncontrolled"]
    assert opt["cars_short"]["count"] <= unc["cars_short"]["count"], opt["cars_short"]
    assert opt["energy_delivered_kwh"] >= 0.98 * unc["energy_delivered_kwh"]
    assert report["summary"]["like_for_like"]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_stops_everything_and_writes_a_partial_report(tmp_path: Path, how: str) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM to the process."""
    out = tmp_path / "report"
    api_port = free_port()
    env = demo_env(tmp_path / "tmp")
    proc = subprocess.Popen([*EVFLEET, "demo", "--no-browser", "--output", str(out), "--stations", "4",
                             "--speed", "600", "--duration", "24h", "--start", START,
                             "--api-port", str(api_port), "--port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if re.search(r"\d+% sim", line) or not line:
                break
        assert any("dashboard: http://127.0.0.1:" in x for x in lines), "".join(lines)
        # the dashboard and the API answer without a token in the demo
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/", timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/v1/stations", timeout=10) as resp:
            assert resp.status == 200
        assert redis_children(tmp_path / "tmp"), "the running demo's Redis is not found under its TMPDIR"
        time.sleep(1)  # the run goes on a moment (10 simulated minutes) before it is stopped
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + stdout + stderr
    assert proc.returncode == 0, output
    check_clean(output)
    assert ("SIGINT" if how == "ctrl-c" else "SIGTERM") in output
    assert not redis_children(tmp_path / "tmp"), "the demo left a redis-server running"
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False
    assert report["cars"] == len(report["runs"]["optimized"]["cars"])


@pytest.mark.parametrize("args, message", [
    (["--duration", "soon"], "invalid duration"),
    (["--strategy", "magic"], "unknown --strategy"),
    (["--start", "yesterday"], "not an ISO 8601 time"),
    (["--scenario", "no-such-scenario"], "unknown scenario"),
])
def test_bad_options_are_refused_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_demo(args, tmp_path / "r", timeout_s=60, tmp=tmp_path / "tmp")
    assert proc.returncode == 2
    assert message in proc.stdout + proc.stderr
    check_clean(proc.stdout + proc.stderr)
    assert not (tmp_path / "r" / "report.json").exists()


def test_busy_port_is_refused_and_nothing_is_left_running(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_demo(["--api-port", str(port)], tmp_path / "r", timeout_s=60, tmp=tmp_path / "tmp")
    assert proc.returncode == 2
    assert f"--api-port {port} is already in use" in proc.stdout
    check_clean(proc.stdout + proc.stderr)
    assert not redis_children(tmp_path / "tmp")
