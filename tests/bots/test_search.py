"""--max-rate-search against model servers: no sockets, no sleeping."""

from __future__ import annotations

import json
import math

import pytest

from daemonkit.bots.result import RunResult
from daemonkit.bots.search import DELIVERED_SHARE, SearchResult, Trial, search_max_rate
from daemonkit.bots.stats import Stats

FAST = 0.001  # p99 below capacity
SLOW = 0.100  # p99 above capacity
TARGET = 0.010
SAMPLES = 200  # latencies recorded per trial; rps comes from elapsed


def run_result(rps: float, latency: float, errors: int = 0) -> RunResult:
    """A finished run that completed ``rps`` requests/s, each taking ``latency`` s."""
    stats = Stats()
    for _ in range(SAMPLES if rps > 0 else 0):
        stats.record("echo", latency)
    for _ in range(errors):
        stats.fail("echo", "timeout")
    elapsed = SAMPLES / rps if rps > 0 else 1.0
    return RunResult(
        target="127.0.0.1:1", bot="echo", bots=1, duration=elapsed, elapsed=elapsed, stats=stats
    )


class Server:
    """A server of capacity ``capacity``/s: fast and keeping up up to it, slow above."""

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.rates: list[float] = []

    def __call__(self, rate: float) -> RunResult:
        self.rates.append(rate)
        latency = FAST if rate <= self.capacity else SLOW
        return run_result(min(rate, self.capacity), latency)


def test_run_result_model() -> None:
    run = run_result(1234.0, FAST)
    assert run.rps == pytest.approx(1234.0)
    assert run.stats.latency().percentile(99) == FAST
    assert run.stats.errors == 0


# -- finding the capacity ---------------------------------------------------------


@pytest.mark.parametrize("capacity", [100.0, 150.0, 1_000.0, 1_234.5, 7_777.0, 50_000.0, 30.0])
@pytest.mark.parametrize("precision", [0.1, 0.02])
def test_finds_capacity_from_below(capacity: float, precision: float) -> None:
    server = Server(capacity)
    result = search_max_rate(server, p99=TARGET, precision=precision, max_steps=60)
    best = result.best
    assert best is not None
    assert best.rate <= capacity
    assert best.rate >= capacity / (1 + precision)
    assert best.passed
    assert best.p99 == FAST
    assert best.errors == 0
    assert [t.rate for t in result.trials] == server.rates
    # Every step's verdict matches the model, and nothing above capacity passed.
    for t in result.trials:
        assert t.passed is (t.rate <= capacity), t
    # The search stopped because it converged, not because it ran out of steps.
    assert len(result.trials) < 60
    failed_above = min(t.rate for t in result.trials if not t.passed)
    assert (failed_above - best.rate) / best.rate <= precision


def test_doubles_then_bisects() -> None:
    server = Server(1_000.0)
    result = search_max_rate(server, p99=TARGET, start=100.0, precision=0.1)
    assert server.rates == [100, 200, 400, 800, 1600, 1200, 1000, 1100]
    assert [t.passed for t in result.trials] == [1, 1, 1, 1, 0, 0, 1, 0]
    assert result.best is not None
    assert result.best.rate == 1000
    assert [t.rps for t in result.trials] == pytest.approx(
        [100, 200, 400, 800, 1000, 1000, 1000, 1000]
    )
    assert [t.p99 for t in result.trials] == [FAST] * 4 + [SLOW, SLOW, FAST, SLOW]


def test_halves_when_start_fails_then_bisects() -> None:
    server = Server(30.0)
    result = search_max_rate(server, p99=TARGET, start=100.0, precision=0.1)
    assert server.rates == [100, 50, 25, 37.5, 31.25, 28.125, 29.6875]
    assert result.best is not None
    assert result.best.rate == 29.6875


def test_log_gets_one_line_per_trial() -> None:
    lines: list[str] = []
    result = search_max_rate(Server(1_000.0), p99=TARGET, precision=0.1, log=lines.append)
    assert len(lines) == len(result.trials) == 8
    assert lines[0] == "rate 100/s: 100/s done, p99 1.000 ms, 0 errors: pass"
    assert lines[4] == "rate 1,600/s: 1,000/s done, p99 100.000 ms, 0 errors: fail"


