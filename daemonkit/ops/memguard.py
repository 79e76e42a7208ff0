"""The memory guard: notice when the process's resident memory passes a limit.

``--max-memory 512M`` (the ``max_memory`` setting, in bytes) makes a running
daemon sample its RSS every ``memory_check_interval`` seconds; past the
limit it recycles itself with a zero-downtime upgrade
(:mod:`daemonkit.ops.upgrade` owns the timer and the upgrade). A leaking
application is thereby replaced by a fresh process before the OOM killer
takes it and its users down, as RoadRunner's ``max_worker_memory`` and
PHP-FPM's ``pm.max_requests`` recycle workers.

Rules it keeps: no I/O but the sample function it is given, no timer of
its own (its owner calls :meth:`MemoryGuard.exceeded` on one), and no
more than one trigger per :data:`MEMORY_RETRY_DELAY`, so an upgrade that
keeps failing is not retried on every sample.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from daemonkit.daemon import DEFAULT_MEMORY_CHECK_INTERVAL, check_memory_settings
from daemonkit.ops.metrics import resident_memory

__all__ = [
    "DEFAULT_MEMORY_CHECK_INTERVAL",
    "MEMORY_RETRY_DELAY",
    "MemoryGuard",
    "check_memory_settings",
    "format_size",
    "parse_size",
]

#: Seconds before the guard triggers again while memory stays over the
#: limit (after an upgrade that failed: broken new code fails again, and
#: each attempt starts a process). systemd's default restart throttle
#: allows 5 starts in 10 s; one a minute keeps the log readable.
MEMORY_RETRY_DELAY = 60.0

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from a size such as ``512M``, ``1.5G``, ``300MiB`` or ``1048576``.

    Units are powers of 1024 (as ``ulimit``, systemd's ``MemoryMax=`` and
    Docker's ``--memory`` read them). Raises ``ValueError`` with an example
    of what to write instead.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size; write e.g. 512M, 1G or 1048576 (bytes)")
    number, unit = match.groups()
    amount = float(number) * _UNITS[unit.upper()]
    if not math.isfinite(amount):  # hundreds of digits: int() would raise OverflowError
        raise ValueError(f"{text!r} is too large for a size; write e.g. 512M or 2G")
    value = int(amount)
    if value <= 0:
        raise ValueError(f"{text!r} must be more than 0 bytes")
    return value


def format_size(n: int) -> str:
    """``n`` bytes as a short readable figure (``612.3 MiB``)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class MemoryGuard:
    """Says when resident memory is over ``limit`` bytes, at most once per ``retry`` seconds.

    ``sample()`` returns the RSS in bytes, or None where it cannot be read
    (then the guard never triggers). ``now()`` is the owner's clock. Call
    :meth:`exceeded` on a timer; when it returns a figure, act on it (log,
    upgrade).
    """

    __slots__ = ("_last", "limit", "now", "retry", "sample", "triggers")

    def __init__(
        self,
        limit: int,
        now: Callable[[], float],
        *,
        sample: Callable[[], int | None] = resident_memory,
        retry: float = MEMORY_RETRY_DELAY,
    ) -> None:
        check_memory_settings(limit, 1.0)
        self.limit = limit
        self.now = now
        self.sample = sample
        self.retry = retry
        self._last: float | None = None
        #: How many times the guard has triggered.
        self.triggers = 0

    def exceeded(self) -> int | None:
        """The RSS when it is over the limit and the guard may trigger now, else None."""
        rss = self.sample()
        if rss is None or rss <= self.limit:
            return None
        now = self.now()
        if self._last is not None and now - self._last < self.retry:
            return None
        self._last = now
        self.triggers += 1
        return rss
