"""The sans-I/O adapter protocol: one wire protocol builds HTTP requests and parses answers.

A `ProtocolAdapter` never sends anything; `HTTPProvider` (`_http`) sends what it
builds through a `Transport`. Adding a protocol means writing one adapter and
one registry entry (`_registry.PROTOCOLS`).
"""

from __future__ import annotations

import abc
import importlib
from typing import TYPE_CHECKING, ClassVar

from .._quota._headers import parse_rate_limit_headers
from .._secrets import Secret, is_credential_header
from ._registry import PROTOCOLS
from ._status import error_for_status

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._config import ProviderConfig
    from .._errors import LLMError
    from .._models import LLMRequest, LLMResponse, StreamChunk
    from .._quota._types import Observation
    from .._sse import SSEEvent
    from .._transport._base import HTTPRequest

__all__ = ["ProtocolAdapter", "StreamDecoder", "adapter_class"]


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
    def build_request(self, request: LLMRequest, *, stream: bool) -> HTTPRequest:
        """The HTTP request for ``request`` (whole or streamed)."""

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
    def health_request(self) -> HTTPRequest:
        """A cheap authenticated request that answers 2xx when the provider is usable."""

    @abc.abstractmethod
    def stream_decoder(self) -> StreamDecoder:
        """A fresh decoder for one stream."""

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> LLMError:
        """An `LLMError` for a non-2xx answer, classified by the shared status rules."""
        message, retryable = self.error_message(status, body)
        return error_for_status(self.name, status, message, headers, retryable=retryable)

    def rate_limits(
        self, status: int, headers: Mapping[str, str], body: bytes | None
    ) -> Observation | None:
        """What an answer says about the provider's quota: its rate-limit headers and
        Retry-After (``body`` is given for error answers, where some APIs put it)."""
        return parse_rate_limit_headers(headers)

    def extra_headers(self) -> list[tuple[str, str]]:
        """The user's extra headers from the config, lower-cased; credentials as `Secret`."""
        return [
            (k.lower(), Secret(v) if is_credential_header(k) else v)
            for k, v in self.config.headers.items()
        ]


def adapter_class(protocol: str) -> type[ProtocolAdapter]:
    """The adapter class of a built-in protocol (the name was validated by the config).

    Raises:
        KeyError: not a built-in protocol.
    """
    module, _, name = PROTOCOLS[protocol].adapter.partition(":")
    cls: type[ProtocolAdapter] = getattr(importlib.import_module(f".{module}", __package__), name)
    return cls
