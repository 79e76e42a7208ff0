"""Reconnect: bots whose connections drop come back, and the report shows the outage."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from daemonkit import Connection, Daemon, Lines
from daemonkit.bots import Bot, BotRunner, RunResult
from daemonkit.bots.report import format_summary
from daemonkit.errors import ConfigError
from daemonkit.testing import DaemonRunner
from tests.helpers import free_port

# Real seconds a step of the test may take before it fails instead of hanging.
STEP_DEADLINE = 15.0


class Echo(Daemon):
    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)


class ReconnectingBot(Bot):
    framing = Lines
    reconnect = True
    reconnect_min = 0.02  # a test's restart takes a fraction of a second
    reconnect_max = 0.2
    think_time = 0.01

    def on_tick(self) -> None:
        self.request(b"ping", name="echo")


def wait_until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + STEP_DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {STEP_DEADLINE} s: {what}")
        time.sleep(0.01)


def test_a_fleet_reconnects_through_a_daemon_restart(backend: str) -> None:
    bots = 10
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    first = DaemonRunner(Echo(listen=endpoint), backend=backend).start()
    runner = BotRunner(ReconnectingBot, endpoint, bots=bots, duration=60.0, backend=backend)
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(runner.run()), daemon=True)
    thread.start()
    second: DaemonRunner | None = None
    try:
        wait_until(lambda: runner.fleet is not None and len(runner.fleet.live) == bots, "up")
        fleet = runner.fleet
        assert fleet is not None
        first.stop(now=True)  # every connection is aborted: a restart, seen from the client
        wait_until(lambda: runner.stats.drops == bots, "all dropped")
        second = DaemonRunner(Echo(listen=endpoint), backend=backend).start()
        wait_until(lambda: runner.stats.reconnects == bots, "all reconnected")
        before = runner.stats.requests
        wait_until(lambda: runner.stats.requests > before + bots, "requests after the restart")
    finally:
        if runner._reactor is not None:
            runner._reactor.loop.call_soon_threadsafe(runner.stop)
        thread.join(STEP_DEADLINE)
        if second is not None:
            second.stop(now=True)
        first.stop(now=True)
    assert not thread.is_alive()
    (result,) = results
    stats = result.stats
    assert (stats.drops, stats.reconnects) == (bots, bots)
    assert stats.outages.count == bots  # one outage per drop, each ended by a reconnect
    assert stats.outages.min > 0
    # The drops are counted as failures of the connection (a measure, not a request).
    assert stats.operations["connection"].failures == bots
    assert stats.operations["connection"].measure
    # The connect row is about the first connects only.
    assert stats.connect.count == bots
    text = format_summary(result)
    assert f"{bots} dropped, {bots} reconnected" in text
    restored = RunResult.from_dict(result.to_dict())
    assert restored.stats.to_dict() == stats.to_dict()


class NotReconnectingBot(ReconnectingBot):
    reconnect = False


def test_without_reconnect_a_dropped_bot_stays_down(backend: str) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    first = DaemonRunner(Echo(listen=endpoint), backend=backend).start()
    runner = BotRunner(NotReconnectingBot, endpoint, bots=3, duration=60.0, backend=backend)
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(runner.run()), daemon=True)
    thread.start()
    try:
        wait_until(lambda: runner.fleet is not None and len(runner.fleet.live) == 3, "up")
        first.stop(now=True)
        wait_until(lambda: runner.stats.drops == 3, "all dropped")
    finally:
        if runner._reactor is not None:
            runner._reactor.loop.call_soon_threadsafe(runner.stop)
        thread.join(STEP_DEADLINE)
        first.stop(now=True)
    (result,) = results
    assert result.stats.reconnects == 0
    # Never back: each outage lasts until the run's end.
    assert result.stats.outages.count == 3


def test_reconnect_delays_are_checked() -> None:
    class Bad(ReconnectingBot):
        reconnect_min = 0.5
        reconnect_max = 0.1

    with pytest.raises(ConfigError, match="max_delay"):
        BotRunner(Bad, "tcp://127.0.0.1:1", bots=1, duration=1.0)
