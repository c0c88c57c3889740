"""Providers: the public `BaseProvider`, and the HTTP provider built from a sans-I/O adapter.

A provider turns an `LLMRequest` into an `LLMResponse` (or a stream of
`StreamChunk`s). Custom providers subclass `BaseProvider` and implement
`BaseProvider.make_request` (and optionally `BaseProvider.stream`). The
built-in protocols are `ProtocolAdapter`s: they only *build* HTTP calls and
*parse* answers; `HTTPProvider` sends through a `Transport`.
"""

from __future__ import annotations

import abc
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, ClassVar

import trio

from .._errors import LLMError
from .._sse import SSEDecoder
from .._transport._base import TransportError
from ._http import error_for_status, map_transport_errors, transport_error

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Mapping

    from .._config import ProviderConfig
    from .._models import LLMRequest, LLMResponse, StreamChunk
    from .._sse import SSEEvent
    from .._transport._base import HTTPCall, Transport

__all__ = ["BaseProvider", "HTTPProvider", "ProtocolAdapter", "StreamDecoder"]

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


class BaseProvider:
    """Base class of every provider; subclass it to add your own.

    Implement `make_request`. Implement `stream` too if the provider can
    stream (the balancer routes streams only to providers that can). Override
    `check_health` for a real probe. The balancer constructs the class with
    the `ProviderConfig`, bounds every call with the attempt timeout, counts
    stats, retries and fails over; raise `LLMError` (with ``retryable`` set
    as appropriate) for failures. Any other exception is treated as a crash
    of the provider actor: the actor restarts and the request is re-routed.

    Example::

        class Echo(llmlb.BaseProvider):
            async def make_request(self, request):
                return llmlb.LLMResponse(content=request.prompt or "", model="echo")

        llmlb.ProviderConfig(name="echo", provider=Echo)
    """

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def supports_streaming(self) -> bool:
        """True when the subclass overrides `stream`."""
        return type(self).stream is not BaseProvider.stream

    async def make_request(self, request: LLMRequest) -> LLMResponse:
        """Answer ``request`` whole."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_request")

    def stream(
        self, request: LLMRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """Open a stream of chunks for ``request``; leaving the context ends it."""
        raise LLMError(
            f"{type(self).__name__} does not support streaming",
            provider=self.name,
            retryable=True,
            kind="provider",
        )

    async def check_health(self) -> bool:
        """Probe the provider cheaply; the default trusts it."""
        return True

    async def aclose(self) -> None:
        """Release resources; called when the provider is removed or the balancer closes."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class StreamDecoder(abc.ABC):
    """Turns one protocol's SSE events into `StreamChunk`s. One instance per stream."""

    done: bool = False
    """True once the protocol's terminal event arrived."""

    provider: str = ""
    """The provider name its chunks carry: set for the balancer's streams, which
    stamp every chunk with it (building it so is cheaper than a copy per chunk)."""

    @abc.abstractmethod
    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        """Chunks for one event; raises `LLMError` for an in-stream error event."""

    def feed_data(self, datas: list[bytes], out: list[StreamChunk]) -> None:
        """Append to ``out`` the chunks for the events one read completed, given only
        their ``data`` (undecoded), in order; stop at the terminal event.

        Optional: a decoder that reads nothing but ``data`` (every built-in one)
        implements it, and `HTTPProvider` then hands it whole reads instead of one
        `SSEEvent` at a time. An error event raises `LLMError` after the chunks of
        the events before it were appended.
        """
        raise NotImplementedError

    @abc.abstractmethod
    def finish(self) -> list[StreamChunk]:
        """Called at end of body: final chunks, or `LLMError` if the stream was truncated."""


class ProtocolAdapter(abc.ABC):
    """One wire protocol, sans-I/O: build calls, parse answers. Never sends anything."""

    protocol: ClassVar[str]
    default_base_url: ClassVar[str]

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        self.base_url = (config.base_url or self.default_base_url).rstrip("/")

    @abc.abstractmethod
    def build_request(self, request: LLMRequest, *, stream: bool) -> HTTPCall:
        """The HTTP call for ``request`` (whole or streamed)."""

    @abc.abstractmethod
    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMResponse:
        """Parse a 2xx body; raise `LLMError` (kind ``protocol``) if it is malformed."""

    @abc.abstractmethod
    def error_message(self, status: int, body: bytes) -> tuple[str, bool | None]:
        """The provider's own error message from an error body, and a retryable override.

        The override is ``None`` to follow the status rule, or a bool where the
        body says more (e.g. a quota that will not refill).
        """

    @abc.abstractmethod
    def health_request(self) -> HTTPCall:
        """A cheap authenticated call that answers 2xx when the provider is usable."""

    @abc.abstractmethod
    def stream_decoder(self) -> StreamDecoder:
        """A fresh decoder for one stream."""

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        """An `LLMError` for a non-2xx answer, classified by the shared status rules."""
        message, retryable = self.error_message(status, body)
        return error_for_status(self.name, status, message, headers, retryable=retryable)

    def extra_headers(self) -> list[tuple[str, str]]:
        """The user's extra headers from the config, lower-cased."""
        return [(k.lower(), v) for k, v in self.config.headers.items()]


class HTTPProvider(BaseProvider):
    """A provider that speaks a built-in protocol through a `Transport`."""

    def __init__(
        self, config: ProviderConfig, adapter: ProtocolAdapter, transport: Transport
    ) -> None:
        super().__init__(config)
        self.adapter = adapter
        self.transport = transport

    @property
    def supports_streaming(self) -> bool:
        return True

    async def make_request(self, request: LLMRequest) -> LLMResponse:
        call = self.adapter.build_request(request, stream=False)
        try:
            response = await self.transport.request(call)
        except TransportError as exc:  # not map_transport_errors: 3 objects per request
            raise transport_error(self.name, exc) from exc
        if 200 <= response.status < 300:
            try:
                return self.adapter.parse_response(response.status, response.headers, response.body)
            except RecursionError:
                raise _too_deep(self.name) from None
        raise self._parse_error(response.status, response.headers, response.body)

    def _parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        try:
            return self.adapter.parse_error(status, headers, body)
        except RecursionError:
            # The status still says what happened; only the body's message is lost.
            return error_for_status(self.name, status, f"HTTP {status} ({_DEEP})", headers)

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
        call = self.adapter.build_request(request, stream=True)
        cm = self.transport.stream(call)
        try:
            response = await cm.__aenter__()
        except TransportError as exc:  # not map_transport_errors: no generator per stream
            raise transport_error(self.name, exc) from exc
        try:
            if not 200 <= response.status < 300:
                with map_transport_errors(self.name):
                    body = await response.aread()
                raise self._parse_error(response.status, response.headers, body)
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
        call = self.adapter.health_request()
        try:
            with map_transport_errors(self.name):
                response = await self.transport.request(call)
        except LLMError:
            return False
        return 200 <= response.status < 300

    def __repr__(self) -> str:
        return f"<HTTPProvider {self.name!r} protocol={self.adapter.protocol!r}>"
