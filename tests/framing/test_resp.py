"""Resp: the Redis protocol's commands, fed whole, byte by byte and split anywhere."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemonkit import Connection, Daemon
from daemonkit.errors import ConfigError, FrameTooLarge, FramingError, ProtocolError
from daemonkit.framing import ErrorReply, Resp
from daemonkit.framing.resp import MAX_REPLY_DEPTH
from tests.helpers import recv_until

from .test_base import WAYS, CountingBuffer, bytewise, split_at

Outcome = tuple[list[list[bytes]], type[FramingError] | None]


def command(*args: bytes) -> bytes:
    """``args`` as a client sends them: an array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def feed(framer: Resp, chunks: list[bytes]) -> Outcome:
    frames: list[list[bytes]] = []
    for chunk in chunks:
        try:
            got = framer.feed(chunk)
        except FramingError as exc:
            return frames + exc.frames, type(exc)  # type: ignore[attr-defined]
        assert all(type(f) is list and all(type(a) is bytes for a in f) for f in got), got
        frames += got
    return frames, None


GOOD: list[tuple[Resp, bytes, list[list[bytes]]]] = [
    (Resp(), b"", []),
    (Resp(), command(b"PING"), [[b"PING"]]),
    (Resp(), command(b"SET", b"k", b"v") + command(b"GET", b"k"),
     [[b"SET", b"k", b"v"], [b"GET", b"k"]]),
    (Resp(), command(b"SET", b"k\r\n$1\r\n*", b""), [[b"SET", b"k\r\n$1\r\n*", b""]]),
    (Resp(), b"PING\r\nSET k  v\n\r\n  \r\n", [[b"PING"], [b"SET", b"k", b"v"]]),
    (Resp(), b"*0\r\n*-1\r\n" + command(b"X"), [[b"X"]]),
    (Resp(max_length=3, max_args=2), command(b"abc", b"de"), [[b"abc", b"de"]]),
    (Resp(max_command=20), command(b"ab", b"cd"), [[b"ab", b"cd"]]),
    (Resp(max_inline=4), b"PING\r\n*1\r\n$3\r\nabc\r\n", [[b"PING"], [b"abc"]]),
    # Headers the digit loop reads itself (up to 18 digits, leading zeros
    # included) and those it leaves to the careful path (19 digits): one result.
    (Resp(), b"*01\r\n$003\r\nabc\r\n", [[b"abc"]]),
    (Resp(), b"*1\r\n$" + b"0" * 17 + b"1\r\na\r\n", [[b"a"]]),
    (Resp(), b"*1\r\n$" + b"0" * 18 + b"1\r\na\r\n", [[b"a"]]),
    (Resp(max_inline=2), command(b"a"), [[b"a"]]),
]  # fmt: skip
# (framer, stream, commands before the error, error)
BAD: list[tuple[Resp, bytes, list[list[bytes]], type[FramingError]]] = [
    (Resp(), b"*1\r\n:1\r\n", [], ProtocolError),
    (Resp(), command(b"A") + b"*1\r\n+x\r\n", [[b"A"]], ProtocolError),
    (Resp(), b"*x\r\n", [], ProtocolError),
    (Resp(), b"*\r\n", [], ProtocolError),
    (Resp(), b"*1\n", [], ProtocolError),
    (Resp(), b"*1\r\n$1\n", [], ProtocolError),
    (Resp(), b"*1\r\n$-1\r\n", [], ProtocolError),
    (Resp(), b"*1\r\n$ 1\r\n", [], ProtocolError),
    (Resp(), b"*1\r\n$1\r\nab\r\n", [], ProtocolError),
    (Resp(), b"*1\r\n$1\r\na\n\r", [], ProtocolError),
    (Resp(), b"*99999999999999999999\r\n", [], FrameTooLarge),
    (Resp(max_args=2), command(b"a") + command(b"a", b"b", b"c"), [[b"a"]], FrameTooLarge),
    (Resp(max_length=3), b"*1\r\n$4\r\n", [], FrameTooLarge),
    (Resp(max_command=19), command(b"ab", b"cd"), [], FrameTooLarge),
    (Resp(max_inline=4), b"PINGS\r\n", [], FrameTooLarge),
    (Resp(max_inline=4), b"PINGS", [], FrameTooLarge),
    (Resp(max_inline=4), b"PING\rx", [], FrameTooLarge),
    (Resp(max_inline=4), b"PINGS\n", [], FrameTooLarge),
    (Resp(max_inline=4), b"*1\r\n$1000", [], FrameTooLarge),
    (Resp(max_inline=4), command(b"a") + b"*10000\r\n", [[b"a"]], FrameTooLarge),
    (Resp(max_inline=2), b"*10\r\n", [], FrameTooLarge),
    (Resp(), b"*1\r\n$+1\r\na\r\n", [], ProtocolError),
    (Resp(), b"*1\r\n$1 \r\na\r\n", [], ProtocolError),
    (Resp(), b"*" + b"9" * 18 + b"\r\n", [], FrameTooLarge),
    (Resp(), b"*1\r\n$" + b"9" * 18 + b"\r\n", [], FrameTooLarge),
]


