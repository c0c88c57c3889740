"""A sans-I/O server-sent-events decoder (the WHATWG "event stream interpretation" rules).

Bytes go in as they arrive from the socket; events (or just their ``data``)
come out. The decoder works on whole buffers with C-level bytes methods, never
per byte in Python:

* line endings are normalised once per read (``\\r\\n`` and ``\\r`` become
  ``\\n``), so an event ends at the last ``b"\\n\\n"`` of the buffer
  (``rfind``), and everything before it is a run of complete events;
* `SSEDecoder.feed_data` recognises the two shapes LLM APIs send, every event
  one ``data: `` line (OpenAI, Gemini, Mistral) or an ``event:`` line and a
  ``data: `` line (Anthropic, Cohere), by counting and splitting the run as a
  whole: no Python loop per line or per event. Anything else (comments,
  multi-line data, ``id``, ``retry``, a missing space) takes the general
  per-line path, which implements the whole spec.

Only complete events are decoded, so a multi-byte UTF-8 character split
across two reads is harmless. httpx-sse parses lines that httpx already split
and decoded, so it cannot sit under our own transport; this module can.

Memory is bounded: a line longer than ``max_line_bytes`` or an event whose
``data`` grows past ``max_event_bytes`` raises ``ValueError`` instead of
buffering whatever an upstream sends.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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

    Call `feed` (whole events) or `feed_data` (only each event's ``data``, as
    bytes: what the built-in protocols read) with each chunk of bytes, the
    same one for the whole body, and `close` at end of body. An event still
    being built at end of body is discarded, as the spec requires (a stream
    cut mid-event must not look like a complete one).

    Raises:
        ValueError: a line exceeds ``max_line_bytes`` or one event's data
            exceeds ``max_event_bytes``.
    """

    __slots__ = (
        "_data",
        "_data_size",
        "_event",
        "_in_event",
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
        # What follows the last complete event: the start of the next one, with
        # line endings normalised. Normally it starts at an event boundary; after a
        # huge unfinished event it holds only the current line (`_in_event`).
        self._tail = b""
        self._in_event = False  # lines of an unfinished event were parsed already
        self._pending_cr = False  # the last feed ended in "\r": a leading "\n" belongs to it
        self._started = False  # the optional BOM at stream start has been dealt with
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = b""
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, data: bytes | bytearray) -> list[SSEEvent]:
        """Parse ``data`` (any slice of the body) and return the events it completed."""
        buf = self._take(data)
        if buf is None:
            return []
        lines = self._complete_lines(buf)
        if lines is None:
            return []
        return self._lines(lines, True)

    def feed_data(self, data: bytes | bytearray) -> list[bytes]:
        """Like `feed`, but only each completed event's ``data`` (its lines joined by
        ``b"\\n"``), undecoded: the fast path for readers of ``data`` alone."""
        buf = self._take(data)
        if buf is None:
            return []
        if not self._in_event:
            end = buf.rfind(b"\n\n")
            if end < 0:
                self._keep(buf)
                return []
            if end < self._max_line and end < self._max_event:
                datas = _fast_datas(buf[: end + 2])
                if datas is not None:
                    self._tail = buf[end + 2 :]
                    return datas
        lines = self._complete_lines(buf)
        if lines is None:
            return []
        return self._lines(lines, False)

    def close(self) -> list[SSEEvent]:
        """End of body: drop any incomplete line and event, and reset for reuse."""
        self._tail = b""
        self._in_event = False
        self._pending_cr = False
        self._started = False
        self._reset_event()
        return []

    # -- buffering -----------------------------------------------------------------

    def _take(self, data: bytes | bytearray) -> bytes | None:
        """``data`` after the carried tail, line endings normalised; ``None`` if empty."""
        if not data:
            return None
        if type(data) is not bytes:
            data = bytes(data)
        if self._pending_cr:
            self._pending_cr = False
            if data[0] == 0x0A:  # the "\n" of a "\r\n" split across two reads
                data = data[1:]
                if not data:
                    return None
        if not self._started:
            head = self._tail + data
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._tail = head  # could still become a BOM: wait for more
                return None
            self._started = True
            self._tail = b""
            data = head[len(_BOM) :] if head.startswith(_BOM) else head
        if b"\r" in data:
            if data[-1] == 0x0D:
                self._pending_cr = True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        tail = self._tail
        return tail + data if tail else data

    def _complete_lines(self, buf: bytes) -> list[bytes] | None:
        """The complete lines of ``buf`` to parse now (``None``: none yet); keeps the rest."""
        if self._in_event:
            # Inside an unfinished event whose first lines were parsed already:
            # every complete line counts (a blank one at the very start ends it).
            end = buf.rfind(b"\n")
            if end < 0:
                self._keep(buf)
                return None
            self._tail = buf[end + 1 :]
            lines = buf[:end].split(b"\n")
            self._check_lines(end, lines)
            self._in_event = lines[-1] != b""  # a blank last line ended the event
            return lines
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._keep(buf)
            return None
        self._tail = buf[end + 2 :]
        lines = buf[: end + 1].split(b"\n")  # complete events, the last line blank
        self._check_lines(end, lines)
        return lines

    def _keep(self, buf: bytes) -> None:
        """No complete event (or line) yet: carry ``buf``, within the bounds."""
        self._tail = buf
        if len(buf) <= self._max_line:
            return
        if not self._in_event:
            # A long unfinished event: parse its complete lines now and keep only
            # the current line, so that no upstream can make us buffer more.
            end = buf.rfind(b"\n")
            if end >= 0:
                lines = buf[:end].split(b"\n")
                self._check_lines(end, lines)
                self._lines(lines, False)  # no blank line among them: nothing dispatched
                self._tail = buf = buf[end + 1 :]
            self._in_event = True
        if len(buf) > self._max_line:
            raise ValueError(f"event-stream line longer than {self._max_line} bytes")

    def _check_lines(self, size: int, lines: list[bytes]) -> None:
        if size > self._max_line and max(map(len, lines)) > self._max_line:
            raise ValueError(f"event-stream line longer than {self._max_line} bytes")

    # -- the general path ------------------------------------------------------------

    def _reset_event(self) -> None:
        self._data = []
        self._data_size = 0
        self._event = b""
        self._retry = None

    def _lines(self, lines: list[bytes], events: bool) -> list[Any]:
        """Parse complete lines; return the events they dispatched (``events``) or their
        data. Implements every rule of the spec; the fast shapes never come here."""
        out: list[Any] = []
        for line in lines:
            if not line:
                if self._data:
                    data = b"\n".join(self._data)
                    if events:
                        out.append(
                            SSEEvent(
                                self._event.decode("utf-8", "replace") or "message",
                                data.decode("utf-8", "replace"),
                                self._last_id,
                                self._retry,
                            )
                        )
                    else:
                        out.append(data)
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
                self._data.append(value)
            elif field == b"event":
                self._event = value
            elif field == b"id":
                if b"\0" not in value:
                    self._last_id = value.decode("utf-8", "replace")
            elif field == b"retry" and value.isdigit():  # bytes.isdigit is ASCII-only
                self._retry = int(value)
        return out


