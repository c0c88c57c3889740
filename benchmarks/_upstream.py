"""The loopback upstreams: a fixed-reply nginx (preferred) or the simulator in its own process.

Both run as child processes pinned to the upstream core, so the client under
test has the other core to itself. `Upstream` is what the runner passes to
each benchmark process: ports, the pids whose CPU time shows whether the
upstream was the bottleneck, and (nginx only) the stub_status port.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import msgspec

from ._common import REPLY_JSON, UPSTREAM_CORE, pin
from ._sse_bodies import SSE_PATHS, SSE_PROTOCOLS, nginx_string, sse_body

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Upstream", "free_ports", "nginx_path", "run_nginx", "run_simulator", "stub_status"]


class Upstream(msgspec.Struct, frozen=True, kw_only=True):
    """A running upstream, as benchmark processes see it."""

    kind: str
    """``"nginx"`` or ``"simulator"``."""
    ports: list[int]
    """Chat ports: three, so "3 providers" can be three origins."""
    pids: list[int]
    """Processes serving requests (their CPU time is read around each measurement)."""
    status_port: int | None = None
    """nginx stub_status port (open connections), or None."""
    latency: float = 0.0
    """Simulated latency in seconds (simulator only)."""

    def base_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[index % len(self.ports)]}/v1"

    def chat_url(self, index: int = 0) -> str:
        return self.base_url(index) + "/chat/completions"

    def sse_base_url(self, protocol: str, index: int = 0) -> str:
        """Base URL of a provider whose streamed answers are ``protocol``'s fixed SSE body
        (nginx); the simulator streams OpenAI answers only, at `base_url`."""
        if self.kind != "nginx":
            if protocol != "openai":
                raise ValueError(f"the simulator upstream streams openai only, not {protocol}")
            return self.base_url(index)
        port = self.ports[index % len(self.ports)]
        version = "/v1" if protocol == "openai" else ""
        return f"http://127.0.0.1:{port}/sse/{protocol}{version}"


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out and released (a tiny race we accept on loopback)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def nginx_path() -> str | None:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


_NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
worker_rlimit_nofile 65536;
events {{
    worker_connections 32768;
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    server {{
{listens}
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{reply}';
        }}
        location = /v1/models {{
            default_type application/json;
            return 200 '{{"object":"list","data":[]}}';
        }}
{sse_locations}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location = /status {{
            stub_status;
        }}
    }}
}}
"""


def _sse_locations() -> str:
    """One location per protocol serving its fixed 64-delta SSE body.

    nginx caps one configuration token at 4 KiB, so the body is set in pieces
    and returned as their concatenation (evaluated per request: a 14 KiB copy).
    """
    locations = []
    for protocol in SSE_PROTOCOLS:
        body = sse_body(protocol)
        pieces = [body[i : i + _NGINX_PIECE] for i in range(0, len(body), _NGINX_PIECE)]
        sets = "".join(
            f"            set $sse{i} '{nginx_string(piece)}';\n" for i, piece in enumerate(pieces)
        )
        joined = "".join(f"$sse{i}" for i in range(len(pieces)))
        locations.append(
            f"        location = /sse/{protocol}{SSE_PATHS[protocol]} {{\n"
            "            default_type text/event-stream;\n"
            f"{sets}"
            f'            return 200 "{joined}";\n'
            "        }"
        )
    return "\n".join(locations)


#: Raw bytes per configuration token (escaping may nearly double them; the cap is 4 KiB).
_NGINX_PIECE = 1800


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"upstream exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"upstream did not listen on port {port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def run_nginx(count: int = 3) -> Iterator[Upstream]:
    """Run nginx (1 worker, pinned to the upstream core) on ``count`` chat ports."""
    binary = nginx_path()
    if binary is None:
        raise FileNotFoundError("nginx is not installed")
    with tempfile.TemporaryDirectory(prefix="llmlb-bench-nginx-") as tmp:
        *ports, status_port = free_ports(count + 1)
        listens = "\n".join(f"        listen 127.0.0.1:{p} backlog=4096;" for p in ports)
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                _NGINX_CONF.format(
                    tmp=tmp,
                    listens=listens,
                    reply=REPLY_JSON,
                    status_port=status_port,
                    sse_locations=_sse_locations(),
                )
            )
        proc = subprocess.Popen(
            [binary, "-p", tmp, "-c", conf, "-e", os.path.join(tmp, "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: pin(UPSTREAM_CORE),
        )
        try:
            deadline = time.monotonic() + 10
            for port in (*ports, status_port):
                _wait_port(port, proc, deadline)
            # The master listens before it forks its worker: wait for the worker, whose
            # CPU time is what shows whether the upstream limits a measurement.
            workers = _children(proc.pid)
            while not workers and time.monotonic() < deadline:
                time.sleep(0.05)
                workers = _children(proc.pid)
            yield Upstream(
                kind="nginx", ports=ports, pids=workers or [proc.pid], status_port=status_port
            )
        finally:
            _stop(proc)


@contextlib.contextmanager
def run_simulator(
    count: int = 3, *, latency: float = 0.0, chunks: int = 8, token_delay: float = 0.0
) -> Iterator[Upstream]:
    """Run the llmlb_actors simulator in its own process (pinned to the upstream core)."""
    ports = free_ports(count)
    spec = {
        "ports": ports,
        "latency": latency,
        "chunks": chunks,
        "token_delay": token_delay,
        "core": UPSTREAM_CORE,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._simserver", json.dumps(spec)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        deadline = time.monotonic() + 30
        for port in ports:
            _wait_port(port, proc, deadline)
        yield Upstream(kind="simulator", ports=ports, pids=[proc.pid], latency=latency)
    finally:
        _stop(proc)


def stub_status(port: int) -> int | None:
    """nginx's "Active connections" (open client connections), or None if unreadable."""
    try:
        with socket.create_connection(("127.0.0.1", port), 1.0) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    for line in data.decode("latin-1").splitlines():
        if line.startswith("Active connections:"):
            # Minus the connection asking.
            return int(line.split(":", 1)[1]) - 1
    return None