def ids(cases: list[Any]) -> list[str]:
    return [f"{case[1]!r}"[:50] for case in cases]


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("framer", "stream", "frames"), GOOD, ids=ids(GOOD))
def test_good(framer: Resp, stream: bytes, frames: list[list[bytes]], way: Any) -> None:
    fresh = framer.fresh()
    assert feed(fresh, way(stream)) == (frames, None)
    assert fresh.buffered == 0


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("framer", "stream", "frames", "error"), BAD, ids=ids(BAD))
def test_bad(
    framer: Resp, stream: bytes, frames: list[list[bytes]], error: type[FramingError], way: Any
) -> None:
    fresh = framer.fresh()
    assert feed(fresh, way(stream)) == (frames, error)
    with pytest.raises(error, match="already failed") as caught:
        fresh.feed(command(b"PING"))
    assert caught.value.frames == []  # type: ignore[attr-defined]
    assert fresh.buffered == 0


def test_a_partial_command_is_held_and_counted() -> None:
    framer = Resp()
    data = command(b"SET", b"key", b"value")
    assert framer.feed(data[:20]) == []
    assert framer.buffered == 20
    assert framer.feed(data[20:]) == [[b"SET", b"key", b"value"]]
    assert framer.buffered == 0


def test_a_length_over_its_limit_raises_before_the_payload() -> None:
    framer = Resp(max_length=10)
    with pytest.raises(FrameTooLarge, match="max_length=10") as caught:
        framer.feed(command(b"ok") + b"*1\r\n$11\r\n")
    assert caught.value.frames == [[b"ok"]]  # type: ignore[attr-defined]
    with pytest.raises(FrameTooLarge, match="max_args=3"):
        Resp(max_args=3).feed(b"*4\r\n")
    with pytest.raises(FrameTooLarge, match="max_command=100"):
        Resp(max_command=100).feed(b"*2\r\n$50\r\n" + b"x" * 50 + b"\r\n$50\r\n")


def test_a_line_without_end_is_cut_at_max_inline() -> None:
    framer = Resp(max_inline=1000)
    assert framer.feed(b"x" * 1000) == []
    assert framer.feed(b"\r") == []  # it may be the line's end
    assert framer.feed(b"\n") == [[b"x" * 1000]]
    assert framer.feed(b"x" * 1000) == []
    with pytest.raises(FrameTooLarge, match="max_inline=1000"):
        framer.feed(b"x")


# -- property tests ----------------------------------------------------------------

ARGS = st.lists(st.binary(max_size=40), min_size=1, max_size=6)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cut(draw: Callable[..., Any], data: bytes) -> list[bytes]:
    if draw(st.booleans()):
        return bytewise(data)
    return split_at(data, draw(st.lists(st.integers(0, len(data)), max_size=12)))