# -- what makes a step fail ---------------------------------------------------------


def test_errors_fail_a_step() -> None:
    rates: list[float] = []

    def trial(rate: float) -> RunResult:
        rates.append(rate)
        # Keeps up and stays fast at every rate, but errors from 500/s on.
        return run_result(rate, FAST, errors=1 if rate >= 500 else 0)

    result = search_max_rate(trial, p99=TARGET, precision=0.05, max_steps=40)
    assert result.best is not None
    assert 500 / 1.05 <= result.best.rate < 500
    for t in result.trials:
        assert t.p99 == FAST
        assert t.passed is (t.errors == 0)
        assert t.errors == (1 if t.rate >= 500 else 0)
    assert rates[:4] == [100, 200, 400, 800]


def test_one_error_fails_even_the_first_step() -> None:
    result = search_max_rate(lambda rate: run_result(rate, FAST, errors=1), p99=TARGET, max_steps=3)
    assert [t.passed for t in result.trials] == [False, False, False]
    assert result.best is None


def test_under_delivery_fails_a_step() -> None:
    capacity = 2_000.0

    def trial(rate: float) -> RunResult:
        # Latency stays low (the bots just could not send faster): only rps betrays it.
        return run_result(min(rate, capacity), FAST)

    result = search_max_rate(trial, p99=TARGET, precision=0.01, max_steps=60)
    best = result.best
    assert best is not None
    limit = capacity / DELIVERED_SHARE  # the highest rate that delivers enough
    assert best.rate <= limit
    assert best.rate >= limit / 1.01
    assert best.rate > capacity  # 95 % of the asked rate is enough
    for t in result.trials:
        assert t.p99 == FAST
        assert t.passed is (t.rps >= DELIVERED_SHARE * t.rate)


@pytest.mark.parametrize(
    ("delivered", "passed"), [(95.0, True), (94.9, False), (100.0, True), (0.0, False)]
)
def test_delivered_share_boundary(delivered: float, passed: bool) -> None:
    assert DELIVERED_SHARE == 0.95
    result = search_max_rate(
        lambda rate: run_result(delivered, FAST), p99=TARGET, start=100.0, max_steps=1
    )
    assert len(result.trials) == 1
    assert result.trials[0].rate == 100.0
    assert result.trials[0].passed is passed


@pytest.mark.parametrize(("latency", "passed"), [(TARGET, True), (TARGET * 1.01, False)])
def test_p99_at_target_passes(latency: float, passed: bool) -> None:
    result = search_max_rate(lambda rate: run_result(rate, latency), p99=TARGET, max_steps=1)
    assert result.trials[0].p99 == latency
    assert result.trials[0].passed is passed


def test_p99_not_mean_decides() -> None:
    def trial(rate: float) -> RunResult:
        run = run_result(rate, FAST)
        if rate > 300:  # 3 % slow requests: mean is fine, p99 is not
            for _ in range(SAMPLES * 3 // 97 + 1):
                run.stats.record("echo", SLOW)
        return run

    result = search_max_rate(trial, p99=TARGET, precision=0.1, max_steps=40)
    assert result.best is not None
    assert 300 / 1.1 <= result.best.rate <= 300
    slow = [t for t in result.trials if t.rate > 300]
    assert slow
    assert all(t.p99 == SLOW and not t.passed for t in slow)


# -- nothing passes, step limits, arguments ------------------------------------------


def test_nothing_passes() -> None:
    server = Server(0.5)  # too slow for any rate >= 1/s
    result = search_max_rate(server, p99=TARGET, start=100.0)
    assert server.rates == [100, 50, 25, 12.5, 6.25, 3.125, 1.5625]  # stops below 1/s
    assert result.best is None
    assert not any(t.passed for t in result.trials)
    text = result.format()
    assert "no rate kept p99 under the target" in text
    assert "highest rate" not in text
    assert result.to_dict()["best_rate"] is None
    assert len(result.to_dict()["trials"]) == 7


@pytest.mark.parametrize("max_steps", [1, 2, 5, 9])
def test_max_steps_bounds_the_trials(max_steps: int) -> None:
    server = Server(math.inf)  # always passes: the search would double for ever
    result = search_max_rate(server, p99=TARGET, start=100.0, max_steps=max_steps)
    assert len(result.trials) == len(server.rates) == max_steps
    assert server.rates == [100.0 * 2**i for i in range(max_steps)]
    assert result.best is not None
    assert result.best.rate == 100.0 * 2 ** (max_steps - 1)


def test_default_max_steps_is_fourteen() -> None:
    server = Server(math.inf)
    assert len(search_max_rate(server, p99=TARGET).trials) == 14


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p99": 0.0},
        {"p99": -0.01},
        {"p99": TARGET, "start": 0.0},
        {"p99": TARGET, "start": -100.0},
    ],
)
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    server = Server(1_000.0)
    with pytest.raises(ValueError, match="positive"):
        search_max_rate(server, **kwargs)
    assert server.rates == []  # rejected before any trial ran


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p99": TARGET, "max_steps": 0},
        {"p99": TARGET, "precision": -0.1},
        {"p99": math.nan},
    ],
    ids=["max_steps-0", "precision-negative", "p99-nan"],
)
def test_more_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        search_max_rate(Server(1_000.0), **kwargs)


