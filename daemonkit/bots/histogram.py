"""Histogram: a log-linear latency histogram in the manner of HdrHistogram.

Values are seconds, rounded up to whole microseconds, in buckets whose width
grows with the value: exact up to 255 µs, then 128 buckets per power of two. So any
recorded value is known to within 1/128 of itself (0.8 %; the reported value
is the bucket's upper edge, as HdrHistogram's "highest equivalent value"), a
resolution that holds from 1 µs to an hour in 3,328 counters. ``min``,
``max`` and the mean are exact. Recording is a few integer operations and
one list increment, cheap enough for every request of every bot.

Histograms merge by adding counts, so the workers of ``--procs`` and the
per-second intervals combine without losing precision. ``to_dict`` /
``from_dict`` carry one through JSON sparsely (only non-zero counters).
"""

from __future__ import annotations

from collections.abc import Iterable
from math import ceil as _ceil
from typing import Any

__all__ = ["MAX_SECONDS", "RELATIVE_PRECISION", "Histogram"]

_SUB_BITS = 7  # 128 buckets per power of two
_SUB = 1 << _SUB_BITS
_EXACT_BITS = _SUB_BITS + 1  # values below 256 µs are exact
_MAX_US = 3_600_000_000  # one hour: beyond it a value is clamped (and max says so)
_BUCKETS = ((_MAX_US.bit_length() - _EXACT_BITS) << _SUB_BITS) + (1 << _EXACT_BITS)

#: The largest value a histogram resolves (larger ones count in the top bucket).
MAX_SECONDS = _MAX_US / 1e6
#: Worst-case relative error of a reported percentile.
RELATIVE_PRECISION = 1 / _SUB


def _index(us: int) -> int:
    shift = us.bit_length() - _EXACT_BITS
    if shift <= 0:
        return us
    return (shift << _SUB_BITS) + (us >> shift)


def _upper(index: int) -> int:
    """The largest microsecond value that lands in bucket ``index``."""
    if index < (1 << _EXACT_BITS):
        return index
    shift = (index >> _SUB_BITS) - 1
    base = index - (shift << _SUB_BITS)
    return ((base + 1) << shift) - 1


class Histogram:
    """Counts of latencies in log-linear buckets; see the module docstring.

    ``record(seconds)`` adds one value; ``percentile(p)`` (p in 0..100) reads
    one back; ``merge(other)`` adds another histogram's counts. Negative
    values count as zero, values over an hour as an hour.
    """

    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts: list[int] = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.min = 0.0
        self.max = 0.0

    def record(self, seconds: float) -> None:
        """Add one value, in seconds."""
        if seconds < 0.0:
            seconds = 0.0
        # Rounded up to whole µs (less float noise), so nothing is understated.
        us = _ceil(seconds * 1e6 - 1e-6)
        if us > _MAX_US:
            us = _MAX_US
        shift = us.bit_length() - _EXACT_BITS
        self._counts[us if shift <= 0 else (shift << _SUB_BITS) + (us >> shift)] += 1
        if self.count == 0 or seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds
        self.count += 1
        self.total += seconds

    def record_many(self, values: Iterable[float]) -> None:
        """Add each of ``values``."""
        for value in values:
            self.record(value)

    @property
    def mean(self) -> float:
        """The exact mean of the recorded values (0.0 when empty)."""
        return self.total / self.count if self.count else 0.0

    def percentile(self, p: float) -> float:
        """The value at or below which ``p`` percent of the values lie, in seconds.

        Reported as the upper edge of its bucket (never above :attr:`max`),
        so it overstates by at most :data:`RELATIVE_PRECISION`. 0.0 when empty.
        Raises ``ValueError`` unless 0 <= p <= 100.
        """
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be within 0..100, not {p!r}")
        if self.count == 0:
            return 0.0
        if p == 0.0:
            return self.min
        # The rank of the value: the smallest n with n >= p% of count.
        rank = max(1, -int(-(p * self.count) // 100))
        seen = 0
        for index, n in enumerate(self._counts):
            if n:
                seen += n
                if seen >= rank:
                    return min(max(_upper(index) / 1e6, self.min), self.max)
        return self.max

    def percentiles(self, ps: Iterable[float]) -> dict[float, float]:
        """:meth:`percentile` for each of ``ps``, in one pass."""
        wanted = sorted(set(ps))
        return {p: self.percentile(p) for p in wanted}

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts to this histogram."""
        if other.count == 0:
            return
        counts = self._counts
        for index, n in enumerate(other._counts):
            if n:
                counts[index] += n
        if self.count == 0 or other.min < self.min:
            self.min = other.min
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def _snapshot(self) -> tuple[list[int], int, float]:
        """The counts so far, for :meth:`_since` (interval = now minus a snapshot)."""
        return list(self._counts), self.count, self.total

    def _since(self, snapshot: tuple[list[int], int, float], maximum: float) -> Histogram:
        """What was recorded after ``snapshot``; ``maximum`` is its exact max (the
        min is the lower edge of its first bucket)."""
        new = Histogram()
        before, count, total = snapshot
        new._counts = [a - b for a, b in zip(self._counts, before, strict=True)]
        new.count = self.count - count
        new.total = self.total - total
        if new.count:
            first = next(i for i, n in enumerate(new._counts) if n)
            new.min = (_upper(first - 1) + 1) / 1e6 if first else 0.0
            new.max = maximum
        return new

    def copy(self) -> Histogram:
        """An independent copy."""
        new = Histogram()
        new.merge(self)
        return new

    def clear(self) -> None:
        """Forget every value."""
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.min = 0.0
        self.max = 0.0

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self._counts == other._counts
            and self.count == other.count
            and self.min == other.min
            and self.max == other.max
            and abs(self.total - other.total) <= 1e-9 * max(1.0, abs(self.total))
        )

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: summary figures and the non-zero buckets."""
        return {
            "unit": "us",
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
            "buckets": {str(i): n for i, n in enumerate(self._counts) if n},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        """Rebuild a histogram made by :meth:`to_dict`; ``ValueError`` if malformed."""
        new = cls()
        try:
            for key, n in data["buckets"].items():
                index = int(key)
                if not 0 <= index < _BUCKETS or int(n) < 0:
                    raise ValueError(f"bucket {key}={n} out of range")
                new._counts[index] = int(n)
            new.count = int(data["count"])
            new.total = float(data["total"])
            new.min = float(data["min"])
            new.max = float(data["max"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a histogram: {exc}") from exc
        if sum(new._counts) != new.count:
            raise ValueError("histogram buckets do not add up to its count")
        return new

    def __repr__(self) -> str:
        if not self.count:
            return "<Histogram empty>"
        return (
            f"<Histogram n={self.count} p50={self.percentile(50) * 1e3:.3f}ms "
            f"p99={self.percentile(99) * 1e3:.3f}ms max={self.max * 1e3:.3f}ms>"
        )