@SETTINGS
@given(commands=st.lists(ARGS, max_size=8), data=st.data())
def test_any_split_of_a_valid_stream_gives_the_same_commands(
    commands: list[list[bytes]], data: st.DataObject
) -> None:
    stream = b"".join(command(*args) for args in commands)
    chunks = data.draw(cut(stream))
    assert feed(Resp(), chunks) == (commands, None)


@SETTINGS
@given(stream=st.binary(max_size=200), data=st.data())
def test_any_split_of_any_input_gives_the_same_outcome(stream: bytes, data: st.DataObject) -> None:
    """Garbage included: only framing errors escape, and where it is cut does not matter."""
    framer = Resp(max_length=20, max_args=4, max_command=60, max_inline=30)
    expected = feed(framer.fresh(), [stream])
    assert feed(framer.fresh(), data.draw(cut(stream))) == expected


@SETTINGS
@given(
    commands=st.lists(ARGS, min_size=1, max_size=4),
    junk=st.sampled_from([b"*x\r\n", b"*1\r\n:", b"*1\r\n$-2\r\n", b"*1\r\n$1\r\nabc", b"*9\r\n"]),
    data=st.data(),
)
def test_commands_before_bad_input_are_delivered_with_the_error(
    commands: list[list[bytes]], junk: bytes, data: st.DataObject
) -> None:
    stream = b"".join(command(*args) for args in commands) + junk
    framer = Resp(max_args=8)
    got = feed(framer, data.draw(cut(stream)))
    error = FrameTooLarge if junk == b"*9\r\n" else ProtocolError
    assert got == (commands, error)


# -- linear buffering --------------------------------------------------------------


def test_a_long_argument_fed_one_byte_at_a_time_costs_linear_work() -> None:
    framer = Resp()
    value = b"v" * 100_000
    stream = command(b"SET", b"k", value)
    buf = framer._buffer = CountingBuffer()
    assert feed(framer, bytewise(stream)) == ([[b"SET", b"k", value]], None)
    assert framer._buffer is buf, "the buffer was rebuilt"
    assert buf.touched <= 4 * len(stream)


def test_many_arguments_fed_one_byte_at_a_time_cost_linear_work() -> None:
    framer = Resp()
    args = [b"%d" % i for i in range(5_000)]
    stream = command(*args)
    buf = framer._buffer = CountingBuffer()
    assert feed(framer, bytewise(stream)) == ([args], None)
    assert buf.touched <= 4 * len(stream)


# -- replies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (b"hello", b"$5\r\nhello\r\n"),
        (b"", b"$0\r\n\r\n"),
        (bytearray(b"a\r\n"), b"$3\r\na\r\n\r\n"),
        (memoryview(b"ab"), b"$2\r\nab\r\n"),
        ("OK", b"+OK\r\n"),
        ("é", b"+\xc3\xa9\r\n"),
        (42, b":42\r\n"),
        (-1, b":-1\r\n"),
        (True, b":1\r\n"),
        (HTTPStatus.NOT_FOUND, b":404\r\n"),  # an int subclass: its value, not its name
        (12345678901234567890123, b":12345678901234567890123\r\n"),
        (b"x" * 70000, b"$70000\r\n" + b"x" * 70000 + b"\r\n"),
        (None, b"$-1\r\n"),
        (ErrorReply("ERR unknown command 'FOO'"), b"-ERR unknown command 'FOO'\r\n"),
        ([], b"*0\r\n"),
        ([b"a", 1, None, ("OK", [b""])],
         b"*4\r\n$1\r\na\r\n:1\r\n$-1\r\n*2\r\n+OK\r\n*1\r\n$0\r\n\r\n"),
    ],
)  # fmt: skip
def test_encode(reply: Any, wire: bytes) -> None:
    assert Resp().encode(reply) == wire


