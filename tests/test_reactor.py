"""The Reactor on its own, libevent-style, on both backends."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
import sys
import warnings
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from daemonkit import READ, TIMEOUT, WRITE, FakeClock, Reactor
from daemonkit.core.reactor import (
    ACCEPT_DEFER_CHECK,
    ACCEPT_DEFER_DELAY,
    Listener,
    Watch,
    new_event_loop,
)
from daemonkit.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@pytest.fixture
def reactor(backend: str) -> Iterator[Reactor]:
    r = Reactor(backend)
    yield r
    r.close()


@pytest.fixture
def fake_reactor(backend: str) -> Iterator[tuple[Reactor, FakeClock]]:
    clock = FakeClock()
    r = Reactor(backend, clock=clock)
    yield r, clock
    r.close()


def test_backend_names(backend: str) -> None:
    loop, name = new_event_loop(backend)
    loop.close()
    assert name == backend
    with pytest.raises(ConfigError, match="unknown backend"):
        new_event_loop("libev")


def test_pyuv_backend_missing_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyuv", None)  # import pyuv now fails
    monkeypatch.delitem(sys.modules, "daemonkit.core.pyuvloop", raising=False)
    with pytest.raises(ConfigError, match=r"backend 'pyuv'.*python -m daemonkit build-pyuv"):
        new_event_loop("pyuv")


def test_watch_read_and_write(reactor: Reactor) -> None:
    a, b = socket.socketpair()
    seen: list[int] = []

    def on_ready(w: Watch, what: int) -> None:
        seen.append(what)
        if what == READ:
            assert a.recv(10) == b"ping"
            w.cancel()
            reactor.stop()

    def on_writable(w: Watch, what: int) -> None:
        seen.append(what)
        w.cancel()
        b.send(b"ping")

    with a, b:
        reactor.watch(a, READ, on_ready)
        reactor.watch(b, WRITE, on_writable)
        reactor.run()
    assert seen == [WRITE, READ]
    assert reactor.stats().watches == 0


def test_watch_timeout_uses_the_same_callback(fake_reactor: tuple[Reactor, FakeClock]) -> None:
    reactor, clock = fake_reactor
    a, b = socket.socketpair()
    seen: list[tuple[float, int]] = []
    with a, b:
        w = reactor.watch(a, READ, lambda w, what: seen.append((clock.now(), what)), timeout=5.0)
        clock.advance(4.9)
        assert seen == []
        clock.advance(0.1)
        assert seen == [(5.0, TIMEOUT)]
        clock.advance(5.0)  # persistent: fires again a full timeout later
        assert seen == [(5.0, TIMEOUT), (10.0, TIMEOUT)]
        w.cancel()
        clock.advance(100)
        assert len(seen) == 2
    assert reactor.stats().timers == 0


def test_second_watch_on_same_fd_is_refused(reactor: Reactor) -> None:
    a, b = socket.socketpair()
    with a, b:
        w = reactor.watch(a, READ, lambda w, what: None)
        with pytest.raises(ValueError, match="already has a READ watch"):
            reactor.watch(a.fileno(), READ, lambda w, what: None)
        w.cancel()
        w.cancel()  # idempotent
        reactor.watch(a, READ, lambda w, what: None).cancel()
    with pytest.raises(ValueError, match="events must be"):
        reactor.watch(0, TIMEOUT, lambda w, what: None)


def test_watch_callback_error_is_logged_not_raised(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = socket.socketpair()

    def bad(w: Watch, what: int) -> None:
        w.cancel()
        reactor.stop()
        raise RuntimeError("oops")

    with a, b:
        b.send(b"x")
        reactor.watch(a, READ, bad)
        reactor.run()
    assert any("watch callback" in r.getMessage() for r in caplog.records)


def test_timers_with_fake_clock(fake_reactor: tuple[Reactor, FakeClock]) -> None:
    reactor, clock = fake_reactor
    fired: list[tuple[str, float]] = []
    reactor.call_later(1.0, lambda: fired.append(("later", clock.now())))
    reactor.call_at(0.5, lambda: fired.append(("at", clock.now())))
    cancelled = reactor.call_later(0.7, lambda: fired.append(("cancelled", clock.now())))
    cancelled.cancel()
    periodic = reactor.call_every(0.25, lambda: fired.append(("every", clock.now())))
    clock.advance(1.0)
    periodic.cancel()
    assert fired == [
        ("every", 0.25),
        ("at", 0.5),
        ("every", 0.5),
        ("every", 0.75),
        ("later", 1.0),
        ("every", 1.0),
    ] or fired == [
        ("every", 0.25),
        ("every", 0.5),
        ("at", 0.5),
        ("every", 0.75),
        ("every", 1.0),
        ("later", 1.0),
    ]
    assert reactor.time() == 1.0
    assert reactor.stats().timers == 0


def test_real_timer_fires_through_the_backend(reactor: Reactor) -> None:
    # A real clock, a very short delay: proves the single backend timer is armed.
    fired: list[float] = []
    start = reactor.time()

    def done() -> None:
        fired.append(reactor.time())
        reactor.stop()

    reactor.call_later(0.01, done)
    reactor.run()
    assert fired and fired[0] >= start + 0.01


def test_timer_error_is_logged_and_others_still_run(
    fake_reactor: tuple[Reactor, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    reactor, clock = fake_reactor
    fired: list[str] = []

    def bad() -> None:
        raise ValueError("timer bug")

    reactor.call_later(1, bad)
    reactor.call_later(1, fired.append, "ok")
    clock.advance(1)
    assert fired == ["ok"]
    assert any("timer callback failed" in r.getMessage() for r in caplog.records)


def test_signal_delivered_in_the_loop(reactor: Reactor) -> None:
    got: list[int] = []

    def on_usr2(signum: int) -> None:
        got.append(signum)
        reactor.stop()

    handle = reactor.on_signal(signal.SIGUSR2, on_usr2)
    reactor.call_soon(os.kill, os.getpid(), signal.SIGUSR2)
    reactor.run()
    assert got == [signal.SIGUSR2]
    assert reactor.stats().signals == 1
    handle.cancel()
    handle.cancel()
    assert reactor.stats().signals == 0


def test_spawn_logs_failures_and_close_cancels(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    async def fail() -> None:
        raise RuntimeError("task bug")

    async def forever() -> None:
        await asyncio.sleep(3600)

    def stop_after(turns: int) -> None:
        if turns:
            reactor.call_soon(stop_after, turns - 1)
        else:
            reactor.stop()

    reactor.spawn(fail())
    long = reactor.spawn(forever())
    stop_after(5)  # the failed task's done callback runs a turn after it fails
    reactor.run()
    assert any("failed" in r.getMessage() and r.exc_info for r in caplog.records)
    assert reactor.stats().tasks == 1
    reactor.close()
    assert long.cancelled()


def test_listen_connect_roundtrip(reactor: Reactor) -> None:
    received: list[bytes] = []
    transports: list[asyncio.BaseTransport] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            transports.append(transport)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    class Client(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.append(data)
            reactor.stop()

    listener = reactor.listen("tcp://127.0.0.1:0", Echo)
    assert listener.address.port != 0

    async def go() -> None:
        transport, _ = await reactor.connect(str(listener.address), Client)
        transports.append(transport)
        transport.write(b"round trip")  # type: ignore[attr-defined]

    reactor.spawn(go())
    reactor.run()
    for t in transports:
        t.close()
    reactor.call_soon(reactor.stop)
    reactor.run()  # one more turn lets the transports finish closing
    assert received == [b"round trip"]
    assert listener.accepted == 1
    assert reactor.stats().listeners == 1
    listener.close()
    assert reactor.stats().listeners == 0


def test_listen_admit_refuses(reactor: Reactor) -> None:
    listener = reactor.listen("tcp://127.0.0.1:0", asyncio.Protocol, admit=lambda: False)
    with socket.create_connection(("127.0.0.1", listener.address.port), timeout=10) as s:
        reactor.call_later(0.05, reactor.stop)
        reactor.run()
        assert s.recv(1) == b""
    assert listener.rejected == 1 and listener.accepted == 0


def test_loop_exceptions_go_to_the_reactor_log(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="daemonkit")
    reactor.loop.call_exception_handler({"message": "something odd"})
    assert any(r.getMessage() == "something odd" for r in caplog.records)


def test_close_releases_everything(backend: str) -> None:
    r = Reactor(backend)
    a, b = socket.socketpair()
    with a, b:
        r.watch(a, READ, lambda w, what: None, timeout=10)
        r.call_later(10, lambda: None)
        r.call_every(1, lambda: None)
        r.listen("tcp://127.0.0.1:0", asyncio.Protocol)
        r.on_signal(signal.SIGUSR2, lambda s: None)
        r.close()
        r.close()  # idempotent
    assert r.loop.is_closed()
    assert r.stats().watches == 0 and r.stats().timers == 0 and r.stats().listeners == 0
    assert r.stats().signals == 0


def test_unclosed_reactor_warns(backend: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = Reactor(backend)
        del r
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert any(m.startswith("unclosed <daemonkit.core.reactor.Reactor") for m in messages), messages


class _Gathered:
    """Stands in for a connection with gathered writes."""

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail
        self.then: tuple[Reactor, _Gathered] | None = None

    def _flush_soon(self) -> None:
        self.log.append(self.name)
        if self.then is not None:
            reactor, item = self.then
            reactor.flush_soon(item)  # queued while flushing: the next turn's
        if self.fail:
            raise RuntimeError(f"{self.name} broke")


def test_flush_soon_runs_every_queued_item_in_one_callback(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    a, b, c, late = (_Gathered(n, log) for n in ("a", "b", "c", "late"))
    b.fail = True
    a.then = (reactor, late)
    turns: list[list[str]] = []
    for item in (a, b, c, a):
        reactor.flush_soon(item)  # a twice: flushed twice, as documented
    reactor.call_soon(lambda: turns.append(list(log)))  # queued after the flushes
    reactor.call_soon(lambda: reactor.call_soon(lambda: turns.append(list(log)) or reactor.stop()))
    with caplog.at_level(logging.ERROR, logger="daemonkit.reactor"):
        reactor.run()
    # b raising did not stop c; 'late' (queued during the run) came one turn later.
    assert turns == [["a", "b", "c", "a"], ["a", "b", "c", "a", "late", "late"]]
    assert [r.getMessage() for r in caplog.records] == ["flushing gathered writes failed"]


def test_a_signal_before_the_loop_runs_is_delivered_once_it_does(backend: str) -> None:
    """uvloop listens for signals only while running; one sent just before must not wait."""
    r = Reactor(backend)
    got: list[int] = []
    try:
        r.on_signal(signal.SIGUSR1, got.append)
        os.kill(os.getpid(), signal.SIGUSR1)  # after start, before the first loop turn
        for _ in range(50):  # a few real turns for the replay to come round
            if got:
                break
            r.call_soon(r.stop)
            r.run()
        assert got == [signal.SIGUSR1]
        os.kill(os.getpid(), signal.SIGUSR1)  # later signals: once each, no echo of the first
        r.call_soon(r.stop)
        r.run()
        for _ in range(50):
            if len(got) == 2:
                break
            r.call_soon(r.stop)
            r.run()
        assert got == [signal.SIGUSR1, signal.SIGUSR1]
    finally:
        r.close()
    assert signal.set_wakeup_fd(-1) == -1  # close() put the wakeup fd back


# -- outbound connect: what the scheme says, or refused -------------------------------


class _Recorder(asyncio.Protocol):
    """Server side: echoes, and remembers whether the connection was TLS."""

    tls: list[bool] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        _Recorder.tls.append(transport.get_extra_info("ssl_object") is not None)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def ca_and_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    return ca, server


def _run(reactor: Reactor, coro: Coroutine[Any, Any, T]) -> T:
    return reactor.run_until_complete(asyncio.wait_for(coro, 10))


# CPython 3.10's stdlib sslproto never closes the app transport of a failed
# handshake (3.11 rewrote sslproto): the ResourceWarning its __del__ gives is
# the interpreter's, not daemonkit's. Only that warning, only before 3.11.
def _py310_ssl_leak(test: F) -> F:
    """Before 3.11 only: ignore exactly the stdlib sslproto's leaked-transport warning."""
    if sys.version_info >= (3, 11):
        return test
    mark = pytest.mark.filterwarnings(
        "ignore:unclosed transport <asyncio.sslproto._SSLProtocolTransport:ResourceWarning"
    )
    return mark(test)


