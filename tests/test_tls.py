"""tls:// (and https://) endpoints over real sockets, with certificates made at test time.

trustme makes a throw-away CA and a server certificate for 127.0.0.1 per
test module; clients are plain ``ssl.SSLContext`` sockets that trust that CA.
Every test runs on uvloop and on the stdlib loop.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from daemonkit import Connection, Daemon, Endpoint, Lines
from daemonkit.errors import ConfigError
from daemonkit.framework.hosts import StreamHost
from daemonkit.testing import DaemonRunner
from tests.helpers import recv_until

TIMEOUT = 5.0  # per blocking socket operation; a passing test never waits this long
# The endpoint's tls_handshake_timeout in these tests. Generous: a good
# client's handshake must finish within it on a loaded two-core CI machine
# with asyncio debug on (0.5 s once cut one short). The test that waits for
# the timeout itself uses SILENT_HANDSHAKE_TIMEOUT.
HANDSHAKE_TIMEOUT = 4.0  # below TIMEOUT, so a drop by the timeout still tells itself apart
SILENT_HANDSHAKE_TIMEOUT = 2.0

# What a daemon logs at INFO whatever its clients do.
LIFECYCLE = ("open-file limit", "listening on", "stopping", "stopped")


@dataclass(frozen=True)
class Certs:
    ca: trustme.CA
    certfile: str
    keyfile: str
    other_keyfile: str  # a valid key that does not match certfile

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    root: Path = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    certfile = root / "server.pem"
    certfile.write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
    keyfile = root / "server.key"
    server.private_key_pem.write_to_path(str(keyfile))
    other = root / "other.key"
    ca.issue_cert("elsewhere.example").private_key_pem.write_to_path(str(other))
    return Certs(ca, str(certfile), str(keyfile), str(other))


class LineEcho(Daemon):
    """Echoes every line; listen is set per test."""

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)


def tls_endpoint(
    certs: Certs, *, handshake_timeout: float = HANDSHAKE_TIMEOUT, **options: Any
) -> Endpoint:
    return Endpoint(
        "tls://127.0.0.1:0",
        certfile=certs.certfile,
        keyfile=certs.keyfile,
        framing=Lines,
        tls_handshake_timeout=handshake_timeout,
        **options,
    )


def tls_client(runner: DaemonRunner, certs: Certs) -> ssl.SSLSocket:
    address = runner.address
    raw = socket.create_connection((address.host, address.port), timeout=TIMEOUT)
    return certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1")


def raw_client(runner: DaemonRunner) -> socket.socket:
    address = runner.address
    return socket.create_connection((address.host, address.port), timeout=TIMEOUT)


def wait_dropped(sock: socket.socket, timeout: float = TIMEOUT) -> float:
    """Block until the daemon closes ``sock`` (EOF or reset); return how long that took."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the daemon did not close the connection within {timeout}s") from None
    return time.monotonic() - started


def stream_host(daemon: Daemon) -> StreamHost:
    host = daemon.endpoint_hosts[0]
    assert isinstance(host, StreamHost)
    return host


class Capture(logging.Handler):
    """Collects records from the daemon's logger and asyncio's, at every level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def above_debug(self) -> list[str]:
        """Messages above DEBUG, but for the daemon's own start/stop lines."""
        return [
            r.getMessage()
            for r in self.records
            if r.levelno > logging.DEBUG and not r.getMessage().startswith(LIFECYCLE)
        ]


@pytest.fixture
def logs() -> Iterator[Any]:
    attached: list[tuple[logging.Logger, Capture, int]] = []

    def attach(daemon: Daemon) -> Capture:
        capture = Capture()
        for logger in (daemon.log, logging.getLogger("asyncio")):
            attached.append((logger, capture, logger.level))
            logger.addHandler(capture)
            logger.setLevel(logging.DEBUG)
        return capture

    yield attach
    for logger, capture, level in attached:
        logger.removeHandler(capture)
        logger.setLevel(level)


# -- serving ------------------------------------------------------------------------


def test_line_echo_over_tls(run_daemon: Any, certs: Certs) -> None:
    d = LineEcho(listen=tls_endpoint(certs))
    runner = run_daemon(d)
    assert runner.address.scheme == "tls" and runner.address.port != 0
    with tls_client(runner, certs) as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        sock.sendall(b"hello\nsecure ")
        sock.sendall(b"world\n")
        assert recv_until(sock, b"world\n") == b"hello\nsecure world\n"


def test_an_ssl_context_instead_of_files(run_daemon: Any, certs: Certs) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.ca.issue_cert("127.0.0.1").configure_cert(context)
    d = LineEcho(listen=Endpoint("tls://127.0.0.1:0", ssl_context=context, framing=Lines))
    runner = run_daemon(d)
    with tls_client(runner, certs) as sock:
        sock.sendall(b"ctx\n")
        assert recv_until(sock, b"ctx\n") == b"ctx\n"


