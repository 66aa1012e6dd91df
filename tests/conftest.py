"""Shared fixtures: real Redis and MQTT servers on private ports, started and stopped here."""

from __future__ import annotations

import asyncio
import asyncio.runners
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings as hypothesis_settings

from csms.refreeze import REFREEZER, THAW_FLOOR_OBJECTS, THAW_MIN_INTERVAL_S, THAW_SETTLE_S
from csms.store.embedded import EmbeddedRedis, free_port

ARTIFACTS = Path(os.environ.get("EVFLEET_TEST_ARTIFACTS", "test-artifacts"))

# Property tests check results, not time (targets live in benchmarks): Hypothesis's default 200 ms
# deadline per example can fail them on a loaded 2-core machine, where one example may wait 200 ms for
# the CPU (the most likely cause of a fair-shares property test failing once at load 14, passing alone)
hypothesis_settings.register_profile("evfleet", deadline=None)
hypothesis_settings.load_profile("evfleet")
STUCK_TASK_GRACE_S = 15.0
_stuck_tasks: list[str] = []


def _cancel_all_tasks_bounded(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio.runners._cancel_all_tasks, but a task that ignores cancellation cannot hang the run.

    A test's event loop is closed by cancelling every task left and waiting for them; one task that
    swallows CancelledError would block the whole suite forever. Here it gets STUCK_TASK_GRACE_S,
    then its stack is printed and the session is marked failed (see pytest_sessionfinish).
    """
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    _done, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=STUCK_TASK_GRACE_S))
    for task in pending:
        _stuck_tasks.append(repr(task))
        print(f"\nstuck task ignored cancellation for {STUCK_TASK_GRACE_S} s: {task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    for task in tasks - pending:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({"message": "unhandled exception during test loop shutdown",
                                         "exception": task.exception(), "task": task})


asyncio.runners._cancel_all_tasks = _cancel_all_tasks_bounded  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any task ignored cancellation at loop shutdown (a product bug)."""
    if _stuck_tasks:
        print(f"\n{len(_stuck_tasks)} task(s) ignored cancellation at event-loop shutdown:", file=sys.stderr)
        for task in _stuck_tasks:
            print(f"  {task}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # a pytest-xdist worker: hand them to the controller
            workeroutput["evfleet_stuck_tasks"] = list(_stuck_tasks)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """pytest-xdist controller: collect a finished worker's stuck tasks, so the run fails on them too."""
    _stuck_tasks.extend(getattr(node, "workeroutput", {}).get("evfleet_stuck_tasks", []))


ALONE = frozenset({
    # CPU-bound load tests with timing assertions (connection storms, 500-2,000 stations, bursts)
    "tests/csms/test_reconnect_storm.py", "tests/csms/test_redis_pool.py", "tests/csms/test_fuzz.py",
    "tests/csms/test_login_hardening.py", "tests/iso15118/test_fleet_hlc.py",
    "tests/dashboard/test_dashboard.py",
    # real Josev JVMs (2 s message timeouts in the EVCC) and real-time 1 Hz sampling of the site limit
    "tests/iso15118/test_josev_e2e.py", "tests/iso15118/test_josev_dc.py", "tests/iso15118/test_josev_v20.py",
    "tests/iso15118/test_josev_prices.py", "tests/loop/test_fault_load.py", "tests/loop/test_loop_k15_k17.py",
    "tests/scale/test_site_limit_failover.py",
    # an answer after redis-py's 5 s default socket timeout (about 6 s of real time by its nature)
    "tests/csms/test_slow_remote_answer.py",
    # a site lease handed over under 20 ms sampling of the stations' limits (1 s grace, real time)
    "tests/loop/test_lease_handover.py",
})
"""Test files marked `alone`: with EVFLEET_TEST_WORKERS > 1, scripts/test.sh runs them after the parallel
run, one at a time, so that no other test takes a core from them (in a 2-worker run of everything at
load 10-18 these failed: storms short of connections, 500 stations not online in 60 s, Josev sessions
dropped on their timeouts, a default-profile value read before it was written)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of the ALONE files `alone`."""
    for item in items:
        if item.nodeid.split("::", 1)[0] in ALONE:
            item.add_marker(pytest.mark.alone)


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """A command run in-process (CliRunner) installs its log handler on a stream that closes with it:
    put the root logger (and the levels `configure_logging` sets) back after each test."""
    import logging

    loggers = [logging.getLogger(name) for name in ("", "ocpp", "websockets")]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    yield
    for lg, handlers, level in saved:
        for handler in lg.handlers:
            if handler not in handlers and getattr(handler, "_evfleet", False):
                handler.close()
        lg.handlers[:] = handlers
        lg.setLevel(level)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A private redis-server for the whole test session (never the machine's own)."""
    server = EmbeddedRedis().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """URL of the private Redis, flushed before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


class MqttBroker:
    """A private MQTT broker process (Mosquitto) on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="evfleet-mqtt-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """mqtt:// URL of the broker."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> MqttBroker:
        """Start Mosquitto with an anonymous listener on the private port."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            pytest.skip("no mosquitto binary (scripts/test.sh installs it)")
        conf = Path(self.dir) / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        """Stop the broker and remove its directory."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[MqttBroker]:
    """A private MQTT broker for the whole test session."""
    broker = MqttBroker().start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Directory for test artifacts (screenshots, reports)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def refreezer() -> Iterator[None]:
    """csms.refreeze running on a frozen heap for one test, undone after it (thaw interval, settle time,
    growth floor and garbage profile restored)."""
    gc.collect()
    gc.freeze()
    REFREEZER.start(thaw_growth=2.0, thaw_after_closed=1000)
    try:
        yield
    finally:
        REFREEZER.stop()
        REFREEZER.min_interval_s = THAW_MIN_INTERVAL_S
        REFREEZER.settle_s = THAW_SETTLE_S
        REFREEZER.floor_objects = THAW_FLOOR_OBJECTS
        REFREEZER.profile_garbage = False
        REFREEZER.freeze_young_s = 0.0
        gc.unfreeze()
        gc.collect()
