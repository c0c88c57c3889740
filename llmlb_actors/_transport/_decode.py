"""Content-Encoding, the same for both transports: gzip and deflate decoded, the rest refused.

Both transports ask for ``accept-encoding: identity``, but gateways compress
anyway. Parsing compressed bytes as text gives misleading errors at best and
wrong text delivered as success at worst, so a compressed body is either
decoded or refused, never passed through:

* ``gzip`` (``x-gzip``) and ``deflate`` (zlib-wrapped or raw) are decoded
  with the standard library, whole responses and streams alike. The size cap
  (``max_response_bytes``) applies to the *decoded* bytes, and zlib is never
  asked for more than the cap allows, so a decompression bomb is a
  `ResponseTooLarge` error, not an out-of-memory.
* Anything else (``br``, ``zstd``, ``compress``, unknown codings) is a
  `ContentEncodingError` naming the coding. Not ``br``/``zstd`` even when a
  library is installed: the behaviour would then depend on what happens to be
  installed, and their Python bindings cannot all bound the output of one
  input chunk.

Strictly private.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from ._base import ContentEncodingError, ResponseTooLarge

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ContentDecoder", "decoder_for"]

_GZIP = frozenset({"gzip", "x-gzip"})
_SUPPORTED = ("gzip", "deflate")


def decoder_for(headers: Mapping[str, str], limit: int) -> ContentDecoder | None:
    """A decoder for the response's ``content-encoding``, or None when it is identity.

    Raises:
        ContentEncodingError: a coding other than gzip, deflate or identity.
    """
    value = headers.get("content-encoding")
    if value is None:
        return None
    codings = [c.strip().lower() for c in value.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    for coding in codings:
        if coding not in _GZIP and coding != "deflate":
            raise ContentEncodingError(
                f"the server sent Content-Encoding: {value.strip()[:60]} although the request "
                f"asked for identity; only {' and '.join(_SUPPORTED)} are decoded"
            )
    return ContentDecoder(codings, limit)


class _Inflater:
    """One coding's zlib stream; deflate tries zlib-wrapped first, then raw."""

    __slots__ = ("_coding", "_fed", "_object", "_raw_tried")

    def __init__(self, coding: str) -> None:
        self._coding = "gzip" if coding in _GZIP else "deflate"
        self._object = zlib.decompressobj(self._wbits(raw=False))
        self._raw_tried = False
        self._fed = False

    def _wbits(self, *, raw: bool) -> int:
        if self._coding == "gzip":
            return 16 + zlib.MAX_WBITS
        return -zlib.MAX_WBITS if raw else zlib.MAX_WBITS

    def inflate(self, data: bytes, budget: int) -> bytes:
        """Decoded bytes of ``data``, at most ``budget + 1`` of them (one more means over)."""
        first = not self._fed
        self._fed = True
        try:
            out = self._object.decompress(data, budget + 1)
        except zlib.error as exc:
            if first and self._coding == "deflate" and not self._raw_tried:
                # Some servers send raw DEFLATE under "deflate" (RFC 9110 says zlib).
                self._raw_tried = True
                self._object = zlib.decompressobj(self._wbits(raw=True))
                return self.inflate(data, budget)
            raise ContentEncodingError(f"corrupt {self._coding} body: {exc}") from None
        if self._object.eof and self._object.unused_data and self._coding == "gzip":
            # Several gzip members, one after the other (RFC 1952 allows it).
            rest = self._object.unused_data
            self._object = zlib.decompressobj(self._wbits(raw=False))
            self._fed = False
            out += self.inflate(rest, budget - len(out)) if len(out) <= budget else b""
        return out

    def finish(self) -> None:
        if self._fed and not self._object.eof:
            raise ContentEncodingError(f"the {self._coding} body is truncated")


class ContentDecoder:
    """Decodes a body chunk by chunk; the decoded total may not exceed ``limit``."""

    __slots__ = ("_inflaters", "_left", "_limit")

    def __init__(self, codings: list[str], limit: int) -> None:
        # Codings are listed in the order they were applied: undo them in reverse.
        self._inflaters = [_Inflater(c) for c in reversed(codings)]
        self._limit = limit
        self._left = limit

    def decode(self, data: bytes | bytearray) -> bytes:
        """The decoded bytes of the next raw chunk (possibly empty).

        Raises:
            ResponseTooLarge: the decoded body exceeds the limit.
            ContentEncodingError: the data is not valid for its coding.
        """
        out = bytes(data)
        for inflater in self._inflaters:
            if not out:
                return b""
            out = inflater.inflate(out, self._left)
            if len(out) > self._left:
                raise ResponseTooLarge(f"decoded body over {self._limit} bytes")
        self._left -= len(out)
        return out

    def finish(self) -> None:
        """The raw body ended: every coding's stream must have ended too.

        Raises:
            ContentEncodingError: a truncated compressed stream.
        """
        for inflater in self._inflaters:
            inflater.finish()
