"""The daemonkit pytest plugin: ``daemon`` and ``bots`` fixtures.

Installed with daemonkit (entry point ``pytest11``), so a user's load test
is a few lines::

    def test_echo_holds_100_users(daemon, bots):
        server = daemon(EchoDaemon)                  # ephemeral port, own thread
        quiet = bots.baseline(EchoBot, server)       # one bot: the unloaded p99
        result = bots(EchoBot, server, count=100, duration=2.0)
        assert result.stats.errors == 0
        assert result.p99() <= 50 * quiet.p99()      # a bound from the baseline

``daemon(cls_or_instance, **settings)`` starts the daemon on
``tcp://127.0.0.1:0`` (unless ``listen`` is given) and stops it at the end
of the test. ``bots(bot_class, target, count=, duration=, **options)`` runs
a :class:`~daemonkit.bots.BotRunner` to completion and returns its
:class:`~daemonkit.bots.RunResult`; ``target`` is a running
:class:`~daemonkit.testing.DaemonRunner`, an address or an endpoint string.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from daemonkit.bots.bot import Bot
from daemonkit.bots.result import RunResult
from daemonkit.bots.runner import BotRunner
from daemonkit.core.endpoints import Address
from daemonkit.daemon import Daemon
from daemonkit.testing.runner import DaemonRunner

__all__ = ["BotsFixture", "DaemonFixture", "bots", "daemon"]

# How long the baseline run of one bot lasts.
BASELINE_SECONDS = 0.5


class DaemonFixture:
    """The ``daemon`` fixture: call it to start a daemon; all are stopped at teardown."""

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend
        self.runners: list[DaemonRunner] = []

    def __call__(self, daemon: type[Daemon] | Daemon, **settings: Any) -> DaemonRunner:
        """Start ``daemon`` (a class, made with ``settings``, or an instance) in a thread."""
        if isinstance(daemon, type):
            settings.setdefault("listen", "tcp://127.0.0.1:0")
            instance = daemon(**settings)
        else:
            if settings:
                raise TypeError("settings go with a Daemon class, not an instance")
            instance = daemon
        runner = DaemonRunner(instance, backend=self.backend)
        runner.start()
        self.runners.append(runner)
        return runner

    def stop_all(self) -> None:
        """Stop every daemon started by this fixture (teardown calls it)."""
        errors = []
        for runner in reversed(self.runners):
            try:
                runner.stop(now=True)
            except Exception as exc:
                errors.append(exc)
        self.runners.clear()
        if errors:
            raise errors[0]


def _address(target: DaemonRunner | Address | str) -> Address | str:
    if isinstance(target, DaemonRunner):
        return target.address
    return target


class BotsFixture:
    """The ``bots`` fixture: call it to run bots against a target and get the result."""

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend

    def __call__(
        self,
        bot_class: type[Bot],
        target: DaemonRunner | Address | str,
        *,
        count: int = 10,
        duration: float = 2.0,
        **options: Any,
    ) -> RunResult:
        """Run ``count`` bots for ``duration`` seconds; ``options`` go to BotRunner."""
        options.setdefault("backend", self.backend)
        runner = BotRunner(bot_class, _address(target), bots=count, duration=duration, **options)
        return runner.run()

    def baseline(
        self,
        bot_class: type[Bot],
        target: DaemonRunner | Address | str,
        *,
        duration: float = BASELINE_SECONDS,
        **options: Any,
    ) -> RunResult:
        """One bot alone: the unloaded latencies to bound a loaded run by."""
        return self(bot_class, target, count=1, duration=duration, **options)


@pytest.fixture
def daemon() -> Iterator[DaemonFixture]:
    """Start daemons in background threads on ephemeral ports; stopped at teardown."""
    fixture = DaemonFixture()
    yield fixture
    fixture.stop_all()


@pytest.fixture
def bots() -> BotsFixture:
    """Run bots against a daemon and return the RunResult."""
    return BotsFixture()
