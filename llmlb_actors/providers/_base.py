"""`BaseProvider`: the public base class of every provider, built-in or your own.

A provider turns an `LLMRequest` into an `LLMResponse` (or a stream of
`StreamChunk`s). It does no I/O itself here: the built-in protocols are
sans-I/O `ProtocolAdapter`s (`_adapter`) sent by `HTTPProvider` (`_http`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .._errors import LLMError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

    # The one import cycle the package keeps, and only for types: the public API
    # makes the two name each other (``ProviderConfig(provider=MyProvider)`` and
    # ``MyProvider(config)``).
    from .._config import ProviderConfig
    from .._models import LLMRequest, LLMResponse, StreamChunk

__all__ = ["BaseProvider"]


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
        """Probe the provider cheaply; the default trusts it.

        Return False, or raise `LLMError` to say why (its message becomes the
        reason in `Balancer.health_report`).
        """
        return True

    async def aclose(self) -> None:
        """Release resources; called when the provider is removed or the balancer closes."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
