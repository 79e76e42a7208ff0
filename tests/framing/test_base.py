"""The contract every framer keeps, and the helpers the other framing tests share.

The helpers feed a stream in chunks and report what came out, counting the
frames an error carries in ``exc.frames`` as delivered (the daemon delivers
them before closing).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import pathlib
import sys
from collections.abc import Callable, Iterable
from inspect import ismodule
from typing import Any

import pytest

import daemonkit.framing
from daemonkit.errors import ConfigError, FrameTooLarge, FramingError, ProtocolError
from daemonkit.framing import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LINE,
    Framer,
    LengthPrefixed,
    Lines,
    Netstrings,
    Raw,
)

Outcome = tuple[list[Any], type[FramingError] | None]


def feed_chunks(framer: Framer, chunks: Iterable[bytes]) -> Outcome:
    """Feed *chunks* in order; return every frame delivered and the error type, if any."""
    frames: list[Any] = []
    for chunk in chunks:
        try:
            got = framer.feed(chunk)
        except FramingError as exc:
            frames += exc.frames  # type: ignore[attr-defined]
            return frames, type(exc)
        assert all(type(frame) is bytes for frame in got), got
        frames += got
    return frames, None


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """Cut *data* at the given offsets (any order, duplicates give empty chunks)."""
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


class CountingBuffer(bytearray):
    """A framer buffer that counts the bytes its searches and copies can touch.

    Install it as ``framer._buffer`` before the first feed. Framers change
    their buffer only in place, so it stays installed; the linearity tests
    check that, then bound ``touched`` by a multiple of the stream length.
    Nothing here measures time.
    """

    touched = 0

    def _span(self, start: Any = None, end: Any = None) -> int:
        lo, hi, _ = slice(start, end).indices(len(self))
        return max(hi - lo, 0)

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        self.touched += self._span(start, end)
        return super().find(sub, start, end)

    def rfind(self, sub: Any, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        self.touched += self._span(start, end)
        return super().rfind(sub, start, end)

    def index(self, sub: Any, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        self.touched += self._span(start, end)
        return super().index(sub, start, end)

    def count(self, sub: Any, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        self.touched += self._span(start, end)
        return super().count(sub, start, end)

    def split(self, *args: Any, **kwargs: Any) -> list[bytearray]:
        self.touched += len(self)
        return super().split(*args, **kwargs)

    def __contains__(self, item: Any) -> bool:
        self.touched += len(self)
        return super().__contains__(item)

    def __getitem__(self, key: Any) -> Any:
        item = super().__getitem__(key)
        self.touched += len(item) if isinstance(key, slice) else 1
        return item

    def __bytes__(self) -> bytes:
        self.touched += len(self)
        return bytes(memoryview(self))


#: The two ways every case is fed; a third, with trailing data, is in each file.
WAYS: dict[str, Callable[[bytes], list[bytes]]] = {"whole": whole, "bytewise": bytewise}


def outcome(framer: Framer, data: bytes, way: Callable[[bytes], list[bytes]]) -> Outcome:
    return feed_chunks(framer.fresh(), way(data))


# One prototype of each framer with small limits, for the contract tests.
PROTOTYPES: dict[str, Framer] = {
    "raw": Raw(),
    "lines": Lines(b"\r\n", max_length=10),
    "length": LengthPrefixed("!H", max_length=10),
    "netstring": Netstrings(max_length=10),
}
# Input that breaks each framer except Raw, and the error it raises.
BAD_INPUT: dict[str, tuple[bytes, type[FramingError]]] = {
    "lines": (b"x" * 20, FrameTooLarge),
    "length": (b"\x00\x0b", FrameTooLarge),
    "netstring": (b"x:", ProtocolError),
}
# A frame, and a proper prefix of another encoded frame.
SAMPLE = b"hello"


@pytest.fixture(params=sorted(PROTOTYPES))
def prototype(request: pytest.FixtureRequest) -> Framer:
    return PROTOTYPES[request.param]


@pytest.fixture(params=sorted(BAD_INPUT))
def breakable(request: pytest.FixtureRequest) -> tuple[Framer, bytes, type[FramingError]]:
    bad, error = BAD_INPUT[request.param]
    return PROTOTYPES[request.param].fresh(), bad, error


def test_fresh_is_new_empty_and_alike(prototype: Framer) -> None:
    framer = prototype.fresh()
    copy = framer.fresh()
    assert type(copy) is type(framer)
    assert copy is not framer
    assert repr(copy) == repr(framer) == repr(prototype)
    assert copy.feed(copy.encode(SAMPLE)) == [SAMPLE]
    # One settings dict for all the copies (memory per connection): never changed.
    assert copy._settings is framer._settings is prototype._settings


def test_a_framing_class_makes_framers_that_share_one_settings_dict() -> None:
    """``framing = Lines`` (a class): each connection's ``Lines()`` keeps no dict of its own."""
    from daemonkit.framework.hosts import framer_factory

    factory = framer_factory(Lines)
    assert factory is not None
    first, second, third = factory(), factory(), factory()
    assert type(first) is Lines and first is not second
    assert second._settings is first._settings is third._settings
    assert third.feed(b"a\nb") == [b"a"] and second.buffered == 0  # no state shared

    class Counted(Raw):
        """Settings that differ between framers stay each framer's own."""

        made = 0

        def __init__(self) -> None:
            Counted.made += 1
            Framer.__init__(self, n=Counted.made)

    factory = framer_factory(Counted)
    assert factory is not None
    a, b = factory(), factory()
    assert a._settings == {"n": 1} and b._settings == {"n": 2}


