"""A sans-I/O server-sent-events decoder (the WHATWG "event stream interpretation" rules).

Bytes go in as they arrive from the socket, `SSEEvent`s come out. Line
splitting works on bytes with C-level methods (``bytes.splitlines`` splits on
exactly the three SSE line endings), so the per-byte work never runs in Python;
only complete lines are decoded, which makes a multi-byte UTF-8 character
split across two reads harmless. httpx-sse parses lines that httpx already
split and decoded, so it cannot sit under our own transport; this module can.

Memory is bounded: a line longer than ``max_line_bytes`` or an event whose
``data`` grows past ``max_event_bytes`` raises ``ValueError`` instead of
buffering whatever an upstream sends.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEDecoder", "SSEEvent"]

_BOM = b"\xef\xbb\xbf"


class SSEEvent(NamedTuple):
    """One dispatched event.

    Attributes:
        event: the event type (``"message"`` when the stream named none).
        data: the ``data`` lines joined with ``"\\n"``.
        id: the last event id seen so far in the stream (it persists across
            events, as the spec says), or ``None`` before any.
        retry: the ``retry`` value given in this event's block, if any.
    """

    event: str
    data: str
    id: str | None
    retry: int | None


class SSEDecoder:
    """Incremental event-stream parser; one instance per response body.

    Call `feed` with each chunk of bytes and `close` at end of body. An event
    still being built at end of body is discarded, as the spec requires (a
    stream cut mid-event must not look like a complete one).

    Raises:
        ValueError: a line exceeds ``max_line_bytes`` or one event's data
            exceeds ``max_event_bytes``.
    """

    __slots__ = (
        "_data",
        "_data_size",
        "_event",
        "_last_id",
        "_max_event",
        "_max_line",
        "_pending_cr",
        "_retry",
        "_started",
        "_tail",
    )

    def __init__(self, *, max_line_bytes: int, max_event_bytes: int) -> None:
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        self._tail = bytearray()  # an incomplete line carried to the next feed
        self._pending_cr = False  # the last feed ended in "\r": a leading "\n" belongs to it
        self._started = False  # the optional BOM at stream start has been dealt with
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Parse ``data`` (any slice of the body) and return the events it completed."""
        if not data:
            return []
        if self._pending_cr:
            self._pending_cr = False
            if data[0] == 0x0A:  # the "\n" of a "\r\n" split across two reads
                data = data[1:]
                if not data:
                    return []
        if not self._started:
            head = bytes(self._tail) + data
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._tail[:] = head  # could still become a BOM: wait for more
                return []
            self._started = True
            self._tail.clear()
            data = head[len(_BOM) :] if head.startswith(_BOM) else head
        if b"\n" not in data and b"\r" not in data:
            self._tail += data
            if len(self._tail) > self._max_line:
                raise ValueError(f"event-stream line longer than {self._max_line} bytes")
            return []
        if self._tail:
            self._tail += data
            buf = bytes(self._tail)
            self._tail.clear()
        else:
            buf = data
        lines = buf.splitlines()
        last = buf[-1]
        if last == 0x0D:
            self._pending_cr = True
        elif last != 0x0A:
            self._tail += lines.pop()  # no line ending yet: keep for the next feed
        if len(buf) > self._max_line and (
            len(self._tail) > self._max_line or max(map(len, lines), default=0) > self._max_line
        ):
            raise ValueError(f"event-stream line longer than {self._max_line} bytes")
        return self._lines(lines)

    def close(self) -> list[SSEEvent]:
        """End of body: drop any incomplete line and event, and reset for reuse."""
        self._tail.clear()
        self._pending_cr = False
        self._started = False
        self._reset_event()
        return []

    def _reset_event(self) -> None:
        self._data = []
        self._data_size = 0
        self._event = ""
        self._retry = None

    def _lines(self, lines: list[bytes]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(
                        SSEEvent(
                            self._event or "message",
                            "\n".join(self._data),
                            self._last_id,
                            self._retry,
                        )
                    )
                self._reset_event()
                continue
            if line[0] == 0x3A:  # ":" starts a comment (keep-alives, OpenRouter notes)
                continue
            field, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                self._data_size += len(value)
                if self._data_size > self._max_event:
                    raise ValueError(f"event-stream event data over {self._max_event} bytes")
                self._data.append(value.decode("utf-8", "replace"))
            elif field == b"event":
                self._event = value.decode("utf-8", "replace")
            elif field == b"id":
                if b"\0" not in value:
                    self._last_id = value.decode("utf-8", "replace")
            elif field == b"retry" and value.isdigit():  # bytes.isdigit is ASCII-only
                self._retry = int(value)
        return events
