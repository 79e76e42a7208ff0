"""Helpers every benchmark server in this directory shares, whatever its framework.

* :func:`raise_nofile` lifts the soft open-file limit to the hard one, so a
  server can hold the 15,000 idle connections of the memory workload.
* :func:`start_lag_probe` measures event-loop lag when ``BENCH_LAG_FILE`` is
  set: a one-shot timer of ``LAG_INTERVAL`` seconds is scheduled again and
  again through the framework's own ``call_later``, and each firing appends
  ``<time.monotonic()> <seconds late>`` to that file (flushed every
  ``FLUSH_EVERY`` samples). bench/run.py keeps the samples that fall inside a
  load run's measured window. Both clocks are CLOCK_MONOTONIC, so the
  driver's and the server's timestamps compare.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from typing import Any

#: Seconds between lag samples.
LAG_INTERVAL = 0.01
#: Samples buffered before they are written out.
FLUSH_EVERY = 10


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1_048_576)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class LagProbe:
    """Records how late each LAG_INTERVAL timer fires; see the module docstring."""

    def __init__(self, path: str, interval: float = LAG_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._pending: list[str] = []
        self._expected = 0.0

    def start(self, call_later: Callable[[float, Callable[[], None]], Any]) -> None:
        """Schedule the first sample with the framework's ``call_later(delay, fn)``."""
        self._call_later = call_later
        self._expected = time.monotonic() + self.interval
        call_later(self.interval, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        self.record(now, now - self._expected)
        self._expected = now + self.interval
        self._call_later(self.interval, self._tick)

    def record(self, now: float, late: float) -> None:
        """Keep one sample; write the buffered ones out every FLUSH_EVERY samples."""
        self._pending.append(f"{now:.6f} {late:.6f}\n")
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Append the buffered samples to the file."""
        if self._pending:
            with open(self.path, "a") as f:
                f.writelines(self._pending)
            self._pending.clear()


def lag_probe_from_env() -> LagProbe | None:
    """Return a LagProbe writing to ``$BENCH_LAG_FILE``, or None when it is not set."""
    path = os.environ.get("BENCH_LAG_FILE")
    return LagProbe(path) if path else None


def start_lag_probe(call_later: Callable[[float, Callable[[], None]], Any]) -> LagProbe | None:
    """Start a lag probe on ``call_later`` when ``$BENCH_LAG_FILE`` is set."""
    probe = lag_probe_from_env()
    if probe is not None:
        probe.start(call_later)
    return probe
