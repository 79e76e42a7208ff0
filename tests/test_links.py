"""Outbound links (Daemon.connect) against real upstreams on 127.0.0.1.

The upstreams are daemons of their own, run in other threads; the backoff's
delays are checked on a FakeClock. Every test runs on uvloop and the stdlib loop.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from daemonkit import Connection, Daemon, Endpoint, Lines
from daemonkit.cli import ctl
from daemonkit.core.connection import CloseReason
from daemonkit.core.log import StormFilter
from daemonkit.errors import ConfigError
from daemonkit.framework.handler import Handler
from daemonkit.framework.links import (
    DEFAULT_RECONNECT_MAX,
    DEFAULT_RECONNECT_MIN,
    Backoff,
    Link,
)
from daemonkit.testing import DaemonRunner, FakeClock
from tests.helpers import (
    daemonkit_log_to,
    free_port,
    issue_test_cert,
    load_example,
    operations_of,
    recv_until,
)

StartDaemon = Callable[..., DaemonRunner]
TIMEOUT = 5.0  # per blocking socket operation; a passing test never waits this long
# Real-clock reconnect delays for the tests that restart an upstream.
FAST = {"min_delay": 0.01, "max_delay": 0.05}


class Upstream(Daemon):
    """Answers every line with ``echo:`` and the line; records what it got."""

    framing = Lines
    idle_timeout = None

    def __init__(self, listen: Any = "tcp://127.0.0.1:0", **settings: Any) -> None:
        super().__init__(listen=listen, **settings)
        self.lines: list[bytes] = []

    def on_read(self, conn: Connection, line: bytes) -> None:
        self.lines.append(line)
        conn.send(b"echo:" + line)


class Client(Daemon):
    """Opens one link at start; records the link's events."""

    listen = "tcp://127.0.0.1:0"

    def __init__(self, url: str, options: dict[str, Any] | None = None, **settings: Any) -> None:
        super().__init__(**settings)
        self.url = url
        self.options: dict[str, Any] = {"framing": Lines, **(options or {})}
        self.events: list[tuple[str, Any]] = []
        self.link: Link | None = None

    def on_start(self) -> None:
        self.link = self.connect(self.url, **self.options)

    def on_connect(self, conn: Connection) -> None:
        self.events.append(("connect", conn.id))

    def on_read(self, conn: Connection, frame: Any) -> None:
        self.events.append(("read", frame))

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        self.events.append(("close", str(reason)))


def url_of(runner: DaemonRunner) -> str:
    return str(runner.address)


def the_link(d: Client) -> Link:
    assert d.link is not None
    return d.link


def reads(d: Client) -> list[Any]:
    return [frame for kind, frame in d.events if kind == "read"]


# -- the backoff ---------------------------------------------------------------


def test_backoff_grows_with_full_jitter_inside_its_bounds() -> None:
    b = Backoff(0.1, 3.0, rng=random.Random(7))
    delays = [b.next() for _ in range(30)]
    ceiling = 0.1
    for delay in delays:
        assert 0.1 <= delay <= ceiling
        ceiling = min(3.0, ceiling * 2)
    assert delays[0] == 0.1  # the first retry is at the minimum
    assert max(delays[10:]) > 1.5  # it did grow: ceilings are 3.0 from the 6th on
    assert len(set(delays[10:])) == 20  # jittered, not a fixed schedule
    b.reset()
    assert b.next() == 0.1


def test_backoff_defaults_and_bad_bounds() -> None:
    b = Backoff(rng=random.Random(1))
    assert (b.min_delay, b.max_delay) == (DEFAULT_RECONNECT_MIN, DEFAULT_RECONNECT_MAX)
    assert max(b.next() for _ in range(100)) <= DEFAULT_RECONNECT_MAX
    with pytest.raises(ConfigError, match="max_delay=1 must not be less than min_delay=2"):
        Backoff(2, 1)
    with pytest.raises(ConfigError, match="min_delay"):
        Backoff(0, 1)
    with pytest.raises(ConfigError, match="factor"):
        Backoff(1, 2, factor=0.5)


