"""Shared fixtures: every network test runs on both backends."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit.testing import DaemonRunner
from tests.helpers import selected_backends

BACKEND_NAMES = selected_backends(["uvloop", "asyncio", "pyuv"])


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


#: The modules that each take a large share of the run, slowest first (a
#: package build and install; the benchmark's smoke run; the framers' fuzzing):
#: 41, 37 and 25 s of the 370 s the suite's tests took in one run on 2 cores.
#: They run first, so a parallel run (-n 2 --dist loadfile
#: --no-loadscope-reorder) never ends with one worker still inside one of them
#: and the other idle.
SLOWEST_MODULES = ("test_packaging.py", "test_bench_quick.py", "framing/test_fuzz.py")
TESTS = Path(__file__).resolve().parent


def _slowness_rank(item: pytest.Item) -> int:
    try:
        module = item.path.relative_to(TESTS).as_posix()
    except ValueError:
        return len(SLOWEST_MODULES)
    return SLOWEST_MODULES.index(module) if module in SLOWEST_MODULES else len(SLOWEST_MODULES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests of :data:`SLOWEST_MODULES` to the front; the rest keep their order.

    Tests on the pyuv backend get pytest-timeout's thread method: libuv
    retries its poll when a signal interrupts it, so the default SIGALRM
    method could never stop a test hung inside ``pyuv.Loop.run``.
    """
    items.sort(key=_slowness_rank)  # a stable sort: each module's tests stay together
    for item in items:
        if "pyuv" in getattr(item, "nodeid", ""):  # test_pyuvloop.py, or [pyuv] parameters
            item.add_marker(pytest.mark.timeout(method="thread"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that selected no test exits 0, not pytest's 5 (also under pytest-xdist).

    A run of part of the suite (``-k``, ``-m``, a path, a second invocation
    for the pure-Python modules) may legitimately select nothing on some
    machine; pytest then says "no tests ran", and that is not a failure.
    """
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> str:
    """The event-loop backend under test: the suite runs on uvloop, the stdlib loop and pyuv.

    pyuv has no wheel for today's Pythons; ``make test`` builds it
    (python -m daemonkit build-pyuv). Without it the pyuv runs skip and say so.
    """
    if request.param == "pyuv" and importlib.util.find_spec("pyuv") is None:
        pytest.skip("pyuv is not installed: run python -m daemonkit build-pyuv (make test does)")
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
