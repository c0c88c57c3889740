"""Trio-transport specifics: the one exception mapping, construction checks."""

from __future__ import annotations

import socket
import ssl

import httptools
import pytest
import trio

from llmlb_actors._transport import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TLSError,
    TransportError,
    TransportLimits,
    TrioTransport,
    WriteError,
    WriteTimeout,
)
from llmlb_actors._transport._http11 import parse_url
from llmlb_actors._transport._trio import _IO_ERRORS, _translate

LOWER_LAYER: list[BaseException] = [
    trio.BrokenResourceError("broken"),
    trio.ClosedResourceError("closed"),
    trio.TooSlowError(),
    ConnectionResetError(104, "Connection reset by peer"),
    ConnectionRefusedError(111, "Connection refused"),
    socket.gaierror(-2, "Name or service not known"),
    ssl.SSLError(1, "bad handshake"),
    ssl.SSLCertVerificationError(1, "certificate verify failed"),
    httptools.HttpParserError("invalid constant string"),
    httptools.HttpParserInvalidStatusError("bad status"),
    httptools.HttpParserUpgrade(12),
]


@pytest.mark.parametrize("exc", LOWER_LAYER, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("phase", ["connect", "write", "read"])
def test_every_lower_layer_error_is_mapped(exc: BaseException, phase: str) -> None:
    assert isinstance(exc, _IO_ERRORS)
    target = parse_url("https://api.example.com/v1?key=secret")
    mapped = _translate(exc, phase, target)  # type: ignore[arg-type]
    assert isinstance(mapped, TransportError)
    text = str(mapped)
    # Where: the origin (or, for DNS and TLS, the host), never the path or query.
    assert text.endswith("(https://api.example.com:443)") or "api.example.com" in text
    assert "secret" not in text
    assert not text.startswith(type(exc).__name__)
    if isinstance(exc, trio.TooSlowError):
        timeouts = {"connect": ConnectTimeout, "write": WriteTimeout, "read": ReadTimeout}
        expected: type[TransportError] = timeouts[phase]
    elif isinstance(exc, httptools.HttpParserError | httptools.HttpParserUpgrade):
        expected = RemoteProtocolError
    elif phase == "connect" and isinstance(exc, ssl.SSLCertVerificationError):
        expected = TLSError
    else:
        expected = {"connect": ConnectError, "write": WriteError, "read": ReadError}[phase]
    assert type(mapped) is expected


def test_mapping_describes_the_innermost_cause() -> None:
    inner = ssl.SSLCertVerificationError(1, "certificate verify failed")
    inner.verify_message = "unable to get local issuer certificate"
    outer = trio.BrokenResourceError()
    outer.__cause__ = inner
    mapped = _translate(outer, "connect", parse_url("https://h/"))
    assert isinstance(mapped, TLSError)
    assert str(mapped) == (
        "TLS: certificate verify failed: unable to get local issuer certificate for h"
    )


async def test_construction_checks() -> None:
    with pytest.raises(ValueError, match="max_connections must be at least 1"):
        TrioTransport(TransportLimits(max_connections=0))
    transport = TrioTransport()
    assert repr(transport) == "<TrioTransport origins=0 closed=False>"
    await transport.aclose()
    assert repr(transport) == "<TrioTransport origins=0 closed=True>"