def test_refused_upstream_is_retried_with_delays_inside_the_bounds(backend: str) -> None:
    clock = FakeClock()
    port = free_port()  # nothing listens: every attempt is refused
    options = {"min_delay": 0.5, "max_delay": 4.0, "rng": random.Random(3)}
    d = Client(f"tcp://127.0.0.1:{port}", options)
    records: list[logging.LogRecord] = []
    with daemonkit_log_to(records.append), DaemonRunner(d, backend=backend, clock=clock) as r:
        link = the_link(d)
        ceiling = 0.5
        for attempt in range(1, 7):
            r.wait_for(lambda n=attempt: link.failures == n and link.next_attempt is not None)
            delay = r.call(lambda: (link.next_attempt or 0.0) - clock.now())
            assert 0.5 <= delay <= ceiling + 1e-9
            assert r.call(lambda: link.state) == "down" and not link.up
            assert "connect" in str(link.last_error).lower()  # refused: "connect call failed"
            ceiling = min(4.0, ceiling * 2)
            r.advance(delay)
        assert link.connects == 0
    messages = [rec.getMessage() for rec in records if "cannot connect" in rec.getMessage()]
    assert messages and "retrying in" in messages[0]
    assert next(rec.levelno for rec in records if "cannot connect" in rec.getMessage()) == (
        logging.WARNING
    )
    assert not any(rec.exc_info for rec in records)


def test_a_connection_that_lived_stable_after_resets_the_backoff(
    run_daemon: StartDaemon, backend: str
) -> None:
    up = run_daemon(Upstream())
    clock = FakeClock()
    options = {"min_delay": 0.5, "max_delay": 4.0, "stable_after": 10, "rng": random.Random(5)}
    d = Client(url_of(up), options)

    def drop_and_measure(r: DaemonRunner, link: Link) -> float:
        r.wait_for(lambda: link.up)
        r.call(lambda: [link.backoff.next() for _ in range(4)])  # as after four failures
        # The link is up once its connect() returned; the upstream may not have
        # accepted yet (a busy machine): close only what it really holds.
        up.wait_for(lambda: len(up.daemon.connections) >= 1)
        up.call(lambda: [c.close() for c in up.daemon.connections])
        r.wait_for(lambda: link.next_attempt is not None)
        return r.call(lambda: (link.next_attempt or 0.0) - clock.now())

    with DaemonRunner(d, backend=backend, clock=clock) as r:
        link = the_link(d)
        short = drop_and_measure(r, link)  # lived no time: the backoff goes on
        assert 0.5 < short <= 4.0
        r.advance(short)
        r.wait_for(lambda: link.up)
        r.advance(10)  # this connection lives stable_after
        assert drop_and_measure(r, link) == 0.5  # reset: the minimum again
        assert link.reconnects == 1


# -- a live upstream -----------------------------------------------------------


def test_link_exchanges_frames_and_comes_back_after_a_restart(run_daemon: StartDaemon) -> None:
    up = run_daemon(Upstream())
    port = up.address.port
    d = Client(url_of(up), FAST)
    r = run_daemon(d)
    link = the_link(d)
    r.wait_for(lambda: link.up)
    assert r.call(lambda: link.send(b"hello"))
    r.wait_for(lambda: reads(d) == [b"echo:hello"])
    assert r.call(lambda: link.status())["state"] == "up"
    up.stop()  # killed: the link goes down and keeps trying
    r.wait_for(lambda: not link.up and link.failures >= 2)
    assert ("close", "peer closed") in d.events
    assert r.call(lambda: link.send(b"lost")) is False  # down, no queue: nothing kept
    again = run_daemon(Upstream(f"tcp://127.0.0.1:{port}"))
    r.wait_for(lambda: link.up)
    assert link.reconnects == 1 and link.connects == 2
    assert r.call(lambda: link.write(b"again\n"))
    r.wait_for(lambda: reads(d) == [b"echo:hello", b"echo:again"])
    assert [e[0] for e in d.events].count("connect") == 2
    assert again.call(lambda: again.daemon.lines) == [b"again"]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path, Path]:
    return issue_test_cert(tmp_path_factory.mktemp("linkcerts"))


def tls_upstream(ca: tuple[trustme.CA, Path, Path, Path]) -> Upstream:
    _, cert, key, _ = ca
    return Upstream(
        Endpoint("tls://127.0.0.1:0", certfile=str(cert), keyfile=str(key), framing=Lines)
    )


