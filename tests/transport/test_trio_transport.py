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
    TransportError,
    TransportLimits,
    TrioTransport,
    WriteError,
    WriteTimeout,
)
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
    mapped = _translate(exc, phase, "https://api.example.com:443")  # type: ignore[arg-type]
    assert isinstance(mapped, TransportError)
    assert str(mapped).startswith("https://api.example.com:443: ")
    if isinstance(exc, trio.TooSlowError):
        timeouts = {"connect": ConnectTimeout, "write": WriteTimeout, "read": ReadTimeout}
        expected: type[TransportError] = timeouts[phase]
    elif isinstance(exc, httptools.HttpParserError | httptools.HttpParserUpgrade):
        expected = RemoteProtocolError
    else:
        expected = {"connect": ConnectError, "write": WriteError, "read": ReadError}[phase]
    assert type(mapped) is expected


def test_mapping_describes_the_cause() -> None:
    inner = ssl.SSLCertVerificationError(1, "certificate verify failed")
    outer = trio.BrokenResourceError()
    outer.__cause__ = inner
    text = str(_translate(outer, "connect", "https://h:443"))
    assert text.startswith("https://h:443: BrokenResourceError (SSLCertVerificationError:")
    assert "certificate verify failed" in text


async def test_construction_checks() -> None:
    with pytest.raises(ValueError, match="max_connections must be at least 1"):
        TrioTransport(TransportLimits(max_connections=0))
    transport = TrioTransport()
    assert repr(transport) == "<TrioTransport origins=0 closed=False>"
    await transport.aclose()
    assert repr(transport) == "<TrioTransport origins=0 closed=True>"
