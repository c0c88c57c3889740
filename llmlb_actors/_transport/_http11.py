"""Sans-I/O HTTP/1.1 for the trio transport: URL targets, request heads, response parsing.

Nothing here touches a socket. `parse_url` and `encode_head` turn an
`HTTPRequest` into bytes (and refuse anything that could smuggle a second
request: CR, LF or NUL in the method, target or headers). `ResponseReader`
is the per-exchange callback object the httptools parser drives; it records
status, headers and body chunks, and decides whether the connection may be
reused. Strictly private.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, urlsplit

import httptools

from ._base import RemoteProtocolError, ResponseTooLarge

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ResponseReader", "Target", "encode_head", "parse_url"]

USER_AGENT = "llmlb-actors/0.1"

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Characters kept as they are when the request target is percent-encoded
#: (RFC 3986 reserved and unreserved characters, plus "%" for existing escapes).
_TARGET_SAFE = "/?:@!$&'()*+,;=-._~%[]"
#: Headers whose value the transport owns: framing, connection management, and
#: content coding (we ask for identity; see `_decode` for what arrives anyway).
_OWNED = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Validated method and header names; a hit skips the regex. Bounded so that
#: callers sending arbitrary names cannot grow it without limit.
_valid_tokens: set[str] = set()
_MAX_VALID_TOKENS = 4096


class Target(NamedTuple):
    """Where a URL points and what goes on the request line. Cached per URL string."""

    origin: tuple[str, str, int]
    """(scheme, host, port): the keep-alive pool key."""
    host: str
    """Host to connect to (no IPv6 brackets)."""
    port: int
    tls: bool
    target: str
    """Request target: path and query, percent-encoded."""
    host_header: str
    label: str
    """``scheme://host:port`` for error messages: never the path or query,
    which may carry an API key (Gemini's ``?key=``)."""


@functools.lru_cache(maxsize=1024)
def parse_url(url: str) -> Target:
    """Split ``url`` into a `Target`. Cached: adapters reuse a handful of URLs.

    Raises:
        ValueError: not an absolute http(s) URL, user info present, or CR, LF
            or NUL anywhere (urlsplit would silently drop CR and LF).
    """
    if "\r" in url or "\n" in url or "\0" in url:
        raise ValueError("URL contains CR, LF or NUL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r}; expected http or https")
    if "@" in parts.netloc:
        raise ValueError("credentials in the URL are not supported; send a header instead")
    host = parts.hostname
    if not host:
        raise ValueError("URL has no host")
    try:
        # Also what trio does before getaddrinfo: fail here, as bad input, not mid-connect.
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"invalid host name {host[:80]!r}") from None
    host = ascii_host
    port = parts.port  # raises ValueError on a bad port
    tls = scheme == "https"
    default_port = 443 if tls else 80
    if port is None:
        port = default_port
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    if not target.isascii() or " " in target or "\t" in target:
        target = quote(target, safe=_TARGET_SAFE)
    return Target(
        origin=(scheme, host, port),
        host=host,
        port=port,
        tls=tls,
        target=target,
        host_header=host_header,
        label=f"{scheme}://{bracketed}:{port}",
    )


def _check_token(token: str, what: str) -> None:
    if _TOKEN.fullmatch(token) is None:
        # The name is safe to show: it is not a token, but it is not a secret either.
        raise ValueError(f"invalid HTTP {what} {token[:40]!r}")
    if len(_valid_tokens) >= _MAX_VALID_TOKENS:
        _valid_tokens.clear()
    _valid_tokens.add(token)


def encode_head(
    method: str, target: Target, headers: Sequence[tuple[str, str]], body: bytes | None
) -> bytes:
    """The request line and headers as one bytes object, ready to send with the body.

    Adds ``host``, ``user-agent`` (unless given), ``accept-encoding: identity``
    and ``content-length`` (for a body, and for POST/PUT/PATCH without one).
    The transport owns framing and content coding, so callers' ``host``,
    ``content-length``, ``transfer-encoding``, ``connection`` and
    ``accept-encoding`` are dropped.

    Raises:
        ValueError: a method or header name that is not an HTTP token, a header
            value with CR, LF or NUL, or a non-ASCII header value. The message
            names the header, never its value (it may be an API key).
    """
    # A provider sends the same method, URL and headers on every request (only the
    # body changes): the checked, encoded head up to the framing is built once.
    key = (method, target.target, target.host_header, tuple(headers))
    try:
        prefix = _prefixes.get(key)
    except TypeError:  # a header given as a list: fine to send, not to remember
        prefix = _encode_prefix(method, target, headers)
    else:
        if prefix is None:
            prefix = _encode_prefix(method, target, headers)
            if len(_prefixes) >= _MAX_PREFIXES:
                _prefixes.clear()
            _prefixes[key] = prefix
    if body is not None:
        return prefix + b"accept-encoding: identity\r\ncontent-length: %d\r\n\r\n" % len(body)
    if method in _BODY_METHODS:
        return prefix + b"accept-encoding: identity\r\ncontent-length: 0\r\n\r\n"
    return prefix + b"accept-encoding: identity\r\n\r\n"


#: Encoded head prefixes by (method, target, host, headers); bounded like `_valid_tokens`.
#: The values are what goes on the wire, keys included: they never leave the process.
_prefixes: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], bytes] = {}
_MAX_PREFIXES = 256