def test_tls_link_verifies_against_cafile(
    run_daemon: StartDaemon, ca: tuple[trustme.CA, Path, Path, Path]
) -> None:
    up = run_daemon(tls_upstream(ca))
    url = f"tls://127.0.0.1:{up.address.port}"
    d = Client(url, {"cafile": str(ca[3])})
    r = run_daemon(d)
    link = the_link(d)
    r.wait_for(lambda: link.up)
    assert r.call(lambda: link.send(b"secret"))
    r.wait_for(lambda: reads(d) == [b"echo:secret"])
    conn = link.connection
    assert conn is not None and conn.transport is not None
    assert conn.transport.get_extra_info("ssl_object") is not None


def test_tls_link_refuses_a_certificate_it_cannot_verify(
    run_daemon: StartDaemon, ca: tuple[trustme.CA, Path, Path, Path]
) -> None:
    up = run_daemon(tls_upstream(ca))
    d = Client(f"tls://127.0.0.1:{up.address.port}", FAST)  # the system store: not our CA
    records: list[logging.LogRecord] = []
    with daemonkit_log_to(records.append):
        r = run_daemon(d)
        link = the_link(d)
        r.wait_for(lambda: link.failures >= 2)
        assert r.call(lambda: link.send(b"plaintext?")) is False
        r.call(lambda: link.close())
    assert link.connects == 0 and "certificate verify failed" in str(link.last_error)
    assert any("certificate verify failed" in rec.getMessage() for rec in records)
    assert up.call(lambda: list(up.daemon.lines)) == []  # type: ignore[attr-defined]


def test_turning_verification_off_is_logged(
    run_daemon: StartDaemon, ca: tuple[trustme.CA, Path, Path, Path]
) -> None:
    up = run_daemon(tls_upstream(ca))
    d = Client(f"tls://127.0.0.1:{up.address.port}", {"verify": False})
    records: list[logging.LogRecord] = []
    with daemonkit_log_to(records.append):
        r = run_daemon(d)
        link = the_link(d)
        r.wait_for(lambda: link.up)
    assert any(
        rec.levelno == logging.WARNING and "verification is OFF" in rec.getMessage()
        for rec in records
    )


class Silent(Daemon):
    """Takes connections and reads nothing."""

    idle_timeout = None

    def on_accept(self, conn: Connection) -> None:
        conn.pause_reading()


class Flooder(Daemon):
    """Sends a line longer than the link allows, without its end."""

    idle_timeout = None

    def on_accept(self, conn: Connection) -> None:
        conn.write(b"y" * 5000)


class HalfFrame(Daemon):
    """Sends part of a line and closes."""

    idle_timeout = None

    def on_accept(self, conn: Connection) -> None:
        conn.write(b"partial line, no end")
        conn.close()


def test_link_past_its_hard_cap_is_aborted_and_reconnects(run_daemon: StartDaemon) -> None:
    up = run_daemon(Silent(listen="tcp://127.0.0.1:0"))
    d = Client(url_of(up), FAST, max_write_buffer=256 * 1024, write_high_water=64 * 1024)
    r = run_daemon(d)
    link = the_link(d)
    r.wait_for(lambda: link.up)
    taken = r.call(lambda: [link.write(b"x" * 65536) for _ in range(8)])
    assert taken[0] is True and taken[-1] is False
    r.wait_for(lambda: ("close", "output buffer overflow") in d.events)
    r.wait_for(lambda: link.reconnects >= 1 and link.up)
    assert link.last_error == "output buffer overflow"


def test_link_flooded_past_its_frame_limit_closes_and_reconnects(run_daemon: StartDaemon) -> None:
    up = run_daemon(Flooder(listen="tcp://127.0.0.1:0"))
    d = Client(url_of(up), {**FAST, "framing": Lines(max_length=1024)})
    r = run_daemon(d)
    link = the_link(d)
    r.wait_for(lambda: ("close", "frame too large") in d.events and link.reconnects >= 1)
    assert reads(d) == []


def test_upstream_closing_mid_frame_is_a_peer_close_then_a_reconnect(
    run_daemon: StartDaemon,
) -> None:
    up = run_daemon(HalfFrame(listen="tcp://127.0.0.1:0"))
    d = Client(url_of(up), FAST)
    r = run_daemon(d)
    link = the_link(d)
    r.wait_for(lambda: link.reconnects >= 2)
    assert ("close", "peer closed") in d.events
    assert reads(d) == []  # the half line is never delivered


