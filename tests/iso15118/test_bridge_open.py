"""JosevHlc.open fails as soon as its SECC process exits, not after its whole start-up timeout."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from evfleet.clock import RealClock
from evse_sim.iso15118 import bridge
from evse_sim.iso15118.bridge import JosevHlc
from evse_sim.iso15118.netns import Iso15118UnavailableError, check, child_exit
from evse_sim.iso15118.secc import SeccConfig

CAP = check()


def test_child_exit_reads_the_wait_status_of_a_zombie() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    deadline = time.monotonic() + 10
    while child_exit(proc.pid) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child_exit(proc.pid) == "exit code 3"  # not reaped yet: a zombie with its status
    proc.wait()
    assert child_exit(proc.pid) == "exited"
    assert child_exit(1) is None


@pytest.mark.iso15118
@pytest.mark.skipif(not CAP.ok, reason=CAP.explain())
async def test_open_fails_fast_with_the_exit_code_when_the_secc_crashes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crashing_secc(*_args: Any, **_kwargs: Any) -> list[str]:
        return [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]

    monkeypatch.setattr(bridge, "runner_argv", crashing_secc)
    hlc = JosevHlc(object(), RealClock(), SeccConfig(), workdir=tmp_path)  # type: ignore[arg-type]
    t0 = asyncio.get_running_loop().time()
    try:
        with pytest.raises(Iso15118UnavailableError, match=r"SECC ended \(exit code 3\).*secc\.log"):
            await hlc.open(timeout_s=60)
    finally:
        await hlc.close()
    assert asyncio.get_running_loop().time() - t0 < 20  # not the 60 s timeout
    assert "boom" in (tmp_path / "secc.log").read_text()
