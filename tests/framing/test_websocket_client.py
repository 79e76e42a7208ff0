"""The client side of WebSocket: WebSocketClientFramer and the client handshake.

Frames are checked against the server's own framer (both directions) and
against the ``websockets`` library's client-side sans-IO core; each case is
fed whole, one byte at a time and with trailing data.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemonkit.framing.http import HttpRequestFramer
from daemonkit.framing.http_client import HttpResponse, HttpResponseFramer
from daemonkit.framing.websocket import (
    Close,
    Deflate,
    MessageTooBig,
    Ping,
    Pong,
    WebSocketError,
    WebSocketFramer,
)
from daemonkit.framing.websocket_client import WebSocketClientFramer, client_deflate
from daemonkit.protocols.websocket.client import check_response, handshake_request, new_key
from daemonkit.protocols.websocket.handshake import (
    HandshakeError,
    accept_key,
    check_request,
    negotiate_deflate,
)

SERVER = WebSocketFramer()
STREAM = (
    SERVER.encode("hello")
    + SERVER.encode(b"\x00" * 300)
    + SERVER.encode_ping(b"p")
    + SERVER.encode("x" * 70000)
    + SERVER.encode_pong(b"q")
)
EXPECTED = ["hello", b"\x00" * 300, Ping(b"p"), "x" * 70000, Pong(b"q")]


def feed_whole(data: bytes) -> list[object]:
    return WebSocketClientFramer(max_message=1 << 20).feed(data)


def feed_bytewise(data: bytes) -> list[object]:
    f = WebSocketClientFramer(max_message=1 << 20)
    out: list[object] = []
    for i in range(len(data)):
        out += f.feed(data[i : i + 1])
    return out


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_server_frames_are_read(feed: object) -> None:
    assert feed(STREAM) == EXPECTED  # type: ignore[operator]


def test_trailing_data_waits_and_close_ends_the_stream() -> None:
    f = WebSocketClientFramer()
    frame = SERVER.encode("tail")
    assert f.feed(STREAM + frame[:3]) == EXPECTED
    assert f.feed(frame[3:] + SERVER.encode_close(1001, "bye") + b"ignored") == [
        "tail",
        Close(1001, "bye"),
    ]
    assert f.closed and f.feed(SERVER.encode("late")) == []


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=8))
def test_any_split_gives_the_same_frames(cuts: list[int]) -> None:
    f = WebSocketClientFramer()
    out: list[object] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(STREAM)]:
        out += f.feed(STREAM[last:cut])
        last = cut
    assert out == EXPECTED


def test_what_it_encodes_the_server_framer_reads_masked() -> None:
    client = WebSocketClientFramer()
    data = client.encode("hi") + client.encode(b"x" * 70000) + client.encode_ping(b"1")
    data += client.encode_close(1000, "done")
    assert data[1] & 0x80  # masked
    assert WebSocketFramer().feed(data) == ["hi", b"x" * 70000, Ping(b"1"), Close(1000, "done")]


def test_a_masked_server_frame_is_a_protocol_error() -> None:
    masked = WebSocketClientFramer().encode("hi")
    with pytest.raises(WebSocketError, match="masked") as info:
        WebSocketClientFramer().feed(SERVER.encode("before") + masked)
    assert info.value.frames == ["before"] and info.value.code == 1002


def test_compressed_messages_both_ways() -> None:
    # The server granted client_no_context_takeover and a 10-bit client window.
    server = WebSocketFramer(deflate=Deflate(client_no_context_takeover=True))
    client = WebSocketClientFramer(
        deflate=client_deflate(client_no_context_takeover=True, client_max_window_bits=10)
    )
    text = "compress me " * 50
    sent = client.encode(text)
    assert sent[0] & 0x40 and len(sent) < len(text)
    assert server.feed(sent + client.encode(text)) == [text, text]
    assert client.feed(server.encode(text) + server.encode(b"z" * 1000)) == [text, b"z" * 1000]


def test_the_client_handshake_against_the_servers_checks() -> None:
    key = new_key()
    data = handshake_request(
        "127.0.0.1:80", "/ws", key, subprotocols=("chat", "v2"), headers=[("origin", "o")]
    )
    [request] = HttpRequestFramer().feed(data)
    assert check_request(request) == key
    agreed = negotiate_deflate(request.header("sec-websocket-extensions"), Deflate())
    assert agreed is not None
    response = HttpResponse(
        101,
        [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", accept_key(key)),
            ("sec-websocket-protocol", "v2"),
            ("sec-websocket-extensions", agreed[0] + "; client_max_window_bits=12"),
        ],
    )
    subprotocol, deflate = check_response(response, key, subprotocols=("chat", "v2"))
    assert subprotocol == "v2"
    assert deflate is not None and deflate.server_max_window_bits == 12


@pytest.mark.parametrize(
    ("status", "fields", "match"),
    [
        (403, [], "403"),
        (101, [("upgrade", "websocket"), ("connection", "upgrade")], "Accept"),
        (101, "proto", "not offered"),
        (101, "ext", "never offered"),
    ],
)
def test_bad_handshake_answers_are_refused(status: int, fields: object, match: str) -> None:
    key = new_key()
    good = [
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
        ("sec-websocket-accept", accept_key(key)),
    ]
    if fields == "proto":
        headers = [*good, ("sec-websocket-protocol", "other")]
    elif fields == "ext":
        headers = [*good, ("sec-websocket-extensions", "permessage-deflate")]
    else:
        headers = list(fields)  # type: ignore[call-overload]
    with pytest.raises(HandshakeError, match=match):
        check_response(HttpResponse(status, headers), key, compression=False)


def test_the_websockets_librarys_server_side_reads_our_client_frames() -> None:
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    data = WebSocketClientFramer().encode("hello")
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert frame.opcode is Opcode.TEXT and frame.data == b"hello"


def test_response_framer_hands_the_websocket_bytes_over() -> None:
    f = HttpResponseFramer()
    head = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"
    f.feed(head + SERVER.encode("first"))
    assert WebSocketClientFramer().feed(f.trailing) == ["first"]


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_only_websocket_errors_escape(chunks: list[bytes]) -> None:
    f = WebSocketClientFramer(max_message=128, deflate=client_deflate())
    try:
        for chunk in chunks:
            f.feed(chunk)
    except (WebSocketError, MessageTooBig):
        pass