# -- reporting ----------------------------------------------------------------------


def test_format_lists_every_trial() -> None:
    result = search_max_rate(Server(1_000.0), p99=TARGET, precision=0.1)
    text = result.format()
    lines = text.splitlines()
    assert lines[0] == "max-rate search: p99 target 10 ms"
    assert lines[2].split() == ["rate/s", "done/s", "p99", "ms", "errors", "result"]
    rows = lines[3 : 3 + len(result.trials)]
    assert [row.split() for row in rows] == [
        ["100", "100", "1.000", "0", "pass"],
        ["200", "200", "1.000", "0", "pass"],
        ["400", "400", "1.000", "0", "pass"],
        ["800", "800", "1.000", "0", "pass"],
        ["1,600", "1,000", "100.000", "0", "fail"],
        ["1,200", "1,000", "100.000", "0", "fail"],
        ["1,000", "1,000", "1.000", "0", "pass"],
        ["1,100", "1,000", "100.000", "0", "fail"],
    ]
    assert lines[-1] == "highest rate with p99 <= 10 ms: 1,000/s (p99 1.000 ms)"


def test_format_shows_errors() -> None:
    result = search_max_rate(
        lambda rate: run_result(rate, FAST, errors=1234), p99=TARGET, max_steps=1
    )
    row = result.format().splitlines()[3].split()
    assert row == ["100", "100", "1.000", "1,234", "fail"]


def test_to_dict() -> None:
    result = search_max_rate(Server(1_000.0), p99=TARGET, precision=0.1)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["target_p99"] == TARGET
    assert data["best_rate"] == 1000
    assert [t["rate"] for t in data["trials"]] == [100, 200, 400, 800, 1600, 1200, 1000, 1100]
    assert [t["passed"] for t in data["trials"]] == [1, 1, 1, 1, 0, 0, 1, 0]
    assert data["trials"][4] == {
        "rate": 1600.0,
        "rps": pytest.approx(1000.0),
        "p99": SLOW,
        "errors": 0,
        "passed": False,
        "violations": [],
        "reports": [],
    }


def test_search_result_best_and_empty() -> None:
    empty = SearchResult(target_p99=0.005)
    assert empty.best is None
    assert empty.to_dict() == {"target_p99": 0.005, "best_rate": None, "trials": []}
    assert empty.format().splitlines()[-1] == "no rate kept p99 under the target"
    # best is the highest passing rate, wherever it sits in the order of trials.
    result = SearchResult(
        target_p99=0.005,
        trials=[
            Trial(400.0, 400.0, 0.001, 0, True),
            Trial(800.0, 700.0, 0.002, 0, True),
            Trial(900.0, 900.0, 0.009, 0, False),
            Trial(600.0, 600.0, 0.001, 0, True),
        ],
    )
    assert result.best == Trial(800.0, 700.0, 0.002, 0, True)
    assert result.to_dict()["best_rate"] == 800.0
    assert "highest rate with p99 <= 5 ms: 800/s (p99 2.000 ms)" in result.format()
