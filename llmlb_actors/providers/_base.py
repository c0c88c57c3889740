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
from .._sse import SSEDecoder, SSEEvent
from .._transport._base import TransportError
from ._http import error_for_status, map_transport_errors, transport_error

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Mapping

    from .._config import ProviderConfig
    from .._models import LLMRequest, LLMResponse, StreamChunk
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

    supports_tools: ClassVar[bool] = False
    """Set it to True if `make_request` handles ``LLMRequest.tools`` and tool turns.

    The balancer routes requests with tools only to providers that do, and
    refuses (``ConfigError``, before sending) one that no provider can take.
    """
    supports_images: ClassVar[bool] = False
    """Set it to True if `make_request` handles `ImagePart` content (routed as for tools)."""

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

    @abc.abstractmethod
    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        """Chunks for one event; raises `LLMError` for an in-stream error event."""

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

    supports_tools: ClassVar[bool] = True
    supports_images: ClassVar[bool] = True

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
        call = self.adapter.build_request(request, stream=True)
        with map_transport_errors(self.name):
            cm = self.transport.stream(call)
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
        call = self.adapter.health_request()
        try:
            with map_transport_errors(self.name):
                response = await self.transport.request(call)
        except LLMError:
            return False
        return 200 <= response.status < 300

    def __repr__(self) -> str:
        return f"<HTTPProvider {self.name!r} protocol={self.adapter.protocol!r}>"
