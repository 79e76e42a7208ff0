"""The suite's own log filter drops only debug mode's slow-callback timing reports."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest


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
