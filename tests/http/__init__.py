"""HTTP endpoint tests, and a raw-socket HTTP client for the cases http.client cannot do."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

import pytest

TIMEOUT = 5.0  # per blocking socket operation; a passing test never waits this long


@dataclass
class Reply:
    """One response as read off the wire: status, headers (lower-cased names), body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    head: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class RawClient:
    """A blocking HTTP/1.1 client over one socket: send bytes, read responses one by one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(TIMEOUT)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self, *, head: bool = False) -> Reply:
        """Read one response; *head*: it answers a HEAD request (no body)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError(f"connection closed; unread: {self.buf!r}")
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = raw.decode("latin1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        reply = Reply(int(status), headers, b"", raw)
        code = int(status)
        if head or code < 200 or code in (204, 304):
            return reply
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(self.buf) < size:
                if not self._fill():
                    raise AssertionError("connection closed in a body")
            reply.body, self.buf = self.buf[:size], self.buf[size:]
        elif headers.get("transfer-encoding") == "chunked":
            reply.body = self._chunked()
        else:
            while self._fill():
                pass
            reply.body, self.buf = self.buf, b""
        return reply

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError("connection closed in a chunked body")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self._line().split(b";")[0], 16)
            if not size:
                while self._line():  # trailers, then the empty line
                    pass
                return b"".join(parts)
            while len(self.buf) < size + 2:
                if not self._fill():
                    raise AssertionError("connection closed in a chunk")
            parts.append(self.buf[:size])
            self.buf = self.buf[size + 2 :]

    def closed(self) -> bool:
        """True if the server closed the connection with nothing more to read."""
        return not self.buf and not self._fill()

    def close(self) -> None:
        self.sock.close()


def get(path: str = "/", *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    """The bytes of a simple HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing the client did is logged above info, or with a traceback."""
    loud = [r for r in caplog.records if r.exc_info or r.levelno > logging.INFO]
    assert not loud, [r.getMessage() for r in loud]
