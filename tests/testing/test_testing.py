"""The helpers daemonkit ships for its users' tests."""

from __future__ import annotations

import asyncio

import pytest

from daemonkit import Daemon
from daemonkit.testing import DaemonRunner, FakeClock, MemoryTransport


class Recording(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[str] = []

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")


def test_memory_transport_records_and_crosses_watermarks() -> None:
    proto = Recording()
    t = MemoryTransport(proto)
    t.write(b"ab")
    t.writelines([b"c", bytearray(b"d")])
    assert bytes(t.data) == b"abcd"
    assert t.get_extra_info("peername") == ("127.0.0.1", 40000)
    t.set_write_buffer_limits(high=100, low=10)
    assert t.get_write_buffer_limits() == (10, 100)
    t.set_buffer_size(101)
    t.set_buffer_size(50)  # between the marks: nothing happens
    t.set_buffer_size(10)
    assert proto.events == ["pause", "resume"]
    t.pause_reading()
    assert not t.is_reading()
    t.resume_reading()
    assert t.is_reading()
    t.abort()
    assert t.closed and t.aborted and t.is_closing()
    assert proto.events[-1] == "lost"
    t.write(b"after")  # dropped, as a real transport does
    assert bytes(t.data) == b"abcd"
    t.close()  # idempotent: connection_lost once
    assert proto.events.count("lost") == 1


def test_runner_advance_needs_a_fake_clock() -> None:
    class Quiet(Daemon):
        listen = "tcp://127.0.0.1:0"

    with DaemonRunner(Quiet(), backend="asyncio") as runner:
        with pytest.raises(RuntimeError, match="FakeClock"):
            runner.advance(1)
        assert runner.call(lambda: len(runner.daemon.connections)) == 0


def test_runner_with_fake_clock_fires_daemon_timers(backend: str) -> None:
    fired: list[float] = []

    class Timed(Daemon):
        listen = "tcp://127.0.0.1:0"

        def on_start(self) -> None:
            self.every(10, lambda: fired.append(self.reactor.time()))

    clock = FakeClock(start=100.0)
    with DaemonRunner(Timed(), backend=backend, clock=clock) as runner:
        assert runner.advance(35) == 3
    assert fired == [110.0, 120.0, 130.0]
