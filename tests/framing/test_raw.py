"""Raw: one chunk in, one frame out; fed whole, one byte at a time, with trailing data."""

from __future__ import annotations

import pytest

from daemonkit.framing import Raw

from .test_base import feed_chunks

STREAMS = [b"", b"a", b"hello\nworld\r\n", bytes(range(256))]


@pytest.mark.parametrize("stream", STREAMS)
def test_whole(stream: bytes) -> None:
    framer = Raw()
    assert feed_chunks(framer, [stream]) == ([stream] if stream else [], None)
    assert framer.buffered == 0


@pytest.mark.parametrize("stream", STREAMS)
def test_bytewise(stream: bytes) -> None:
    framer = Raw()
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert feed_chunks(framer, chunks) == (chunks, None)
    assert framer.buffered == 0


@pytest.mark.parametrize("stream", STREAMS)
def test_trailing_data_is_delivered_not_buffered(stream: bytes) -> None:
    framer = Raw()
    frames, error = feed_chunks(framer, [stream, b"", b"partial"])
    assert (b"".join(frames), error) == (stream + b"partial", None)
    assert framer.buffered == 0


def test_empty_chunks_give_no_frames() -> None:
    assert Raw().feed(b"") == []
    assert Raw().feed(bytearray()) == []


def test_frames_are_bytes() -> None:
    framer = Raw()
    data = b"abc"
    assert framer.feed(data)[0] is data  # no copy on the common path
    for chunk in (bytearray(b"abc"), memoryview(b"xabcx")[1:4]):
        (frame,) = framer.feed(chunk)  # type: ignore[arg-type]
        assert type(frame) is bytes
        assert frame == b"abc"


def test_encode() -> None:
    assert Raw().encode(b"abc") == b"abc"
    assert type(Raw().encode(bytearray(b"abc"))) is bytes
    with pytest.raises(TypeError):
        Raw().encode(3)  # bytes(3) would silently give three zero bytes


def test_fresh() -> None:
    framer = Raw()
    assert type(framer.fresh()) is Raw
    assert framer.fresh() is not framer
