"""The opening handshake's rules, on HttpRequest objects (no sockets)."""

from __future__ import annotations

import pytest

from daemonkit.framing.http import HttpRequest
from daemonkit.framing.websocket import Deflate
from daemonkit.protocols.websocket.handshake import (
    HandshakeError,
    accept_key,
    check_request,
    negotiate_deflate,
    negotiate_subprotocol,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD_HEADERS = [
    ("host", "example.com"),
    ("upgrade", "websocket"),
    ("connection", "keep-alive, Upgrade"),
    ("sec-websocket-key", KEY),
    ("sec-websocket-version", "13"),
]


def request(
    headers: list[tuple[str, str]] = GOOD_HEADERS, method: str = "GET", version: str = "1.1"
) -> HttpRequest:
    return HttpRequest(method, "/ws", version, headers=list(headers), upgrade="websocket")


def replace(name: str, value: str | None) -> list[tuple[str, str]]:
    kept = [(n, v) for n, v in GOOD_HEADERS if n != name]
    return kept if value is None else [*kept, (name, value)]


def test_accept_key_is_the_rfc_example() -> None:
    # RFC 6455 1.3.
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_good_request() -> None:
    assert check_request(request()) == KEY
    assert check_request(request(replace("upgrade", "WebSocket"))) == KEY


@pytest.mark.parametrize(
    ("req", "status", "message"),
    [
        (request(method="POST"), 400, "GET, not POST"),
        (request(version="1.0"), 400, "HTTP/1.1"),
        (request(replace("upgrade", "h2c")), 400, "Upgrade"),
        (request(replace("connection", "keep-alive")), 400, "Connection"),
        (request(replace("sec-websocket-key", None)), 400, "got 0"),
        (request([*GOOD_HEADERS, ("sec-websocket-key", KEY)]), 400, "got 2"),
        (request(replace("sec-websocket-key", "AAAA")), 400, "not 16 bytes"),
        (request(replace("sec-websocket-key", "é" * 24)), 400, "not 16 bytes"),
        (request(replace("sec-websocket-key", "!" * 24)), 400, "not 16 bytes"),
        (request(replace("sec-websocket-version", "8")), 426, "Version"),
        (request(replace("sec-websocket-version", None)), 426, "Version"),
        (request(replace("sec-websocket-version", "13, 8")), 426, "Version"),
    ],
)
def test_bad_requests(req: HttpRequest, status: int, message: str) -> None:
    with pytest.raises(HandshakeError, match=message) as info:
        check_request(req)
    assert info.value.status == status
    if status == 426:
        assert info.value.headers == [("Sec-WebSocket-Version", "13")]


def test_origins() -> None:
    allowed = {"https://good.example"}
    assert check_request(
        request([*GOOD_HEADERS, ("origin", "https://good.example")]), origins=allowed
    )
    for headers in [GOOD_HEADERS, [*GOOD_HEADERS, ("origin", "https://evil.example")]]:
        with pytest.raises(HandshakeError, match="not allowed") as info:
            check_request(request(headers), origins=allowed)
        assert info.value.status == 403


CONFIG = Deflate(server_max_window_bits=12, mem_level=5)


@pytest.mark.parametrize(
    ("offer", "response", "deflate"),
    [
        (None, None, None),
        ("", None, None),
        ("x-webkit-deflate-frame", None, None),
        (
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=12",
            Deflate(server_max_window_bits=12, mem_level=5),
        ),
        (
            # What browsers send.
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=12",
            Deflate(server_max_window_bits=12, mem_level=5),
        ),
        (
            "permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
            Deflate(client_no_context_takeover=True, server_max_window_bits=10, mem_level=5),
        ),
        (
            'permessage-deflate; server_no_context_takeover; server_max_window_bits="15"',
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
            Deflate(server_no_context_takeover=True, server_max_window_bits=12, mem_level=5),
        ),
        (
            # The first acceptable offer wins: zlib cannot compress with 8 bits.
            "permessage-deflate; server_max_window_bits=8, permessage-deflate",
            "permessage-deflate; server_max_window_bits=12",
            Deflate(server_max_window_bits=12, mem_level=5),
        ),
        ("permessage-deflate; unknown_param", None, None),
        ("permessage-deflate; server_max_window_bits=16", None, None),
        ("permessage-deflate; server_max_window_bits", None, None),
        ("permessage-deflate; client_max_window_bits=7", None, None),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None, None),
        ("permessage-deflate; =x", None, None),
    ],
)
def test_negotiate_deflate(
    offer: str | None, response: str | None, deflate: Deflate | None
) -> None:
    result = negotiate_deflate(offer, CONFIG)
    assert result == (None if response is None else (response, deflate))


def test_negotiate_deflate_imposes_the_servers_wishes() -> None:
    config = Deflate(server_no_context_takeover=True, client_no_context_takeover=True)
    assert negotiate_deflate("permessage-deflate", config) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        config,
    )


def test_negotiate_subprotocol() -> None:
    assert negotiate_subprotocol(None, ["chat"]) is None
    assert negotiate_subprotocol("chat", []) is None
    assert negotiate_subprotocol("superchat, chat", ["chat", "superchat"]) == "chat"
    assert negotiate_subprotocol("Chat", ["chat"]) is None  # case-sensitive
    assert negotiate_subprotocol("a,b", ["b"]) == "b"