def test_a_client_that_never_says_hello_is_dropped_and_others_are_served(
    run_daemon: Any, certs: Certs
) -> None:
    """A client that connects and never sends its ClientHello goes after tls_handshake_timeout.

    That timeout is the backend's own (``ssl_handshake_timeout`` of
    ``connect_accepted_socket``), on the loop's real clock: a FakeClock cannot
    drive it, so this test waits, by polling the socket for EOF with a deadline.
    """
    d = LineEcho(listen=tls_endpoint(certs, handshake_timeout=SILENT_HANDSHAKE_TIMEOUT))
    runner = run_daemon(d)
    host = stream_host(d)
    with raw_client(runner) as silent:
        started = time.monotonic()
        runner.wait_for(lambda: host.pending == 1, timeout=TIMEOUT)
        with tls_client(runner, certs) as good:  # served while the silent one hangs
            good.sendall(b"meanwhile\n")
            assert recv_until(good, b"meanwhile\n") == b"meanwhile\n"
        assert select.select([silent], [], [], 0)[0] == []  # still open
        wait_dropped(silent)
        elapsed = time.monotonic() - started
    assert SILENT_HANDSHAKE_TIMEOUT * 0.8 <= elapsed < TIMEOUT
    runner.wait_for(lambda: host.pending == 0, timeout=TIMEOUT)
    assert d.stats["accepted"] == 1  # the silent one never became a connection
    with tls_client(runner, certs) as sock:  # and the daemon still serves
        sock.sendall(b"after\n")
        assert recv_until(sock, b"after\n") == b"after\n"


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plain HTTP to a TLS port
        b"\x16\x03\x01\x00\x05hello",  # a record header, then nonsense
        bytes(range(256)) * 4,
    ],
    ids=["http", "bad-record", "binary"],
)
def test_garbage_instead_of_tls_is_dropped_quietly(
    run_daemon: Any, certs: Certs, logs: Any, garbage: bytes
) -> None:
    d = LineEcho(listen=tls_endpoint(certs))
    captured = logs(d)
    runner = run_daemon(d)
    host = stream_host(d)
    with raw_client(runner) as sock:
        sock.sendall(garbage)
        assert wait_dropped(sock) < HANDSHAKE_TIMEOUT  # a failed handshake, not the timeout
    runner.wait_for(lambda: host.pending == 0, timeout=TIMEOUT)
    assert captured.above_debug() == []
    with tls_client(runner, certs) as good:
        good.sendall(b"fine\n")
        assert recv_until(good, b"fine\n") == b"fine\n"
    assert d.stats["accepted"] == 1 and d.stats["errors"] == 0


def test_a_client_that_does_not_trust_the_certificate_fails_and_the_daemon_goes_on(
    run_daemon: Any, certs: Certs, logs: Any
) -> None:
    d = LineEcho(listen=tls_endpoint(certs))
    captured = logs(d)
    runner = run_daemon(d)
    host = stream_host(d)
    untrusting = ssl.create_default_context()  # does not know the test CA
    with raw_client(runner) as raw, pytest.raises(ssl.SSLCertVerificationError):
        untrusting.wrap_socket(raw, server_hostname="127.0.0.1")
    runner.wait_for(lambda: host.pending == 0, timeout=TIMEOUT)
    assert captured.above_debug() == []
    with tls_client(runner, certs) as good:
        good.sendall(b"ok\n")
        assert recv_until(good, b"ok\n") == b"ok\n"


def test_a_tls_client_closing_logs_nothing_above_debug(
    run_daemon: Any, certs: Certs, logs: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    d = LineEcho(listen=tls_endpoint(certs))
    captured = logs(d)
    runner = run_daemon(d)
    with tls_client(runner, certs) as sock:
        sock.sendall(b"bye\n")
        assert recv_until(sock, b"bye\n") == b"bye\n"
    runner.wait_for(lambda: d.stats["closed"] == 1, timeout=TIMEOUT)
    assert captured.above_debug() == []


# -- configuration ----------------------------------------------------------------------


# Not over the backends: the files are loaded when the daemon is made, before any loop.
def test_missing_certificate_files_are_a_clear_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    # Loaded when the daemon is made, so `daemonkit --check` catches it too.
    with pytest.raises(ConfigError) as info:
        LineEcho(listen=Endpoint("tls://127.0.0.1:0", certfile=missing, keyfile=missing))
    message = str(info.value)
    assert "tls://127.0.0.1:0" in message and "cannot load certfile=" in message
    assert missing in message and "No such file" in message


# Not over the backends: the key is checked when the daemon is made, before any loop.
def test_a_key_that_does_not_match_is_a_clear_error(certs: Certs) -> None:
    endpoint = Endpoint("tls://127.0.0.1:0", certfile=certs.certfile, keyfile=certs.other_keyfile)
    with pytest.raises(ConfigError, match="cannot load certfile=.*KEY_VALUES_MISMATCH"):
        LineEcho(listen=endpoint)


def test_tls_needs_certificates_and_a_positive_handshake_timeout(certs: Certs) -> None:
    with pytest.raises(ConfigError, match="needs certfile= and keyfile="):
        Endpoint("tls://127.0.0.1:0")
    with pytest.raises(ConfigError, match="tls_handshake_timeout must be seconds > 0"):
        LineEcho(listen=tls_endpoint(certs).replace(tls_handshake_timeout=0))
    with pytest.raises(ConfigError, match="certificates are for tls://"):
        Endpoint("tcp://127.0.0.1:0", certfile=certs.certfile, keyfile=certs.keyfile)


# -- https ------------------------------------------------------------------------------


def test_https(run_daemon: Any, certs: Certs) -> None:
    import http.client
    import json

    class Api(Daemon):
        listen = Endpoint("https://127.0.0.1:0", certfile=certs.certfile, keyfile=certs.keyfile)

        def on_request(self, conn: Any, request: Any) -> None:
            body = json.dumps({"path": request.path})
            conn.respond(200, {"content-type": "application/json"}, body)

    runner = run_daemon(Api())
    assert runner.address.scheme == "https"
    client = http.client.HTTPSConnection(
        "127.0.0.1", runner.address.port, timeout=TIMEOUT, context=certs.client_context()
    )
    try:
        client.request("GET", "/hello")
        response = client.getresponse()
        assert response.status == 200
        assert json.loads(response.read()) == {"path": "/hello"}
    finally:
        client.close()
