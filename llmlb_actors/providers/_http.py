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
from .._quota._observe import current as observation_slot
from .._secrets import Redactor
from .._sse import SSEDecoder
from .._transport._base import (
    ContentEncodingError,
    ProxyError,
    RemoteProtocolError,
    ResponseTooLarge,
    TLSError,
    TransportError,
    TransportTimeout,
)
from ._adapter import StreamDecoder
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


async def _flatten(
    batches: AsyncIterator[list[StreamChunk]],
) -> AsyncGenerator[StreamChunk, None]:
    async for batch in batches:
        for chunk in batch:
            yield chunk


async def _drain(body: AsyncIterator[bytes]) -> None:
    if getattr(body, "complete", False):
        # The trio transport knows the body ended (it usually ends in the same read
        # as the terminal event): no timed wait, whose cancel scope costs ~10 µs.
        return
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
    """The retryable (or not) `LLMError` for a transport exception, in one place.

    Transport messages already say what happened in words (``connection
    refused (https://host:443)``); they are used as they are. A certificate
    failure (kind ``tls``), a proxy refusing us (kind ``proxy``, 403/407) and
    a content coding we cannot decode are misconfigurations: not retried on
    the same provider, which leaves rotation as after a 401.
    """
    message = str(exc) or type(exc).__name__
    if isinstance(exc, TransportTimeout):
        return LLMError(message, provider=provider, retryable=True, kind="timeout")
    if isinstance(exc, TLSError):
        return LLMError(
            message, provider=provider, retryable=False, kind="tls", disables_provider=True
        )
    if isinstance(exc, ProxyError):
        refused = exc.status is not None and exc.status < 500
        return LLMError(
            message,
            provider=provider,
            retryable=not refused,
            kind="proxy",
            disables_provider=refused,
        )
    if isinstance(exc, ResponseTooLarge):
        return LLMError(
            f"response too large: {message}", provider=provider, retryable=False, kind="protocol"
        )
    if isinstance(exc, ContentEncodingError):
        return LLMError(
            message, provider=provider, retryable=False, kind="protocol", disables_provider=True
        )
    if isinstance(exc, RemoteProtocolError):
        return LLMError(
            f"protocol error: {message}", provider=provider, retryable=True, kind="protocol"
        )
    return LLMError(message, provider=provider, retryable=True, kind="connection")


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
        slot = observation_slot()
        if slot is not None:  # one deposit per attempt: the worker emptied the slot
            slot.observation = self.adapter.rate_limits(
                response.status, response.headers, response.body
            )
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
        async with self.stream_batches(request) as batches:
            chunks = _flatten(batches)
            try:
                yield chunks
            finally:
                await chunks.aclose()

    @asynccontextmanager
    async def stream_batches(
        self, request: LLMRequest, provider: str = ""
    ) -> AsyncIterator[AsyncIterator[list[StreamChunk]]]:
        """`stream`, one list per read of the body: every chunk the read completed.

        Chunks carry ``provider`` as their provider name. What the balancer's
        streams read: one hand-over per read instead of one per chunk.
        """
        http_request = self.adapter.build_request(request, stream=True)
        try:
            cm = self.transport.stream(http_request)
            response = await cm.__aenter__()
        except TransportError as exc:  # not map_transport_errors: no generator per stream
            raise transport_error(self.name, exc) from exc
        try:
            failed = not 200 <= response.status < 300
            body = None
            if failed:  # its body is the error: read it whole
                with map_transport_errors(self.name):
                    body = await response.aread()
            slot = observation_slot()
            if slot is not None:  # one deposit per attempt: the worker emptied the slot
                slot.observation = self.adapter.rate_limits(response.status, response.headers, body)
            if failed:
                raise self._parse_error(response.status, response.headers, body or b"")
            stream = response.aiter_bytes()
            batches = self._batches(stream, provider)
            try:
                yield batches
            finally:
                await batches.aclose()
                # Close the body iterator too: async generators left to the GC warn under trio.
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with map_transport_errors(self.name):
                        await aclose()
        finally:
            await cm.__aexit__(None, None, None)

    async def _batches(
        self, body: AsyncIterator[bytes], provider: str
    ) -> AsyncGenerator[list[StreamChunk], None]:
        decoder = self.adapter.stream_decoder()
        decoder.provider = provider
        sse = SSEDecoder(max_line_bytes=MAX_SSE_LINE_BYTES, max_event_bytes=MAX_SSE_EVENT_BYTES)
        # Decoders that read only `data` take every event of a read at once.
        by_data = type(decoder).feed_data is not StreamDecoder.feed_data
        name = self.name
        while not decoder.done:
            try:
                data = await anext(body, None)
            except TransportError as exc:
                raise transport_error(name, exc) from exc
            if data is None:
                sse.close()  # an event the body left unfinished is dropped
                break
            out: list[StreamChunk] = []
            error: LLMError | None = None
            try:
                if by_data:
                    datas = sse.feed_data(data)
                    if datas:
                        decoder.feed_data(datas, out)
                else:
                    for event in sse.feed(data):
                        out += decoder.feed(event)
                        if decoder.done:
                            break
            except LLMError as exc:
                error = exc
            except ValueError as exc:  # the SSE decoder's size limits
                error = LLMError(
                    f"malformed event stream: {exc}",
                    provider=name,
                    retryable=True,
                    kind="protocol",
                )
            except RecursionError:
                error = _too_deep(name)
            # The chunks of the events before a failing one still reach the caller.
            if out:
                yield out
            if error is not None:
                raise error
        if decoder.done:
            await _drain(body)
        final = decoder.finish()
        if final:
            yield final

    async def check_health(self) -> bool:
        """True if the API answers its cheapest authenticated call; a failure raises the
        `LLMError` that says why (the status and the provider's message, a timeout,
        a refused connection), which the health report shows."""
        http_request = self.adapter.health_request()
        with map_transport_errors(self.name):
            response = await self.transport.request(http_request)
        if 200 <= response.status < 300:
            return True
        raise self._parse_error(response.status, response.headers, response.body)

    def __repr__(self) -> str:
        return f"<HTTPProvider {self.name!r} protocol={self.adapter.protocol!r}>"
