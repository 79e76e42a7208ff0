"""The client side of HTTP/1.1: encode_request and HttpResponseFramer.

Each case is fed whole, one byte at a time, and with trailing data; a
hypothesis test checks that any split gives the same responses.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemonkit.errors import ConfigError
from daemonkit.framing.http import HttpRequestFramer
from daemonkit.framing.http_client import (
    HttpResponse,
    HttpResponseError,
    HttpResponseFramer,
    encode_request,
)


def framer(*methods: str, **settings: int) -> HttpResponseFramer:
    f = HttpResponseFramer(**settings)
    for method in methods:
        f.expect(method)
    return f


def feed_whole(data: bytes, *methods: str) -> list[HttpResponse]:
    return framer(*methods).feed(data)


def feed_bytewise(data: bytes, *methods: str) -> list[HttpResponse]:
    f = framer(*methods)
    out: list[HttpResponse] = []
    for i in range(len(data)):
        out += f.feed(data[i : i + 1])
    return out


FEEDS = [feed_whole, feed_bytewise]

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
)


@pytest.mark.parametrize("feed", FEEDS)
def test_a_content_length_response(feed: object) -> None:
    [resp] = feed(OK)  # type: ignore[operator]
    assert (resp.status, resp.reason, resp.version, resp.body) == (200, "OK", "1.1", b"hello")
    assert resp.header("Content-Type") == "text/plain"
    assert resp.keep_alive and resp.ok and resp.text == "hello"


@pytest.mark.parametrize("feed", FEEDS)
def test_a_chunked_response_is_decoded(feed: object) -> None:
    [resp] = feed(CHUNKED)  # type: ignore[operator]
    assert resp.body == b"hello world"


@pytest.mark.parametrize("feed", FEEDS)
def test_pipelined_responses_with_trailing_data(feed: object) -> None:
    data = OK + CHUNKED + b"HTTP/1.1 204 No Content\r\n\r\n" + OK[:20]
    out = feed(data, "GET", "GET", "DELETE", "GET")  # type: ignore[operator]
    assert [(r.status, r.body) for r in out] == [(200, b"hello"), (200, b"hello world"), (204, b"")]


@pytest.mark.parametrize("feed", FEEDS)
def test_a_head_response_has_no_body_and_interim_responses_are_skipped(feed: object) -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + OK.replace(b"hello", b"") + OK
    out = feed(data, "HEAD", "GET")  # type: ignore[operator]
    assert [(r.status, r.body) for r in out] == [(200, b""), (200, b"hello")]


def test_a_body_until_the_close_completes_at_eof() -> None:
    f = framer("GET")
    assert f.feed(b"HTTP/1.0 200 OK\r\n\r\npart one, ") == []
    assert f.feed(b"part two") == []
    [resp] = f.feed_eof()
    assert resp.body == b"part one, part two" and not resp.keep_alive


def test_connection_close_and_http_10_end_keep_alive() -> None:
    [close] = framer().feed(OK.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n"))
    [old] = framer().feed(OK.replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert not close.keep_alive and not old.keep_alive


@pytest.mark.parametrize("feed", FEEDS)
def test_an_empty_body_keeps_the_connection_alive(feed: object) -> None:
    # llhttp resets its flags once a message without a body is complete; the
    # answer is read when the head is, so a 301 or a 200 with no body keeps alive.
    empty = b"HTTP/1.1 301 Moved Permanently\r\nlocation: /\r\ncontent-length: 0\r\n\r\n"
    responses = feed(empty + OK, "GET", "GET")  # type: ignore[operator]
    assert [(r.status, r.keep_alive) for r in responses] == [(301, True), (200, True)]
    [old] = feed(empty.replace(b"HTTP/1.1", b"HTTP/1.0"), "GET")  # type: ignore[operator]
    assert not old.keep_alive


def test_a_101_pauses_and_keeps_the_new_protocols_bytes() -> None:
    f = framer("GET")
    out = f.feed(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n\x81\x02hi")
    assert [r.status for r in out] == [101]
    assert f.paused and f.trailing == b"\x81\x02hi"
    f.feed(b"more")
    assert f.trailing == b"\x81\x02himore"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n", "max_body"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 20000, "max_head"),
    ],
)
def test_bad_responses_raise_with_the_frames_before(data: bytes, match: str) -> None:
    f = framer("GET", "GET", max_body=1000)
    with pytest.raises(HttpResponseError, match=match) as info:
        f.feed(OK + data)
    assert [r.status for r in info.value.frames] == [200]
    with pytest.raises(HttpResponseError):
        f.feed(b"")


def test_eof_inside_a_response_is_an_error() -> None:
    f = framer("GET")
    f.feed(OK[:-2])
    with pytest.raises(HttpResponseError, match="middle"):
        f.feed_eof()


def test_limits_are_checked() -> None:
    with pytest.raises(ConfigError):
        HttpResponseFramer(max_body=0)


@given(st.lists(st.integers(min_value=1, max_value=len(OK + CHUNKED)), max_size=6))
def test_any_split_gives_the_same_responses(cuts: list[int]) -> None:
    data = OK + CHUNKED
    f = framer("GET", "GET")
    out: list[HttpResponse] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += f.feed(data[last:cut])
        last = cut
    assert out == feed_whole(data, "GET", "GET")


def test_encode_request_is_read_by_the_servers_own_framer() -> None:
    data = encode_request(
        "POST", "/a?b=1", host="127.0.0.1:80", headers={"x-one": "1"}, body=b"payload"
    )
    [request] = HttpRequestFramer().feed(data)
    assert (request.method, request.target, request.body) == ("POST", "/a?b=1", b"payload")
    assert request.header("host") == "127.0.0.1:80" and request.header("x-one") == "1"


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("get", "/", {}),
        ("GET", "/a b", {}),
        ("GET", "/", {"x": "a\r\nInjected: 1"}),
        ("GET", "/", {"bad name": "1"}),
    ],
)
def test_encode_request_refuses_injection(
    method: str, target: str, headers: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        encode_request(method, target, host="h", headers=headers)


def test_encode_notes_the_method_for_head() -> None:
    f = HttpResponseFramer()
    f.encode(encode_request("HEAD", "/", host="h"))
    [resp] = f.feed(OK.replace(b"hello", b""))
    assert resp.body == b"" and f.buffered == 0
    with pytest.raises(TypeError):
        f.encode(b"")


@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_fuzz_only_response_errors_escape(chunks: list[bytes], eof: bool) -> None:
    f = framer("GET", "HEAD", max_body=256, max_head=256)
    try:
        for chunk in [OK[:9], *chunks]:
            f.feed(chunk)
        if eof:
            f.feed_eof()
    except HttpResponseError:
        pass
