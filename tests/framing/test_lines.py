"""Lines: each case fed whole, one byte at a time, and with trailing data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemonkit.errors import ConfigError, FrameTooLarge, FramingError
from daemonkit.framing import Lines

from .test_base import WAYS, CountingBuffer, feed_chunks, outcome

Way = Callable[[bytes], list[bytes]]

# (framer, stream, frames): streams that end on a frame boundary.
GOOD = [
    (Lines(), b"", []),
    (Lines(), b"\n", [b""]),
    (Lines(), b"a\nbc\n\n", [b"a", b"bc", b""]),
    (Lines(), b"a\r\n", [b"a\r"]),
    (Lines(b"\r\n"), b"a\r\nb\rc\r\n\r\n", [b"a", b"b\rc", b""]),
    (Lines(b"\r\n"), b"a\r\r\n\n\r\n", [b"a\r", b"\n"]),
    (Lines(b"\x00"), b"\n\x00\x00", [b"\n", b""]),
    # A self-overlapping delimiter: cut where it first occurs, like bytes.split.
    (Lines(b"aba"), b"abababa", [b"", b"b"]),
    (Lines(b"aba"), b"xabaabaaba", [b"x", b"", b""]),
    (Lines(max_length=3), b"abc\n\nxyz\n", [b"abc", b"", b"xyz"]),
    (Lines(b"\r\n", max_length=3), b"abc\r\nab\r\r\n", [b"abc", b"ab\r"]),
]
# (framer, stream, frames before the error, error)
BAD = [
    (Lines(max_length=3), b"abcd\n", [], FrameTooLarge),
    (Lines(max_length=3), b"abcd", [], FrameTooLarge),
    (Lines(max_length=3), b"ab\nabcd", [b"ab"], FrameTooLarge),
    (Lines(max_length=3), b"ab\n\nabcdefgh\nok\n", [b"ab", b""], FrameTooLarge),
    (Lines(b"\r\n", max_length=3), b"abcd\r\n", [], FrameTooLarge),
    (Lines(b"\r\n", max_length=3), b"a\r\nabc\r\nabcd\r", [b"a", b"abc"], FrameTooLarge),
    (Lines(b"aba", max_length=2), b"xyaba" + b"xyzxyz", [b"xy"], FrameTooLarge),
    # Too long by less than the slack: caught when the delimiter completes.
    (Lines(b"<E>", max_length=3), b"abcd<E>", [], FrameTooLarge),
    (Lines(b"<E>", max_length=3), b"ab<E>abcde<E>", [b"ab"], FrameTooLarge),
]


def ids(cases: list[tuple[object, ...]]) -> list[str]:
    return [f"{case[0]!r}-{case[1]!r}"[:60] for case in cases]


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("framer", "stream", "frames"), GOOD, ids=ids(GOOD))
def test_good(framer: Lines, stream: bytes, frames: list[bytes], way: Way) -> None:
    fresh = framer.fresh()
    assert feed_chunks(fresh, way(stream)) == (frames, None)
    assert fresh.buffered == 0


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize("trailing", [b"x", b"\r", b"tail\r"])
@pytest.mark.parametrize(("framer", "stream", "frames"), GOOD, ids=ids(GOOD))
def test_good_with_trailing_data(
    framer: Lines, stream: bytes, frames: list[bytes], way: Way, trailing: bytes
) -> None:
    fresh = framer.fresh()
    # Keep the trailing part within the limit so that it stays buffered.
    trailing = trailing[-fresh.max_length :]
    if fresh.delimiter in trailing:
        pytest.skip("the trailing data would complete a line")
    assert feed_chunks(fresh, way(stream + trailing)) == (frames, None)
    assert fresh.buffered == len(trailing)
    # The rest of the line completes it.
    assert fresh.feed(fresh.delimiter) == [trailing]
    assert fresh.buffered == 0


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("framer", "stream", "frames", "error"), BAD, ids=ids(BAD))
def test_bad(
    framer: Lines, stream: bytes, frames: list[bytes], error: type[FramingError], way: Way
) -> None:
    assert outcome(framer, stream, way) == (frames, error)


def test_delimiter_split_across_feeds() -> None:
    framer = Lines(b"\r\n")
    assert framer.feed(b"one\r") == []
    assert framer.buffered == 4
    assert framer.feed(b"\ntwo\r") == [b"one"]
    assert framer.feed(b"\n") == [b"two"]
    assert framer.buffered == 0


def test_long_delimiter_split_in_three() -> None:
    framer = Lines(b"<END>")
    assert framer.feed(b"a<E") == []
    assert framer.feed(b"N") == []
    assert framer.feed(b"D>b<END") == [b"a"]
    assert framer.feed(b">") == [b"b"]


def test_line_of_exactly_max_length_passes() -> None:
    framer = Lines(max_length=5)
    assert framer.feed(b"12345") == []
    assert framer.feed(b"\n12345\n") == [b"12345", b"12345"]


def test_too_long_raises_before_the_delimiter_arrives() -> None:
    framer = Lines(max_length=5)
    assert framer.feed(b"12345") == []
    with pytest.raises(FrameTooLarge, match="max_length=5"):
        framer.feed(b"6")
    assert framer.buffered == 0


def test_too_long_in_one_chunk_keeps_the_lines_before_it() -> None:
    with pytest.raises(FrameTooLarge) as info:
        Lines(max_length=5).feed(b"a\nb\n" + b"x" * 100)
    assert info.value.frames == [b"a", b"b"]  # type: ignore[attr-defined]


def test_partial_delimiter_gets_its_slack() -> None:
    # b"12345\r" may still be the line b"12345": it is not too long yet.
    framer = Lines(b"\r\n", max_length=5)
    assert framer.feed(b"12345\r") == []
    assert framer.buffered == 6
    assert framer.feed(b"\n") == [b"12345"]
    assert framer.feed(b"12345x") == []
    with pytest.raises(FrameTooLarge):
        framer.feed(b"\r")


def test_too_long_by_less_than_the_slack_raises_when_the_delimiter_completes() -> None:
    framer = Lines(b"<E>", max_length=3)
    assert framer.feed(b"abcd<") == []  # b"abcd<" + b"E>" would make no line
    with pytest.raises(FrameTooLarge):
        framer.feed(b"E>")


def test_buffer_never_exceeds_the_limit_plus_slack() -> None:
    framer = Lines(b"\r\n", max_length=100)
    with pytest.raises(FrameTooLarge):
        for _ in range(1000):
            framer.feed(b"x" * 7)
            assert framer.buffered <= 101
    assert framer.buffered == 0


def test_encode() -> None:
    assert Lines().encode(b"hi") == b"hi\n"
    assert Lines(b"\r\n").encode(b"") == b"\r\n"
    assert Lines(b"\r\n").encode(b"a\rb\n") == b"a\rb\n\r\n"
    assert Lines(max_length=1).encode(b"longer than max_length") == b"longer than max_length\n"


@pytest.mark.parametrize(
    ("delimiter", "frame", "match"),
    [
        (b"\n", b"a\nb", "contains the delimiter"),
        (b"\n", b"\n", "contains the delimiter"),
        (b"\r\n", b"a\r\nb", "contains the delimiter"),
        # The peer would cut b"a\n" + b"\n\n" after b"a".
        (b"\n\n", b"a\n", "run into the delimiter"),
        (b"aba", b"xab", "run into the delimiter"),
    ],
)
def test_encode_refuses_what_would_be_cut_elsewhere(
    delimiter: bytes, frame: bytes, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Lines(delimiter).encode(frame)


@pytest.mark.parametrize("frame", [b"", b"a", b"\r", b"a\rb", b"a\n\r", b"x" * 70000])
@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"\x00"])
def test_round_trip(delimiter: bytes, frame: bytes) -> None:
    framer = Lines(delimiter, max_length=len(frame) or 1)
    try:
        encoded = framer.encode(frame)
    except ValueError:
        assert delimiter in frame
        return
    assert framer.feed(encoded) == [frame]


FRAME = st.one_of(
    st.binary(max_size=8),
    st.binary(max_size=8).map(bytearray),
    st.text(alphabet="ab\r\n", max_size=4),
    st.just(1),  # neither bytes-like nor str
)


@given(
    delimiter=st.sampled_from([b"\n", b"\r\n", b"\x00"]),
    frames=st.lists(FRAME, max_size=6),
)
def test_encode_all_is_encode_of_each_frame_joined(delimiter: bytes, frames: list[Any]) -> None:
    """The batch form's shortcut gives what encode() per frame gives, errors included."""
    framer = Lines(delimiter)
    before = list(frames)
    try:
        expected: bytes | type[Exception] = b"".join(framer.encode(f) for f in frames)
    except (TypeError, ValueError) as exc:
        expected = type(exc)
    try:
        got: bytes | type[Exception] = framer.encode_all(frames)
    except (TypeError, ValueError) as exc:
        got = type(exc)
    assert got == expected
    assert frames == before  # the caller's list, borrowed for the join, is as it was


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"delimiter": b""}, ConfigError),
        ({"max_length": 0}, ConfigError),
        ({"max_length": -1}, ConfigError),
        ({"delimiter": "\n"}, TypeError),
        ({"delimiter": 1}, TypeError),
        ({"max_length": 1.5}, TypeError),
        ({"max_length": "10"}, TypeError),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        Lines(**kwargs)  # type: ignore[arg-type]


