"""Where real ISO 15118 can run here: network namespaces, veth pairs, Java and the Josev venv.

Josev needs one network interface per station with an IPv6 link-local address that
multicast SDP and TCP can use; `lo` and dummy links do not work. We create a veth pair per
station (SECC end, EV end) inside a fresh network namespace made by `unshare -rn` (a user
plus network namespace: no root needed; as root, `unshare -n` also works), so the host's
network is never touched. A small holder process (`josev_runner.py netns`) lives in the
namespace and spawns the SECC and EVCC processes there on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().with_name("josev_runner.py")


class Iso15118UnavailableError(RuntimeError):
    """Real ISO 15118 cannot run on this machine (the message says why and what to do)."""


def josev_venv() -> Path:
    """The Josev virtual environment (EVFLEET_ISO15118_VENV, default ./.iso15118-venv)."""
    return Path(os.environ.get("EVFLEET_ISO15118_VENV", REPO_ROOT / ".iso15118-venv"))


def josev_python() -> Path:
    """Python of the Josev venv."""
    return josev_venv() / "bin" / "python"


@dataclass(frozen=True)
class Capability:
    """What this machine allows: `unshare` is the namespace command prefix, or None with a reason."""

    unshare: tuple[str, ...] | None
    java: str | None
    josev: bool
    reasons: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when real ISO 15118 sessions can run."""
        return self.unshare is not None and self.java is not None and self.josev

    def explain(self) -> str:
        """Human-readable verdict."""
        if self.ok:
            assert self.unshare is not None
            return (f"real ISO 15118 is possible: namespaces via `{' '.join(self.unshare)}`, "
                    f"java at {self.java}, Josev in {josev_venv()}")
        return "real ISO 15118 is NOT possible here: " + "; ".join(self.reasons)


def _try_netns(prefix: list[str]) -> str | None:
    if shutil.which(prefix[0]) is None:
        return f"`{prefix[0]}` not found"
    script = "ip link add evfck0 type veth peer name evfck1 && ip link set evfck0 up"
    try:
        proc = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"`{' '.join(prefix)}` failed: {err}"
    if proc.returncode != 0:
        return f"`{' '.join(prefix)}` + veth failed: {(proc.stderr or proc.stdout).strip()[:200]}"
    return None


def check() -> Capability:
    """Probe namespaces+veth, Java and the Josev venv (takes well under a second)."""
    reasons: list[str] = []
    unshare: tuple[str, ...] | None = None
    if shutil.which("ip") is None:
        reasons.append("`ip` (iproute2) is not installed (Debian: apt-get install iproute2)")
    else:
        candidates = [["unshare", "-rn"]] + ([["unshare", "-n"]] if os.geteuid() == 0 else [])
        for prefix in candidates:
            err = _try_netns(prefix)
            if err is None:
                unshare = tuple(prefix)
                break
            reasons.append(err)
        if unshare is None:
            reasons.append("neither root nor unprivileged user namespaces are available "
                           "(run as root, or enable kernel.unprivileged_userns_clone / "
                           "user.max_user_namespaces)")
        else:
            reasons.clear()
    java = shutil.which("java")
    if java is None:
        reasons.append("no `java` on PATH: Josev's EXI codec needs Java 17 "
                       "(Debian: apt-get install default-jre-headless)")
    py = josev_python()
    josev = py.exists() and subprocess.run(
        [str(py), "-c", "import iso15118, aiofile, pydantic; assert pydantic.VERSION.startswith('1.')"],
        capture_output=True, timeout=30).returncode == 0
    if not josev:
        reasons.append(f"no Josev venv at {josev_venv()} "
                       "(run `evfleet iso15118 setup` or scripts/setup-iso15118.sh)")
    return Capability(unshare, java, josev, tuple(reasons))


class NetnsHolder:
    """A process in its own network namespace that owns the veth pairs and spawns runners there."""

    def __init__(self, prefix: tuple[str, ...], pairs: list[tuple[str, str]]) -> None:
        self.prefix = prefix
        self.pairs = pairs
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 15.0) -> None:
        """Create the namespace and its links; wait until the link-local addresses are usable."""
        argv = [*self.prefix, str(josev_python()), str(RUNNER), "netns"]
        for a, b in self.pairs:
            argv += ["--pair", f"{a}:{b}"]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        while True:
            msg = await self._read(timeout_s)
            if "ready" in msg:
                return
            if "error" in msg:
                raise Iso15118UnavailableError(f"namespace setup failed: {msg['error']}")

    async def _read(self, timeout_s: float) -> dict[str, object]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not line:
            err = b""
            if self.proc.stderr is not None:
                err = await self.proc.stderr.read()
            raise Iso15118UnavailableError(f"namespace holder exited: {err.decode(errors='replace')[-500:]}")
        data: dict[str, object] = json.loads(line)
        return data

    async def spawn(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
        """Start `argv` inside the namespace, output to `log_path`; return its pid."""
        assert self.proc is not None and self.proc.stdin is not None
        cmd = {"spawn": argv, "log": str(log_path), "env": env or dict(os.environ)}
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        while True:
            msg = await self._read(10)
            if "spawned" in msg:
                pid = msg["spawned"]
                assert isinstance(pid, int)
                return pid

    def exited(self, pid: int) -> str | None:
        """None while the holder and its child `pid` run; else how it ended ("exit code 1", "signal 9",
        "the namespace holder exited")."""
        if self.proc is None or self.proc.returncode is not None:
            return "the namespace holder exited"
        return child_exit(pid)

    async def stop_child(self, pid: int, timeout_s: float = 5.0) -> str:
        """End the holder's child `pid` (SIGTERM, then SIGKILL after `timeout_s`); return how it ended."""
        deadline = time.monotonic() + timeout_s
        sig = signal.SIGTERM
        while (how := self.exited(pid)) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if time.monotonic() > deadline:
                sig = signal.SIGKILL
            await asyncio.sleep(0.1)
        return how

    async def close(self) -> None:
        """Stop the children and the namespace (the veth pairs vanish with it)."""
        if self.proc is None:
            return
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None


def child_exit(pid: int) -> str | None:
    """None while process `pid` runs; else how it ended, read from /proc (the holder, not us, is its
    parent: until the holder reaps it, it is a zombie whose /proc/PID/stat carries its wait status)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return "exited"
    fields = stat[stat.rfind(")") + 2:].split()  # fields 3.. (the name may hold spaces and parens)
    if fields[0] not in ("Z", "X"):
        return None
    status = int(fields[49]) if len(fields) > 49 else 0  # field 52: exit_code, waitpid(2) form
    return f"signal {status & 0x7F}" if status & 0x7F else f"exit code {status >> 8}"


def runner_argv(role: str, bridge: Path, ports: list[tuple[str, str]], **opts: object) -> list[str]:
    """Command line of a SECC/EVCC runner in the Josev venv."""
    argv = [str(josev_python()), str(RUNNER), role, "--bridge", str(bridge)]
    for name, iface in ports:
        argv += ["--port", f"{name}={iface}"]
    for key, value in opts.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def main_python() -> str:
    """The interpreter running evfleet (for messages)."""
    return sys.executable
