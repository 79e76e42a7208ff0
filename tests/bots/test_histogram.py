"""Histogram: percentiles against known distributions, merging, and the JSON form."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemonkit.bots.histogram import MAX_SECONDS, RELATIVE_PRECISION, Histogram

PS = (50.0, 90.0, 99.0, 99.9)
US = 1e-6


def exact_percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank order statistic: the smallest value with >= p% of values at or below."""
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(str(p)) * len(ordered) / 100))
    return ordered[rank - 1]


def histogram_of(values: Sequence[float]) -> Histogram:
    h = Histogram()
    h.record_many(values)
    return h


def assert_within_precision(
    h: Histogram, values: Sequence[float], p: float, *, truncation: float = 0.0
) -> None:
    """exact <= reported <= exact * (1 + precision); ``truncation`` loosens the lower bound."""
    exact = exact_percentile(values, p)
    got = h.percentile(p)
    assert got >= exact - truncation - 1e-12, (p, exact, got)
    assert got <= max(exact * (1 + RELATIVE_PRECISION), exact + US), (p, exact, got)


# -- known distributions ---------------------------------------------------------


def test_precision_constant() -> None:
    assert RELATIVE_PRECISION == 1 / 128
    assert MAX_SECONDS == 3600.0


@pytest.mark.parametrize("p", PS)
def test_uniform_percentiles_within_precision(p: float) -> None:
    values = [u * US for u in range(1, 100_001)]
    random.Random(7).shuffle(values)
    h = histogram_of(values)
    assert h.count == 100_000
    assert_within_precision(h, values, p)


def test_uniform_percentiles_concrete_values() -> None:
    h = histogram_of([u * US for u in range(1, 100_001)])
    # The upper edges of the buckets holding 50,000 / 90,000 / 99,000 / 99,900 µs.
    assert h.percentile(50) == pytest.approx(0.050175, abs=1e-12)
    assert h.percentile(90) == pytest.approx(0.090111, abs=1e-12)
    assert h.percentile(99) == pytest.approx(0.099327, abs=1e-12)
    assert h.percentile(99.9) == pytest.approx(0.1, abs=1e-12)  # capped by max
    assert h.percentiles([99, 50, 50]) == {50: h.percentile(50), 99: h.percentile(99)}


def _exponential(rng: random.Random) -> float:
    return rng.expovariate(1 / 0.005)  # mean 5 ms


def _lognormal(rng: random.Random) -> float:
    return rng.lognormvariate(math.log(0.002), 1.0)  # median 2 ms, long tail


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("draw", [_exponential, _lognormal], ids=["exponential", "lognormal"])
def test_random_distributions_within_precision(
    draw: Callable[[random.Random], float], seed: int
) -> None:
    rng = random.Random(seed)
    values = [draw(rng) for _ in range(20_000)]
    h = histogram_of(values)
    for p in PS:
        assert_within_precision(h, values, p, truncation=0.0)
    assert h.min == min(values)
    assert h.max == max(values)
    assert h.mean == pytest.approx(math.fsum(values) / len(values), rel=1e-12)


def test_exact_region_one_bucket_per_microsecond() -> None:
    # Values are rounded up to whole µs: u+0.5 µs is stored as u+1 µs.
    h = histogram_of([(u + 0.5) * US for u in range(256)])
    for u in range(1, 255):
        # p = (u + 0.5)/256 * 100 has nearest rank u + 1: the (u+1)-th value.
        assert h.percentile((u + 0.5) / 256 * 100) == pytest.approx((u + 1) * US, abs=1e-15)
    h = histogram_of([0.0, 0.0001, 0.000101, 0.5])
    assert h.percentile(50) == pytest.approx(0.0001, abs=1e-15)
    assert h.percentile(75) == pytest.approx(0.000101, abs=1e-15)


def test_exact_region_whole_microseconds_are_exact() -> None:
    wrong = {}
    for u in range(1, 256):
        h = histogram_of([0.0, u / 1e6, 1.0])
        if h.percentile(50) != u / 1e6:
            wrong[u] = h.percentile(50)
    assert wrong == {}


def test_percentile_never_understates_fractional_microseconds() -> None:
    rng = random.Random(2)
    values = [_exponential(rng) for _ in range(20_000)]
    h = histogram_of(values)
    exact = exact_percentile(values, 99)  # 23,295.57 µs
    assert h.percentile(99) >= exact  # reported: 23,295 µs
    h = histogram_of([0.0001, 0.0001507, 0.001])
    assert h.percentile(50) >= 0.0001507
    h = histogram_of([0.0001, 0.0001005])
    assert h.percentile(100) == h.max


