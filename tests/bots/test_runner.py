"""BotRunner end to end against real daemons on loopback, on both backends."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pytest

from daemonkit import Connection, Daemon, Lines
from daemonkit.bots import Bot, BotRunner
from daemonkit.errors import ConfigError
from daemonkit.testing import DaemonRunner
from tests.helpers import free_port


class LineEcho(Daemon):
    listen = "tcp://127.0.0.1:0"
    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)


class EchoBot(Bot):
    framing = Lines

    def on_tick(self) -> None:
        self.request(b"ping", name="echo")


StartDaemon = Callable[..., DaemonRunner]


def test_closed_model_run(run_daemon: StartDaemon, backend: str) -> None:
    server = run_daemon(LineEcho())
    result = BotRunner(EchoBot, str(server.address), bots=20, duration=1.0, backend=backend).run()
    echo = result.stats.operations["echo"]
    assert echo.count > 100
    assert result.stats.errors == 0
    assert result.peak_connected == 20
    assert result.stats.connect.count == 20
    assert result.model == "closed"
    # One sample per second of the run (the last one may be partial).
    assert 1 <= len(result.stats.series) <= 2
    # The totals also hold the replies that were in flight at the end (at most
    # one per bot in the closed model); the per-second series stops at the end.
    in_series = sum(s.requests for s in result.stats.series)
    assert in_series <= echo.count <= in_series + 20
    # Every bot closed at the end: the daemon saw them all go.
    server.wait_for(lambda: len(server.daemon.connections) == 0)
    assert server.daemon.stats["accepted"] == 20


def test_spawn_rate_ramps_the_bots_up(run_daemon: StartDaemon, backend: str) -> None:
    server = run_daemon(LineEcho())
    runner = BotRunner(
        EchoBot, server.address, bots=10, spawn_rate=10.0, duration=1.5, backend=backend
    )
    result = runner.run()
    assert result.peak_connected == 10
    first = result.stats.series[0]
    assert 8 <= first.active <= 10  # ~10 spawned in the first second (1 at t=0, then 10/s)
    assert result.stats.connect.count == 10


def test_unix_socket_target(run_daemon: StartDaemon) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "echo.sock")
        server = run_daemon(LineEcho(listen=f"unix://{path}"))
        result = BotRunner(EchoBot, f"unix://{path}", bots=3, duration=0.5).run()
        assert result.stats.operations["echo"].count > 0
        assert result.stats.errors == 0
        assert server.daemon.stats["accepted"] == 3


# Not over the backends: the bots run on BotRunner's default loop whatever the fixture says.
def test_refused_connects_are_counted_not_raised() -> None:
    port = free_port()
    result = BotRunner(EchoBot, f"tcp://127.0.0.1:{port}", bots=5, duration=0.3).run()
    assert result.stats.connect_errors == {"ECONNREFUSED": 5}
    assert result.peak_connected == 0
    assert any("5 of 5 bots could not connect" in w for w in result.warnings)


class Freezer(LineEcho):
    """Blocks its whole loop once, 0.3 s into the run: a real stall."""

    def on_start(self) -> None:
        self.frozen = False

    def on_read(self, conn: Connection, line: bytes) -> None:
        if not self.frozen and self.reactor.time() - self.started > 0.3:
            self.frozen = True
            time.sleep(0.3)  # deliberately wedge the daemon's loop
        conn.send(line)

    def on_accept(self, conn: Connection) -> None:
        if not hasattr(self, "started"):
            self.started = self.reactor.time()


def test_open_model_shows_a_real_stall_in_its_latency(run_daemon: StartDaemon) -> None:
    server = run_daemon(Freezer())
    result = BotRunner(EchoBot, server.address, bots=5, duration=1.5, rate=200.0).run()
    echo = result.stats.operations["echo"].latency
    # ~60 of ~300 requests were scheduled while the daemon was frozen: each
    # is timed from its scheduled moment, so the stall shows at p90 and up.
    assert echo.count >= 250
    assert echo.max >= 0.25
    assert echo.percentile(90) >= 0.05
    assert result.rate == 200.0 and result.model == "open"


def test_stop_ends_the_run_early_with_its_numbers(run_daemon: StartDaemon) -> None:
    server = run_daemon(LineEcho())
    runner = BotRunner(EchoBot, server.address, bots=2, duration=60.0)
    original = runner.start

    def start(reactor: Any) -> None:
        original(reactor)
        reactor.call_later(0.3, runner.stop)

    runner.start = start  # type: ignore[method-assign]
    began = time.monotonic()
    result = runner.run()
    assert time.monotonic() - began < 10
    assert result.elapsed < 5
    assert result.stats.operations["echo"].count > 0


def test_server_memory_is_sampled(run_daemon: StartDaemon) -> None:
    server = run_daemon(LineEcho())
    # The daemon runs in this process's thread: its RSS is ours.
    result = BotRunner(EchoBot, server.address, bots=50, duration=1.2, server_pid=os.getpid()).run()
    assert result.server is not None
    assert result.server.connected == 50
    # In-process, the garbage collector may leave RSS below the baseline:
    # per_bot then reports 0 rather than a negative cost.
    assert result.server.peak > 0 and result.server.baseline > 0
    assert result.server.per_bot is not None and result.server.per_bot >= 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bots": 0}, "bots must be at least 1"),
        ({"duration": 0}, "duration"),
        ({"duration": 10**6}, "duration"),
        ({"spawn_rate": -1}, "spawn_rate"),
        ({"rate": 0}, "rate"),
        ({"interval": 0}, "interval"),
    ],
)
def test_impossible_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BotRunner(EchoBot, "tcp://127.0.0.1:1", **kwargs)


def test_only_bot_classes_run() -> None:
    with pytest.raises(ConfigError, match="not a Bot subclass"):
        BotRunner(LineEcho, "tcp://127.0.0.1:1")  # type: ignore[arg-type]


def test_result_before_the_end_is_an_error() -> None:
    runner = BotRunner(EchoBot, "tcp://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="not finished"):
        runner.result()
    assert not runner.done


def test_daemon_runner_gives_the_address_to_bots() -> None:
    with DaemonRunner(LineEcho()) as server:
        result = BotRunner(EchoBot, server.address, bots=2, duration=0.3).run()
    assert result.stats.requests > 0
