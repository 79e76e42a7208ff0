"""HTTP/1.1 requests and responses: each case fed whole, one byte at a time, and followed.

The third way appends a follow-up: another request after a keep-alive one
(it must come out too), or bytes that are not HTTP after a request that ends
the stream (they must land untouched in ``trailing``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemonkit.errors import ConfigError, ProtocolError
from daemonkit.framing.http import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_HEAD,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_TARGET,
    LAST_CHUNK,
    MAX_CHUNK_LINE,
    HttpError,
    HttpRequest,
    HttpRequestFramer,
    encode_chunk,
    encode_continue,
    encode_response,
)

from .test_base import CountingBuffer, bytewise, split_at, whole

Outcome = tuple[list[HttpRequest], int | None]
Way = Callable[[bytes], list[bytes]]
WAYS: dict[str, Way] = {"whole": whole, "bytewise": bytewise}


def run(framer: HttpRequestFramer, chunks: Iterable[bytes]) -> Outcome:
    """Feed *chunks*; return the requests delivered (those on the error too) and the status."""
    requests: list[HttpRequest] = []
    for chunk in chunks:
        try:
            got = framer.feed(chunk)
        except HttpError as exc:
            return requests + exc.frames, exc.status  # type: ignore[attr-defined]
        for request in got:
            assert type(request) is HttpRequest
            # Every derived attribute is safe to read, whatever was accepted.
            assert isinstance(request.path, str)
            assert isinstance(request.query, str)
            assert all(type(n) is str and type(v) is str for n, v in request.headers)
        requests += got
    return requests, None


def req(method: str, target: str, *headers: tuple[str, str], **kwargs: Any) -> HttpRequest:
    """The expected request; an HTTP/1.1 one starts with ``Host: example.com`` unless given one.

    RFC 9112 3.2 makes every HTTP/1.1 request carry a Host, so the streams
    below have ``Host: example.com`` right after the request line.
    """
    version = kwargs.pop("version", "1.1")
    if version == "1.1" and not any(name == "host" for name, _ in headers):
        headers = (H, *headers)
    return HttpRequest(method, target, version, list(headers), **kwargs)


H = ("host", "example.com")
HOST = b"Host: example.com\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
# Host values RFC 9112 3.2 accepts (RFC 3986 host [":" port]) and refuses.
GOOD_HOSTS = [
    b"example.com",
    b"example.com:8080",
    b"EXAMPLE.com:",
    b"127.0.0.1",
    b"127.0.0.1:80",
    b"[::1]",
    b"[::1]:8080",
    b"[2001:db8::ff00:42:8329]",
    b"[::ffff:192.0.2.1]:443",
    b"[v1.fe:x]",
    b"",
    b"xn--bcher-kva.example",
    b"a%20b",
    b"under_score.example",
    b"!$&'()*+,;=-._~",
]
BAD_HOSTS = [
    ("space", b"a b"),
    ("tab", b"a\tb"),
    ("port-not-digits", b"a:b"),
    ("two-ports", b"a:80:80"),
    ("userinfo", b"user@example.com"),
    ("path", b"example.com/"),
    ("query", b"example.com?"),
    ("fragment", b"example.com#"),
    ("bad-percent", b"a%zz"),
    ("bare-ipv6", b"::1"),
    ("open-bracket", b"[::1"),
    ("junk-after-bracket", b"[::1]x"),
    ("not-ipv6", b"[zz]"),
    ("short-ipv6", b"[1:2:3]"),
    ("zone-id", b"[fe80::1%25eth0]"),
    ("obs-text", b"caf\xe9"),
    ("quote", b'"example.com"'),
]

# (name, stream, requests): streams that end on a request boundary.
GOOD: list[tuple[str, bytes, list[HttpRequest]]] = [
    ("get", b"GET / HTTP/1.1\r\n" + HOST + b"\r\n", [req("GET", "/", H)]),
    ("no-headers", b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n", [req("GET", "/x")]),
    ("head", b"HEAD /a?b=c HTTP/1.1\r\n" + HOST + b"\r\n", [req("HEAD", "/a?b=c", H)]),
    (
        "post-content-length",
        b"POST /form HTTP/1.1\r\n" + HOST + b"Content-Length: 11\r\n\r\nhello world",
        [req("POST", "/form", H, ("content-length", "11"), body=b"hello world")],
    ),
    (
        "content-length-zero",
        b"PUT /z HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n",
        [req("PUT", "/z", ("content-length", "0"))],
    ),
    (
        "chunked-extensions-trailers",
        b"POST /up HTTP/1.1\r\n" + HOST + CHUNKED + b"\r\n"
        b'5;name=value\r\nhello\r\n6;a;b="c d"\r\n world\r\nA\r\n0123456789\r\n'
        b"0;last\r\nX-Checksum: abc\r\nX-Other:  1 \r\n\r\n",
        [
            req(
                "POST",
                "/up",
                H,
                ("transfer-encoding", "chunked"),
                body=b"hello world0123456789",
                trailers=[("x-checksum", "abc"), ("x-other", "1")],
            )
        ],
    ),
    (
        "chunked-plain",
        b"POST / HTTP/1.1\r\nHost: example.com\r\n" + CHUNKED + b"\r\n3\r\nabc\r\n0\r\n\r\n",
        [req("POST", "/", ("transfer-encoding", "chunked"), body=b"abc")],
    ),
    (
        "chunked-empty",
        b"POST / HTTP/1.1\r\nHost: example.com\r\n" + CHUNKED + b"\r\n0\r\n\r\n",
        [req("POST", "/", ("transfer-encoding", "chunked"))],
    ),
    (
        "pipelined",
        b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\n"
        b"POST /2 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /3 HTTP/1.1\r\nHost: example.com\r\n" + CHUNKED + b"\r\n1\r\nx\r\n0\r\n\r\n"
        b"GET /4 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        [
            req("GET", "/1", H),
            req("POST", "/2", ("content-length", "3"), body=b"abc"),
            req("POST", "/3", ("transfer-encoding", "chunked"), body=b"x"),
            req("GET", "/4"),
        ],
    ),
    (
        "empty-lines-before-requests",
        b"\r\n\r\n\nGET /1 HTTP/1.1\r\nHost: example.com\r\n"
        b"\r\n\r\nGET /2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        [req("GET", "/1"), req("GET", "/2")],
    ),
    (
        "http10-keep-alive",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        b"GET /b HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        [
            req("GET", "/", ("connection", "keep-alive"), version="1.0"),
            req("GET", "/b", ("connection", "Keep-Alive"), version="1.0"),
        ],
    ),
    (
        "http10-closes",
        b"GET / HTTP/1.0\r\n" + HOST + b"\r\n",
        [req("GET", "/", H, version="1.0", keep_alive=False)],
    ),
    (
        "connection-close",
        b"GET /a HTTP/1.1\r\nHost: example.com\r\n"
        b"\r\nGET /b HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        [req("GET", "/a"), req("GET", "/b", ("connection", "close"), keep_alive=False)],
    ),
    (
        "upgrade",
        b"GET /chat HTTP/1.1\r\n" + HOST + b"Connection: Upgrade\r\nUpgrade: WebSocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        [
            req(
                "GET",
                "/chat",
                H,
                ("connection", "Upgrade"),
                ("upgrade", "WebSocket"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                upgrade="websocket",
            )
        ],
    ),
    (
        "upgrade-header-alone-is-no-upgrade",
        b"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\r\n",
        [req("GET", "/", ("upgrade", "websocket"))],
    ),
    (
        "expect-continue",
        b"PUT /f HTTP/1.1\r\nHost: example.com\r\n"
        b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
        [
            req(
                "PUT",
                "/f",
                ("expect", "100-continue"),
                ("content-length", "2"),
                body=b"ok",
                expect_continue=True,
            )
        ],
    ),
    (
        "expect-ignored-in-http10",
        b"PUT /f HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
        [
            req(
                "PUT",
                "/f",
                ("expect", "100-continue"),
                ("content-length", "2"),
                body=b"ok",
                version="1.0",
                keep_alive=False,
            )
        ],
    ),
    (
        "header-values",
        b"GET / HTTP/1.1\r\nHost: example.com\r\n"
        b"X-A:   spaced out \t\r\nX-Latin: caf\xe9\r\nX-Empty:\r\n"
        b"x-a: again\r\nMiXeD-CaSe: Kept\r\n\r\n",
        [
            req(
                "GET",
                "/",
                ("x-a", "spaced out"),
                ("x-latin", "caf\xe9"),
                ("x-empty", ""),
                ("x-a", "again"),
                ("mixed-case", "Kept"),
            )
        ],
    ),
    (
        "targets",
        b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n"
        b"\r\nGET http://example.com/p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
        b"GET /a%20b/%C3%A9?x=%2F&y#frag HTTP/1.1\r\nHost: example.com\r\n\r\n",
        [
            req("OPTIONS", "*"),
            req("GET", "http://example.com/p?q=1"),
            req("GET", "/a%20b/%C3%A9?x=%2F&y#frag"),
        ],
    ),
    # RFC 9112 3.2.2: an absolute-form target comes with a Host all the same.
    (
        "absolute-form-with-host",
        b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        [req("GET", "http://x/", ("host", "x"))],
    ),
    # RFC 3986 host[:port]: reg-name (empty too, RFC 9110 7.2), IPv4, IP-literal.
    (
        "host-forms",
        b"".join(b"GET / HTTP/1.1\r\nHost: %b\r\n\r\n" % host for host in GOOD_HOSTS)
        + b"GET / HTTP/1.1\r\nHost: spaced \t\r\n\r\n"
        + b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        [
            *(req("GET", "/", ("host", host.decode())) for host in GOOD_HOSTS),
            req("GET", "/", ("host", "spaced")),
            req("GET", "/", ("connection", "keep-alive"), version="1.0"),
        ],
    ),
    # An upgrade request with a body: the body is part of the request (RFC
    # 9110 7.8: the switch happens after it); the framer pauses after it.
    (
        "upgrade-with-content-length-body",
        b"POST /up HTTP/1.1\r\n" + HOST + b"Connection: upgrade\r\nUpgrade: foo\r\n"
        b"Content-Length: 5\r\n\r\nhello",
        [
            req(
                "POST",
                "/up",
                H,
                ("connection", "upgrade"),
                ("upgrade", "foo"),
                ("content-length", "5"),
                body=b"hello",
                upgrade="foo",
            )
        ],
    ),
    (
        "upgrade-with-chunked-body",
        b"POST /up HTTP/1.1\r\n"
        + HOST
        + b"Connection: upgrade\r\nUpgrade: foo\r\n"
        + CHUNKED
        + b"\r\n5\r\nhello\r\n1;x=y\r\n!\r\n0\r\nX-T: 1\r\n\r\n",
        [
            req(
                "POST",
                "/up",
                H,
                ("connection", "upgrade"),
                ("upgrade", "foo"),
                ("transfer-encoding", "chunked"),
                body=b"hello!",
                upgrade="foo",
                trailers=[("x-t", "1")],
            )
        ],
    ),
]

# What follows each good stream in the third way.
FOLLOW = b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n"
FOLLOW_REQUEST = req("GET", "/next")
NOT_HTTP = b"\x81\x05hello\x00\xff not http"


def ids(cases: list[tuple[Any, ...]]) -> list[str]:
    return [case[0] for case in cases]


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("name", "stream", "requests"), GOOD, ids=ids(GOOD))
def test_good(name: str, stream: bytes, requests: list[HttpRequest], way: Way) -> None:
    framer = HttpRequestFramer()
    assert run(framer, way(stream)) == (requests, None)
    assert framer.buffered == 0
    last = requests[-1]
    assert framer.paused == (not last.keep_alive or last.upgrade is not None)
    assert framer.trailing == b""
    assert framer.take_continue() is None


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("name", "stream", "requests"), GOOD, ids=ids(GOOD))
def test_good_then_more(name: str, stream: bytes, requests: list[HttpRequest], way: Way) -> None:
    framer = HttpRequestFramer()
    last = requests[-1]
    if last.keep_alive and last.upgrade is None:
        # A pipelined request follows, then half of another one.
        half = FOLLOW[:20]
        assert run(framer, way(stream + FOLLOW + half)) == ([*requests, FOLLOW_REQUEST], None)
        assert framer.buffered == len(half)
        assert framer.feed(FOLLOW[20:]) == [FOLLOW_REQUEST]
        assert framer.buffered == 0
        assert not framer.paused
    else:
        # The stream has ended: what follows is kept, unparsed.
        assert run(framer, way(stream + NOT_HTTP)) == (requests, None)
        assert framer.paused
        assert framer.trailing == NOT_HTTP
        assert framer.buffered == 0
        assert framer.feed(b"more") == []
        assert framer.trailing == NOT_HTTP + b"more"


def small(**limits: int) -> HttpRequestFramer:
    return HttpRequestFramer(**limits)


OK_GET = b"GET /ok HTTP/1.1\r\nHost: example.com\r\n\r\n"
OK = req("GET", "/ok")
HEADERS_101 = b"".join(b"X-%d: v\r\n" % i for i in range(101))

# (name, framer, stream, requests before the error, status)
BAD: list[tuple[str, HttpRequestFramer, bytes, list[HttpRequest], int]] = [
    ("garbage", small(), b"\x00\x01\x02\x03\r\n\r\n", [], 400),
    ("not-a-request-line", small(), b"hello world\r\n\r\n", [], 400),
    ("lower-case-method", small(), b"get / HTTP/1.1\r\nHost: example.com\r\n\r\n", [], 400),
    ("rtsp", small(), b"GET / RTSP/1.0\r\n\r\n", [], 400),
    ("bare-lf", small(), b"GET / HTTP/1.1\nHost: a\n\n", [], 400),
    ("space-before-colon", small(), b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", [], 400),
    ("obs-fold", small(), b"GET / HTTP/1.1\r\nHost: example.com\r\nX: a\r\n b\r\n\r\n", [], 400),
    ("nul-in-value", small(), b"GET / HTTP/1.1\r\nHost: example.com\r\nX: a\x00b\r\n\r\n", [], 400),
    ("bad-url-char", small(), b"GET /\x7f HTTP/1.1\r\nHost: example.com\r\n\r\n", [], 400),
    ("http-2.0", small(), b"GET / HTTP/2.0\r\n\r\n", [], 505),
    ("http-1.2", small(), b"GET / HTTP/1.2\r\n\r\n", [], 505),
    ("http-0.9-declared", small(), b"GET / HTTP/0.9\r\n\r\n", [], 505),
    ("no-version", small(), b"GET /\r\n\r\n", [], 400),
    ("h2-preface", small(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [], 505),
    ("bad-version-digits", small(), b"GET / HTTP/a.b\r\n\r\n", [], 400),
    # 414: a request line that cannot hold a target of max_target bytes,
    # raised before the line ends; and a target just over it.
    (
        "line-too-long",
        small(),
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: example.com\r\n\r\n",
        [],
        414,
    ),
    ("line-endless", small(), b"GET /" + b"a" * 9000, [], 414),
    (
        "target-too-long",
        small(max_target=10),
        b"GET /0123456789 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        [],
        414,
    ),
    # 431: the head, the number of fields.
    (
        "head-too-long",
        small(),
        b"GET / HTTP/1.1\r\nHost: example.com\r\nX: " + b"a" * DEFAULT_MAX_HEAD,
        [],
        431,
    ),
    (
        "head-one-over",
        small(max_head=22),
        b"GET / HTTP/1.1\r\nHost: example.com\r\nX: ab\r\n\r\n",
        [],
        431,
    ),
    (
        "line-over-max-head",
        small(max_head=10),
        b"GET /abcdefgh HTTP/1.1\r\nHost: example.com\r\n\r\n",
        [],
        431,
    ),
    (
        "too-many-headers",
        small(),
        b"GET / HTTP/1.1\r\nHost: example.com\r\n" + HEADERS_101 + b"\r\n",
        [],
        431,
    ),
    (
        "too-many-trailers",
        small(max_headers=2),
        b"POST / HTTP/1.1\r\nHost: example.com\r\n"
        + CHUNKED
        + b"\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        [],
        431,
    ),
    (
        "trailers-too-long",
        small(max_head=64),
        b"POST / HTTP/1.1\r\nHost: example.com\r\n"
        + CHUNKED
        + b"\r\n0\r\nA: "
        + b"a" * 70
        + b"\r\n\r\n",
        [],
        431,
    ),
    # 413: announced, or passed by the chunks, before the body arrives.
    (
        "content-length-over",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1048577\r\n\r\n",
        [],
        413,
    ),
    (
        "chunked-over",
        small(max_body=10),
        b"POST / HTTP/1.1\r\nHost: example.com\r\n" + CHUNKED + b"\r\n8\r\n12345678\r\n3\r\n",
        [],
        413,
    ),
    (
        "chunk-line-too-long",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\n"
        + CHUNKED
        + b"\r\n1;x="
        + b"y" * MAX_CHUNK_LINE
        + b"\r\n",
        [],
        413,
    ),
    # Body framing.
    (
        "content-length-and-chunked",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n" + CHUNKED + b"\r\nabc",
        [],
        400,
    ),
    (
        "chunked-and-content-length",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\n" + CHUNKED + b"Content-Length: 3\r\n\r\nabc",
        [],
        400,
    ),
    (
        "two-content-lengths",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\n"
        b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        [],
        400,
    ),
    (
        "bad-content-length",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: -1\r\n\r\n",
        [],
        400,
    ),
    (
        "unknown-coding",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\n"
        b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        [],
        501,
    ),
    # RFC 9112 6.3: chunked must come last, else 400.
    (
        "chunked-not-last",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: gzip\r\n\r\n",
        [],
        400,
    ),
    (
        "chunked-in-http10",
        small(),
        b"POST / HTTP/1.0\r\n" + CHUNKED + b"\r\n0\r\n\r\n",
        [],
        400,
    ),
    (
        "bad-chunk-size",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\n" + CHUNKED + b"\r\nzz\r\n",
        [],
        400,
    ),
    (
        "chunk-data-too-long",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\n" + CHUNKED + b"\r\n2\r\nabc\r\n0\r\n\r\n",
        [],
        400,
    ),
    ("connect", small(), b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", [], 501),
    # The requests before the bad input are delivered.
    (
        "after-good-ones",
        small(),
        OK_GET + OK_GET + b"BAD\x00 / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        [OK, OK],
        400,
    ),
    (
        "after-a-body",
        small(),
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n\r\nxGET / HTTP/3.0\r\n\r\n",
        [req("POST", "/", ("content-length", "1"), body=b"x")],
        505,
    ),
    # RFC 9112 3.2: no Host in HTTP/1.1, more than one, or an invalid one: 400.
    ("no-host", small(), b"GET / HTTP/1.1\r\nX: y\r\n\r\n", [], 400),
    ("no-host-absolute-form", small(), b"GET http://x/ HTTP/1.1\r\n\r\n", [], 400),
    ("two-hosts", small(), b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", [], 400),
    ("two-hosts-http10", small(), b"GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n", [], 400),
    ("bad-host-http10", small(), b"GET / HTTP/1.0\r\nHost: a b\r\n\r\n", [], 400),
    # Refused at the head, before its body is read or measured.
    (
        "no-host-with-a-body",
        small(),
        b"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n",
        [],
        400,
    ),
    ("no-host-after-a-good-one", small(), OK_GET + b"GET /2 HTTP/1.1\r\n\r\n", [OK], 400),
    *(
        (f"host-{label}", small(), b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n", [], 400)
        for label, value in BAD_HOSTS
    ),
]


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("name", "framer", "stream", "requests", "status"), BAD, ids=ids(BAD))
def test_bad(
    name: str,
    framer: HttpRequestFramer,
    stream: bytes,
    requests: list[HttpRequest],
    status: int,
    way: Way,
) -> None:
    fresh = framer.fresh()
    assert run(fresh, way(stream)) == (requests, status)
    assert fresh.buffered == 0


@pytest.mark.parametrize(("name", "framer", "stream", "requests", "status"), BAD, ids=ids(BAD))
def test_bad_then_more(
    name: str, framer: HttpRequestFramer, stream: bytes, requests: list[HttpRequest], status: int
) -> None:
    # Whatever follows the bad input changes nothing, and the framer stays broken.
    fresh = framer.fresh()
    assert run(fresh, [stream + FOLLOW + NOT_HTTP]) == (requests, status)
    for later in (FOLLOW, b"", NOT_HTTP):
        with pytest.raises(HttpError, match="already failed") as info:
            fresh.feed(later)
        assert info.value.status == status
        assert info.value.frames == []  # type: ignore[attr-defined]
    assert fresh.fresh().feed(b"G") == []  # a new framer is healthy


def test_http_error_is_a_protocol_error() -> None:
    error = HttpError("nope", 431)
    assert isinstance(error, ProtocolError)
    assert error.status == 431
    assert HttpError("nope").status == 400


def test_error_messages_name_the_limit() -> None:
    cases = [
        (
            small(max_head=20),
            b"GET / HTTP/1.1\r\nHost: example.com\r\nX: 123456\r\n\r\n",
            "max_head=20",
        ),
        (
            small(max_headers=1),
            b"GET / HTTP/1.1\r\nHost: example.com\r\nA: 1\r\nB: 2\r\n\r\n",
            "max_headers=1",
        ),
        (
            small(max_body=5),
            b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 6\r\n\r\n",
            "max_body=5",
        ),
        (small(max_target=3), b"GET /abcd HTTP/1.1\r\nHost: example.com\r\n\r\n", "max_target=3"),
    ]
    for framer, stream, limit in cases:
        with pytest.raises(HttpError, match=limit):
            framer.feed(stream)


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 request without a Host header field"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "2 Host header fields"),
        (b"GET / HTTP/1.1\r\nHost: a b:80\r\n\r\n", "invalid Host header field 'a b:80'"),
        (b"GET / HTTP/1.1\r\nHost: " + b"a" * 300 + b"/ \r\n\r\n", "'" + "a" * 60 + "'..."),
    ],
)
def test_host_errors_say_what_is_wrong(stream: bytes, reason: str) -> None:
    with pytest.raises(HttpError, match=reason.replace(".", r"\.")) as info:
        HttpRequestFramer().feed(stream)
    assert info.value.status == 400
    assert "RFC 9112 3.2" in str(info.value)


def test_content_length_over_the_limit_raises_before_the_body() -> None:
    framer = small(max_body=100)
    assert framer.feed(b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100\r\n\r\n") == []
    framer = small(max_body=100)
    with pytest.raises(HttpError) as info:
        framer.feed(b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 101\r\n\r\n")
    assert info.value.status == 413


def test_chunked_over_the_limit_raises_at_the_size_line() -> None:
    framer = small(max_body=10)
    head = b"POST / HTTP/1.1\r\nHost: example.com\r\n" + CHUNKED + b"\r\n"
    assert framer.feed(head + b"6\r\nabcdef\r\n4\r\nabcd\r\n") == []
    with pytest.raises(HttpError) as info:
        framer.feed(b"1\r\n")  # 11 bytes announced: no data needed to know
    assert info.value.status == 413


def test_a_body_of_exactly_max_body_passes() -> None:
    framer = small(max_body=4)
    stream = (
        b"POST / HTTP/1.1\r\nHost: example.com\r\n"
        + CHUNKED
        + b"\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"
    )
    assert [r.body for r in framer.feed(stream)] == [b"abcd"]
    stream = b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nabcd"
    assert [r.body for r in framer.feed(stream)] == [b"abcd"]


def test_a_head_of_exactly_max_head_passes() -> None:
    stream = b"GET / HTTP/1.1\r\nHost: example.com\r\nX: ab\r\n\r\n"
    assert small(max_head=len(stream)).feed(stream) == [req("GET", "/", ("x", "ab"))]
    with pytest.raises(HttpError):
        small(max_head=len(stream) - 1).feed(stream)


def test_a_head_too_long_raises_before_it_ends() -> None:
    framer = small(max_head=100)
    assert framer.feed(b"GET / HTTP/1.1\r\nHost: example.com\r\nX: " + b"a" * 55) == []
    with pytest.raises(HttpError) as info:
        framer.feed(b"a" * 10)
    assert info.value.status == 431


def test_exactly_max_headers_pass() -> None:
    # Host and 99 more.
    stream = b"GET / HTTP/1.1\r\n" + HOST + HEADERS_101[: HEADERS_101.index(b"X-99")] + b"\r\n"
    (request,) = small().feed(stream)
    assert len(request.headers) == DEFAULT_MAX_HEADERS


# -- Expect: 100-continue -----------------------------------------------------------

EXPECTING = (
    b"POST /up HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
)


def test_continue_is_signalled_when_the_head_is_in_and_the_body_is_not() -> None:
    framer = HttpRequestFramer()
    assert framer.feed(EXPECTING[:-1]) == []
    assert framer.take_continue() is None
    assert framer.feed(EXPECTING[-1:]) == []
    head = framer.take_continue()
    assert head is not None
    assert (head.method, head.target, head.header("expect")) == ("POST", "/up", "100-continue")
    assert head.expect_continue
    assert framer.take_continue() is None  # once
    assert framer.feed(b"hel") == []
    assert framer.take_continue() is None
    (request,) = framer.feed(b"lo")
    assert request.body == b"hello"
    assert request.expect_continue


def test_continue_is_not_signalled_when_the_body_came_along() -> None:
    framer = HttpRequestFramer()
    assert len(framer.feed(EXPECTING + b"hello")) == 1
    assert framer.take_continue() is None


def test_continue_for_a_chunked_body_and_a_pipelined_request() -> None:
    framer = HttpRequestFramer()
    head = b"POST / HTTP/1.1\r\nHost: example.com\r\nExpect: 100-Continue\r\n" + CHUNKED + b"\r\n"
    assert framer.feed(OK_GET + head) == [OK]
    # Answer OK first, then send 100 Continue.
    pending = framer.take_continue()
    assert pending is not None and pending.body == b""
    assert encode_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert framer.feed(b"2\r\nhi\r\n0\r\n\r\n")[0].body == b"hi"


@pytest.mark.parametrize(
    "stream",
    [
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",  # ignored in 1.0
        b"POST / HTTP/1.1\r\nHost: example.com\r\n"
        b"Expect: something-else\r\nContent-Length: 5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: example.com\r\n"
        b"Expect: 100-continue\r\n",  # no body, head not complete
    ],
)
def test_no_continue(stream: bytes) -> None:
    framer = HttpRequestFramer()
    assert framer.feed(stream) == []
    assert framer.take_continue() is None


# -- pausing: upgrade and close -------------------------------------------------------

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
)


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
def test_upgrade_stops_parsing_and_keeps_the_rest(way: Way) -> None:
    framer = HttpRequestFramer()
    frame = b"\x81\x05hello"
    requests, error = run(framer, way(OK_GET + UPGRADE + frame + OK_GET))
    assert error is None
    assert [r.upgrade for r in requests] == [None, "websocket"]
    assert framer.paused
    assert framer.trailing == frame + OK_GET
    assert framer.buffered == 0


def test_resume_after_declining_an_upgrade() -> None:
    framer = HttpRequestFramer()
    h2c = (
        b"GET / HTTP/1.1\r\n"
        + HOST
        + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
    )
    assert [r.upgrade for r in framer.feed(h2c + OK_GET + b"GET /x")] == ["h2c"]
    assert framer.resume() == [OK]
    assert not framer.paused
    assert framer.trailing == b""
    assert framer.feed(b" HTTP/1.1\r\nHost: example.com\r\n\r\n") == [req("GET", "/x")]


def test_resume_refusals() -> None:
    with pytest.raises(RuntimeError):
        HttpRequestFramer().resume()
    closed = HttpRequestFramer()
    closed.feed(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    with pytest.raises(RuntimeError):
        closed.resume()


UPGRADE_POST = b"POST / HTTP/1.1\r\n" + HOST + b"Connection: upgrade\r\nUpgrade: h2c\r\n"


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(
    ("framing", "body"),
    [
        (b"Content-Length: 3\r\n\r\n", b"abc"),
        (CHUNKED + b"\r\n", b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"),
    ],
    ids=["content-length", "chunked"],
)
def test_resume_after_an_upgrade_request_with_a_body(framing: bytes, body: bytes, way: Way) -> None:
    # The body is read before the framer pauses: declined, HTTP goes on after it.
    framer = HttpRequestFramer()
    requests, error = run(framer, way(UPGRADE_POST + framing + body + OK_GET + b"GET /x"))
    assert error is None
    assert [(r.upgrade, r.body) for r in requests] == [("h2c", b"abc")]
    assert framer.paused
    assert framer.trailing == OK_GET + b"GET /x"
    assert framer.resume() == [OK]
    assert framer.feed(b" HTTP/1.1\r\n" + HOST + b"\r\n") == [req("GET", "/x", H)]


def test_upgrade_request_with_a_body_waits_for_it() -> None:
    framer = HttpRequestFramer()
    head = UPGRADE_POST + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    assert framer.feed(head + b"ab") == []
    assert not framer.paused and not framer.reading_head
    assert framer.buffered == len(head) + 2
    pending = framer.take_continue()  # RFC 9110 7.8: 100 Continue before the 101
    assert pending is not None and pending.upgrade == "h2c"
    (request,) = framer.feed(b"cd\x81\x05hello")
    assert (request.body, request.expect_continue) == (b"abcd", True)
    assert framer.paused and framer.trailing == b"\x81\x05hello"


def test_connection_close_keeps_pipelined_requests_unparsed() -> None:
    framer = HttpRequestFramer()
    close = b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    requests = framer.feed(OK_GET + close + OK_GET + b"junk")
    assert [r.keep_alive for r in requests] == [True, False]
    assert framer.trailing == OK_GET + b"junk"


# -- the request object ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/", "/", ""),
        ("/a/b?", "/a/b", ""),
        ("/a%20b/%C3%A9?x=%2F&y=1", "/a b/\xe9", "x=%2F&y=1"),
        ("/a%2Fb", "/a/b", ""),
        ("/p?q#frag", "/p", "q"),
        ("/p#frag?not-query", "/p", ""),
        ("//double", "//double", ""),
        ("*", "*", ""),
        ("http://example.com/p?q=1", "/p", "q=1"),
        ("http://example.com", "/", ""),
        ("http://example.com?q", "/", "q"),
        ("http://[::1/a?b", "/a", "b"),
        ("https://user@host:8443/%7Euser/?x#y", "/~user/", "x"),
        ("/bad%zzescape", "/bad%zzescape", ""),
    ],
)
def test_path_and_query(target: str, path: str, query: str) -> None:
    request = HttpRequest("GET", target)
    assert (request.path, request.query) == (path, query)


def test_header_lookup() -> None:
    framer = HttpRequestFramer()
    (request,) = framer.feed(
        b"GET / HTTP/1.1\r\nHost: example.com\r\nAccept: a\r\nX-One: 1\r\naccept: b\r\n\r\n"
    )
    assert request.header("ACCEPT") == "a, b"
    assert request.header("x-one") == "1"
    assert request.header("missing") is None
    assert request.header("missing", "d") == "d"
    assert request.headers == [H, ("accept", "a"), ("x-one", "1"), ("accept", "b")]


def test_request_equality_and_repr() -> None:
    a = HttpRequest("GET", "/", "1.1", [("a", "b")], b"x")
    assert a == HttpRequest("GET", "/", "1.1", [("a", "b")], b"x")
    assert a != HttpRequest("GET", "/", "1.1", [("a", "b")], b"y")
    assert a != "GET /"
    assert repr(a) == "HttpRequest('GET', '/', '1.1', headers=[('a', 'b')], body=b'x')"
    a.headers = [("c", "d")]
    assert a.header("c") == "d"
    with pytest.raises(TypeError):
        hash(a)


# -- framer settings and contract ---------------------------------------------------------


def test_defaults_and_settings() -> None:
    assert (DEFAULT_MAX_HEAD, DEFAULT_MAX_HEADERS, DEFAULT_MAX_BODY, DEFAULT_MAX_TARGET) == (
        16 * 1024,
        100,
        1024 * 1024,
        8 * 1024,
    )
    framer = HttpRequestFramer()
    assert (framer.max_head, framer.max_headers, framer.max_body, framer.max_target) == (
        DEFAULT_MAX_HEAD,
        DEFAULT_MAX_HEADERS,
        DEFAULT_MAX_BODY,
        DEFAULT_MAX_TARGET,
    )
    custom = HttpRequestFramer(max_head=100, max_headers=5, max_body=7, max_target=9)
    assert repr(custom) == (
        "HttpRequestFramer(max_head=100, max_headers=5, max_body=7, max_target=9)"
    )
    assert repr(custom.fresh()) == repr(custom)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_head": 0}, ConfigError),
        ({"max_headers": -1}, ConfigError),
        ({"max_body": 0}, ConfigError),
        ({"max_target": 0}, ConfigError),
        ({"max_head": 1.5}, TypeError),
        ({"max_body": "10"}, TypeError),
        ({"max_headers": True}, TypeError),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        HttpRequestFramer(**kwargs)


def test_fresh_shares_no_state() -> None:
    framer = HttpRequestFramer()
    assert framer.feed(OK_GET[:10]) == []
    copy = framer.fresh()
    assert copy.buffered == 0
    assert copy.feed(OK_GET) == [OK]
    assert framer.feed(OK_GET[10:]) == [OK]


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_bytes_like_input(kind: type[Any]) -> None:
    framer = HttpRequestFramer()
    assert framer.feed(kind(OK_GET[:7])) + framer.feed(kind(OK_GET[7:])) == [OK]


def test_buffered_counts_the_incomplete_request() -> None:
    framer = HttpRequestFramer()
    post = b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nab"
    assert framer.feed(b"\r\n" + post) == []
    assert framer.buffered == len(post)
    assert len(framer.feed(b"cd")) == 1
    assert framer.buffered == 0


def test_encode_passes_response_bytes_through() -> None:
    framer = HttpRequestFramer()
    response = encode_response(200, [], b"hi")
    assert framer.encode(response) == response
    assert framer.encode(bytearray(b"x")) == b"x"
    with pytest.raises(TypeError):
        framer.encode("text")
    with pytest.raises(TypeError):
        framer.encode(OK)


def test_a_long_line_fed_one_byte_at_a_time_costs_linear_work() -> None:
    # The partial request line is appended to, never rescanned or rebuilt.
    framer = small(max_target=50_000, max_head=50_000)
    buf = framer._buffer = CountingBuffer()
    line = b"GET /" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: example.com\r\n"
    for byte in bytewise(line):
        assert framer.feed(byte) == []
    assert framer._buffer is buf
    assert buf.touched <= 2 * len(line)
    assert framer.feed(b"\r\n") == [req("GET", "/" + "a" * 40_000)]


# -- responses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        (
            (200, [("content-type", "text/plain")], b"Hello"),
            {},
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nHello",
        ),
        ((404,), {}, b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
        ((599,), {}, b"HTTP/1.1 599 \r\ncontent-length: 0\r\n\r\n"),
        (
            (200, {"X-A": "1", "X-B": 2}, b"ab"),
            {"keep_alive": False},
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\n"
            b"content-length: 2\r\nconnection: close\r\n\r\nab",
        ),
        (
            (200, [], b"ab"),
            {"version": "1.0"},
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nab",
        ),
        (
            (200, [], b"ab"),
            {"version": "1.0", "keep_alive": False},
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nab",
        ),
        # HEAD: the length of the body that is not sent.
        ((200, [], b"hello"), {"head": True}, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        (
            (200, [("Content-Length", "1000")]),
            {"head": True},
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        ),
        # Given framing fields are kept, not doubled.
        (
            (200, [("Content-Length", "2")], b"ab"),
            {},
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab",
        ),
        (
            (200, [("Content-Length", "10")]),
            {},
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        ),
        (
            (200, [("transfer-encoding", "chunked")], encode_chunk(b"ab") + LAST_CHUNK),
            {},
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        ),
        (
            (200, [("Connection", "keep-alive")], b""),
            {"keep_alive": False},
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
        ),
        # No body, no length.
        ((204, [("x", "y")]), {}, b"HTTP/1.1 204 No Content\r\nx: y\r\n\r\n"),
        ((304,), {"keep_alive": False}, b"HTTP/1.1 304 Not Modified\r\nconnection: close\r\n\r\n"),
        (
            (101, [("upgrade", "websocket")]),
            {},
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        ),
        (
            (200, (("a", "b"),), bytearray(b"z")),
            {},
            b"HTTP/1.1 200 OK\r\na: b\r\ncontent-length: 1\r\n\r\nz",
        ),
    ],
)
def test_encode_response(args: tuple[Any, ...], kwargs: dict[str, Any], expected: bytes) -> None:
    assert encode_response(*args, **kwargs) == expected


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((200, [("x", "a\r\nSet-Cookie: evil=1")]), {}, ValueError, "CR, LF or NUL"),
        ((200, [("x", "a\nb")]), {}, ValueError, "CR, LF or NUL"),
        ((200, [("x", "a\rb")]), {}, ValueError, "CR, LF or NUL"),
        ((200, [("x", "a\x00")]), {}, ValueError, "CR, LF or NUL"),
        ((200, [("x\r\ny", "a")]), {}, ValueError, "token"),
        ((200, [("x y", "a")]), {}, ValueError, "token"),
        ((200, [("", "a")]), {}, ValueError, "token"),
        ((200, [("x:", "a")]), {}, ValueError, "token"),
        ((200, [("x", "\u20ac")]), {}, UnicodeEncodeError, "latin-1"),
        ((200, [("x", b"bytes")]), {}, TypeError, "str"),
        ((200, [(b"x", "a")]), {}, TypeError, "str"),
        ((200, [], "text"), {}, TypeError, "bytes-like"),
        ((99,), {}, ValueError, "status"),
        ((600,), {}, ValueError, "status"),
        (("200",), {}, ValueError, "status"),
        ((200,), {"version": "2"}, ValueError, "version"),
        ((204, [], b"x"), {}, ValueError, "no body"),
        ((100, [], b"x"), {}, ValueError, "no body"),
        ((200, [("content-length", "3")], b"ab"), {}, ValueError, "Content-Length"),
    ],
)
def test_encode_response_refuses(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        encode_response(*args, **kwargs)


def test_encode_chunk() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert encode_chunk(memoryview(b"ab")) == b"2\r\nab\r\n"
    assert encode_chunk(b"") == b""  # never the last chunk by accident
    assert LAST_CHUNK == b"0\r\n\r\n"
    with pytest.raises(TypeError):
        encode_chunk("text")  # type: ignore[arg-type]


# -- properties -------------------------------------------------------------------------------

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
RESERVED = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "expect",
    "te",
    "trailer",
}
names = st.text(TCHARS, min_size=1, max_size=12).filter(lambda n: n.lower() not in RESERVED)
values = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=12
)
spaced_values = st.lists(values, min_size=1, max_size=3).map(" ".join).map(str.strip)
fields = st.lists(st.tuples(names, spaced_values), max_size=5)
paths = st.text("abcxyz019-._~!$&'()*+,;=:@/%", max_size=15).map(lambda p: "/" + p)
targets = st.tuples(
    paths, st.one_of(st.just(""), st.text("abc=&%/?", max_size=8).map("?".__add__))
).map("".join)


@st.composite
def requests(draw: Callable[..., Any]) -> tuple[bytes, HttpRequest]:
    """A valid request, as bytes with random framing choices, and what it parses to."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]))
    target = draw(targets)
    headers = draw(fields)
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["none", "length", "chunked"]) if body else st.just("none"))
    host = draw(st.sampled_from(["example.com", "127.0.0.1:8080", "[::1]", ""]))
    headers = [("host", host), *headers]
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    for name, value in headers:
        lines.append(f"{name}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}{value}")
        lines.append(draw(st.sampled_from(["", " ", "\t "])) + "\r\n")
    trailers: list[tuple[str, str]] = []
    if framing == "none":
        body = b""
    elif framing == "length":
        headers = [*headers, ("content-length", str(len(body)))]
        lines.append(f"Content-Length: {len(body)}\r\n")
    else:
        headers = [*headers, ("transfer-encoding", "chunked")]
        lines.append("Transfer-Encoding: chunked\r\n")
        trailers = draw(fields)
    lines.append("\r\n")
    data = "".join(lines).encode("latin-1")
    if framing == "length":
        data += body
    elif framing == "chunked":
        cuts = split_at(body, draw(st.lists(st.integers(0, len(body)), max_size=4)))
        for piece in cuts:
            if piece:
                ext = draw(st.sampled_from([b"", b";a", b";a=b", b';a="x y"']))
                data += b"%x%b\r\n%b\r\n" % (len(piece), ext, piece)
        data += (
            b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in trailers) + b"\r\n"
        )
    lowered = [(name.lower(), value) for name, value in headers]
    return data, HttpRequest(
        method, target, "1.1", lowered, body, trailers=[(n.lower(), v) for n, v in trailers]
    )


