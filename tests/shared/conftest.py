"""A real ``redis-server`` per test, on 127.0.0.1 and a free port (no fake Redis).

``make test`` installs Debian's ``redis-server`` when it is missing (see the
Makefile); these tests fail, never skip, without it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process: start, ``kill -9``, restart on the same port."""

    def __init__(
        self, directory: Path, *, password: str | None = None, tls: dict[str, str] | None = None
    ):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            pytest.fail(
                "redis-server is not installed: `make test` installs it "
                "(apt-get install redis-server)"
            )
        self.binary = binary
        self.dir = directory
        self.port = _free_port()
        self.password = password
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--loglevel",
            "warning",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                self.tls["cert"],
                "--tls-key-file",
                self.tls["key"],
                "--tls-ca-cert-file",
                self.tls["ca"],
                "--tls-auth-clients",
                "no",
            ]
        else:
            args += ["--port", str(self.port)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                pytest.fail(f"redis-server exited at start: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        pytest.fail("redis-server did not start listening within 10 s")

    def kill(self) -> None:
        """``kill -9``: no shutdown, no save."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def command(self, *args: str) -> str:
        """Run redis-cli against it (tests' own reads: keys, values)."""
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        cmd = [cli, "-h", "127.0.0.1", "-p", str(self.port), "--no-auth-warning"]
        if self.password:
            cmd += ["-a", self.password]
        if self.tls:
            cmd += ["--tls", "--cacert", self.tls["ca"]]
        return subprocess.run([*cmd, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def redis_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for a module's tests (hypothesis examples share it, each on its own prefix)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_clock() -> object:
    """Virtual time that jumps only after 30 ms of real idleness: a Redis round trip
    (real I/O) finishes before the clock moves, so a reservation and its send happen at
    one virtual instant, as they do in real time. pytest-trio runs the test on it."""
    import trio.testing

    return trio.testing.MockClock(autojump_threshold=0.03)


def shared_store(url: str, *, balancer_id: str | None = None, query: str = "") -> object:
    """A `RedisQuotaStore` on the test's virtual clock: the scripts get trio's "now"
    instead of the server's, and a round trip never times out on a jump of the clock."""
    import trio

    from llmlb_actors.quota import RedisQuotaStore

    sep = "&" if "?" in url else "?"
    store = RedisQuotaStore(
        f"{url}{sep}timeout=3600{('&' + query) if query else ''}", balancer_id=balancer_id
    )
    store.clock_arg = lambda: str(round(trio.current_time() * 1e6))
    return store
