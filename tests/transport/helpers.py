"""Types and helpers the transport tests share (their fixtures are in conftest)."""

from __future__ import annotations

import gc
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import trio
import trio.lowlevel

from tests.transport.servers import Server

if TYPE_CHECKING:
    import ssl

    from llmlb_actors._transport import Transport, TransportLimits

__all__ = ["MakeTransport", "Serve", "httpx_abandons_generators"]


class MakeTransport(Protocol):
    def __call__(
        self, limits: TransportLimits | None = None, *, ssl_context: ssl.SSLContext | None = None
    ) -> Transport: ...


Serve = Callable[..., Awaitable[Server]]


@asynccontextmanager
async def httpx_abandons_generators(kind: str) -> AsyncIterator[None]:
    """Tolerate httpx's abandoned async generators, for httpx only.

    When an exchange is cut short (a write timeout, a capped body, a stream
    left early), httpcore leaves a chain of body generators suspended; trio's
    async-generator hooks flag each one with a ResourceWarning when it is
    garbage collected, then close it in a system task (which frees the next
    one in the chain). That is httpx's doing and harmless outside tests; here
    it would be an error, so for httpx exactly that warning is ignored while
    the chain is collected and finalized inside the block.
    """
    if kind != "httpx":
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()  # the first generator sits in a traceback cycle
        quiet = 0
        while quiet < 3:  # then each one freed frees the next by refcount
            seen = len(caught)
            await trio.lowlevel.checkpoint()
            quiet = quiet + 1 if len(caught) == seen else 0
    for warning in caught:
        if not _ABANDONED.match(str(warning.message)) or warning.category is not ResourceWarning:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


_ABANDONED = re.compile(r"Async generator 'http(x|core)\.")