def test_min_max_mean_exact() -> None:
    values = [0.0123456789, 0.5, 1e-7, 3.25, 0.000777]
    h = histogram_of(values)
    assert h.min == 1e-7
    assert h.max == 3.25
    assert h.mean == pytest.approx(sum(values) / 5, rel=1e-15)
    assert h.count == len(h) == 5
    assert h.percentile(0) == h.min
    assert h.percentile(100) == h.max


def test_single_value_reads_back_exactly() -> None:
    h = histogram_of([0.0123456])
    for p in (0, 1, 50, 99.9, 100):
        assert h.percentile(p) == 0.0123456


def test_empty_histogram() -> None:
    h = Histogram()
    assert h.count == 0
    assert len(h) == 0
    assert h.mean == 0.0
    assert h.min == 0.0
    assert h.max == 0.0
    for p in (0, 50, 100):
        assert h.percentile(p) == 0.0
    assert repr(h) == "<Histogram empty>"


@pytest.mark.parametrize("p", [-0.001, 100.001, -1, 101, math.nan, math.inf, -math.inf])
def test_percentile_out_of_range(p: float) -> None:
    h = histogram_of([0.001])
    with pytest.raises(ValueError, match="0..100"):
        h.percentile(p)
    with pytest.raises(ValueError):
        Histogram().percentile(p)


def test_negative_values_count_as_zero() -> None:
    h = histogram_of([-0.5, -3.0, 0.002])
    assert h.count == 3
    assert h.min == 0.0
    assert h.total == pytest.approx(0.002)
    assert h.mean == pytest.approx(0.002 / 3)
    assert h.percentile(0) == 0.0
    assert h.percentile(50) == 0.0
    assert h.percentile(100) == 0.002
    assert h == histogram_of([0.0, 0.0, 0.002])


def test_tiny_negative_values_count_as_zero() -> None:
    h = histogram_of([-1e-9, 0.002])
    assert h.min == 0.0
    assert h.total == 0.002
    assert h == histogram_of([0.0, 0.002])


def test_huge_values_clamp_to_top_bucket() -> None:
    h = histogram_of([1.0, 1e9, 5e12])
    assert h.count == 3
    assert h.max == 5e12  # max stays the true value
    top = h.percentile(50)
    assert MAX_SECONDS <= top <= MAX_SECONDS * (1 + RELATIVE_PRECISION)
    assert h.percentile(99) == top  # both huge values share one bucket
    # A value of exactly MAX_SECONDS lands in the same bucket as anything larger.
    a = histogram_of([MAX_SECONDS])
    b = histogram_of([MAX_SECONDS * 10])
    assert a.to_dict()["buckets"] == b.to_dict()["buckets"]


def test_repr_shows_figures() -> None:
    h = histogram_of([0.001] * 10)
    assert repr(h) == "<Histogram n=10 p50=1.000ms p99=1.000ms max=1.000ms>"


# -- merge, copy, clear, equality -------------------------------------------------


def test_merge_of_halves_equals_whole() -> None:
    rng = random.Random(11)
    values = [rng.lognormvariate(math.log(0.003), 1.5) for _ in range(10_000)]
    whole = histogram_of(values)
    first, second = histogram_of(values[:4_000]), histogram_of(values[4_000:])
    first.merge(second)
    assert first == whole
    assert first.count == 10_000
    for p in PS:
        assert first.percentile(p) == whole.percentile(p)


def test_merge_with_empty() -> None:
    h = histogram_of([0.5, 0.25])
    before = h.copy()
    h.merge(Histogram())
    assert h == before
    empty = Histogram()
    empty.merge(h)
    assert empty == h
    assert empty.min == 0.25


def test_merge_takes_smaller_min() -> None:
    a = histogram_of([0.5])
    a.merge(histogram_of([0.1, 0.9]))
    assert (a.min, a.max, a.count) == (0.1, 0.9, 3)


def test_copy_is_independent() -> None:
    h = histogram_of([0.001, 0.002])
    c = h.copy()
    assert c == h
    c.record(5.0)
    assert c != h
    assert h.count == 2
    assert h.max == 0.002


def test_clear() -> None:
    h = histogram_of([0.001, 0.002])
    h.clear()
    assert h == Histogram()
    assert h.percentile(50) == 0.0
    h.record(0.003)
    assert (h.min, h.max, h.count) == (0.003, 0.003, 1)


