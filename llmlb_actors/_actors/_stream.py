"""The caller's end of a stream that a provider worker pumps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import trio

from .._errors import LLMError
from .._models import StreamChunk

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._call import Call

__all__ = ["StreamHandle", "StreamItem"]

StreamItem = StreamChunk


class StreamHandle:
    """Chunks of one committed stream, as the caller iterates them.

    The worker that owns the upstream response sends chunks over a small
    memory channel; the first chunk was already read (that is the commit
    point: failover is only possible before it). An error after the commit is
    re-raised as an `LLMError` with ``partial=True`` and the text so far.
    Strictly private; users see it as an async iterator of `StreamChunk`.
    """

    __slots__ = ("_call", "_error", "_first", "_parts", "_recv", "finished", "provider")

    def __init__(
        self,
        first: StreamChunk,
        recv: trio.MemoryReceiveChannel[StreamItem],
        provider: str,
        call: Call,
    ) -> None:
        self._first: StreamChunk | None = first
        self._recv = recv
        self._call = call
        self._error: LLMError | None = None
        self.provider = provider
        self._parts: list[str] = []  # joined on demand: `text +=` per chunk is quadratic
        self.finished = False
        """Set by the worker when the stream ended completely."""

    def fail(self, error: LLMError) -> None:
        """Set by the worker when the stream broke after the commit."""
        self._error = error

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self

    async def __anext__(self) -> StreamChunk:
        chunk = self._first
        if chunk is not None:
            self._first = None
        else:
            try:
                item = await self._recv.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                if self._error is not None:
                    raise self._partial(self._error) from None
                if self.finished:
                    raise StopAsyncIteration from None
                raise self._partial(
                    LLMError(
                        "stream broken: the provider actor stopped before the stream ended",
                        provider=self.provider,
                        retryable=True,
                        kind="crash",
                    )
                ) from None
            chunk = item
        if chunk.delta:
            self._parts.append(chunk.delta)
        return msgspec.structs.replace(chunk, provider=self.provider)

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def _partial(self, error: LLMError) -> LLMError:
        error.partial = True
        error.partial_text = self.text
        if not error.provider:
            error.provider = self.provider
        return error

    def close(self) -> None:
        """Stop the stream: the worker closes the upstream response at once."""
        self._recv.close()
        self._call.abandon()