def test_encode_all_is_the_replies_joined() -> None:
    replies: list[Any] = ["OK", b"v", None, 3]
    assert Resp().encode_all(replies) == b"".join(Resp().encode(r) for r in replies)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("two\r\nlines", ValueError),
        ("a\nb", ValueError),
        (ErrorReply("ERR\r\n+OK"), ValueError),
        (1.5, TypeError),
        (object(), TypeError),
        ({"a": 1}, TypeError),
    ],
)
def test_encode_refuses_what_the_peer_would_misread(reply: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Resp().encode(reply)


def test_encode_refuses_arrays_nested_too_deep() -> None:
    deep: list[Any] = []
    for _ in range(MAX_REPLY_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper"):
        Resp().encode(deep)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nested deeper"):
        Resp().encode(loop)


def test_error_reply_compares_by_message() -> None:
    assert ErrorReply("ERR x") == ErrorReply("ERR x") != ErrorReply("ERR y")
    assert len({ErrorReply("ERR x"), ErrorReply("ERR x")}) == 1
    assert repr(ErrorReply("ERR x")) == "ErrorReply('ERR x')"


# -- settings ----------------------------------------------------------------------


def test_fresh_and_repr_keep_the_limits() -> None:
    framer = Resp(max_length=5, max_args=6, max_command=7, max_inline=8)
    assert repr(framer.fresh()) == "Resp(max_length=5, max_args=6, max_command=7, max_inline=8)"
    assert framer.max_length == 5


@pytest.mark.parametrize("name", ["max_length", "max_args", "max_command", "max_inline"])
@pytest.mark.parametrize(
    ("value", "error"), [(0, ConfigError), (-1, ConfigError), ("1", TypeError)]
)
def test_constructor_validation(name: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        Resp(**{name: value})  # type: ignore[arg-type]


# -- a daemon, and a real Redis client -----------------------------------------------


class TinyRedis(Daemon):
    """GET/SET/INCRBY/MGET/PING on a dict, the way a user writes it with ``framing = Resp``."""

    listen = "tcp://127.0.0.1:0"
    framing = Resp

    def on_start(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def on_read(self, conn: Connection, command: list[bytes]) -> None:
        name, args = command[0].upper(), command[1:]
        if name == b"PING":
            conn.send(args[0] if args else "PONG")
        elif name == b"SET" and len(args) == 2:
            self.data[args[0]] = args[1]
            conn.send("OK")
        elif name == b"GET" and len(args) == 1:
            conn.send(self.data.get(args[0]))
        elif name == b"INCRBY" and len(args) == 2:  # redis-py's incr()
            value = int(self.data.get(args[0], b"0")) + int(args[1])
            self.data[args[0]] = b"%d" % value
            conn.send(value)
        elif name == b"MGET":
            conn.send([self.data.get(key) for key in args])
        else:
            conn.send(ErrorReply(f"ERR unknown command '{name.decode(errors='replace')}'"))


def test_a_redis_client_talks_to_a_resp_daemon(run_daemon: Any) -> None:
    redis = pytest.importorskip("redis")
    runner = run_daemon(TinyRedis())
    host, port = runner.address.host, runner.address.port
    client = redis.Redis(host=host, port=port, socket_timeout=10, protocol=2)
    try:
        assert client.ping() is True
        assert client.set("k", b"v\r\nwith crlf") is True
        assert client.get("k") == b"v\r\nwith crlf"
        assert client.incr("n") == 1 and client.incr("n") == 2
        assert client.mget("k", "missing", "n") == [b"v\r\nwith crlf", None, b"2"]
        big = bytes(range(256)) * 2048  # 512 KiB, in many reads
        assert client.set("big", big) is True and client.get("big") == big
        with client.pipeline(transaction=False) as pipe:
            for _ in range(100):
                pipe.incr("counter")
            assert pipe.execute() == list(range(1, 101))
        with pytest.raises(redis.ResponseError, match="unknown command 'NOPE'"):
            client.execute_command("NOPE")
    finally:
        client.close()
    with runner.connect() as sock:  # what a person types into nc
        sock.sendall(b"PING\r\nGET k\r\n")
        assert recv_until(sock, b"with crlf\r\n") == b"+PONG\r\n$12\r\nv\r\nwith crlf\r\n"