def _fast_datas(run: bytes) -> list[bytes] | None:
    """The ``data`` of each event in ``run`` (complete events, ``\\n`` line endings),
    if every event has one of the two shapes APIs send; otherwise ``None``.

    Each event one ``data: `` line: split the run at ``\\n\\ndata: ``; if no piece
    holds a newline, every event was exactly that line. An ``event:`` (or any
    non-data) line, then a ``data: `` line: split into lines; every third line
    blank, the ones before them data lines, the others naming no data field.
    C-level splits, joins and searches over the whole run (CPython's multi-byte
    ``count`` is slower than a split, so nothing is counted).
    """
    if run.startswith(b"data: "):
        datas = run[6:-2].split(b"\n\ndata: ")
        return None if b"\n" in b"".join(datas) else datas
    lines = run[:-1].split(b"\n")
    events = len(lines) // 3
    if len(lines) != 3 * events or any(lines[2::3]):
        return None
    joined = b"\n".join(lines[1::3])
    if not joined.startswith(b"data: "):
        return None
    datas = joined[6:].split(b"\ndata: ")
    if len(datas) != events:
        return None
    heads = b"\n".join(lines[0::3])
    if heads.startswith(b"data") or b"\ndata" in heads:
        return None  # a data line there too: the event's data has two lines
    return datas
