"""`HTTPProvider`: a provider that speaks a built-in protocol through a `Transport`.

The adapter builds the request and parses the answer; this module sends it,
decodes server-sent events, and maps every transport failure to an `LLMError`
in one place (`transport_error`).
"""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, ClassVar

import trio

from .._errors import LLMError
from .._secrets import Redactor
from .._sse import SSEDecoder
from .._transport._base import (
    RemoteProtocolError,
    ResponseTooLarge,
    TransportError,
    TransportTimeout,
)
from ._base import BaseProvider
from ._status import error_for_status

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping

    from .._config import ProviderConfig
    from .._models import LLMRequest, LLMResponse, StreamChunk
    from .._transport._base import Transport
    from ._adapter import ProtocolAdapter

__all__ = [
    "MAX_SSE_EVENT_BYTES",
    "MAX_SSE_LINE_BYTES",
    "HTTPProvider",
    "map_transport_errors",
    "transport_error",
]

# Bounds on one SSE line and one event: an upstream cannot make us buffer more.
MAX_SSE_LINE_BYTES = 1024 * 1024
MAX_SSE_EVENT_BYTES = 4 * 1024 * 1024


# After a stream's terminal event the body normally ends at once; reading it to its
# end lets the connection be reused and leaves no half-read iterator behind.
_DRAIN_BYTES = 64 * 1024
_DRAIN_SECONDS = 1.0


# msgspec raises RecursionError, not DecodeError, for JSON nested too deeply: an
# upstream's answer must never crash the provider actor, so it is a bad answer.
_DEEP = "JSON nested too deeply to read"


def _too_deep(provider: str) -> LLMError:
    return LLMError(
        f"malformed answer: {_DEEP}", provider=provider, retryable=True, kind="protocol"
    )


async def _drain(body: AsyncIterator[bytes]) -> None:
    seen = 0
    with trio.move_on_after(_DRAIN_SECONDS):
        try:
            while seen <= _DRAIN_BYTES:
                data = await anext(body, None)
                if data is None:
                    return
                seen += len(data)
        except TransportError:
            return  # the answer is complete; a broken tail changes nothing


def transport_error(provider: str, exc: TransportError) -> LLMError:
    """The retryable (or not) `LLMError` for a transport exception, in one place."""
    if isinstance(exc, TransportTimeout):
        return LLMError(
            f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            provider=provider,
            retryable=True,
            kind="timeout",
        )
    if isinstance(exc, ResponseTooLarge):
        return LLMError(
            f"response too large: {exc}", provider=provider, retryable=False, kind="protocol"
        )
    if isinstance(exc, RemoteProtocolError):
        return LLMError(
            f"protocol error: {exc}", provider=provider, retryable=True, kind="protocol"
        )
    return LLMError(
        f"{type(exc).__name__}: {exc}", provider=provider, retryable=True, kind="connection"
    )


@contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """Raise `transport_error` for a transport exception inside the block."""
    try:
        yield
    except TransportError as exc:
        raise transport_error(provider, exc) from exc


class HTTPProvider(BaseProvider):
    """A provider that speaks a built-in protocol through a `Transport`."""

    supports_tools: ClassVar[bool] = True
    supports_images: ClassVar[bool] = True

    def __init__(
        self, config: ProviderConfig, adapter: ProtocolAdapter, transport: Transport
    ) -> None:
        super().__init__(config)
        self.adapter = adapter
        self.transport = transport
        self._redact = Redactor.for_provider(config)

    @property
    def supports_streaming(self) -> bool:
        return True

    async def make_request(self, request: LLMRequest) -> LLMResponse:
        http_request = self.adapter.build_request(request, stream=False)
        try:
            response = await self.transport.request(http_request)
        except TransportError as exc:  # not map_transport_errors: 3 objects per request
            raise transport_error(self.name, exc) from exc
        if 200 <= response.status < 300:
            try:
                return self.adapter.parse_response(response.status, response.headers, response.body)
            except RecursionError:
                raise _too_deep(self.name) from None
        raise self._parse_error(response.status, response.headers, response.body)

    def _parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        # Upstreams echo the key they were sent; redacting the body before the
        # adapter reads it means no excerpt of it can end inside a key.
        body = self._redact.bytes(body)
        try:
            error = self.adapter.parse_error(status, headers, body)
        except RecursionError:
            # The status still says what happened; only the body's message is lost.
            error = error_for_status(self.name, status, f"HTTP {status} ({_DEEP})", headers)
        return self._redact.error(error)  # a redirect's Location may carry it too

    @asynccontextmanager
    async def stream(self, request: LLMRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        http_request = self.adapter.build_request(request, stream=True)
        with map_transport_errors(self.name):
            cm = self.transport.stream(http_request)
            response = await cm.__aenter__()
        try:
            if not 200 <= response.status < 300:
                with map_transport_errors(self.name):
                    body = await response.aread()
                raise self._parse_error(response.status, response.headers, body)
            stream = response.aiter_bytes()
            chunks = self._chunks(stream)
            try:
                yield chunks
            finally:
                await chunks.aclose()
                # Close the body iterator too: async generators left to the GC warn under trio.
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with map_transport_errors(self.name):
                        await aclose()
        finally:
            await cm.__aexit__(None, None, None)

    async def _chunks(self, body: AsyncIterator[bytes]) -> AsyncGenerator[StreamChunk, None]:
        decoder = self.adapter.stream_decoder()
        sse = SSEDecoder(max_line_bytes=MAX_SSE_LINE_BYTES, max_event_bytes=MAX_SSE_EVENT_BYTES)
        try:
            while not decoder.done:
                with map_transport_errors(self.name):
                    data = await anext(body, None)
                if data is None:
                    for event in sse.close():
                        for chunk in decoder.feed(event):
                            yield chunk
                    break
                for event in sse.feed(data):
                    for chunk in decoder.feed(event):
                        yield chunk
                    if decoder.done:
                        break
        except ValueError as exc:  # the SSE decoder's size limits
            raise LLMError(
                f"malformed event stream: {exc}",
                provider=self.name,
                retryable=True,
                kind="protocol",
            ) from exc
        except RecursionError:
            raise _too_deep(self.name) from None
        if decoder.done:
            await _drain(body)
        for chunk in decoder.finish():
            yield chunk

    async def check_health(self) -> bool:
        http_request = self.adapter.health_request()
        try:
            with map_transport_errors(self.name):
                response = await self.transport.request(http_request)
        except LLMError:
            return False
        return 200 <= response.status < 300

    def __repr__(self) -> str:
        return f"<HTTPProvider {self.name!r} protocol={self.adapter.protocol!r}>"
