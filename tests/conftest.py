"""Shared fixtures: every network test runs on both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from daemonkit.testing import DaemonRunner

BACKEND_NAMES = ["uvloop", "asyncio"]


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> str:
    """The event-loop backend under test: the suite runs on uvloop and on the stdlib loop."""
    return str(request.param)


@pytest.fixture
def run_daemon(backend: str) -> Iterator[object]:
    """Start a daemon in a background thread; every one started is stopped at teardown."""
    runners: list[DaemonRunner] = []

    def start(daemon: object, **kwargs: object) -> DaemonRunner:
        runner = DaemonRunner(daemon, backend=backend, **kwargs)  # type: ignore[arg-type]
        runner.start()
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.stop(now=True)
