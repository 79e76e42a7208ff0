"""--fail-if thresholds: the grammar, and judging runs against it."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from daemonkit.bots.result import RunResult
from daemonkit.bots.stats import Stats
from daemonkit.bots.thresholds import Threshold, check_thresholds, parse_threshold

# -- parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "operation", "metric", "op", "value", "unit"),
    [
        ("p99>50ms", None, "p99", ">", 50.0, "ms"),
        ("  p99 >  50 ms ", None, "p99", ">", 50.0, "ms"),
        ("p99>50", None, "p99", ">", 50.0, "ms"),  # a bare latency is milliseconds
        ("p50<=250us", None, "p50", "<=", 250.0, "us"),
        ("max>=1.5s", None, "max", ">=", 1.5, "s"),
        ("mean<2e3us", None, "mean", "<", 2000.0, "us"),
        ("min==1µs", None, "min", "==", 1.0, "us"),
        ("p95!=.5ms", None, "p95", "!=", 0.5, "ms"),
        ("P99>5MS", None, "p99", ">", 5.0, "ms"),
        ("p99.9>5ms", None, "p99.9", ">", 5.0, "ms"),
        ("echo.p99>5ms", "echo", "p99", ">", 5.0, "ms"),
        ("echo.p99.9>5ms", "echo", "p99.9", ">", 5.0, "ms"),
        ("Echo.P90 > 1", "Echo", "p90", ">", 1.0, "ms"),
        ("user.login.max>1s", "user.login", "max", ">", 1.0, "s"),
        ("connect_p99>100ms", None, "connect_p99", ">", 100.0, "ms"),
        ("connect_p99.9>1s", None, "connect_p99.9", ">", 1.0, "s"),
        ("errors>0", None, "errors", ">", 0.0, ""),
        ("echo.errors>=10", "echo", "errors", ">=", 10.0, ""),
        ("requests<1000", None, "requests", "<", 1000.0, ""),
        ("rps<1e4", None, "rps", "<", 10000.0, ""),
        ("error_rate>1%", None, "error_rate", ">", 1.0, "%"),
        ("error_rate > 0.5", None, "error_rate", ">", 0.5, "%"),
        ("echo.error_rate>=2 %", "echo", "error_rate", ">=", 2.0, "%"),
    ],
)
def test_parse_good(
    text: str, operation: str | None, metric: str, op: str, value: float, unit: str
) -> None:
    threshold = parse_threshold(text)
    assert (threshold.operation, threshold.metric, threshold.op) == (operation, metric, op)
    assert (threshold.value, threshold.unit) == (value, unit)
    assert threshold.text == "".join(text.split()) == str(threshold)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "no comparison"),
        ("p99", "no comparison"),
        ("p99=5ms", "'=' alone is not one"),
        ("p99=>5ms", "expected METRIC OP NUMBER[UNIT]"),
        ("p99>", "expected METRIC OP NUMBER[UNIT]"),
        ("p99>fast", "expected METRIC OP NUMBER[UNIT]"),
        ("p99>5ms later", "expected METRIC OP NUMBER[UNIT]"),
        (">5ms", "missing metric"),
        ("p98>5ms", "'p98' is neither a METRIC nor OPERATION.METRIC"),
        ("p99.8>5ms", "'p99.8' is neither"),
        ("echo.latency>5ms", "'echo.latency' is neither"),
        (".p99>5ms", "'.p99' is neither"),
        ("p99>5kb", "unknown unit 'kb' for p99; use us, ms or s"),
        ("p99>5%", "unknown unit '%'"),
        ("errors>5ms", "errors takes a plain number, not 'ms'"),
        ("rps>5/s", "rps takes a plain number, not '/s'"),
        ("requests>5k", "requests takes a plain number"),
        ("error_rate>5ms", "error_rate is a percentage"),
        ("echo.connect_p99>5ms", "connect_ metrics cover all connects"),
    ],
)
def test_parse_bad(text: str, complaint: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_threshold(text)
    message = str(info.value)
    assert complaint in message
    assert message.startswith(f"bad threshold {text!r}: ")
    assert "[OPERATION.]METRIC OP VALUE[UNIT]" in message  # the grammar is shown


# -- checking -----------------------------------------------------------------------


@pytest.fixture
def result() -> RunResult:
    """echo: 1..1000 ms and 10 timeouts; login: 100 x 5 ms; 20 connects of 3 ms, 2 refused."""
    stats = Stats()
    for i in range(1, 1001):
        stats.record("echo", i / 1000)
    for _ in range(10):
        stats.fail("echo", "timeout")
    for _ in range(100):
        stats.record("login", 0.005)
    stats.fail("broken", "reset")
    for _ in range(20):
        stats.connected(0.003)
    stats.connect_failed("refused")
    stats.connect_failed("refused")
    return RunResult(target="t", bot="B", bots=20, duration=10, elapsed=10.0, stats=stats)


def p(percent: float, op: str | None = None) -> Callable[[Stats], float]:
    def read(stats: Stats) -> float:
        hist = stats.latency() if op is None else stats.operations[op].latency
        return hist.percentile(percent)

    return read


@pytest.mark.parametrize(
    ("text", "violated", "expected"),
    [
        # latency, in the threshold's unit
        ("p99>2s", False, lambda s: p(99)(s)),
        ("p99>500ms", True, lambda s: p(99)(s) * 1e3),
        ("p99 > 0.5s", True, lambda s: p(99)(s)),
        ("p50<=400000us", False, lambda s: p(50)(s) * 1e6),
        ("p99.9>=999", True, lambda s: p(99.9)(s) * 1e3),
        ("echo.p99>900ms", True, lambda s: p(99, "echo")(s) * 1e3),
        ("echo.p99<900ms", False, lambda s: p(99, "echo")(s) * 1e3),
        ("login.p99>6ms", False, lambda s: 5.0),
        ("login.max<6ms", True, lambda s: 5.0),
        ("login.min!=5ms", False, lambda s: 5.0),
        ("mean>600ms", False, lambda s: (500.5 * 1000 + 5 * 100) / 1100),
        ("min<2ms", True, lambda s: 1.0),
        ("connect_p99>2ms", True, lambda s: 3.0),
        ("connect_max<1s", True, lambda s: 0.003),
        # counts and rates
        ("errors>12", True, lambda s: 13.0),  # 11 operations + 2 connects
        ("echo.errors>=10", True, lambda s: 10.0),
        ("login.errors>0", False, lambda s: 0.0),
        ("requests!=1100", False, lambda s: 1100.0),
        ("echo.requests==1000", True, lambda s: 1000.0),
        ("rps<100", False, lambda s: 110.0),
        ("echo.rps<=100", True, lambda s: 100.0),
        ("error_rate>1%", False, lambda s: 100 * 11 / 1111),  # operations only
        ("echo.error_rate>0.5", True, lambda s: 100 * 10 / 1010),
        ("broken.error_rate>=100%", True, lambda s: 100.0),
    ],
)
def test_check(
    result: RunResult, text: str, violated: bool, expected: Callable[[Stats], float]
) -> None:
    threshold = parse_threshold(text)
    got_violated, actual, line = threshold.check(result)
    assert got_violated is violated
    assert actual == pytest.approx(expected(result.stats))
    assert line.startswith(("FAIL " if violated else "ok ") + threshold.text + ": actual ")
    assert line.endswith(threshold.unit)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("errors>12", "FAIL errors>12: actual 13"),
        ("echo.error_rate>0.5", "FAIL echo.error_rate>0.5: actual 0.9901%"),
        ("rps<100", "ok rps<100: actual 110"),
        ("echo.p50 > 400ms", "FAIL echo.p50>400ms: actual 501.8ms"),
        ("echo.p50>0.4s", "FAIL echo.p50>0.4s: actual 0.5018s"),
        ("echo.rps>=1e4", "ok echo.rps>=1e4: actual 100"),
    ],
)
def test_check_lines(result: RunResult, text: str, line: str) -> None:
    assert parse_threshold(text).check(result)[2] == line


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("nope.p99>1ms", "FAIL nope.p99>1ms: no operation named 'nope' ran"),
        ("nope.errors>0", "FAIL nope.errors>0: no operation named 'nope' ran"),
        ("broken.p99>1ms", "FAIL broken.p99>1ms: no successful operations to measure"),
    ],
)
def test_nothing_to_measure_is_a_violation(result: RunResult, text: str, line: str) -> None:
    violated, actual, got = parse_threshold(text).check(result)
    assert violated is True and math.isnan(actual) and got == line


def test_empty_run() -> None:
    empty = RunResult(target="t", bot="B", bots=1, duration=1, elapsed=0.0, stats=Stats())
    lines = check_thresholds(
        empty, [parse_threshold(t) for t in ("error_rate>1", "p99>1s", "errors>0", "rps<1")]
    )
    assert lines == [
        "FAIL error_rate>1: no operations to measure",
        "FAIL p99>1s: no successful operations to measure",
        "FAIL rps<1: actual 0",
    ]


def test_check_thresholds_returns_failures_in_order(result: RunResult) -> None:
    thresholds = [parse_threshold(t) for t in ("rps<100", "p99>500ms", "x.p50>1", "errors>12")]
    lines = check_thresholds(result, thresholds)
    assert [line.split(":")[0] for line in lines] == [
        "FAIL p99>500ms",
        "FAIL x.p50>1",
        "FAIL errors>12",
    ]
    assert check_thresholds(result, [parse_threshold("p99>2s")]) == []
    assert check_thresholds(result, []) == []


def test_threshold_is_a_value() -> None:
    a, b = parse_threshold("echo.p99 > 5ms"), parse_threshold("echo.p99>5ms")
    assert a == b and hash(a) == hash(b)
    assert isinstance(a, Threshold)
    with pytest.raises(AttributeError):
        a.value = 1.0  # type: ignore[misc]