def test_queue_holds_sends_while_down_and_flushes_them_in_order(run_daemon: StartDaemon) -> None:
    port = free_port()
    d = Client(f"tcp://127.0.0.1:{port}", {**FAST, "queue": 20})
    r = run_daemon(d)
    link = the_link(d)
    r.wait_for(lambda: link.failures >= 1)
    sent = r.call(lambda: [link.send(b"one"), link.send(b"two"), link.write(b"three\n")])
    assert sent == [True, True, True]
    assert r.call(lambda: link.send(b"over the bound")) is False
    assert (link.queued, link.dropped) == (14, 1)
    up = run_daemon(Upstream(f"tcp://127.0.0.1:{port}"))
    r.wait_for(lambda: reads(d) == [b"echo:one", b"echo:two", b"echo:three"])
    assert up.call(lambda: up.daemon.lines) == [b"one", b"two", b"three"]  # type: ignore[attr-defined]
    assert link.queued == 0


# -- ending a link ---------------------------------------------------------------


def test_link_close_ends_the_reconnects(backend: str) -> None:
    clock = FakeClock()
    d = Client(f"tcp://127.0.0.1:{free_port()}")
    with DaemonRunner(d, backend=backend, clock=clock) as r:
        link = the_link(d)
        r.wait_for(lambda: link.failures == 1 and link.next_attempt is not None)
        r.call(link.close)
        assert link.state == "closed" and link.closed and link.next_attempt is None
        assert r.call(lambda: d.links) == ()
        r.advance(2 * DEFAULT_RECONNECT_MAX)
        assert r.call(lambda: link.failures) == 1
        assert r.call(lambda: link.send(b"x")) is False


def test_daemon_stop_closes_a_live_link_and_ends_reconnects(run_daemon: StartDaemon) -> None:
    up = run_daemon(Upstream())
    d = Client(url_of(up), FAST)
    r = run_daemon(d)
    link = the_link(d)
    r.wait_for(lambda: link.up)
    r.stop()
    assert d.events[-1] == ("close", "shutdown")  # on_close ran before the loop ended
    assert link.state == "closed" and link.reconnects == 0


def test_daemon_stop_ends_a_link_that_is_down(run_daemon: StartDaemon) -> None:
    d = Client(f"tcp://127.0.0.1:{free_port()}", FAST)
    r = run_daemon(d)
    link = the_link(d)
    r.wait_for(lambda: link.failures >= 1)
    r.stop()
    assert link.closed and link.next_attempt is None


def test_connect_without_reconnect_gives_up_after_one_try(run_daemon: StartDaemon) -> None:
    d = Client(f"tcp://127.0.0.1:{free_port()}", {"reconnect": False})
    r = run_daemon(d)
    link = the_link(d)
    r.wait_for(lambda: link.closed)
    assert link.failures == 1 and r.call(lambda: d.links) == ()


# -- from a handler, and bad arguments -----------------------------------------------


class Api(Handler):
    def __init__(self) -> None:
        self.got: list[Any] = []

    def on_connect(self, conn: Connection) -> None:
        self.got.append("connect")

    def on_read(self, conn: Connection, frame: Any) -> None:
        self.got.append(frame)


def test_a_handler_opens_a_link_served_by_itself(run_daemon: StartDaemon) -> None:
    up = run_daemon(Upstream())
    api = Api()
    d = Daemon(listen=Endpoint("tcp://127.0.0.1:0", handler=api))
    r = run_daemon(d)
    link = r.call(lambda: api.connect(url_of(up), framing=Lines))
    assert link.handler is api and r.call(lambda: d.links) == (link,)
    r.wait_for(lambda: link.up)
    r.call(lambda: link.send(b"from api"))
    r.wait_for(lambda: api.got == ["connect", b"echo:from api"])