def cut(draw: Callable[..., Any], data: bytes) -> list[bytes]:
    """Cut *data* at arbitrary points: none, a few, or every byte."""
    if draw(st.booleans()):
        return bytewise(data)
    return split_at(data, draw(st.lists(st.integers(0, len(data)), max_size=12)))


@SETTINGS
@given(data=st.data())
def test_any_split_of_valid_pipelined_requests_gives_the_same_requests(data: st.DataObject) -> None:
    pairs = data.draw(st.lists(requests(), min_size=1, max_size=5), label="requests")
    separators = data.draw(
        st.lists(st.sampled_from([b"", b"\r\n"]), min_size=len(pairs), max_size=len(pairs))
    )
    stream = b"".join(sep + raw for sep, (raw, _) in zip(separators, pairs, strict=True))
    expected = [request for _, request in pairs]
    framer = HttpRequestFramer()
    assert run(framer, cut(data.draw, stream)) == (expected, None)
    assert framer.buffered == 0
    assert not framer.paused


PIECES = [
    b"GET ",
    b"POST ",
    b"/",
    b"/a?b",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"Host: x\r\n",
    b"Host: [::1]:80\r\n",
    b"Host: a b\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 99999999\r\n",
    CHUNKED,
    b"Transfer-Encoding: gzip\r\n",
    b"Connection: close\r\n",
    b"Connection: upgrade\r\n",
    b"Upgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"abc",
    b"3\r\n",
    b"0\r\n",
    b"ff;x=y\r\n",
    b":",
    b" ",
    b"\x00",
    b"\xff",
    b"HTTP/2.0",
    b"a" * 40,
    b"http://h",
    b"[::1",
    b"%zz",
    b"#",
    b"?",
    b"OPTIONS * ",
]
FUZZ = settings(SETTINGS, max_examples=300)
FUZZ_FRAMER = HttpRequestFramer(max_head=120, max_headers=4, max_body=50, max_target=30)