def test_bytearray_delimiter_is_kept_as_bytes() -> None:
    framer = Lines(bytearray(b";"))  # type: ignore[arg-type]
    assert type(framer.delimiter) is bytes
    assert framer.fresh().feed(b"a;") == [b"a"]


# -- linearity ---------------------------------------------------------------
#
# Each test feeds one long line a byte at a time through a CountingBuffer and
# bounds the bytes the framer's searches and copies touched. A framer that
# rescans its buffer (Twisted's old LineReceiver) touches about n**2 / 2.

LONG = 200 * 1024


def search_cost(framer: Lines, length: int) -> int:
    """Feed a *length*-byte line one byte at a time; return the bytes touched."""
    buf = framer._buffer = CountingBuffer()
    for _ in range(length):
        assert framer.feed(b"x") == []
    assert framer._buffer is buf, "the buffer was rebuilt"
    assert framer.buffered == length
    assert feed_chunks(framer, [bytes([byte]) for byte in framer.delimiter]) == (
        [b"x" * length],
        None,
    )
    return buf.touched


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"<END>"])
def test_a_line_fed_one_byte_at_a_time_costs_linear_work(delimiter: bytes) -> None:
    touched = search_cost(Lines(delimiter, max_length=LONG), LONG)
    # Per feed, a search of the len(delimiter) - 1 byte seam; one copy of the line.
    assert touched <= len(delimiter) * LONG + LONG


def test_the_linearity_check_catches_a_rescanning_framer() -> None:
    class Rescanning(Lines):
        """Searches its whole buffer on every feed, as a naive framer does."""

        def feed(self, data: bytes) -> list[bytes]:
            self._buffer.find(self.delimiter)
            return super().feed(data)

    length = 5000
    touched = search_cost(Rescanning(max_length=length), length)
    assert touched > length * length // 3
