"""The SSE decoder against the WHATWG "event stream interpretation" rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmlb_actors._sse import SSEDecoder, SSEEvent

BIG = 1 << 20


def decode(*pieces: bytes, max_line: int = BIG, max_event: int = BIG) -> list[SSEEvent]:
    decoder = SSEDecoder(max_line_bytes=max_line, max_event_bytes=max_event)
    events: list[SSEEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    events += decoder.close()
    return events


def datas(*pieces: bytes) -> list[str]:
    return [e.data for e in decode(*pieces)]


# ---- the spec's examples -----------------------------------------------------------------------


def test_spec_stock_example_is_one_event() -> None:
    stream = b"data: YHOO\ndata: +2\ndata: 10\n\n"
    assert decode(stream) == [SSEEvent("message", "YHOO\n+2\n10", None, None)]


def test_spec_test_stream_example() -> None:
    stream = (
        b": test stream\n"
        b"\n"
        b"data: first event\n"
        b"id: 1\n"
        b"\n"
        b"data:second event\n"
        b"id\n"
        b"\n"
        b"data:  third event\n"
    )
    # The first block is only a comment: no data, no event. The last block is
    # not terminated by a blank line, so it is discarded at end of stream.
    assert decode(stream) == [
        SSEEvent("message", "first event", "1", None),
        SSEEvent("message", "second event", "", None),
    ]
    # Terminated, the third event keeps the second space and the empty id persists.
    assert decode(stream + b"\n")[2] == SSEEvent("message", " third event", "", None)


def test_spec_empty_data_examples() -> None:
    stream = b"data\n\ndata\ndata\n\ndata:\n"
    assert datas(stream) == ["", "\n"]


def test_spec_leading_space_example() -> None:
    stream = b"data:test\n\ndata: test\n\n"
    assert datas(stream) == ["test", "test"]


# ---- line endings ------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_each_line_ending(eol: bytes) -> None:
    stream = b"event: a" + eol + b"data: x" + eol + b"data: y" + eol + eol
    assert decode(stream) == [SSEEvent("a", "x\ny", None, None)]


def test_crlf_split_across_feeds_is_one_line_ending() -> None:
    assert datas(b"data: a\r", b"\n\r", b"\n") == ["a"]
    # "\r" then a feed not starting with "\n": the "\r" alone ended the line.
    assert datas(b"data: a\r", b"\rdata: b\r\r") == ["a", "b"]


def test_empty_feed_keeps_a_pending_cr() -> None:
    assert datas(b"data: a\r", b"", b"\n", b"\n") == ["a"]


def test_mixed_line_endings() -> None:
    assert datas(b"data: a\r\ndata: b\rdata: c\n\r\n") == ["a\nb\nc"]


# ---- fields ------------------------------------------------------------------------------------


def test_comment_lines_are_ignored() -> None:
    assert decode(b": OPENROUTER PROCESSING\n\n:\ndata: x\n: keep-alive\n\n") == [
        SSEEvent("message", "x", None, None)
    ]


def test_only_one_leading_space_is_stripped_and_colons_in_value_kept() -> None:
    assert datas(b'data:   {"a": "b:c"}\n\n') == ['  {"a": "b:c"}']


def test_field_without_colon_has_empty_value() -> None:
    assert decode(b"event\ndata\n\n") == [SSEEvent("message", "", None, None)]


def test_unknown_fields_are_ignored() -> None:
    assert datas(b"foo: bar\ndata: x\nDATA: y\n\n") == ["x"]


def test_event_type_defaults_to_message_and_resets_after_dispatch() -> None:
    events = decode(b"event: ping\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n")
    assert [e.event for e in events] == ["ping", "message", "message"]


def test_event_type_without_data_is_dropped_with_the_block() -> None:
    events = decode(b"event: x\n\ndata: 1\n\n")
    assert events == [SSEEvent("message", "1", None, None)]


def test_id_persists_and_nul_ids_are_ignored() -> None:
    events = decode(b"id: 7\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\nid\ndata: d\n\n")
    assert [e.id for e in events] == ["7", "7", "7", ""]


def test_retry_only_ascii_digits() -> None:
    events = decode(
        b"retry: 1500\ndata: a\n\n"
        b"retry: 15x\ndata: b\n\n"
        b"retry:\ndata: c\n\n"
        b"retry: \xd9\xa1\ndata: d\n\n"  # ARABIC-INDIC DIGIT ONE: not ASCII
    )
    assert [e.retry for e in events] == [1500, None, None, None]


def test_utf8_with_replacement_and_split_characters() -> None:
    text = "héllo ✓ 😀".encode()
    stream = b"data: " + text + b"\xff\n\n"
    for cut in range(len(stream) + 1):
        assert datas(stream[:cut], stream[cut:]) == ["héllo ✓ 😀\ufffd"]


def test_bom_at_stream_start_is_skipped_even_when_split() -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    for cut in range(5):
        assert datas(stream[:cut], stream[cut:]) == ["x"]
    # Only at the start: a second BOM is part of the field name, so the line is unknown.
    assert datas(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n") == ["y"]


def test_incomplete_event_at_eof_is_discarded() -> None:
    assert datas(b"data: a\n\ndata: b\n") == ["a"]
    assert datas(b"data: a\n\ndata: b") == ["a"]


def test_close_resets_the_decoder() -> None:
    decoder = SSEDecoder(max_line_bytes=BIG, max_event_bytes=BIG)
    assert decoder.feed(b"data: half") == []
    assert decoder.close() == []
    assert decoder.feed(b"data: new\n\n") == [SSEEvent("message", "new", None, None)]


# ---- memory bounds -----------------------------------------------------------------------------


def test_line_over_the_limit_raises_in_one_piece_or_many() -> None:
    with pytest.raises(ValueError, match="line longer than 16 bytes"):
        decode(b"data: " + b"x" * 11 + b"\n\n", max_line=16)
    decoder = SSEDecoder(max_line_bytes=16, max_event_bytes=BIG)
    decoder.feed(b"data: xxxx")
    for _ in range(3):
        assert decoder.feed(b"xx") == []  # 16 bytes: still within the bound
    # No line ending ever comes: the tail must not grow unbounded.
    with pytest.raises(ValueError, match="line longer"):
        decoder.feed(b"x")


def test_line_at_the_limit_is_fine() -> None:
    assert datas(b"data: " + b"x" * 10 + b"\n\n") == ["x" * 10]
    assert decode(b"data: " + b"x" * 10 + b"\n\n", max_line=16)[0].data == "x" * 10


def test_event_data_over_the_limit_raises() -> None:
    with pytest.raises(ValueError, match="event data over 8 bytes"):
        decode(b"data: 12345\ndata: 6789\n\n", max_event=8)
    # The bound is per event, not per stream.
    assert len(decode(b"data: 1234\n\n" * 5, max_event=8)) == 5


# ---- arbitrary splits ----------------------------------------------------------------------------

_line = st.one_of(
    st.sampled_from(
        [
            b"",
            b":",
            b": comment",
            b"data",
            b"data:",
            b"data: x",
            b"data:  y",
            b"event: e",
            b"id: 3",
            b"id",
            b"retry: 10",
            b"retry: x",
            b"field",
            b"\xef\xbb\xbfdata: bom",
        ]
    ),
    st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.text(max_size=6).map(lambda t: b"data: " + t.encode()),
)
_stream = st.tuples(
    st.booleans(),
    st.lists(st.tuples(_line, st.sampled_from([b"\n", b"\r", b"\r\n"])), max_size=25),
).map(lambda t: (b"\xef\xbb\xbf" if t[0] else b"") + b"".join(a + b for a, b in t[1]))


@given(stream=_stream, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_splitting_the_stream_anywhere_gives_the_same_events(
    stream: bytes, cuts: list[int]
) -> None:
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert decode(*pieces) == decode(stream)
    assert decode(*[stream[i : i + 1] for i in range(len(stream))]) == decode(stream)


# ---- feed_data: the data alone, through the whole-buffer fast shapes -------------------------


def feed_datas(*pieces: bytes, max_line: int = BIG, max_event: int = BIG) -> list[bytes]:
    decoder = SSEDecoder(max_line_bytes=max_line, max_event_bytes=max_event)
    out: list[bytes] = []
    for piece in pieces:
        out += decoder.feed_data(piece)
    decoder.close()
    return out


def _cuts(stream: bytes) -> list[list[bytes]]:
    """The stream whole, cut in two at every offset, and byte by byte."""
    out = [[stream]]
    out += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    out.append([stream[i : i + 1] for i in range(len(stream))])
    return out


OPENAI = b'data: {"a":1}\n\ndata: {"b":"x y"}\n\ndata: [DONE]\n\n'
ANTHROPIC = (
    b'event: start\ndata: {"a":1}\n\nevent: ping\ndata: {}\n\nevent: stop\ndata: {"z":0}\n\n'
)


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (OPENAI, [b'{"a":1}', b'{"b":"x y"}', b"[DONE]"]),
        (ANTHROPIC, [b'{"a":1}', b"{}", b'{"z":0}']),
        (OPENAI.replace(b"\n", b"\r\n"), [b'{"a":1}', b'{"b":"x y"}', b"[DONE]"]),
        (ANTHROPIC.replace(b"\n", b"\r"), [b'{"a":1}', b"{}", b'{"z":0}']),
        # Shapes off the fast path: the general parser gives the same datas.
        (b": hi\n\ndata: a\ndata: b\n\ndata:c\n\nid: 1\n\ndata: d\n\n", [b"a\nb", b"c", b"d"]),
        (b"event: x\nid: 2\ndata: a\n\ndata: b\n\n", [b"a", b"b"]),
        (b"data: a\n\n\ndata: b\n\n\n\n", [b"a", b"b"]),
        (b"data: a\ndata: b\n\nevent: e\ndata: c\n\n", [b"a\nb", b"c"]),
        (b"data: a\n\nevent: e\ndata: b\n\n", [b"a", b"b"]),
        (b"\xef\xbb\xbfdata: bom\n\n", [b"bom"]),
    ],
)
def test_feed_data_at_every_split(stream: bytes, expected: list[bytes]) -> None:
    for pieces in _cuts(stream):
        assert feed_datas(*pieces) == expected, pieces


def test_feed_data_keeps_invalid_utf8_for_the_reader() -> None:
    assert feed_datas(b"data: \xff\xfe\n\n") == [b"\xff\xfe"]


def test_feed_data_many_events_in_one_read_and_a_tail() -> None:
    events = [b'data: {"i":%d}\n\n' % i for i in range(1000)]
    stream = b"".join(events)
    decoder = SSEDecoder(max_line_bytes=BIG, max_event_bytes=BIG)
    assert decoder.feed_data(stream + b'data: {"i":10') == [b'{"i":%d}' % i for i in range(1000)]
    assert decoder.feed_data(b"00}\n") == []
    assert decoder.feed_data(b"\n") == [b'{"i":1000}']


def test_feed_data_line_and_event_bounds() -> None:
    line = b"data: " + b"x" * 11 + b"\n\n"
    with pytest.raises(ValueError, match="line longer than 16 bytes"):
        feed_datas(line, max_line=16)
    with pytest.raises(ValueError, match="event data over 8 bytes"):
        feed_datas(b"data: 12345\ndata: 6789\n\n", max_event=8)
    with pytest.raises(ValueError, match="event data over 8 bytes"):
        feed_datas(b"data: 123456789\n\n", max_line=64, max_event=8)
    assert feed_datas(b"data: 1234\n\n" * 5, max_event=8) == [b"1234"] * 5


def test_an_unfinished_event_is_bounded_line_by_line() -> None:
    # Many data lines of one event that never ends: parsed as they come (bounded by
    # the event limit), not carried whole.
    decoder = SSEDecoder(max_line_bytes=64, max_event_bytes=1000)
    for _ in range(30):
        assert decoder.feed_data(b"data: " + b"y" * 20 + b"\n") == []
    assert len(decoder._tail) <= 64
    for _ in range(20):  # 50 lines of 20 bytes: exactly the event's 1,000
        decoder.feed_data(b"data: " + b"y" * 20 + b"\n")
    line = b"data: " + b"y" * 20 + b"\n"
    with pytest.raises(ValueError, match="event data over 1000 bytes"):
        decoder.feed_data(line * 4)  # parsed once the carried lines pass the line cap


def test_an_unfinished_event_parsed_early_still_ends_at_its_blank_line() -> None:
    decoder = SSEDecoder(max_line_bytes=16, max_event_bytes=1000)
    out: list[bytes] = []
    for piece in [b"data: aaaa\n", b"data: bbbb\n", b": comment\n", b"data: cccc\n", b"\n"]:
        out += decoder.feed_data(piece)
    assert out == [b"aaaa\nbbbb\ncccc"]
    assert decoder.feed_data(b"data: next\n\n") == [b"next"]
    # The same with events: the id and event type of the early lines are kept.
    decoder = SSEDecoder(max_line_bytes=16, max_event_bytes=1000)
    events: list[SSEEvent] = []
    for piece in [b"event: e\nid: 9\n", b"data: aaaaaaa\n", b"data: b\n", b"\n"]:
        events += decoder.feed(piece)
    assert events == [SSEEvent("e", "aaaaaaa\nb", "9", None)]


def test_a_line_past_the_cap_is_an_error_whole_or_in_pieces() -> None:
    cap = 1024 * 1024
    event = b"data: " + b"x" * (cap - 6) + b"\n\n"  # the line is exactly at the cap
    assert feed_datas(event, max_line=cap, max_event=4 * cap) == [b"x" * (cap - 6)]
    over = b"data: " + b"x" * (cap - 5) + b"\n\n"
    with pytest.raises(ValueError, match="line longer"):
        feed_datas(over, max_line=cap, max_event=4 * cap)
    with pytest.raises(ValueError, match="line longer"):
        feed_datas(*[over[i : i + 65536] for i in range(0, len(over), 65536)], max_line=cap)


@given(stream=_stream, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_feed_data_gives_the_data_of_feed(stream: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    expected = [e.data for e in decode(stream)]
    assert [d.decode("utf-8", "replace") for d in feed_datas(*pieces)] == expected
    assert [d.decode("utf-8", "replace") for d in feed_datas(stream)] == expected


_payload = st.binary(max_size=10).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_api_event = st.one_of(
    _payload.map(lambda p: b"data: " + p + b"\n\n"),
    _payload.map(lambda p: b"event: e\ndata: " + p + b"\n\n"),
    st.tuples(_line, _payload).map(lambda t: t[0] + b"\ndata: " + t[1] + b"\n\n"),
    _line.map(lambda line: line + b"\n"),
)
_api_stream = st.lists(_api_event, max_size=12).map(b"".join)


@given(stream=_api_stream, cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_feed_data_fast_shapes_match_feed(stream: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    expected = [e.data for e in decode(stream)]
    assert [d.decode("utf-8", "replace") for d in feed_datas(*pieces)] == expected
    assert [d.decode("utf-8", "replace") for d in feed_datas(stream)] == expected
    assert decode(*pieces) == decode(stream)