def _encode_prefix(method: str, target: Target, headers: Sequence[tuple[str, str]]) -> bytes:
    """`encode_head` up to (not including) its ``accept-encoding`` and framing lines."""
    if method not in _valid_tokens:
        _check_token(method, "method")
    lines = [method, " ", target.target, " HTTP/1.1\r\nhost: ", target.host_header, "\r\n"]
    crlfs = 2  # the request line and host
    has_user_agent = False
    for name, value in headers:
        if name not in _valid_tokens:
            _check_token(name, "header name")
        # Names should arrive lower-case; a "Content-Length" that slipped
        # through must still not reach the wire next to ours.
        key = name if name.islower() else name.lower()
        if key in _OWNED:
            continue
        if key == "user-agent":
            has_user_agent = True
        lines.append(f"{name}: {value}\r\n")
        crlfs += 1
    if not has_user_agent:
        lines.append(f"user-agent: {USER_AGENT}\r\n")
        crlfs += 1
    head = "".join(lines)
    # One C-speed scan instead of a regex per value: any CR or LF beyond the
    # ones we wrote means a value tried to start a new header line.
    if head.count("\n") != crlfs or head.count("\r") != crlfs or "\0" in head:
        raise ValueError(f"header {_bad_header(headers)!r} contains CR, LF or NUL")
    try:
        return head.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"header {_non_ascii_header(headers)!r} is not ASCII") from None


def _bad_header(headers: Sequence[tuple[str, str]]) -> str:
    for name, value in headers:
        if "\r" in value or "\n" in value or "\0" in value:
            return name
    return "?"  # pragma: no cover - the target and method are checked earlier


def _non_ascii_header(headers: Sequence[tuple[str, str]]) -> str:
    for name, value in headers:
        if not value.isascii():
            return name
    return "?"  # pragma: no cover


class _Dropped(dict[str, str]):
    """Where trailer fields go: nowhere.

    Fields after a chunked body must not be merged into the headers (RFC 9110
    6.5.1: a trailer Retry-After would steer backoff), and nothing here needs
    them. Once the head is complete the reader points ``on_header`` here, which
    costs nothing per header (no "is this a trailer?" test on the hot path).
    """

    def __contains__(self, key: object) -> bool:
        return False

    def __setitem__(self, key: str, value: str) -> None:
        pass


_TRAILERS = _Dropped()


class ResponseReader:
    """Callbacks for the responses on one connection, driven by `httptools.HttpResponseParser`.

    A connection reuses its reader (`next_response`) only after a complete
    keep-alive response, the state in which llhttp expects the next message;
    after a HEAD (whose advertised body the parser would still expect) or an
    error the connection gets a fresh reader, or is closed with it.

    Why the care around keep-alive: llhttp's ``should_keep_alive()`` is only
    meaningful inside ``on_message_complete`` (read later it always says
    False), so it is read there; HTTP/1.0, bytes after the message, an
    EOF-delimited body and HEAD responses each decide it explicitly.
    """

    __slots__ = (
        "_eof_body",
        "_fields",
        "_head_only",
        "_header_bytes",
        "_http11",
        "_limit",
        "_max_head",
        "_raw_head",
        "chunks",
        "complete",
        "headers",
        "headers_done",
        "keep_alive",
        "parser",
        "size",
        "status",
    )

    def __init__(self, *, head_only: bool, limit: int | None, max_head: int) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._max_head = max_head
        self.next_response(limit)

    def next_response(self, limit: int | None) -> None:
        """Ready for the (next) response on this connection: every per-response field."""
        self.status = 0
        self.headers: dict[str, str] = {}
        self._fields = self.headers
        self.chunks: list[bytes] = []
        self.size = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self._limit = limit
        self._raw_head = 0
        self._header_bytes = 0
        self._eof_body = False
        self._http11 = False

    def feed(self, data: bytes | bytearray) -> None:
        """Parse received bytes.

        Raises:
            httptools.HttpParserError: malformed HTTP (the caller maps it).
            RemoteProtocolError: the head exceeds ``max_header_bytes``.
            ResponseTooLarge: the body exceeds the reader's limit.
        """
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self.complete:
                raise
            # Garbage after a complete response: keep the response, drop the connection.
            self.keep_alive = False
        if not self.headers_done:
            self._raw_head += len(data)
            if self._raw_head > self._max_head:
                raise RemoteProtocolError(f"response head over {self._max_head} bytes")
        elif self._header_bytes > self._max_head:
            raise RemoteProtocolError(f"response head over {self._max_head} bytes")
        elif self._limit is not None and self.size > self._limit:
            raise ResponseTooLarge(f"body over {self._limit} bytes")

    def feed_eof(self) -> bool:
        """The server closed its side; True if that completed the response."""
        if self.headers_done and not self.complete and self._eof_body:
            self.complete = True
            self.keep_alive = False
        return self.complete

    # httptools callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second response nobody asked for
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._fields
        if key in headers:
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            return  # interim (1xx): on_message_complete resets, the real response follows
        self.status = status
        self.headers_done = True
        self._fields = _TRAILERS
        headers = self.headers
        self._http11 = parser.get_http_version() == "1.1"
        if self._head_only:
            # llhttp cannot be told the request was HEAD and would wait for the
            # advertised body; the response ends here, and the parser is
            # discarded with this reader.
            self.complete = True
            connection = headers.get("connection", "").lower()
            self.keep_alive = self._http11 and "close" not in connection
            return
        transfer_encoding = headers.get("transfer-encoding")
        self._eof_body = "content-length" not in headers and (
            transfer_encoding is None or not transfer_encoding.lower().rstrip().endswith("chunked")
        )
        if self._limit is not None and not self._eof_body:
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self._limit:
                self.size = int(length)  # fail before reading a byte of it

    def on_body(self, body: bytes) -> None:
        if self._head_only:  # a body after a HEAD response: the framing is off
            self.keep_alive = False
            return
        self.chunks.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        if not self.headers_done:
            self.headers = self._fields = {}  # end of a 1xx; its headers are not the response's
            return
        if self.complete:
            return
        self.complete = True
        self.keep_alive = self._http11 and self.parser.should_keep_alive()