def test_bad_connect_arguments_are_config_errors(run_daemon: StartDaemon) -> None:
    with pytest.raises(ConfigError, match="serves no daemon"):
        Api().connect("tcp://127.0.0.1:1")
    idle = Daemon(listen="tcp://127.0.0.1:0")
    with pytest.raises(ConfigError, match="not running"):
        idle.connect("tcp://127.0.0.1:1")
    r = run_daemon(Daemon(listen="tcp://127.0.0.1:0"))
    bad: list[tuple[dict[str, Any], str]] = [
        ({"url": "http://127.0.0.1:1"}, "tcp://, unix:// or tls://"),
        ({"cafile": "x.pem"}, "are for tls://"),
        ({"queue": -1}, "queue must be"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"min_delay": 5, "max_delay": 1}, "must not be less"),
        ({"url": "tls://127.0.0.1:1", "cafile": "/nonexistent/ca.pem"}, "cannot load cafile"),
    ]
    for options, message in bad:
        url = options.pop("url", "tcp://127.0.0.1:1")
        with pytest.raises(ConfigError, match=message):
            r.call(lambda u=url, o=options: r.daemon.connect(u, **o))
    assert r.call(lambda: r.daemon.links) == ()


# -- operations ---------------------------------------------------------------------


def test_ctl_status_and_metrics_show_links(
    run_daemon: StartDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    up = run_daemon(Upstream())
    d = Client(url_of(up), FAST, control=str(tmp_path / "ctl.sock"))
    r = run_daemon(d)
    link = the_link(d)
    r.wait_for(lambda: link.up)
    ops = operations_of(d)
    status = r.call(lambda: ops.execute({"cmd": "status"}))["status"]
    assert status["links"] == [
        {
            "url": url_of(up),
            "state": "up",
            "connects": 1,
            "reconnects": 0,
            "failures": 0,
            "last_error": None,
            "queued": 0,
            "dropped": 0,
        }
    ]
    assert ctl.main(["status", "--control", str(tmp_path / "ctl.sock")]) == 0
    out = capsys.readouterr().out
    assert f"links           {url_of(up)}  up (reconnects 0, failures 0)" in out
    metrics = r.call(lambda: ops.execute({"cmd": "metrics"}))["metrics"]
    label = f'link="{url_of(up)}"'
    assert f"daemonkit_link_up{{{label}}} 1.0" in metrics
    assert f"daemonkit_link_reconnects_total{{{label}}} 0.0" in metrics
    assert f"daemonkit_link_connect_failures_total{{{label}}} 0.0" in metrics
    assert f"daemonkit_link_dropped_total{{{label}}} 0.0" in metrics


# -- the proxy example -----------------------------------------------------------------


def test_proxy_example_forwards_lines_and_returns_answers(run_daemon: StartDaemon) -> None:
    proxy = load_example("proxy")
    up = run_daemon(Upstream())
    r = run_daemon(proxy.ProxyDaemon(upstream=url_of(up), listen="tcp://127.0.0.1:0"))
    r.wait_for(lambda: r.daemon.link.up)
    with socket.create_connection((r.address.host, r.address.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"a\nbb\n")
        assert recv_until(sock, b"echo:bb\n") == b"echo:a\necho:bb\n"
    up.stop()
    r.wait_for(lambda: not r.daemon.link.up)
    with socket.create_connection((r.address.host, r.address.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"c\n")
        assert recv_until(sock, b"\n") == b"ERR upstream down\n"


def test_every_up_and_down_of_a_link_reaches_the_log(backend: str) -> None:
    # A link's ups and downs are its lifecycle: an operator must see each
    # recovery, so the storm filter (which collapses a connection logger's
    # lines, one per peer) must let every one of them through.
    records: list[logging.LogRecord] = []
    with daemonkit_log_to(records.append):
        up = DaemonRunner(HalfFrame(listen="tcp://127.0.0.1:0"), backend=backend).start()
        try:
            d = Client(url_of(up), FAST)
            with DaemonRunner(d, backend=backend) as r:
                link = the_link(d)
                r.wait_for(lambda: link.reconnects >= 2)
        finally:
            up.stop(now=True)
    storm = StormFilter()
    passed = [rec.getMessage() for rec in records if storm.filter(rec)]
    ups = [m for m in passed if m.startswith("link ") and " up (#" in m]
    downs = [m for m in passed if m.startswith("link ") and "down (peer closed, #" in m]
    assert len(ups) >= 3 and len(downs) >= 2
