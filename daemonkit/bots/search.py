"""``--max-rate-search``: the highest request rate that keeps p99 under a target.

As tcpkali's and wrk2's users do by hand: run the open model at a rate,
read p99 (measured from the scheduled send times, so overload shows as
latency), and move the rate. The search doubles the rate until a step
fails, then bisects between the last rate that passed and the first that
failed until they are within ``precision`` of each other. A step passes
when its p99 is at or under the target, the bots actually delivered at
least ``DELIVERED_SHARE`` of the rate asked for, and it passes ``check``
(the command line's ``--fail-if`` conditions; by default: no errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemonkit.bots.result import RunResult

__all__ = ["DELIVERED_SHARE", "SearchResult", "Trial", "search_max_rate"]

#: A step whose bots completed less than this share of the asked rate fails.
DELIVERED_SHARE = 0.95


@dataclass(frozen=True)
class Trial:
    """One step of the search: the rate asked for and what it gave.

    ``violations`` are the lines of the checks the step failed (beyond p99
    and the delivered rate); ``reports`` the files written for the step.
    """

    rate: float
    rps: float
    p99: float
    errors: int
    passed: bool
    violations: tuple[str, ...] = ()
    reports: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "rate": self.rate,
            "rps": self.rps,
            "p99": self.p99,
            "errors": self.errors,
            "passed": self.passed,
            "violations": list(self.violations),
            "reports": list(self.reports),
        }


@dataclass
class SearchResult:
    """The steps tried, in order, and the best passing rate (None if none passed)."""

    target_p99: float
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial | None:
        """The passing step with the highest rate."""
        passed = [t for t in self.trials if t.passed]
        return max(passed, key=lambda t: t.rate) if passed else None

    def format(self) -> str:
        """A table of the steps and the answer, for a person."""
        lines = [f"max-rate search: p99 target {self.target_p99 * 1e3:g} ms", ""]
        lines.append(f"{'rate/s':>12} {'done/s':>12} {'p99 ms':>10} {'errors':>8}  result")
        for t in self.trials:
            verdict = "pass" if t.passed else "fail"
            if t.violations:
                verdict += ": " + "; ".join(v.removeprefix("FAIL ") for v in t.violations)
            lines.append(
                f"{t.rate:>12,.0f} {t.rps:>12,.0f} {t.p99 * 1e3:>10.3f} {t.errors:>8,}  {verdict}"
            )
        best = self.best
        lines.append("")
        if best is None:
            lines.append("no rate kept p99 under the target")
        else:
            lines.append(
                f"highest rate with p99 <= {self.target_p99 * 1e3:g} ms: {best.rate:,.0f}/s "
                f"(p99 {best.p99 * 1e3:.3f} ms)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        best = self.best
        return {
            "target_p99": self.target_p99,
            "best_rate": best.rate if best else None,
            "trials": [t.to_dict() for t in self.trials],
        }


def search_max_rate(
    trial: Callable[[float], RunResult],
    *,
    p99: float,
    start: float = 100.0,
    precision: float = 0.1,
    max_steps: int = 14,
    log: Callable[[str], object] | None = None,
    check: Callable[[RunResult], Sequence[str]] | None = None,
    reports: Callable[[int, float, RunResult], Sequence[str]] | None = None,
) -> SearchResult:
    """Search the highest rate whose run (``trial(rate)``) keeps p99 at or under ``p99``.

    ``trial`` runs the open model at the given rate and returns its result.
    ``check(result)`` returns the lines of the conditions a step violates
    (empty: it passes them); by default a step with any error fails.
    ``reports(step, rate, result)`` writes a step's reports and returns
    their paths. At most ``max_steps`` runs are made, so the search always
    ends.
    """
    if not (0 < p99 < math.inf and 0 < start < math.inf):
        raise ValueError("p99 and start must be positive and finite")
    if max_steps < 1 or not precision > 0:
        raise ValueError("max_steps must be at least 1 and precision positive")
    result = SearchResult(target_p99=p99)
    good: float | None = None
    bad: float | None = None
    rate = start
    for step in range(1, max_steps + 1):
        run = trial(rate)
        measured = run.stats.latency().percentile(99)
        errors = run.stats.errors
        violations = tuple(check(run)) if check is not None else ()
        checked = not violations if check is not None else errors == 0
        passed = measured <= p99 and checked and run.rps >= DELIVERED_SHARE * rate
        written = tuple(reports(step, rate, run)) if reports is not None else ()
        result.trials.append(Trial(rate, run.rps, measured, errors, passed, violations, written))
        if log is not None:
            log(
                f"rate {rate:,.0f}/s: {run.rps:,.0f}/s done, p99 {measured * 1e3:.3f} ms, "
                f"{errors} errors: {'pass' if passed else 'fail'}"
            )
        if passed:
            good = rate
        else:
            bad = rate
        if bad is None:
            rate *= 2
        elif good is None:
            rate /= 2
            if rate < 1:
                break
        else:
            if (bad - good) / good <= precision:
                break
            rate = (good + bad) / 2
    return result
