"""The trio transport's sans-I/O pieces: URL targets, request heads, response parsing."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlb_actors._transport import _http11
from llmlb_actors._transport._base import RemoteProtocolError, ResponseTooLarge
from llmlb_actors._transport._http11 import ResponseReader, encode_head, parse_url


def test_parse_url_defaults_and_labels() -> None:
    t = parse_url("https://API.example.com/v1/chat/completions?key=sk-1")
    assert t.origin == ("https", "api.example.com", 443)
    assert (t.host, t.port, t.tls) == ("api.example.com", 443, True)
    assert t.target == "/v1/chat/completions?key=sk-1"
    assert t.host_header == "api.example.com"
    assert t.label == "https://api.example.com:443"  # no path, no query
    plain = parse_url("http://127.0.0.1:8080")
    assert (plain.target, plain.host_header, plain.tls) == ("/", "127.0.0.1:8080", False)
    assert parse_url("https://bücher.de/").host == "xn--bcher-kva.de"
    v6 = parse_url("http://[::1]:9000/x#frag")
    assert (v6.host, v6.host_header, v6.target) == ("::1", "[::1]:9000", "/x")


def test_parse_url_is_cached() -> None:
    url = "http://127.0.0.1:1/cached"
    assert parse_url(url) is parse_url(url)


def test_parse_url_quotes_unsafe_target_characters() -> None:
    assert parse_url("http://h/a b/ü?q=x y").target == "/a%20b/%C3%BC?q=x%20y"
    assert parse_url("http://h/already%20quoted").target == "/already%20quoted"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h/a\r\nx-evil: 1", "CR, LF or NUL"),
        ("http://h/a\nb", "CR, LF or NUL"),
        ("http://h/a\0", "CR, LF or NUL"),
        ("ftp://h/", "scheme"),
        ("/relative", "scheme"),
        ("http:///nohost", "no host"),
        ("http://user:pw@h/", "credentials"),
        ("http://h:99999/", "Port out of range"),
        ("http://a..b/", "invalid host name"),
    ],
)
def test_parse_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_encode_head_post() -> None:
    head = encode_head(
        "POST",
        parse_url("http://127.0.0.1:8000/v1/chat?x=1"),
        [("content-type", "application/json"), ("authorization", "Bearer k")],
        b'{"a":1}',
    )
    assert head == (
        b"POST /v1/chat?x=1 HTTP/1.1\r\n"
        b"host: 127.0.0.1:8000\r\n"
        b"content-type: application/json\r\n"
        b"authorization: Bearer k\r\n"
        b"user-agent: llmlb-actors/0.1\r\n"
        b"accept-encoding: identity\r\n"
        b"content-length: 7\r\n"
        b"\r\n"
    )


def test_encode_head_owned_headers_and_user_agent() -> None:
    head = encode_head(
        "GET",
        parse_url("https://h/"),
        [
            ("user-agent", "mine/1"),
            ("host", "evil"),
            ("content-length", "99"),
            ("transfer-encoding", "chunked"),
            ("connection", "close"),
            ("accept-encoding", "gzip"),
        ],
        None,
    )
    assert head == (
        b"GET / HTTP/1.1\r\nhost: h\r\nuser-agent: mine/1\r\naccept-encoding: identity\r\n\r\n"
    )


def test_encode_head_owned_headers_in_any_case() -> None:
    head = encode_head(
        "POST",
        parse_url("http://h/"),
        [("Content-Length", "1"), ("HOST", "x"), ("User-Agent", "u/2")],
        b"abc",
    )
    assert head.count(b"ength:") == 1
    assert b"content-length: 3\r\n" in head
    assert b"host: h\r\n" in head
    assert b"HOST" not in head
    assert b"User-Agent: u/2\r\n" in head
    assert b"llmlb-actors" not in head


def test_encode_head_content_length_zero_for_bodyless_post() -> None:
    head = encode_head("POST", parse_url("http://h/"), [], None)
    assert b"content-length: 0\r\n" in head
    assert b"content-length" not in encode_head("GET", parse_url("http://h/"), [], None)
    assert b"content-length: 0\r\n" in encode_head("GET", parse_url("http://h/"), [], b"")


@pytest.mark.parametrize("bad", ["v\r\nx-evil: 1", "v\n", "v\r", "v\0"])
def test_encode_head_rejects_control_characters_without_quoting_the_value(bad: str) -> None:
    secret = f"sk-secret{bad}"
    with pytest.raises(ValueError, match="'x-api-key' contains CR, LF or NUL") as info:
        encode_head("GET", parse_url("http://h/"), [("x-api-key", secret)], None)
    assert "sk-secret" not in str(info.value)


def test_encode_head_rejects_bad_names_methods_and_non_ascii() -> None:
    target = parse_url("http://h/")
    for name in ["bad name", "x:y", "", "x\r\ny"]:
        with pytest.raises(ValueError, match="invalid HTTP header name"):
            encode_head("GET", target, [(name, "v")], None)
    for method in ["GE T", "GET\r\n", ""]:
        with pytest.raises(ValueError, match="invalid HTTP method"):
            encode_head(method, target, [], None)
    with pytest.raises(ValueError, match="'x-name' is not ASCII") as info:
        encode_head("GET", target, [("x-name", "sk-ünïcode")], None)
    assert "sk-" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_encode_head_remembers_each_head_and_nothing_else() -> None:
    """The checked head of a (method, URL, headers) is built once: the same inputs give the
    same bytes, any change gives its own head, a refused one is refused every time, and
    headers given as lists (unhashable) still encode."""
    target = parse_url("http://h/v1")
    headers = [("authorization", "Bearer a")]
    first = encode_head("POST", target, headers, b"ab")
    assert encode_head("POST", target, list(headers), b"ab") == first
    assert encode_head("POST", target, headers, b"abc").endswith(b"content-length: 3\r\n\r\n")
    assert b"Bearer b" in encode_head("POST", target, [("authorization", "Bearer b")], b"")
    assert encode_head("GET", target, headers, None).startswith(b"GET /v1 ")
    assert b"x: 1" in encode_head("POST", target, [["x", "1"]], None)  # type: ignore[list-item]
    for _ in range(2):
        with pytest.raises(ValueError, match="contains CR, LF or NUL"):
            encode_head("POST", target, [("x-key", "v\r\n")], b"")


def test_encode_head_memory_is_bounded() -> None:
    target = parse_url("http://h/")
    for i in range(_http11._MAX_PREFIXES * 2 + 3):
        head = encode_head("POST", target, [("x-n", str(i))], None)
        assert f"x-n: {i}\r\n".encode() in head
        assert len(_http11._prefixes) <= _http11._MAX_PREFIXES


def feed_all(reader: ResponseReader, data: bytes) -> ResponseReader:
    reader.feed(data)
    return reader


def reader(head_only: bool = False, limit: int | None = None) -> ResponseReader:
    return ResponseReader(head_only=head_only, limit=limit, max_head=65536)


def test_reader_keep_alive_rules() -> None:
    ok = feed_all(reader(), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert (ok.complete, ok.keep_alive, ok.chunks) == (True, True, [b"hi"])
    close = feed_all(reader(), b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert (close.complete, close.keep_alive) == (True, False)
    old = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    assert feed_all(reader(), old).keep_alive is False
    extra = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n"
    assert feed_all(reader(), extra).keep_alive is False
    garbage = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\x00garbage"
    after = feed_all(reader(), garbage)
    assert (after.complete, after.keep_alive) == (True, False)


def test_reader_eof_delimited_body() -> None:
    r = feed_all(reader(), b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert (r.headers_done, r.complete) == (True, False)
    r.feed(b" more")
    assert r.feed_eof() is True
    assert (r.complete, r.keep_alive, b"".join(r.chunks)) == (True, False, b"some more")
    # Content-Length and chunked bodies are not completed by EOF.
    short = feed_all(reader(), b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsome")
    assert short.feed_eof() is False
    cut = feed_all(reader(), b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsome\r\n")
    assert cut.feed_eof() is False
    assert feed_all(reader(), b"HTTP/1.1 200 O").feed_eof() is False


def test_reader_head_response() -> None:
    r = feed_all(reader(head_only=True), b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n")
    assert (r.complete, r.keep_alive, r.chunks) == (True, True, [])


def test_reader_interim_responses() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\nX-I: 1\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx"
    )
    r = feed_all(reader(), data)
    assert (r.status, r.headers, r.chunks, r.keep_alive) == (
        201,
        {"content-length": "1"},
        [b"x"],
        True,
    )


def test_reader_limits() -> None:
    with pytest.raises(ResponseTooLarge):  # refused from Content-Length, before the body
        feed_all(reader(limit=10), b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n"
    r = feed_all(reader(limit=10), chunked)
    with pytest.raises(ResponseTooLarge):
        r.feed(b"5\r\nghijk\r\n")
    small = ResponseReader(head_only=False, limit=None, max_head=64)
    with pytest.raises(RemoteProtocolError, match="head over 64 bytes"):
        small.feed(b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * 100)
    with pytest.raises(httptools.HttpParserError):
        feed_all(reader(), b"HTTP/1.1 abc\r\n\r\n")


RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello world",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(RESPONSES), st.lists(st.integers(min_value=1, max_value=30), max_size=40))
def test_reader_is_split_independent(data: bytes, cuts: list[int]) -> None:
    """However the bytes are split across reads, the parsed response is the same."""
    r = reader()
    pos = 0
    for size in cuts:
        r.feed(data[pos : pos + size])
        pos += size
        if pos >= len(data):
            break
    if pos < len(data):
        r.feed(data[pos:])
    assert (r.status, r.complete, r.keep_alive) == (200, True, True)
    assert b"".join(r.chunks) == b"hello world"
    if b"X-A" in data:
        assert r.headers["x-a"] == "1, 2"
