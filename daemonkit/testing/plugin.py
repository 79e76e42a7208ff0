"""The daemonkit pytest plugin: ``daemon`` and ``bots`` fixtures.

Installed with daemonkit (entry point ``pytest11``), so a user's load test
is a few lines::

    def test_echo_holds_100_users(daemon, bots):
        server = daemon(EchoDaemon)                  # ephemeral port, own thread
        quiet = bots.baseline(EchoBot, server)       # one bot: the unloaded p99
        result = bots(EchoBot, server, count=100, duration=2.0)
        result.assert_ok()                           # requests measured, none failed
        assert result.p99() <= 50 * quiet.p99()      # a bound from the baseline

``daemon(cls_or_instance, **settings)`` starts the daemon with every
endpoint of its ``listen`` moved to a free port on 127.0.0.1 (a unix
socket to a temporary directory), each keeping its framing, handler and
options (unless ``listen`` is given), and stops it at the end of the test.
``bots(bot_class, target, count=, duration=, **options)`` runs a
:class:`~daemonkit.bots.BotRunner` to completion and returns its
:class:`~daemonkit.bots.RunResult`; ``target`` is a running
:class:`~daemonkit.testing.DaemonRunner` (its first endpoint the bot class
speaks), an address or an endpoint string.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from daemonkit.bots.bot import Bot
from daemonkit.bots.result import RunResult
from daemonkit.bots.runner import BotRunner
from daemonkit.core.endpoints import Address, Endpoint
from daemonkit.daemon import Daemon, name_endpoints, override_listen
from daemonkit.testing.runner import DaemonRunner

__all__ = ["BotsFixture", "DaemonFixture", "bots", "daemon", "ephemeral_listen"]

# How long the baseline run of one bot lasts.
BASELINE_SECONDS = 0.5


def ephemeral_listen(
    listen: str | Endpoint | Sequence[str | Endpoint], directory: str
) -> list[Endpoint]:
    """Every endpoint of ``listen`` moved to a free port on 127.0.0.1, settings kept.

    Framing, handler, TLS files and options stay with each endpoint (as
    ``--listen NAME=URL`` moves one); a unix socket moves into
    ``directory``. Raises :class:`~daemonkit.errors.ConfigError` for a bad
    ``listen``.
    """
    moves = []
    for endpoint in name_endpoints(listen):
        scheme = endpoint.address.scheme
        if scheme == "unix":
            url = f"unix://{directory}/{endpoint.name}.sock"
        else:
            url = f"{scheme}://127.0.0.1:0"
        moves.append(f"{endpoint.name}={url}")
    return override_listen(listen, moves) if moves else []


class DaemonFixture:
    """The ``daemon`` fixture: call it to start a daemon; all are stopped at teardown."""

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend
        self.runners: list[DaemonRunner] = []
        self._directory: str | None = None

    def __call__(self, daemon: type[Daemon] | Daemon, **settings: Any) -> DaemonRunner:
        """Start ``daemon`` (a class, made with ``settings``, or an instance) in a thread.

        A class's endpoints move to free ports (see :func:`ephemeral_listen`)
        unless ``listen`` is in ``settings``; an instance runs as it is.
        """
        if isinstance(daemon, type):
            if "listen" not in settings:
                if self._directory is None:
                    self._directory = tempfile.mkdtemp(prefix="daemonkit-test-")
                settings["listen"] = ephemeral_listen(daemon.listen, self._directory)
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
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        if errors:
            raise errors[0]


def _address(target: DaemonRunner | Address | str, bot_class: Any) -> Address | str:
    """The address to load: for a DaemonRunner, its first endpoint ``bot_class`` speaks."""
    if not isinstance(target, DaemonRunner):
        return target
    addresses = target.addresses
    classes = bot_class if isinstance(bot_class, Sequence) else [bot_class]
    schemes = set(classes[0].schemes) if classes else set()
    for cls in classes[1:]:
        schemes &= set(cls.schemes)
    for address in addresses.values():
        if address.scheme in schemes:
            return address
    listed = ", ".join(f"{name} {address}" for name, address in addresses.items())
    raise ValueError(
        f"the daemon has no endpoint the bots speak ({', '.join(sorted(schemes))}): {listed}"
    )


class BotsFixture:
    """The ``bots`` fixture: call it to run bots against a target and get the result."""

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend

    def __call__(
        self,
        bot_class: type[Bot] | Sequence[type[Bot]],
        target: DaemonRunner | Address | str,
        *,
        count: int = 10,
        duration: float = 2.0,
        **options: Any,
    ) -> RunResult:
        """Run ``count`` bots for ``duration`` seconds; ``options`` go to BotRunner.

        ``target`` a :class:`DaemonRunner`: its first endpoint whose scheme
        the bot class speaks (``ValueError`` when there is none).
        """
        options.setdefault("backend", self.backend)
        address = _address(target, bot_class)
        runner = BotRunner(bot_class, address, bots=count, duration=duration, **options)
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