@_py310_ssl_leak
def test_connect_tls_does_a_real_handshake_that_verifies(
    reactor: Reactor, ca_and_server: tuple[trustme.CA, ssl.SSLContext]
) -> None:
    ca, server_context = ca_and_server
    _Recorder.tls = []
    listener = reactor.listen("tls://127.0.0.1:0", _Recorder, ssl=server_context)
    url = f"tls://127.0.0.1:{listener.address.port}"
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    got: list[bytes] = []

    class Client(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            got.append(data)

    async def go() -> None:
        transport, _ = await reactor.connect(url, Client, ssl=client_context)
        assert transport.get_extra_info("ssl_object") is not None
        transport.write(b"secret")  # type: ignore[attr-defined]
        for _ in range(500):
            if got:
                break
            await asyncio.sleep(0.01)
        transport.close()

    _run(reactor, go())
    assert got == [b"secret"] and _Recorder.tls == [True]
    # The default context verifies: the test CA is not trusted, so no session.
    with pytest.raises(ssl.SSLCertVerificationError):
        _run(reactor, reactor.connect(url, Client))
    gc.collect()  # on 3.10, the leaked transport's warning comes here, under the filter


@pytest.mark.parametrize(
    ("url", "advice"),
    [
        ("http://127.0.0.1:80", "tcp://"),
        ("ws://127.0.0.1:80", "tcp://"),
        ("https://127.0.0.1:443", "tls://"),
        ("wss://127.0.0.1:443", "tls://"),
        ("udp://127.0.0.1:53", "create_datagram_endpoint"),
    ],
)
def test_connect_refuses_schemes_it_cannot_honour(reactor: Reactor, url: str, advice: str) -> None:
    with pytest.raises(ConfigError, match=f"connect\\({url}\\).*{advice}"):
        _run(reactor, reactor.connect(url, asyncio.Protocol))


def test_connect_checks_its_options(reactor: Reactor) -> None:
    with pytest.raises(ConfigError, match="ssl= is for tls:// endpoints"):
        _run(
            reactor,
            reactor.connect(
                "tcp://127.0.0.1:1", asyncio.Protocol, ssl=ssl.create_default_context()
            ),
        )
    for bad in (float("inf"), -1, 0, "5"):
        with pytest.raises(ConfigError, match="timeout"):
            _run(reactor, reactor.connect("tcp://127.0.0.1:1", asyncio.Protocol, timeout=bad))


def test_connect_times_out_naming_the_endpoint(reactor: Reactor) -> None:
    # A listener with backlog 0 that never accepts, filled by one client: the
    # kernel drops the next SYN, so a connect neither succeeds nor is refused.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            url = f"tcp://127.0.0.1:{port}"
            with pytest.raises(TimeoutError, match=f"connecting to {url}: no answer within 0.2s"):
                _run(reactor, reactor.connect(url, asyncio.Protocol, timeout=0.2))


def test_connect_plain_unix(reactor: Reactor, tmp_path: Path) -> None:
    path = tmp_path / "s.sock"

    class Hangup(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.close()

    reactor.listen(f"unix://{path}", Hangup)
    transport, _ = _run(reactor, reactor.connect(f"unix://{path}", asyncio.Protocol))
    assert transport.get_extra_info("ssl_object") is None
    transport.close()
    _run(reactor, asyncio.sleep(0.05))  # a few turns: both ends finish closing


# -- a unix socket file belongs to the listener that bound it ---------------------------


def test_a_listener_removes_only_the_socket_file_it_bound(reactor: Reactor, tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    mine = reactor.listen(f"unix://{path}", asyncio.Protocol)
    # The same socket given to a second listener (inherited, as in an upgrade):
    # it did not bind the path, so closing it leaves the file to the first.
    borrowed = reactor.listen(f"unix://{path}", asyncio.Protocol, sock=mine.sock.dup())
    borrowed.close()
    assert os.path.exists(path)
    mine.close()
    assert not os.path.exists(path)


def test_a_listener_leaves_a_file_that_names_another_socket(
    reactor: Reactor, tmp_path: Path
) -> None:
    path = str(tmp_path / "app.sock")
    first = reactor.listen(f"unix://{path}", asyncio.Protocol)
    os.unlink(path)  # e.g. an operator, or another process that took the path over
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(path)
        other.listen(1)
        first.close()
        assert os.path.exists(path)  # still the other socket's
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)


def test_a_claimed_file_is_removed_a_released_one_kept(reactor: Reactor, tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    old = reactor.listen(f"unix://{path}", asyncio.Protocol)
    identity = old.socket_file
    assert identity is not None and identity[0] == path
    new = reactor.listen(f"unix://{path}", asyncio.Protocol, sock=old.sock.dup())
    assert new.socket_file is None
    new.claim_socket_file(identity)  # the hand-over succeeded
    old.release_socket_file()
    old.close()
    assert os.path.exists(path)
    new.close()
    assert not os.path.exists(path)


class _Share:
    """An AcceptShare that defers while ``deferring`` and counts what it is told."""

    def __init__(self, deferring: bool) -> None:
        self.deferring = deferring
        self.asked = 0
        self.told = 0

    def defer(self) -> bool:
        self.asked += 1
        return self.deferring

    def accepted(self) -> None:
        self.told += 1


def _turn_until(reactor: Reactor, done: Callable[[], bool]) -> None:
    """Run the loop in short turns until ``done()``, for at most 10 real seconds."""
    for _ in range(1000):
        if done():
            return
        reactor.loop.run_until_complete(asyncio.sleep(0.01))
    raise AssertionError("the condition never held")


@pytest.fixture
def deferring(
    fake_reactor: tuple[Reactor, FakeClock],
) -> Iterator[tuple[Reactor, FakeClock, Listener, _Share]]:
    """A listener sharing its socket whose share says defer, and a client it deferred."""
    reactor, clock = fake_reactor
    listener = reactor.listen("tcp://127.0.0.1:0", asyncio.Protocol)
    share = _Share(deferring=True)
    listener.share(share)
    with socket.create_connection(("127.0.0.1", listener.address.port), timeout=10):
        _turn_until(reactor, lambda: listener.deferred == 1)
        yield reactor, clock, listener, share
        _turn_until(reactor, lambda: listener.pending == 0)  # each accepted one handed over
    listener.close()


def test_a_shared_listener_defers_then_accepts_what_the_others_left(
    deferring: tuple[Reactor, FakeClock, Listener, _Share],
) -> None:
    reactor, clock, listener, share = deferring
    assert listener.accepted == 0 and share.told == 0  # left to the others for now
    clock.advance(ACCEPT_DEFER_DELAY - ACCEPT_DEFER_CHECK / 2)
    assert listener.accepted == 0 and share.asked > 2  # asked again every check
    clock.advance(ACCEPT_DEFER_CHECK * 1.5)  # nobody took it: at the deadline, this does
    assert listener.accepted == 1 and share.told == 1
    share.deferring = False
    with socket.create_connection(("127.0.0.1", listener.address.port), timeout=10):
        _turn_until(reactor, lambda: listener.accepted == 2)  # watching again
    assert listener.deferred == 1 and share.told == 2


def test_a_deferring_listener_takes_its_turn_back_once_the_others_caught_up(
    deferring: tuple[Reactor, FakeClock, Listener, _Share],
) -> None:
    _, clock, listener, share = deferring
    share.deferring = False  # e.g. the other worker accepted many meanwhile
    clock.advance(ACCEPT_DEFER_CHECK)
    assert listener.accepted == 1 and share.asked == 2 and share.told == 1


def test_a_pause_during_a_deferral_is_not_undone_by_it(
    deferring: tuple[Reactor, FakeClock, Listener, _Share],
) -> None:
    reactor, clock, listener, _ = deferring
    listener.pause()  # e.g. an upgrade handing the socket over
    clock.advance(ACCEPT_DEFER_DELAY * 2)
    reactor.loop.run_until_complete(asyncio.sleep(0.05))
    assert listener.accepted == 0 and len(reactor.timers) == 0
    listener.share(None)
    listener.start()
    _turn_until(reactor, lambda: listener.accepted == 1)
