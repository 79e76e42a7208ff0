"""Shared fixtures: every network test runs on both backends."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator

import pytest

from daemonkit.testing import DaemonRunner

BACKEND_NAMES = ["uvloop", "asyncio", "pyuv"]


def _not_a_slow_callback_report(record: logging.LogRecord) -> bool:
    """Drop debug mode's "Executing <handle> took 0.156 seconds" warnings.

    The suite runs with PYTHONASYNCIODEBUG=1, so both loops warn whenever one
    callback runs longer than 0.1 s of wall-clock time. On a busy two-core CI
    machine that happens to innocent callbacks (a whole test once failed on a
    0.156 s accept step), and tests check behaviour, never time. The warnings
    come from the ``asyncio`` logger with one fixed format string on both
    backends; everything else from that logger still reaches the tests.
    """
    return not (
        isinstance(record.msg, str)
        and record.msg.startswith("Executing %")
        and "took %.3f seconds" in record.msg
    )


logging.getLogger("asyncio").addFilter(_not_a_slow_callback_report)


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> str:
    """The event-loop backend under test: the suite runs on uvloop, the stdlib loop and pyuv.

    pyuv has no wheel for today's Pythons; ``make test`` builds it
    (scripts/build-pyuv). Without it the pyuv runs skip and say so.
    """
    if request.param == "pyuv" and importlib.util.find_spec("pyuv") is None:
        pytest.skip("pyuv is not installed: run sh scripts/build-pyuv PYTHON (make test does)")
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