@pytest.mark.parametrize("name", sorted(BAD_INPUT))
def test_fresh_shares_no_state(name: str) -> None:
    prototype = PROTOTYPES[name]
    framer = prototype.fresh()
    encoded = framer.encode(SAMPLE)
    assert framer.feed(encoded[:-1]) == []
    copy = framer.fresh()
    assert copy.buffered == 0
    assert prototype.buffered == 0
    assert copy.feed(encoded) == [SAMPLE]
    # The original still holds its partial frame.
    assert framer.feed(encoded[-1:]) == [SAMPLE]


def test_repr_shows_the_settings() -> None:
    assert repr(Lines(b"\r\n", max_length=100)) == "Lines(delimiter=b'\\r\\n', max_length=100)"
    assert repr(LengthPrefixed("<H", 7)) == "LengthPrefixed(header='<H', max_length=7)"
    assert repr(Netstrings(9)) == "Netstrings(max_length=9)"
    assert repr(Raw()) == "Raw()"


def test_framer_is_abstract() -> None:
    with pytest.raises(TypeError):
        Framer()  # type: ignore[abstract]


def test_a_subclass_gets_fresh_from_its_settings() -> None:
    class Upper(Lines):
        """Lines that upper-case what they read."""

        def feed(self, data: bytes) -> list[bytes]:
            return [line.upper() for line in super().feed(data)]

    framer = Upper(b";", max_length=3).fresh()
    assert type(framer) is Upper
    assert framer.feed(b"ab;c") == [b"AB"]
    assert framer.fresh().buffered == 0


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_bytes_like_input_gives_bytes_frames(prototype: Framer, kind: type[Any]) -> None:
    framer = prototype.fresh()
    data = framer.encode(SAMPLE) * 2
    frames = framer.feed(kind(data[:3])) + framer.feed(kind(data[3:]))
    assert all(type(frame) is bytes for frame in frames)
    if type(framer) is Raw:
        assert frames == [data[:3], data[3:]]
    else:
        assert frames == [SAMPLE, SAMPLE]


def test_encode_accepts_bytes_like_and_returns_bytes(prototype: Framer) -> None:
    for frame in (bytearray(SAMPLE), memoryview(SAMPLE)):
        encoded = prototype.encode(frame)
        assert type(encoded) is bytes
        assert encoded == prototype.encode(SAMPLE)


@pytest.mark.parametrize("frame", ["text", 5, None])
def test_encode_rejects_what_is_not_bytes_like(prototype: Framer, frame: object) -> None:
    if isinstance(prototype, Lines) and isinstance(frame, str):
        # Lines sends text as UTF-8, so one message suits line and WebSocket peers.
        assert prototype.encode(frame) == frame.encode() + prototype.delimiter
        return
    with pytest.raises(TypeError):
        prototype.encode(frame)


def test_error_carries_the_frames_before_it(
    breakable: tuple[Framer, bytes, type[FramingError]],
) -> None:
    framer, bad, error = breakable
    good = framer.encode(b"one") + framer.encode(b"two")
    with pytest.raises(error) as info:
        framer.feed(good + bad + framer.encode(b"never"))
    assert info.value.frames == [b"one", b"two"]  # type: ignore[attr-defined]
    assert framer.buffered == 0