@FUZZ
@given(data=st.data())
def test_fuzz_only_http_errors_escape_and_splits_do_not_matter(data: st.DataObject) -> None:
    valid = requests().map(lambda pair: pair[0])
    stream = data.draw(
        st.one_of(
            st.binary(max_size=300),
            st.lists(
                st.one_of(valid, st.sampled_from(PIECES), st.binary(max_size=8)), max_size=15
            ).map(b"".join),
        ),
        label="stream",
    )
    framer = FUZZ_FRAMER.fresh()
    got: list[HttpRequest] = []
    status: int | None = None
    for chunk in cut(data.draw, stream):
        try:
            got += framer.feed(chunk)
        except HttpError as exc:
            got += exc.frames  # type: ignore[attr-defined]
            status = exc.status
            assert status in (400, 413, 414, 431, 501, 505)
            with pytest.raises(HttpError) as again:
                framer.feed(chunk)
            assert again.value.status == status
            break
        assert framer.buffered <= len(stream)
        framer.take_continue()
    whole_framer = FUZZ_FRAMER.fresh()
    assert run(whole_framer, [stream]) == (got, status)
    if status is None:
        assert whole_framer.buffered == framer.buffered
        assert whole_framer.trailing == framer.trailing


@SETTINGS
@given(
    status=st.sampled_from([200, 201, 301, 404, 418, 500, 503]),
    headers=fields,
    body=st.binary(max_size=100),
    keep_alive=st.booleans(),
    chunked=st.booleans(),
)
def test_responses_read_back_with_llhttp(
    status: int, headers: list[tuple[str, str]], body: bytes, keep_alive: bool, chunked: bool
) -> None:
    class Reader:
        def __init__(self) -> None:
            self.headers: list[tuple[bytes, bytes]] = []
            self.body = b""
            self.done = False

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_body(self, data: bytes) -> None:
            self.body += data

        def on_message_complete(self) -> None:
            self.done = True

    if chunked:
        payload = encode_chunk(body[:10]) + encode_chunk(body[10:]) + LAST_CHUNK
        data = encode_response(
            status, [*headers, ("Transfer-Encoding", "chunked")], payload, keep_alive=keep_alive
        )
    else:
        data = encode_response(status, headers, body, keep_alive=keep_alive)
    reader = Reader()
    parser = httptools.HttpResponseParser(reader)
    parser.feed_data(data)
    assert reader.done
    assert parser.get_status_code() == status
    assert reader.body == body
    sent = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in reader.headers]
    assert sent[: len(headers)] == [(n, v.strip()) for n, v in headers]
    assert (("connection", "close") in sent) == (not keep_alive)


def test_reading_head_tells_a_head_from_a_body() -> None:
    framer = HttpRequestFramer()
    assert framer.reading_head  # waiting for the first head
    assert framer.feed(b"POST /up HTTP/1.1\r\nHost: x\r\n") == []
    assert framer.reading_head and framer.buffered > 0
    assert framer.feed(b"Content-Length: 10\r\n\r\n12345") == []
    assert not framer.reading_head  # half a body in
    (request,) = framer.feed(b"67890")
    assert request.body == b"1234567890"
    assert framer.reading_head  # the next head, on a kept-alive connection
    framer.feed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert framer.paused and not framer.reading_head
    broken = HttpRequestFramer()
    with pytest.raises(ProtocolError):
        broken.feed(b"\x00\x01 not http\r\n\r\n")
    assert not broken.reading_head
