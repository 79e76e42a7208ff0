"""Thresholds: the ``--fail-if`` conditions that turn a run into a pass or a fail.

A threshold names a condition under which the run FAILS, e.g. ``p99>50ms``
(fail if the 99th percentile is above 50 ms) or ``echo.error_rate>=1%``.
See :data:`GRAMMAR`. :func:`parse_threshold` reads one,
:meth:`Threshold.check` judges one against a
:class:`~daemonkit.bots.result.RunResult`, :func:`check_thresholds` judges
several and returns the lines of those that failed.

A latency threshold on a measure with no successful operation, or an
``error_rate`` when no operation ran at all, counts as violated: a gate
must not pass because nothing was measured.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from daemonkit.bots.histogram import Histogram
from daemonkit.bots.result import RunResult

__all__ = ["Threshold", "check_thresholds", "parse_threshold"]

GRAMMAR = """\
threshold grammar: [OPERATION.]METRIC OP VALUE[UNIT]   (fails the run when true)
  METRIC  latency: p50 p90 p95 p99 p99.9 max mean min   units us ms s (bare number = ms)
          connect_<latency metric>, e.g. connect_p99     (connect times; no OPERATION)
          errors (count)  requests (successful, count)  rps (successful per second)
          error_rate (percent of operations that failed; 1 and 1% both mean 1 percent)
          (without OPERATION: latencies, requests and rps cover requests, not record())
  OP      > >= < <= == !=
  e.g.    p99>50ms   echo.p99.9 >= 5ms   error_rate>1%   rps<1000   connect_max>1s"""

_LATENCY = ("p50", "p90", "p95", "p99", "p99.9", "max", "mean", "min")
_COUNTS = ("errors", "requests", "rps", "error_rate")
_METRICS = (*_LATENCY, *(f"connect_{m}" for m in _LATENCY), *_COUNTS)
_SECONDS_PER = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_PATTERN = re.compile(
    r"""\s*(?P<lhs>[^<>=!]*?)\s*(?P<op>>=|<=|==|!=|>|<)\s*
    (?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>\S*?)\s*""",
    re.VERBOSE,
)


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


@dataclass(frozen=True)
class Threshold:
    """One parsed ``--fail-if`` condition; build it with :func:`parse_threshold`.

    ``metric`` is one of the grammar's metrics (lower case), ``operation``
    the operation it is limited to (None: all operations), ``value`` the
    limit in ``unit`` (``"us"``, ``"ms"``, ``"s"`` for latencies, ``"%"``
    for ``error_rate``, ``""`` for counts and rates). ``text`` is the
    condition as written, without spaces.
    """

    text: str
    operation: str | None
    metric: str
    op: str
    value: float
    unit: str

    def __str__(self) -> str:
        return self.text

    def actual(self, result: RunResult) -> float:
        """The measured value in this threshold's unit (NaN when there is nothing to measure).

        Without an operation, latencies, ``requests`` and ``rps`` cover the
        requests (not the custom measures of ``record()``), ``errors`` counts
        every failure, failed connects too, and ``error_rate`` is over all
        operations, measures included. Raises ``LookupError`` when
        :attr:`operation` did not run.
        """
        stats, metric = result.stats, self.metric
        if metric.startswith("connect_"):
            return self._latency(stats.connect, metric.removeprefix("connect_"))
        if self.operation is None:
            count, failures, errors = stats.requests, _op_failures(result), stats.errors
            attempts = sum(op.count + op.failures for op in stats.operations.values())
            hist = None
        else:
            op = stats.operations.get(self.operation)
            if op is None:
                raise LookupError(f"no operation named {self.operation!r} ran")
            count, failures, errors = op.count, op.failures, op.failures
            attempts = count + failures
            hist = op.latency
        if metric in _LATENCY:
            return self._latency(stats.latency() if hist is None else hist, metric)
        if metric == "errors":
            return float(errors)
        if metric == "requests":
            return float(count)
        if metric == "rps":
            return count / result.elapsed if result.elapsed > 0 else 0.0
        # error_rate
        return 100.0 * failures / attempts if attempts else math.nan

    def _latency(self, hist: Histogram, metric: str) -> float:
        if hist.count == 0:
            return math.nan
        if metric == "mean":
            seconds = hist.mean
        elif metric == "min":
            seconds = hist.min
        elif metric == "max":
            seconds = hist.max
        else:
            seconds = hist.percentile(float(metric[1:]))
        return seconds / _SECONDS_PER[self.unit]

    def check(self, result: RunResult) -> tuple[bool, float, str]:
        """``(violated, actual, line)``: whether the run fails this condition,
        the measured value in this threshold's unit (NaN if none), and a line
        such as ``FAIL p99>50ms: actual 72.1ms``.
        """
        try:
            actual = self.actual(result)
        except LookupError as exc:
            return True, math.nan, f"FAIL {self.text}: {exc.args[0]}"
        if math.isnan(actual):
            what = "no successful operations" if self.metric != "error_rate" else "no operations"
            return True, actual, f"FAIL {self.text}: {what} to measure"
        violated = _OPS[self.op](actual, self.value)
        word = "FAIL" if violated else "ok"
        return violated, actual, f"{word} {self.text}: actual {_number(actual)}{self.unit}"


def _op_failures(result: RunResult) -> int:
    return sum(op.failures for op in result.stats.operations.values())


def _fail(text: str, why: str) -> ValueError:
    return ValueError(f"bad threshold {text!r}: {why}\n{GRAMMAR}")


def _split_metric(text: str, lhs: str) -> tuple[str | None, str]:
    """``"echo.p99.9"`` -> ``("echo", "p99.9")``; ``"p99.9"`` -> ``(None, "p99.9")``."""
    if not lhs:
        raise _fail(text, "missing metric before the comparison")
    if lhs.lower() in _METRICS:
        return None, lhs.lower()
    for metric in sorted(_METRICS, key=len, reverse=True):
        if lhs.lower().endswith("." + metric):
            operation = lhs[: -len(metric) - 1]
            if operation:
                return operation, metric
    raise _fail(text, f"{lhs!r} is neither a METRIC nor OPERATION.METRIC")


def parse_threshold(text: str) -> Threshold:
    """Parse ``[OPERATION.]METRIC OP VALUE[UNIT]``, e.g. ``"echo.p99 > 5ms"``.

    A bare number for a latency metric means milliseconds; ``error_rate`` is
    always in percent (``%`` optional); counts and ``rps`` take no unit.
    Raises ``ValueError`` naming the problem and showing :data:`GRAMMAR`.
    """
    match = _PATTERN.fullmatch(text)
    if match is None:
        if not any(op in text for op in _OPS):
            raise _fail(text, "no comparison (one of > >= < <= == !=; '=' alone is not one)")
        raise _fail(text, "expected METRIC OP NUMBER[UNIT]")
    operation, metric = _split_metric(text, match["lhs"])
    if operation is not None and metric.startswith("connect_"):
        raise _fail(text, "connect_ metrics cover all connects, not one operation")
    unit = match["unit"]
    is_latency = metric in _LATENCY or metric.startswith("connect_")
    if is_latency:
        unit = unit.lower() or "ms"
        if unit not in _SECONDS_PER:
            raise _fail(text, f"unknown unit {match['unit']!r} for {metric}; use us, ms or s")
        unit = "us" if unit == "µs" else unit
    elif metric == "error_rate":
        if unit not in ("", "%"):
            raise _fail(text, f"error_rate is a percentage; unit {unit!r} is not '%'")
        unit = "%"
    elif unit:
        raise _fail(text, f"{metric} takes a plain number, not {unit!r}")
    value = float(match["value"])
    if not math.isfinite(value):
        raise _fail(text, "the value must be a finite number")
    return Threshold(
        text="".join(text.split()),
        operation=operation,
        metric=metric,
        op=match["op"],
        value=value,
        unit=unit,
    )


def check_thresholds(result: RunResult, thresholds: Iterable[Threshold]) -> list[str]:
    """The lines of the thresholds ``result`` violates, in order (empty: the run passes)."""
    lines = []
    for threshold in thresholds:
        violated, _, line = threshold.check(result)
        if violated:
            lines.append(line)
    return lines
