"""The suite's own hooks: the log filter, and the exit status of a run that ran nothing.

The log filter drops only debug mode's slow-callback timing reports.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import SLOWEST_MODULES, TESTS, pytest_collection_modifyitems
from tests.helpers import PYTHON, ROOT

#: Seconds one pytest run of a single small module may take (about 3 s, 8 s with workers).
RUN_TIMEOUT = 90


def test_slow_callback_reports_are_dropped_and_other_asyncio_warnings_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = 0.01
        loop.call_soon(time.sleep, 0.05)  # a callback slower than the threshold
        await asyncio.sleep(0.1)
        logging.getLogger("asyncio").warning("something else %s", "entirely")

    asyncio.run(main())
    asyncio_messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert "something else entirely" in asyncio_messages
    assert not [m for m in asyncio_messages if m.startswith("Executing")]


@pytest.mark.parametrize(
    "workers",
    [
        [],
        pytest.param(
            ["-n", "1"],
            marks=pytest.mark.skipif(
                importlib.util.find_spec("xdist") is None, reason="pytest-xdist is not installed"
            ),
        ),
    ],
    ids=["one-process", "xdist"],
)
def test_a_run_that_selects_no_test_exits_0(workers: list[str]) -> None:
    argv = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", *workers]
    argv += ["-k", "no_test_has_this_name", "tests/test_endpoints.py"]
    ran = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert "no tests ran" in ran.stdout or "deselected" in ran.stdout, ran.stdout + ran.stderr
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_the_slowest_modules_run_first_and_every_module_keeps_its_order() -> None:
    paths = ["bots/test_bot.py", *reversed(SLOWEST_MODULES), "test_cli.py"]
    items = [
        SimpleNamespace(path=TESTS / path, name=f"{path}:{n}") for path in paths for n in (1, 2)
    ]
    items.append(SimpleNamespace(path=Path("/elsewhere/test_x.py"), name="elsewhere:1"))
    pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    order = [item.name for item in items]
    expected_first = [f"{path}:{n}" for path in SLOWEST_MODULES for n in (1, 2)]
    assert order[: len(expected_first)] == expected_first
    assert order[len(expected_first) :] == [
        "bots/test_bot.py:1", "bots/test_bot.py:2", "test_cli.py:1", "test_cli.py:2",
        "elsewhere:1",
    ]  # fmt: skip
