"""Stats: per-operation totals, per-second intervals and samples, merging, JSON."""

from __future__ import annotations

import json
import random

import pytest

from daemonkit.bots.histogram import Histogram
from daemonkit.bots.stats import PERCENTILES, Interval, Operation, Sample, Stats


def make_stats() -> Stats:
    stats = Stats()
    for ms in (1, 2, 3, 4):
        stats.record("get", ms / 1000)
    stats.record("set", 0.010)
    stats.fail("get", "timeout")
    stats.fail("get", "timeout")
    stats.fail("set", "ConnectionResetError")
    stats.fail("del", "timeout")  # an operation that only ever failed
    stats.connected(0.0005)
    stats.connected(0.0015)
    stats.connect_failed("ConnectionRefusedError")
    return stats


def test_percentiles_constant() -> None:
    assert PERCENTILES == (50.0, 90.0, 99.0, 99.9)


# -- recording ----------------------------------------------------------------------


def test_record_and_fail_per_operation() -> None:
    stats = make_stats()
    assert set(stats.operations) == {"get", "set", "del"}
    get, set_, del_ = stats.operations["get"], stats.operations["set"], stats.operations["del"]
    assert (get.count, get.failures, get.errors) == (4, 2, {"timeout": 2})
    assert (set_.count, set_.failures) == (1, 1)
    assert (del_.count, del_.failures) == (0, 1)
    assert get.latency.min == 0.001
    assert get.latency.max == 0.004
    assert get.latency.mean == pytest.approx(0.0025)
    assert set_.latency.percentile(50) == 0.010
    assert stats.requests == 5
    assert stats.errors == 2 + 1 + 1 + 1  # operation failures and the failed connect


def test_latency_merges_all_operations() -> None:
    stats = make_stats()
    expected = Histogram()
    expected.record_many([0.001, 0.002, 0.003, 0.004, 0.010])
    assert stats.latency() == expected
    assert stats.latency().count == 5
    # It is a fresh histogram: changing it changes nothing in the stats.
    stats.latency().record(9.0)
    assert stats.latency().max == 0.010


def test_connect_measures() -> None:
    stats = make_stats()
    assert stats.connect.count == 2
    assert stats.connect.min == 0.0005
    assert stats.connect.max == 0.0015
    assert stats.connect_errors == {"ConnectionRefusedError": 1}
    assert stats.requests == 5  # connects are not requests


def test_errors_by_kind_keys() -> None:
    assert make_stats().errors_by_kind() == {
        "connect: ConnectionRefusedError": 1,
        "get: timeout": 2,
        "set: ConnectionResetError": 1,
        "del: timeout": 1,
    }
    assert Stats().errors_by_kind() == {}
    assert Stats().errors == 0
    assert Stats().requests == 0
    assert Stats().latency() == Histogram()


def test_errors_by_kind_operation_named_connect() -> None:
    stats = Stats()
    stats.connect_failed("timeout")
    stats.fail("connect", "timeout")
    assert stats.errors == 2
    assert sum(stats.errors_by_kind().values()) == stats.errors


# -- intervals and samples ------------------------------------------------------------


def test_take_interval_resets_interval_not_totals() -> None:
    stats = Stats()
    stats.record("get", 0.001)
    stats.record("get", 0.003)
    stats.fail("get", "timeout")
    stats.connect_failed("refused")
    first = stats.take_interval(t=1.0, seconds=1.0, active=7)
    assert (first.t, first.seconds, first.active) == (1.0, 1.0, 7)
    assert (first.requests, first.errors, first.latency.count) == (2, 2, 2)
    assert first.latency.max == 0.003

    second = stats.take_interval(t=2.0, seconds=1.0, active=7)
    assert (second.requests, second.errors, second.latency.count) == (0, 0, 0)
    # The totals are untouched, and the closed interval does not see new records.
    stats.record("get", 0.005)
    assert stats.requests == 3
    assert stats.errors == 2
    assert first.latency.count == 2
    assert stats.take_interval(t=3.0, seconds=1.0, active=1).requests == 1


def test_roll_appends_sample() -> None:
    stats = Stats()
    for ms in range(1, 101):
        stats.record("get", ms / 1000)
    stats.fail("get", "timeout")
    sample = stats.roll(t=1.23456, seconds=0.5, active=3)
    assert stats.series == [sample]
    assert sample.t == 1.235
    assert sample.active == 3
    assert sample.requests == 100
    assert sample.errors == 1
    assert sample.rps == 200.0  # 100 requests in half a second
    h = Histogram()
    h.record_many([ms / 1000 for ms in range(1, 101)])
    assert (sample.p50, sample.p90, sample.p99) == (
        h.percentile(50),
        h.percentile(90),
        h.percentile(99),
    )
    assert 0.050 <= sample.p50 <= 0.050 * (1 + 1 / 128)
    assert sample.max == 0.1

    empty = stats.roll(t=2.0, seconds=1.0, active=3)
    assert stats.series == [sample, empty]
    assert (empty.requests, empty.rps, empty.p50, empty.p99, empty.max) == (0, 0.0, 0.0, 0.0, 0.0)


def test_sample_rps_with_zero_seconds_uses_one_second() -> None:
    interval = Interval(t=0.0, seconds=0.0, requests=42)
    assert interval.sample().rps == 42.0
    assert Interval(t=0.0, seconds=-1.0, requests=42).sample().rps == 42.0
    assert Interval(t=0.0, seconds=0.25, requests=42).sample().rps == 168.0


