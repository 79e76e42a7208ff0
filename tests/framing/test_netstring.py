"""Netstrings: each case fed whole, one byte at a time, and with trailing data."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from daemonkit.errors import ConfigError, FrameTooLarge, FramingError, ProtocolError
from daemonkit.framing import Netstrings

from .test_base import WAYS, CountingBuffer, feed_chunks, outcome

Way = Callable[[bytes], list[bytes]]

# (framer, stream, frames): streams that end on a frame boundary.
GOOD = [
    (Netstrings(), b"", []),
    (Netstrings(), b"0:,", [b""]),
    (Netstrings(), b"5:hello,", [b"hello"]),
    (Netstrings(), b"5:hello,0:,3:a:,,", [b"hello", b"", b"a:,"]),
    (Netstrings(), b"12:hello world!,", [b"hello world!"]),
    (Netstrings(max_length=12), b"12:hello world!,", [b"hello world!"]),
    (Netstrings(max_length=9), b"9:123456789,1:x,", [b"123456789", b"x"]),
]
# (framer, stream, frames before the error, error)
BAD = [
    (Netstrings(), b"x:,", [], ProtocolError),
    (Netstrings(), b"1:a,x", [b"a"], ProtocolError),
    (Netstrings(), b"-1:,", [], ProtocolError),
    (Netstrings(), b"+1:a,", [], ProtocolError),
    (Netstrings(), b" 1:a,", [], ProtocolError),
    (Netstrings(), b"1 :a,", [], ProtocolError),
    (Netstrings(), b"1_0:abcdefghij,", [], ProtocolError),
    (Netstrings(), b"\xd9\xa1:a,", [], ProtocolError),  # a non-ASCII digit
    (Netstrings(), b":,", [], ProtocolError),
    (Netstrings(), b"05:hello,", [], ProtocolError),
    (Netstrings(), b"00:,", [], ProtocolError),
    (Netstrings(), b"1:ab", [], ProtocolError),
    (Netstrings(), b"0:;", [], ProtocolError),
    (Netstrings(), b"3:abc,3:abc;", [b"abc"], ProtocolError),
    (Netstrings(max_length=12), b"13:", [], FrameTooLarge),
    (Netstrings(max_length=12), b"99:abc", [], FrameTooLarge),
    (Netstrings(max_length=12), b"1:a,100:", [b"a"], ProtocolError),
    (Netstrings(max_length=12), b"1" * 1000, [], ProtocolError),
    (Netstrings(max_length=9), b"10:", [], ProtocolError),
    (Netstrings(), b"99999999:", [], ProtocolError),
    (Netstrings(), b"9999999:", [], FrameTooLarge),
]


def ids(cases: list[tuple[object, ...]]) -> list[str]:
    return [f"{case[0]!r}-{case[1]!r}"[:60] for case in cases]


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("framer", "stream", "frames"), GOOD, ids=ids(GOOD))
def test_good(framer: Netstrings, stream: bytes, frames: list[bytes], way: Way) -> None:
    fresh = framer.fresh()
    assert feed_chunks(fresh, way(stream)) == (frames, None)
    assert fresh.buffered == 0


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize("cut", [1, 2, 5, -1], ids=["digit", "colon", "payload", "comma"])
@pytest.mark.parametrize(("framer", "stream", "frames"), GOOD, ids=ids(GOOD))
def test_good_with_trailing_data(
    framer: Netstrings, stream: bytes, frames: list[bytes], way: Way, cut: int
) -> None:
    fresh = framer.fresh()
    encoded = fresh.encode(b"abcdefg")
    trailing, rest = encoded[:cut], encoded[cut:]
    assert feed_chunks(fresh, way(stream + trailing)) == (frames, None)
    assert fresh.buffered == len(trailing)
    assert fresh.feed(rest) == [b"abcdefg"]
    assert fresh.buffered == 0


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("framer", "stream", "frames", "error"), BAD, ids=ids(BAD))
def test_bad(
    framer: Netstrings, stream: bytes, frames: list[bytes], error: type[FramingError], way: Way
) -> None:
    assert outcome(framer, stream, way) == (frames, error)


@pytest.mark.parametrize(
    ("stream", "match"),
    [
        (b"x", r"non-digit byte b'x'"),
        (b"0x", r"non-digit byte b'x'"),
        (b":", r"length is empty"),
        (b"01", r"leading zero"),
        (b"1234", r"more than 3 digits without ':' \(max_length=100 bytes\)"),
        (b"101:", r"length 101 is more than max_length=100 bytes"),
        (b"1:a;", r"not terminated by ',' \(found b';'\)"),
    ],
)
def test_each_error_raises_as_soon_as_its_byte_arrives(stream: bytes, match: str) -> None:
    framer = Netstrings(max_length=100)
    assert feed_chunks(framer, [stream[:-1]]) == ([], None)
    with pytest.raises(FramingError, match=match) as info:
        framer.feed(stream[-1:])
    assert info.value.frames == []  # type: ignore[attr-defined]
    assert framer.buffered == 0


def test_a_stream_of_digits_is_cut_early() -> None:
    framer = Netstrings()  # max_length 1048576 has 7 digits
    assert framer.feed(b"1234567") == []
    with pytest.raises(ProtocolError, match="more than 7 digits"):
        framer.feed(b"8")


def test_too_large_raises_before_the_payload() -> None:
    framer = Netstrings(max_length=100)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"101:")
    assert framer.buffered == 0


def test_encode() -> None:
    assert Netstrings().encode(b"hello") == b"5:hello,"
    assert Netstrings().encode(b"") == b"0:,"
    assert Netstrings().encode(b"x" * 12) == b"12:" + b"x" * 12 + b","


def test_encode_refuses_more_than_max_length() -> None:
    with pytest.raises(FrameTooLarge, match="4 bytes is longer than max_length=3"):
        Netstrings(max_length=3).encode(b"abcd")


@pytest.mark.parametrize("frame", [b"", b"a", b"1:a,", b"x" * 1000, b"x" * 70000])
@pytest.mark.parametrize("max_length", [1000, 70000])
def test_round_trip(max_length: int, frame: bytes) -> None:
    framer = Netstrings(max_length)
    if len(frame) > max_length:
        with pytest.raises(FrameTooLarge):
            framer.encode(frame)
    else:
        assert framer.feed(framer.encode(frame)) == [frame]


@pytest.mark.parametrize(
    ("max_length", "error"), [(0, ConfigError), (-1, ConfigError), (1.0, TypeError)]
)
def test_constructor_validation(max_length: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        Netstrings(max_length)  # type: ignore[arg-type]


LONG = 200 * 1024


def test_a_frame_fed_one_byte_at_a_time_costs_linear_work() -> None:
    framer = Netstrings(max_length=LONG)
    frame = b"x" * LONG
    buf = framer._buffer = CountingBuffer()
    encoded = framer.encode(frame)
    frames, error = feed_chunks(framer, [encoded[i : i + 1] for i in range(len(encoded))])
    assert (frames, error) == ([frame], None)
    assert framer._buffer is buf, "the buffer was rebuilt"
    # The few length bytes are copied at most once per feed until the colon
    # arrives; the payload is copied out once.
    digits = len(str(LONG))
    assert buf.touched <= digits * digits + len(frame)
