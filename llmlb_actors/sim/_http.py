"""HTTP/1.1 framing for the simulator: httptools request parsing and response bytes.

Sans-I/O: bytes in, requests out; answers in, bytes out. The server owns the
sockets. h11 is deliberately not used: at thousands of requests in flight its
per-exchange cost would make the simulator the bottleneck of benchmarks.
"""

from __future__ import annotations

from collections import deque
from http import HTTPStatus
from typing import Final

import httptools

__all__ = [
    "CHUNK_END",
    "MAX_BODY",
    "MAX_HEAD",
    "ParseError",
    "Request",
    "RequestParser",
    "chunk",
    "response_head",
    "status_line",
]

MAX_HEAD: Final = 64 * 1024
"""Largest request line plus headers accepted (else 431)."""

MAX_BODY: Final = 8 * 1024 * 1024
"""Largest request body accepted (else 413)."""

CHUNK_END: Final = b"0\r\n\r\n"


class Request:
    """One parsed request. Header names are lower-cased; a repeated header keeps the last value."""

    __slots__ = ("body", "headers", "http11", "keep_alive", "method", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        keep_alive: bool,
        http11: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http11 = http11


class ParseError(Exception):
    """The bytes are not an acceptable request; ``status`` says which answer to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _TooLarge(Exception):
    pass


class RequestParser:
    """Feeds bytes to llhttp and queues complete requests (in order, for pipelining).

    ``expect_continue`` is set when a request waits for ``100 Continue``
    before sending its body; the server sends it and clears the flag.
    """

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self.ready: deque[Request] = deque()
        self.expect_continue = False
        self._too_large = 0
        self._target = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._head_size = 0
        self._body_size = 0

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises `ParseError` for bad or oversized requests."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise ParseError(400, "protocol upgrades are not supported") from None
        except httptools.HttpParserError as exc:
            if self._too_large:
                raise ParseError(self._too_large, "request too large") from None
            raise ParseError(400, f"malformed HTTP request: {exc}") from None

    # llhttp callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        self._target = b""
        self._headers = {}
        self._body = []
        self._head_size = 0
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._target += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value))
        lower = name.lower()
        self._headers[lower] = value
        if lower == b"content-length":
            try:
                too_big = int(value) > MAX_BODY
            except ValueError:
                too_big = False  # llhttp itself rejects a bad length
            if too_big:
                self._too_large = 413
                raise _TooLarge

    def on_headers_complete(self) -> None:
        if self._headers.get(b"expect", b"").lower() == b"100-continue":
            self.expect_continue = True

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            self._too_large = 413
            raise _TooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self.expect_continue = False
        self.ready.append(
            Request(
                parser.get_method(),
                self._target,
                self._headers,
                body,
                # llhttp only answers this correctly inside this callback.
                parser.should_keep_alive(),
                parser.get_http_version() == "1.1",
            )
        )

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            self._too_large = 431
            raise _TooLarge


_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>`` with CRLF, cached per status."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Site Overloaded" if status == 529 else "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


def response_head(
    status: int,
    content_type: bytes | None,
    extra: bytes,
    *,
    length: int | None,
    keep_alive: bool,
    chunked: bool = False,
) -> bytes:
    """Status line and headers, ending with the blank line."""
    parts = [status_line(status)]
    if content_type is not None:
        parts.append(b"content-type: " + content_type + b"\r\n")
    if length is not None:
        parts.append(b"content-length: %d\r\n" % length)
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    parts.append(extra)
    parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)
