"""The pytest plugin's fixtures, used exactly as a user's test would."""

from __future__ import annotations

import pytest

from daemonkit import Connection, Daemon, Lines
from daemonkit.bots import Bot
from daemonkit.testing.plugin import BotsFixture, DaemonFixture


class EchoDaemon(Daemon):
    listen = "tcp://127.0.0.1:7000"  # the fixture moves it to an ephemeral port
    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)


class EchoBot(Bot):
    framing = Lines

    def on_tick(self) -> None:
        self.request(b"hello", name="echo")


def test_echo_holds_100_users(daemon: DaemonFixture, bots: BotsFixture) -> None:
    server = daemon(EchoDaemon)
    assert server.address.port != 7000
    quiet = bots.baseline(EchoBot, server)
    result = bots(EchoBot, server, count=100, duration=2.0)
    assert result.stats.errors == 0
    assert result.peak_connected == 100
    # Closed model: 100 bots queue behind each other, so the loaded p99 is
    # bounded by the unloaded one times the concurrency (Little's law), with
    # room for a noisy machine; never a wall-clock constant.
    assert result.p99("echo") <= 4 * 100 * max(quiet.p99("echo"), 0.0001)


def test_daemon_fixture_takes_instances_and_refuses_mixed_use(daemon: DaemonFixture) -> None:
    server = daemon(EchoDaemon(listen="tcp://127.0.0.1:0"))
    assert server.address.port > 0
    with pytest.raises(TypeError, match="settings go with a Daemon class"):
        daemon(EchoDaemon(listen="tcp://127.0.0.1:0"), idle_timeout=1.0)


def test_daemons_are_stopped_at_teardown() -> None:
    fixture = DaemonFixture()
    server = fixture(EchoDaemon)
    assert len(server.daemon.connections) == 0  # running: its state is readable
    fixture.stop_all()
    assert not fixture.runners
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.daemon.reactor
