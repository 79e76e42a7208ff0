"""Property tests and the fuzz target for every framer.

* Any split of a valid stream gives the same frames, and leaves the same
  partial frame buffered.
* Any split of a stream that goes bad gives the same frames before the error
  (those returned plus ``exc.frames``) and the same error type.
* Fuzz: for arbitrary bytes cut at arbitrary points, only FramingError
  subclasses escape ``feed()``, frames are ``bytes``, the buffer stays within
  its limit, and the outcome does not depend on the cuts.
* ``feed(encode(x)) == [x]``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemonkit.errors import FrameTooLarge, FramingError, ProtocolError
from daemonkit.framing import Framer, LengthPrefixed, Lines, Netstrings, Raw

from .test_base import feed_chunks, split_at

FRAMERS: dict[str, Framer] = {
    "lines-lf": Lines(b"\n", max_length=8),
    "lines-crlf": Lines(b"\r\n", max_length=8),
    "lines-aba": Lines(b"aba", max_length=6),
    "lines-default": Lines(),
    "length-B": LengthPrefixed("B", max_length=10),
    "length-H": LengthPrefixed("!H", max_length=300),
    "length-le-I": LengthPrefixed("<I", max_length=20),
    "netstring-12": Netstrings(max_length=12),
    "netstring-9": Netstrings(max_length=9),
    "netstring-default": Netstrings(),
}
NAMES = sorted(FRAMERS)

# Bytes that mean something to some framer, so that random streams hit the
# interesting paths more often than uniformly random bytes would.
PIECES = [b"a", b"b", b"x", b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b":", b",", b"0", b"1", b"9"]
DIGITS = b"0123456789"

# Sized so that the whole framing suite runs in well under 30 s.
SETTINGS = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SETTINGS = settings(SETTINGS, max_examples=120)


def stuff(max_size: int = 40) -> st.SearchStrategy[bytes]:
    """Short byte strings made mostly of meaningful pieces."""
    return st.one_of(
        st.lists(st.sampled_from(PIECES), max_size=max_size).map(b"".join),
        st.binary(max_size=max_size),
    )


def encodable(framer: Framer, frame: bytes) -> bool:
    try:
        framer.encode(frame)
    except ValueError:
        return False
    return True


def frames_for(framer: Framer) -> st.SearchStrategy[bytes]:
    """Frames *framer* can encode and read back."""
    if isinstance(framer, Lines):
        size = min(framer.max_length, 40)
        return stuff(size).filter(lambda f: len(f) <= size and encodable(framer, f))
    assert isinstance(framer, LengthPrefixed | Netstrings)
    return stuff(min(framer.max_length, 40)).filter(lambda f: len(f) <= framer.max_length)


def bad_for(framer: Framer) -> st.SearchStrategy[tuple[bytes, type[FramingError]]]:
    """Input that breaks *framer* whatever follows it, with the error it raises."""
    if isinstance(framer, Lines):
        # Lines made of bytes that cannot start a delimiter: one longer than
        # max_length plus the slack a partial delimiter gets, or one a little
        # longer than max_length, then its delimiter.
        delimiter = framer.delimiter
        safe = st.sampled_from([p for p in PIECES if delimiter[0] not in p])
        slack = framer.max_length + len(delimiter)
        endless = st.lists(safe, min_size=slack, max_size=slack + 5).map(b"".join)
        longest = framer.max_length + max(len(delimiter) - 1, 1)
        short = st.lists(safe, min_size=framer.max_length + 1, max_size=longest)
        ended = short.map(lambda pieces: b"".join(pieces)[:longest] + delimiter)
        return st.tuples(st.one_of(endless, ended), st.just(FrameTooLarge))
    if isinstance(framer, LengthPrefixed):
        size = struct.calcsize(framer.header)
        top = min((1 << 8 * size) - 1, framer.max_length * 4)
        pack = struct.Struct(framer.header).pack
        return st.tuples(st.integers(framer.max_length + 1, top).map(pack), st.just(FrameTooLarge))
    assert isinstance(framer, Netstrings)
    digits = len(str(framer.max_length))
    non_digits = [p for p in PIECES if not p[:1].isdigit()]
    options = [
        st.sampled_from(non_digits),
        st.sampled_from(DIGITS).map(lambda d: b"0" + bytes([d])),
        st.sampled_from(DIGITS[1:]).map(lambda d: bytes([d]) * (digits + 1)),
        frames_for(framer).flatmap(
            lambda f: st.sampled_from([p for p in PIECES if p != b","]).map(
                lambda p: framer.encode(f)[:-1] + p
            )
        ),
    ]
    cases = [st.tuples(option, st.just(ProtocolError)) for option in options]
    if 10**digits - 1 > framer.max_length:
        too_large = st.integers(framer.max_length + 1, 10**digits - 1)
        cases.append(st.tuples(too_large.map(lambda n: b"%d:" % n), st.just(FrameTooLarge)))
    return st.one_of(cases)


def cut(draw: Callable[..., Any], data: bytes) -> list[bytes]:
    """Cut *data* at arbitrary points: none, a few, or every byte."""
    every = draw(st.booleans())
    if every:
        return [data[i : i + 1] for i in range(len(data))]
    return split_at(data, draw(st.lists(st.integers(0, len(data)), max_size=12)))


def bound(framer: Framer) -> int:
    """The most a framer may hold after a feed."""
    if isinstance(framer, Lines):
        return framer.max_length + len(framer.delimiter) - 1
    if isinstance(framer, LengthPrefixed):
        return struct.calcsize(framer.header) + framer.max_length
    assert isinstance(framer, Netstrings)
    return len(str(framer.max_length)) + 1 + framer.max_length


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_any_split_of_a_valid_stream_gives_the_same_frames(name: str, data: st.DataObject) -> None:
    framer = FRAMERS[name].fresh()
    frames = data.draw(st.lists(frames_for(framer), max_size=8), label="frames")
    last = data.draw(frames_for(framer), label="last")
    encoded = framer.encode(last)
    partial = encoded[: data.draw(st.integers(0, len(encoded) - 1), label="partial")]
    stream = b"".join(framer.encode(frame) for frame in frames) + partial
    assert feed_chunks(framer, cut(data.draw, stream)) == (frames, None)
    assert framer.buffered == len(partial)
    assert framer.feed(encoded[len(partial) :]) == [last]
    assert framer.buffered == 0


@pytest.mark.parametrize("name", [name for name in NAMES if name != "lines-default"])
@SETTINGS
@given(data=st.data())
def test_any_split_of_a_bad_stream_gives_the_same_frames_and_error(
    name: str, data: st.DataObject
) -> None:
    framer = FRAMERS[name].fresh()
    frames = data.draw(st.lists(frames_for(framer), max_size=6), label="frames")
    bad, error = data.draw(bad_for(framer), label="bad")
    junk = data.draw(stuff(), label="junk")
    stream = b"".join(framer.encode(frame) for frame in frames) + bad + junk
    assert feed_chunks(framer.fresh(), [stream]) == (frames, error)
    assert feed_chunks(framer, cut(data.draw, stream)) == (frames, error)
    assert framer.buffered == 0
    with pytest.raises(error):
        framer.feed(junk)


@pytest.mark.parametrize("name", NAMES)
@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzz_only_framing_errors_escape(name: str, data: st.DataObject) -> None:
    framer = FRAMERS[name].fresh()
    valid = frames_for(framer).map(framer.encode)
    stream = data.draw(
        st.one_of(
            st.binary(max_size=200),
            st.lists(st.one_of(valid, stuff(10)), max_size=12).map(b"".join),
        ),
        label="stream",
    )
    chunks = cut(data.draw, stream)
    limit = bound(framer)
    frames: list[Any] = []
    for chunk in chunks:
        try:
            got = framer.feed(chunk)
        except FramingError as exc:
            frames += exc.frames  # type: ignore[attr-defined]
            error: type[FramingError] | None = type(exc)
            with pytest.raises(type(exc)):
                framer.feed(chunk)
            break
        assert all(type(frame) is bytes for frame in got)
        frames += got
        assert 0 <= framer.buffered <= limit
    else:
        error = None
    whole = framer.fresh()
    assert feed_chunks(whole, [stream]) == (frames, error)
    if error is None:
        assert whole.buffered == framer.buffered


@SETTINGS
@given(chunks=st.lists(st.binary(max_size=50), max_size=20))
def test_fuzz_raw_passes_every_byte_through(chunks: list[bytes]) -> None:
    frames, error = feed_chunks(Raw(), chunks)
    assert error is None
    assert frames == [chunk for chunk in chunks if chunk]


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_round_trip(name: str, data: st.DataObject) -> None:
    framer = FRAMERS[name].fresh()
    frame = data.draw(frames_for(framer), label="frame")
    assert framer.feed(framer.encode(frame)) == [frame]
    assert framer.buffered == 0


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"aba", b"\n\n"])
@SETTINGS
@given(frame=stuff())
def test_lines_encode_refuses_exactly_what_would_not_round_trip(
    delimiter: bytes, frame: bytes
) -> None:
    framer = Lines(delimiter)
    try:
        encoded = framer.encode(frame)
    except ValueError:
        assert (frame + delimiter).split(delimiter)[0] != frame
    else:
        assert framer.feed(encoded) == [frame]