def test_error_frames_are_empty_when_earlier_feeds_delivered(
    breakable: tuple[Framer, bytes, type[FramingError]],
) -> None:
    framer, bad, error = breakable
    assert framer.feed(framer.encode(b"one")) == [b"one"]
    with pytest.raises(error) as info:
        framer.feed(bad)
    assert info.value.frames == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("later", [b"", b"\x00\x01a", b"0:,", b"ok\r\n"])
def test_feeding_after_an_error_raises_the_same_kind_again(
    breakable: tuple[Framer, bytes, type[FramingError]], later: bytes
) -> None:
    framer, bad, error = breakable
    with pytest.raises(error):
        framer.feed(bad)
    for _ in range(2):
        with pytest.raises(error, match="already failed") as info:
            framer.feed(later)
        assert info.value.frames == []  # type: ignore[attr-defined]
        assert framer.buffered == 0
    # Encoding still works, and a fresh framer is healthy.
    assert framer.fresh().feed(framer.encode(b"ok")) == [b"ok"]


def test_error_messages_name_the_limit() -> None:
    with pytest.raises(FrameTooLarge, match=r"line longer than max_length=10 bytes"):
        Lines(max_length=10).feed(b"x" * 11)
    with pytest.raises(FrameTooLarge, match=r"announces 11 bytes.*max_length=10 bytes"):
        LengthPrefixed("B", max_length=10).feed(b"\x0b")
    with pytest.raises(FrameTooLarge, match=r"length 11 .*max_length=10 bytes"):
        Netstrings(max_length=10).feed(b"11:")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Lines(max_length=0),
        lambda: Lines(max_length=-5),
        lambda: Lines(b""),
        lambda: LengthPrefixed(max_length=0),
        lambda: Netstrings(max_length=0),
    ],
)
def test_bad_settings_are_config_errors(make: Callable[[], Framer]) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert isinstance(info.value, ValueError)


def test_defaults() -> None:
    assert DEFAULT_MAX_LINE == 64 * 1024
    assert DEFAULT_MAX_FRAME == 1024 * 1024
    assert Lines().max_length == DEFAULT_MAX_LINE
    assert Lines().delimiter == b"\n"
    assert LengthPrefixed().max_length == DEFAULT_MAX_FRAME
    assert LengthPrefixed().header == "!I"
    assert Netstrings().max_length == DEFAULT_MAX_FRAME


def test_all_lists_the_public_names() -> None:
    # "@py_builtins" & co: pytest rewrites the asserts of a plugin's whole
    # distribution, and daemonkit ships one (daemonkit.testing.plugin).
    public = {name for name in vars(daemonkit.framing) if not name.startswith(("_", "@"))}
    # The package's modules (http, http_client... imported on use: they need
    # httptools) are attributes once imported, not re-exports.
    modules = {name for name, value in vars(daemonkit.framing).items() if ismodule(value)}
    modules.add("annotations")
    assert set(daemonkit.framing.__all__) == public - modules
    assert sorted(daemonkit.framing.__all__) == daemonkit.framing.__all__


def test_public_names_have_docstrings() -> None:
    if daemonkit.CORE == "compiled":
        pytest.skip("mypyc keeps no docstrings; the pure-core run of the suite checks them")
    for name in daemonkit.framing.__all__:
        value = getattr(daemonkit.framing, name)
        if inspect.isclass(value):
            assert inspect.getdoc(value), name
            for attr, member in vars(value).items():
                if attr.startswith("_"):
                    continue
                if callable(member) or isinstance(member, property):
                    assert inspect.getdoc(member), f"{name}.{attr}"


def test_framers_import_only_the_stdlib_and_errors() -> None:
    """Framers stay sans-IO: no daemonkit layer above errors, no asyncio, no logging."""
    forbidden = {"asyncio", "socket", "selectors", "logging", "time", "uvloop", "threading"}
    package = pathlib.Path(daemonkit.framing.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, path
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ours = name == "daemonkit.errors" or name.startswith("daemonkit.framing")
                # The HTTP framer wraps llhttp (httptools): a parser, no I/O.
                ours = ours or (path.name in ("http.py", "http_client.py") and top == "httptools")
                # mypyc_attr: a marker for the compiler (daemonkit.core.compiled), no I/O.
                ours = ours or name == "mypy_extensions"
                stdlib = top in sys.stdlib_module_names and top not in forbidden
                assert ours or stdlib, f"{path.name} imports {name}"


def test_a_subclass_without_encode_is_abstract() -> None:
    class Half(Framer):
        def feed(self, data: bytes) -> list[bytes]:
            return [data]

    with pytest.raises(TypeError, match="Half is abstract"):
        Half()  # type: ignore[abstract]