def test_interval_merge_then_sample_is_union() -> None:
    rng = random.Random(3)
    a_values = [rng.expovariate(500) for _ in range(3_000)]
    b_values = [rng.expovariate(50) for _ in range(1_000)]  # a slower process
    a, b = Interval(t=5.0, seconds=1.0, active=10), Interval(t=5.0, seconds=1.0, active=4)
    a.latency.record_many(a_values)
    b.latency.record_many(b_values)
    a.requests, a.errors = len(a_values), 2
    b.requests, b.errors = len(b_values), 3
    a.merge(b)
    union = Histogram()
    union.record_many(a_values + b_values)
    assert a.latency == union
    sample = a.sample()
    assert sample == Sample(
        t=5.0,
        active=14,
        requests=4_000,
        errors=5,
        rps=4_000.0,
        p50=union.percentile(50),
        p90=union.percentile(90),
        p99=union.percentile(99),
        max=max(a_values + b_values),
    )
    # The merged p99 lies between the two processes' own p99s.
    fast, slow = Histogram(), Histogram()
    fast.record_many(a_values)
    slow.record_many(b_values)
    assert fast.percentile(99) < sample.p99 < slow.percentile(99)


def test_interval_round_trip() -> None:
    interval = Interval(t=3.0, seconds=0.999, active=2, requests=3, errors=1)
    interval.latency.record_many([0.001, 0.002, 0.5])
    back = Interval.from_dict(json.loads(json.dumps(interval.to_dict())))
    assert back == interval
    assert back.sample() == interval.sample()


def test_sample_to_dict() -> None:
    sample = Sample(
        t=1.0, active=2, requests=3, errors=0, rps=3.0, p50=0.1, p90=0.2, p99=0.3, max=0.4
    )
    assert sample.to_dict() == {
        "t": 1.0,
        "active": 2,
        "requests": 3,
        "errors": 0,
        "rps": 3.0,
        "p50": 0.1,
        "p90": 0.2,
        "p99": 0.3,
        "max": 0.4,
    }


# -- merging and JSON ---------------------------------------------------------------


def test_operation_merge_and_round_trip() -> None:
    a, b = Operation("get"), Operation("get")
    a.latency.record(0.001)
    a.errors["timeout"] = 1
    b.latency.record_many([0.002, 0.003])
    b.errors.update({"timeout": 2, "reset": 1})
    a.merge(b)
    assert (a.count, a.failures, a.errors) == (3, 4, {"timeout": 3, "reset": 1})
    back = Operation.from_dict(json.loads(json.dumps(a.to_dict())))
    assert (back.name, back.latency, back.errors) == ("get", a.latency, a.errors)


def test_stats_merge() -> None:
    mine, theirs = make_stats(), Stats()
    theirs.record("get", 0.5)
    theirs.record("put", 0.02)
    theirs.fail("get", "timeout")
    theirs.fail("get", "bad reply")
    theirs.connected(0.25)
    theirs.connect_failed("ConnectionRefusedError")
    theirs.connect_failed("timeout")
    theirs.roll(t=1.0, seconds=1.0, active=1)
    mine.merge(theirs)

    assert set(mine.operations) == {"get", "set", "del", "put"}
    assert mine.operations["get"].count == 5
    assert mine.operations["get"].latency.max == 0.5
    assert mine.operations["put"].count == 1
    assert mine.requests == 7
    assert mine.errors == 5 + 4
    assert mine.errors_by_kind() == {
        "connect: ConnectionRefusedError": 2,
        "connect: timeout": 1,
        "get: timeout": 3,
        "get: bad reply": 1,
        "set: ConnectionResetError": 1,
        "del: timeout": 1,
    }
    assert mine.connect.count == 3
    assert mine.connect.max == 0.25
    assert mine.series == []  # series are not merged
    expected = make_stats().latency()
    expected.merge(theirs.latency())
    assert mine.latency() == expected
    # The other stats are unchanged.
    assert theirs.requests == 2
    assert theirs.operations["get"].count == 1


def test_stats_merge_does_not_alias() -> None:
    mine, theirs = Stats(), make_stats()
    mine.merge(theirs)
    mine.record("get", 1.0)
    mine.fail("get", "timeout")
    assert theirs.operations["get"].count == 4
    assert theirs.operations["get"].errors == {"timeout": 2}


def test_stats_json_round_trip() -> None:
    stats = make_stats()
    stats.roll(t=1.0, seconds=1.0, active=2)
    stats.record("get", 0.007)
    stats.roll(t=2.0, seconds=0.5, active=1)
    data = json.loads(json.dumps(stats.to_dict()))
    back = Stats.from_dict(data)
    assert back.to_dict() == stats.to_dict()
    assert back.series == stats.series
    assert len(back.series) == 2
    assert back.series[1].rps == 2.0
    assert back.requests == stats.requests == 6
    assert back.errors == stats.errors == 5
    assert back.errors_by_kind() == stats.errors_by_kind()
    assert back.latency() == stats.latency()
    assert back.connect == stats.connect
    for name, op in stats.operations.items():
        assert back.operations[name].latency == op.latency
        assert back.operations[name].errors == op.errors


def test_stats_from_dict_without_series() -> None:
    data = json.loads(json.dumps(make_stats().to_dict()))
    del data["series"]
    assert Stats.from_dict(data).series == []


def test_stats_from_dict_rejects_bad_histogram() -> None:
    data = json.loads(json.dumps(make_stats().to_dict()))
    data["connect"]["count"] = 99
    with pytest.raises(ValueError):
        Stats.from_dict(data)
    data = json.loads(json.dumps(make_stats().to_dict()))
    del data["operations"]
    with pytest.raises(KeyError):
        Stats.from_dict(data)