def test_equality() -> None:
    assert Histogram() == Histogram()
    assert histogram_of([0.001]) != histogram_of([0.002])
    assert histogram_of([0.001]) != histogram_of([0.001, 0.001])
    # Same buckets but a different (exact) max is not equal.
    assert histogram_of([0.0010001]) != histogram_of([0.0010002])
    assert Histogram() != "histogram"
    assert Histogram().__eq__(42) is NotImplemented
    with pytest.raises(TypeError):
        hash(Histogram())


# -- the JSON form ----------------------------------------------------------------


def test_to_dict_is_sparse() -> None:
    h = histogram_of([0.0001, 0.0001, 0.01])
    d = h.to_dict()
    assert d["unit"] == "us"
    assert d["count"] == 3
    assert d["min"] == 0.0001
    assert d["max"] == 0.01
    assert sum(d["buckets"].values()) == 3
    assert len(d["buckets"]) == 2
    assert Histogram().to_dict()["buckets"] == {}


def test_json_round_trip() -> None:
    rng = random.Random(5)
    h = histogram_of([rng.expovariate(200) for _ in range(5_000)] + [-1.0, 1e7])
    back = Histogram.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back == h
    assert back.to_dict() == h.to_dict()
    for p in (0, *PS, 100):
        assert back.percentile(p) == h.percentile(p)
    assert Histogram.from_dict(json.loads(json.dumps(Histogram().to_dict()))) == Histogram()


def _valid() -> dict[str, Any]:
    return histogram_of([0.001, 0.002, 0.002]).to_dict()


def _without(key: str) -> dict[str, Any]:
    d = _valid()
    del d[key]
    return d


def _with(key: str, value: object) -> dict[str, Any]:
    d = _valid()
    d[key] = value
    return d


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_with("buckets", {"99999": 3}), id="index-too-big"),
        pytest.param(_with("buckets", {"-1": 3}), id="index-negative"),
        pytest.param(_with("buckets", {"x": 3}), id="index-not-a-number"),
        pytest.param(_with("buckets", {"10": -1, "11": 4}), id="count-negative"),
        pytest.param(_with("buckets", {"10": "many"}), id="count-not-a-number"),
        pytest.param(_with("buckets", {"10": None}), id="count-none"),
        pytest.param(_with("buckets", [["10", 3]]), id="buckets-a-list"),
        pytest.param(_with("count", 4), id="count-too-big"),
        pytest.param(_with("count", 2), id="count-too-small"),
        pytest.param(_with("count", "three"), id="count-not-a-number"),
        pytest.param(_with("min", None), id="min-none"),
        pytest.param(_without("buckets"), id="no-buckets"),
        pytest.param(_without("count"), id="no-count"),
        pytest.param(_without("total"), id="no-total"),
        pytest.param(_without("min"), id="no-min"),
        pytest.param(_without("max"), id="no-max"),
        pytest.param([], id="a-list"),
        pytest.param(None, id="none"),
    ],
)
def test_from_dict_rejects_malformed(data: Any) -> None:
    with pytest.raises(ValueError):
        Histogram.from_dict(data)


def test_from_dict_accepts_the_valid_base() -> None:
    h = Histogram.from_dict(_valid())
    assert h.count == 3
    assert h.percentile(100) == 0.002


# -- properties -------------------------------------------------------------------

_seconds = st.floats(min_value=0.0, max_value=3600.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(_seconds, min_size=1, max_size=60), st.sampled_from((1.0, *PS, 100.0)))
def test_percentile_bounds_property(values: list[float], p: float) -> None:
    h = histogram_of(values)
    exact = exact_percentile(values, p)
    got = h.percentile(p)
    # Values are rounded up to whole microseconds, forgiving 1e-12 s of float noise.
    assert got >= exact - 1e-12
    # Within the relative precision, or the 1 µs of rounding up for tiny values.
    assert got <= max(exact * (1 + RELATIVE_PRECISION), exact + US) * (1 + 1e-12)
    assert h.min <= got <= h.max
    assert h.percentile(0) == h.min == min(values)
    assert h.max == max(values)


@settings(max_examples=40, deadline=None, database=None)
@given(st.lists(_seconds, max_size=40), st.lists(_seconds, max_size=40), st.randoms())
def test_merge_is_order_independent(a: list[float], b: list[float], rng: random.Random) -> None:
    ab = histogram_of(a)
    ab.merge(histogram_of(b))
    ba = histogram_of(b)
    ba.merge(histogram_of(a))
    shuffled = a + b
    rng.shuffle(shuffled)
    whole = histogram_of(shuffled)
    assert ab == ba == whole
    for p in (0.0, *PS, 100.0):
        assert ab.percentile(p) == ba.percentile(p) == whole.percentile(p)
