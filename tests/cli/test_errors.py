"""Every documented CLI error path: one line on stderr, no traceback, and the documented exit code
(2: the command line is wrong; 1: a valid command failed at run time). See docs/csms.md, "Exit codes"."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from csms.store.embedded import free_port

EVFLEET = str(Path(sys.executable).with_name("evfleet"))


def run(*args: str, home: Path) -> tuple[int, list[str], str]:
    """Run `evfleet ARGS`; (exit code, non-empty stderr lines, stdout)."""
    proc = subprocess.run([EVFLEET, *args], capture_output=True, text=True, timeout=60,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    return proc.returncode, [ln for ln in proc.stderr.splitlines() if ln.strip()], proc.stdout


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield int(sock.getsockname()[1])
    sock.close()


def cases(redis_url: str, closed: str, busy_port: int) -> list[tuple[list[str], int, str]]:
    return [
        (["csms", "--redis-url", "foo://x"], 2, "redis_url"),
        (["csms", "--redis-url", closed, "--port", "0", "--api-port", "0"], 1, "cannot use Redis"),
        (["csms", "--redis-url", redis_url, "--port", str(busy_port), "--no-api"], 1,
         "cannot start the csms"),
        (["csms", "--config", "/nonexistent/evfleet.toml"], 2, "/nonexistent/evfleet.toml"),
        (["csms", "--redis-url", redis_url, "--clock-speed", "0"], 2, "--clock-speed"),
        (["stations", "list", "--redis-url", closed], 1, "Redis error"),
        (["stations", "add", "bad id!", "--password", "a-long-station-secret", "--redis-url", redis_url],
         2, "station id"),
        (["stations", "remove", "NOPE", "--redis-url", redis_url], 1, "unknown station 'NOPE'"),
        (["sites", "remove", "nope", "--redis-url", redis_url], 1, "unknown site 'nope'"),
        (["idtokens", "remove", "NOPE", "--redis-url", redis_url], 1, "unknown id token 'NOPE'"),
        (["optimizer", "--redis-url", "foo://x"], 2, "must start with redis://"),
        (["optimizer", "--redis-url", closed], 1, "cannot reach Redis"),
        (["optimize", "--input", "/nonexistent.json", "--output", "/tmp/x.json"], 2, "cannot read instance"),
        (["sim", "--csms", "http://127.0.0.1:1/ocpp"], 2, "ws:// or wss://"),
        (["csms", "--no-such-flag"], 2, "No such option"),
        (["stations", "add"], 2, "Missing argument"),
    ]


def test_documented_errors_are_one_line_with_the_documented_exit_code(redis_url: str, tmp_path: Path,
                                                                       busy_port: int) -> None:
    closed = f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0"
    for args, code, needle in cases(redis_url, closed, busy_port):
        got, stderr, _ = run(*args, home=tmp_path)
        where = f"evfleet {' '.join(args)}: exit {got}, stderr {stderr}"
        assert got == code, where
        assert not any("Traceback" in ln for ln in stderr), where
        errors = [ln for ln in stderr if "error" in ln.lower()]
        assert len(errors) == 1 and needle in errors[0], where
        assert "s3cret-pass" not in "\n".join(stderr), where
        assert len(stderr) == 1, where


def test_sites_and_id_tokens_list_and_remove(redis_url: str, tmp_path: Path) -> None:
    r = ["--redis-url", redis_url]
    assert run("sites", "set", "depot-a", "--limit-kw", "40", *r, home=tmp_path)[0] == 0
    assert run("stations", "add", "CP-1", "--password", "a-long-station-secret", "--site", "depot-a",
               "--iterations", "1000", *r, home=tmp_path)[0] == 0
    code, _, out = run("sites", "list", *r, home=tmp_path)
    assert code == 0 and "depot-a" in out and " 40 " in out
    code, stderr, _ = run("sites", "remove", "depot-a", *r, home=tmp_path)
    assert code == 1 and "still has 1 station(s)" in stderr[0]
    assert run("stations", "remove", "CP-1", *r, home=tmp_path)[0] == 0
    assert run("sites", "remove", "depot-a", *r, home=tmp_path)[0] == 0
    assert "depot-a" not in run("sites", "list", *r, home=tmp_path)[2]
    assert run("idtokens", "add", "CARD-1", "--type", "ISO14443", *r, home=tmp_path)[0] == 0
    code, _, out = run("idtokens", "list", "--json", *r, home=tmp_path)
    assert code == 0 and '"id_token": "CARD-1"' in out and '"status": "Accepted"' in out
    assert run("idtokens", "remove", "CARD-1", *r, home=tmp_path)[0] == 0
    assert run("idtokens", "list", *r, home=tmp_path)[2].strip() == "no id tokens"


def test_solver_output_never_reaches_the_terminal(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[2] / "docs" / "examples"
    for instance in ("seed003-company-fleet.json", "seed004-shared-source.json"):
        code, stderr, stdout = run("optimize", "--input", str(examples / instance), "--output",
                                   str(tmp_path / "schedule.json"), home=tmp_path)
        assert code == 0, stderr
        assert "HiGHS" not in stdout + "\n".join(stderr)  # no banner, no solver log
