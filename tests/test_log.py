"""Tests for daemonkit.core.log: colour policy, set-up, file reopening, prefixes, storms.

Nothing here sleeps: storm tests craft LogRecords with chosen ``created``
times, and every logger is a fresh name closed by the fixture.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemonkit.core import log
from daemonkit.errors import ConfigError

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "2024-05-01 12:00:00.123+02:00 [4242] INFO    daemonkit: ready"
LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d \[\d+\] "
    r"(?P<level>[A-Z]+) +(?P<name>\S+): (?P<message>.*)$"
)


class TTY(io.StringIO):
    """A StringIO that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


class NoTTY(io.StringIO):
    def isatty(self) -> bool:
        return False


Setup = Callable[..., log.LogConfig]


@pytest.fixture
def configure(request: pytest.FixtureRequest) -> Iterator[Setup]:
    """log.setup on a logger private to this test; every config is closed afterwards."""
    made: list[log.LogConfig] = []
    name = f"test_log.{request.node.name}"

    def _setup(**kwargs: Any) -> log.LogConfig:
        kwargs.setdefault("logger_name", name)
        config = log.setup(**kwargs)
        made.append(config)
        return config

    yield _setup
    for config in made:
        config.close()


def lines(text: str) -> list[str]:
    return text.splitlines()


def messages(text: str) -> list[str]:
    out = []
    for line in lines(ANSI.sub("", text)):
        match = LINE.match(line)
        assert match, f"bad layout: {line!r}"
        out.append(match["message"])
    return out


def rec(
    msg: str,
    created: float,
    *args: object,
    level: int = logging.ERROR,
    name: str = "storm",
    exc: BaseException | None = None,
) -> logging.LogRecord:
    """A record as a logger would make it, at time *created*."""
    exc_info = (type(exc), exc, None) if exc is not None else None
    record = logging.LogRecord(name, level, __file__, 1, msg, args or None, exc_info)
    record.created = created
    record.msecs = (created % 1) * 1000
    return record


class Sink:
    """Collects the summaries a StormFilter emits."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []

    def __call__(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


# --- use_color ---------------------------------------------------------------


@pytest.mark.parametrize("tty", [True, False])
@pytest.mark.parametrize("no_color", ["1", "", None], ids=["NO_COLOR=1", "NO_COLOR=", "unset"])
@pytest.mark.parametrize("color", ["always", "never", "auto"])
def test_use_color_matrix(color: str, no_color: str | None, tty: bool) -> None:
    environ = {} if no_color is None else {"NO_COLOR": no_color}
    stream = TTY() if tty else NoTTY()
    expected = {"always": True, "never": False, "auto": tty and not no_color}[color]
    assert log.use_color(color, stream, environ) is expected


def test_use_color_ignores_force_color_and_the_real_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert log.use_color("auto", TTY(), {}) is True  # reads only its arguments
    assert log.use_color("auto", NoTTY(), {"FORCE_COLOR": "1"}) is False
    assert log.use_color("auto", TTY(), {"FORCE_COLOR": "1", "NO_COLOR": "1"}) is False


def test_use_color_is_case_insensitive() -> None:
    assert log.use_color("ALWAYS", NoTTY(), {}) is True
    assert log.use_color(" Never ", TTY(), {}) is False


def test_use_color_treats_a_closed_or_odd_stream_as_not_a_tty() -> None:
    closed = TTY()
    closed.close()
    assert log.use_color("auto", io.StringIO(), {}) is False
    assert log.use_color("auto", object(), {}) is False  # type: ignore[arg-type]
    broken = io.StringIO()
    broken.close()
    assert log.use_color("auto", broken, {}) is False


@pytest.mark.parametrize("bad", ["yes", "", "colour", "tty"])
def test_use_color_rejects_unknown_options(bad: str) -> None:
    with pytest.raises(ConfigError, match="auto, always, never"):
        log.use_color(bad, TTY(), {})


# --- setup: layout, levels, handlers ------------------------------------------


def test_layout(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out, color="never", logger_name="daemonkit.test_layout")
    config.logger.info("ready on %s", "tcp://127.0.0.1:7000")
    config.logger.getChild("conn").warning("slow")
    first, second = lines(out.getvalue())
    assert LINE.match(first)
    assert first.endswith(" INFO    daemonkit.test_layout: ready on tcp://127.0.0.1:7000")
    assert second.endswith(" WARNING daemonkit.test_layout.conn: slow")
    assert "\x1b" not in out.getvalue()


def test_level_filtering(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out, level="WARNING")
    config.logger.info("hidden")
    config.logger.warning("shown")
    config.logger.error("also shown")
    assert messages(out.getvalue()) == ["shown", "also shown"]


def test_trace_is_emitted_at_trace_and_hidden_at_debug(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out, level="trace")
    config.logger.log(log.TRACE, "wire %r", b"\x00ab")
    config = configure(stream=out, level="debug")
    config.logger.log(log.TRACE, "hidden")
    config.logger.debug("debug")
    text = out.getvalue()
    assert [m["level"] for m in map(LINE.match, lines(text)) if m] == ["TRACE", "DEBUG"]
    assert messages(text) == ["wire b'\\x00ab'", "debug"]


def test_levels_and_trace_registration() -> None:
    assert log.TRACE == 5 < logging.DEBUG
    assert logging.getLevelName(log.TRACE) == "TRACE"
    assert list(log.LEVELS) == ["trace", "debug", "info", "warning", "error", "critical"]
    assert list(log.LEVELS.values()) == sorted(log.LEVELS.values())
    with pytest.raises(TypeError):
        log.LEVELS["verbose"] = 1  # type: ignore[index]


def test_int_level(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out, level=25)
    config.logger.info("hidden")
    config.logger.log(25, "shown")
    assert lines(out.getvalue())[0].endswith(f"Level 25 {config.logger.name}: shown")
    assert len(lines(out.getvalue())) == 1
    assert config.logger.level == 25


@pytest.mark.parametrize("bad", ["verbose", "", "warn ing", "10", True, -1, 1.5, None])
def test_bad_level_raises_config_error(configure: Setup, bad: object) -> None:
    with pytest.raises(ConfigError, match="trace, debug, info, warning, error, critical"):
        configure(stream=io.StringIO(), level=bad)


def test_bad_color_raises_config_error(configure: Setup, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="auto, always, never"):
        configure(stream=io.StringIO(), color="rainbow")
    with pytest.raises(ConfigError, match="auto, always, never"):
        configure(file=tmp_path / "d.log", color="rainbow")
    assert not (tmp_path / "d.log").exists()


def test_setup_twice_keeps_one_root_handler_and_writes_once(configure: Setup) -> None:
    first_out, second_out = io.StringIO(), io.StringIO()
    first = configure(stream=first_out)
    second = configure(stream=second_out)
    assert second.logger is first.logger
    assert logging.getLogger().handlers == [second.handler]
    assert second.logger.handlers == []
    assert second.logger.propagate is True
    second.logger.info("only once")
    assert first_out.getvalue() == ""
    assert messages(second_out.getvalue()) == ["only once"]


def test_setup_replaces_foreign_handlers_and_flushes_old_storms(configure: Setup) -> None:
    first_out = io.StringIO()
    first = configure(stream=first_out)
    for i in range(3):
        first.logger.handle(rec("boom %d", 100.0 + i / 10, i, name=first.logger.name))
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    second = configure(stream=io.StringIO())
    assert logging.getLogger().handlers == [second.handler]
    assert messages(first_out.getvalue()) == [
        "boom 0",
        "boom 2 (repeated 2 times in the last 0.2s)",
    ]


def test_setup_closes_the_old_file(configure: Setup, tmp_path: Path) -> None:
    first = configure(file=tmp_path / "a.log")
    assert isinstance(first.handler, logging.FileHandler)
    configure(file=tmp_path / "b.log")
    assert first.handler.stream is None  # closed


def test_unopenable_file_is_a_config_error_and_keeps_the_old_setup(
    configure: Setup, tmp_path: Path
) -> None:
    out = io.StringIO()
    config = configure(stream=out)
    with pytest.raises(ConfigError, match="cannot open log file"):
        configure(file=tmp_path / "missing-dir" / "d.log")
    assert logging.getLogger().handlers == [config.handler]
    config.logger.info("still here")
    assert messages(out.getvalue()) == ["still here"]


def test_set_level(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out)
    config.logger.debug("hidden")
    config.set_level("debug")
    config.logger.debug("shown")
    with pytest.raises(ConfigError):
        config.set_level("loud")
    assert config.logger.level == logging.DEBUG
    assert messages(out.getvalue()) == ["shown"]


def test_stream_defaults_to_stderr(configure: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    config = configure(color="never")
    config.logger.warning("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert messages(captured.err) == ["to stderr"]


# --- colour output ------------------------------------------------------------


@pytest.mark.parametrize(
    ("color", "stream_cls", "env", "colored"),
    [
        ("always", NoTTY, {}, True),
        ("always", NoTTY, {"NO_COLOR": "1"}, True),  # the option beats the environment
        ("never", TTY, {}, False),
        ("never", TTY, {"FORCE_COLOR": "1"}, False),  # colorlog would colour here
        ("auto", TTY, {}, True),
        ("auto", TTY, {"NO_COLOR": "1"}, False),
        ("auto", TTY, {"NO_COLOR": ""}, True),
        ("auto", NoTTY, {}, False),
        ("auto", NoTTY, {"FORCE_COLOR": "1"}, False),
    ],
)
def test_ansi_escapes_only_when_decided(
    configure: Setup,
    monkeypatch: pytest.MonkeyPatch,
    color: str,
    stream_cls: type[io.StringIO],
    env: dict[str, str],
    colored: bool,
) -> None:
    for var in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    out = stream_cls()
    config = configure(stream=out, color=color, level="trace")
    for level in (log.TRACE, logging.DEBUG, logging.INFO, logging.ERROR):
        config.logger.log(level, "hello")
    text = out.getvalue()
    assert bool(ANSI.search(text)) is colored
    assert messages(text) == ["hello"] * 4  # same layout once the escapes are stripped


def test_a_file_is_never_colored(
    configure: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    config = configure(file=tmp_path / "d.log", color="always")
    config.logger.error("plain")
    config.close()
    text = (tmp_path / "d.log").read_text()
    assert "\x1b" not in text
    assert messages(text) == ["plain"]


# --- files and reopen -----------------------------------------------------------


def test_file_appends(configure: Setup, tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    path.write_text("earlier line\n")
    config = configure(file=str(path))
    config.logger.info("appended é")
    config.close()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("earlier line\n")
    assert messages(text[len("earlier line\n") :]) == ["appended é"]


def test_reopen_after_logrotate_rename(configure: Setup, tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    rotated = tmp_path / "d.log.1"
    config = configure(file=path)
    config.logger.info("before rotation")
    path.rename(rotated)
    config.logger.info("still to the renamed file")  # the open fd follows the rename
    assert not path.exists()
    config.reopen()
    config.logger.info("after reopen")
    config.close()
    assert messages(rotated.read_text()) == ["before rotation", "still to the renamed file"]
    assert messages(path.read_text()) == ["after reopen"]


def test_reopen_flushes_storm_summaries_into_the_old_file(configure: Setup, tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    config = configure(file=path)
    name = config.logger.name
    for i in range(5):
        config.logger.handle(rec("accept failed: %s", 10.0 + i / 100, "EMFILE", name=name))
    path.rename(tmp_path / "d.log.1")
    config.reopen()
    config.logger.handle(rec("accept failed: %s", 10.5, "EMFILE", name=name))
    config.close()
    assert messages((tmp_path / "d.log.1").read_text()) == [
        "accept failed: EMFILE",
        "accept failed: EMFILE (repeated 4 times in the last 0.0s)",
    ]
    # flush forgot the window, so the new file shows the message at least once
    assert messages(path.read_text()) == ["accept failed: EMFILE"]


def test_reopen_is_a_no_op_for_a_stream_and_after_close(configure: Setup, tmp_path: Path) -> None:
    out = io.StringIO()
    config = configure(stream=out)
    config.reopen()
    config.logger.info("fine")
    assert messages(out.getvalue()) == ["fine"]

    path = tmp_path / "d.log"
    config = configure(file=path)
    config.close()
    path.unlink()
    config.reopen()
    assert not path.exists()


def test_close_is_idempotent_and_removes_the_handler(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out)
    config.close()
    config.close()
    assert config.handler not in logging.getLogger().handlers
    config.logger.error("nowhere")  # to the root, whose handler is gone
    assert out.getvalue() == ""


# --- connection logger ------------------------------------------------------------


def test_connection_prefix(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out, level="trace")
    conn = log.connection_logger(config.logger.getChild("conn"), 17, "127.0.0.1:5123")
    assert isinstance(conn, log.ConnectionLogger)
    assert isinstance(conn, logging.LoggerAdapter)
    conn.info("connected")
    conn.warning("read %d bytes of %s", 5, "junk")
    conn.trace("recv %r", b"hi")
    conn.log(logging.ERROR, "100% broken")
    assert messages(out.getvalue()) == [
        "#17 127.0.0.1:5123 connected",
        "#17 127.0.0.1:5123 read 5 bytes of junk",
        "#17 127.0.0.1:5123 recv b'hi'",
        "#17 127.0.0.1:5123 100% broken",
    ]
    assert conn.extra == {"conn_id": 17, "peer": "127.0.0.1:5123"}


def test_a_percent_sign_in_the_peer_is_printed_as_it_is(configure: Setup) -> None:
    """An IPv6 peer with its zone (fe80::1%eth0): the record's arguments are not applied to it."""
    out = io.StringIO()
    config = configure(stream=out, level="info")
    conn = log.connection_logger(config.logger, 3, "[fe80::1%eth0]:5123")
    conn.info("read %d bytes of %s", 5, "junk")
    conn.info("no arguments, 100% literal")
    conn.info("%s", "only an argument")
    assert messages(out.getvalue()) == [
        "#3 [fe80::1%eth0]:5123 read 5 bytes of junk",
        "#3 [fe80::1%eth0]:5123 no arguments, 100% literal",
        "#3 [fe80::1%eth0]:5123 only an argument",
    ]


class Explodes:
    """A message that fails the test if anyone formats it."""

    def __str__(self) -> str:
        raise AssertionError("a disabled message was formatted")


def test_disabled_connection_messages_are_never_formatted(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out, level="info")
    conn = log.connection_logger(config.logger, 1, "peer")
    conn.debug(Explodes())
    conn.trace(Explodes())
    conn.log(log.TRACE, Explodes())
    assert out.getvalue() == ""


def test_connection_records_name_the_caller(configure: Setup) -> None:
    seen: list[logging.LogRecord] = []
    config = configure(stream=io.StringIO(), level="trace")
    config.handler.addFilter(lambda record: seen.append(record) or True)
    conn = log.connection_logger(config.logger, 2, "peer")
    conn.trace("x")
    conn.info("y")
    assert [r.funcName for r in seen] == ["test_connection_records_name_the_caller"] * 2


# --- storm filter -------------------------------------------------------------------


def test_storm_of_1000_identical_errors_is_one_line_and_one_summary(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out)
    name = config.logger.name
    for i in range(1000):
        # different args (peers), same template: one storm
        config.logger.handle(
            rec("accept failed from %s: EMFILE", 50.0 + i * 0.0005, f"p{i}", name=name)
        )
    config.close()
    assert messages(out.getvalue()) == [
        "accept failed from p0: EMFILE",
        "accept failed from p999: EMFILE (repeated 999 times in the last 0.5s)",
    ]
    assert [m["level"] for m in map(LINE.match, lines(out.getvalue())) if m] == ["ERROR"] * 2


def test_storm_filter_passes_first_and_suppresses_repeats() -> None:
    sink = Sink()
    storm = log.StormFilter(sink=sink)
    assert storm.filter(rec("x", 0.0)) is True
    assert storm.filter(rec("x", 0.3)) is False
    assert storm.filter(rec("x", 0.999)) is False
    assert sink.records == []
    storm.flush()
    assert sink.messages == ["x (repeated 2 times in the last 1.0s)"]
    storm.flush()
    assert len(sink.records) == 1  # nothing pending any more


def test_summary_record_keeps_level_and_name_and_drops_traceback() -> None:
    sink = Sink()
    storm = log.StormFilter(sink=sink)
    try:
        raise OSError(24, "Too many open files")
    except OSError as exc:
        error = exc
    for t in (0.0, 0.1):
        record = rec("accept: %s", t, "x", level=logging.WARNING, name="svc", exc=error)
        storm.filter(record)
    storm.flush()
    (summary,) = sink.records
    assert (summary.levelno, summary.levelname, summary.name) == (logging.WARNING, "WARNING", "svc")
    assert summary.exc_info is None and summary.exc_text is None
    assert summary.created == 0.1
    assert storm.filter(summary) is True  # the filter lets its own summaries through


def test_storm_interleaved_keys_keep_their_own_counts() -> None:
    sink = Sink()
    storm = log.StormFilter(sink=sink)
    passed = []
    for i in range(30):
        record = rec("a" if i % 3 else "b", i / 100)
        passed.append(storm.filter(record))
    assert passed.count(True) == 2
    storm.flush()
    assert sorted(sink.messages) == [
        "a (repeated 19 times in the last 0.3s)",
        "b (repeated 9 times in the last 0.3s)",
    ]


def test_storm_key_includes_level_logger_and_exception_type() -> None:
    storm = log.StormFilter(sink=Sink())
    records = [
        rec("m", 0.0),
        rec("m", 0.0, level=logging.WARNING),
        rec("m", 0.0, name="other"),
        rec("m", 0.0, exc=OSError()),
        rec("m", 0.0, exc=ValueError()),
    ]
    assert [storm.filter(r) for r in records] == [True] * 5
    assert [storm.filter(rec("m", 0.1, exc=ValueError("other text")))] == [False]


def test_storm_window_expiry_emits_the_summary_before_the_next_line(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out)
    name = config.logger.name
    for t in (0.0, 0.25, 0.5, 1.0, 1.5, 3.0):
        config.logger.handle(rec("tick", t, name=name))
    assert messages(out.getvalue()) == [
        "tick",
        "tick (repeated 2 times in the last 0.5s)",  # window [0, 1) ended at t=1.0
        "tick",
        "tick (repeated 1 times in the last 0.5s)",  # window [1, 2) ended at t=3.0
        "tick",
    ]


def test_storm_window_expiry_without_repeats_emits_nothing() -> None:
    sink = Sink()
    storm = log.StormFilter(window=0.5, sink=sink)
    assert [storm.filter(rec("x", t)) for t in (0.0, 0.5, 1.2)] == [True] * 3
    assert sink.records == []


def test_any_later_record_releases_expired_summaries() -> None:
    sink = Sink()
    storm = log.StormFilter(sink=sink)
    storm.filter(rec("a", 0.0))
    storm.filter(rec("a", 0.1))
    assert storm.filter(rec("b", 0.5)) is True
    assert sink.records == []  # a's window is still open
    assert storm.filter(rec("b", 5.0)) is True
    assert sink.messages == ["a (repeated 1 times in the last 0.1s)"]


def test_clock_stepping_back_starts_a_new_window() -> None:
    sink = Sink()
    storm = log.StormFilter(sink=sink)
    storm.filter(rec("x", 1000.0))
    assert storm.filter(rec("x", 1000.1)) is False
    assert storm.filter(rec("x", 999.95)) is False  # small skew between threads: same window
    assert storm.filter(rec("x", 500.0)) is True  # the wall clock stepped back
    assert sink.messages == ["x (repeated 2 times in the last 0.1s)"]


def test_storm_key_table_is_capped_and_evicts_the_oldest_with_its_summary() -> None:
    sink = Sink()
    storm = log.StormFilter(max_keys=3, sink=sink)
    for key in ("k0", "k1", "k2"):
        storm.filter(rec(key, 0.0))
        storm.filter(rec(key, 0.1))
    assert sink.records == []
    assert storm.filter(rec("k3", 0.2)) is True
    assert sink.messages == ["k0 (repeated 1 times in the last 0.1s)"]
    assert storm.filter(rec("k0", 0.3)) is True  # forgotten, so it counts as new
    assert sink.messages[1:] == ["k1 (repeated 1 times in the last 0.1s)"]


def test_default_key_cap_is_1000() -> None:
    sink = Sink()
    storm = log.StormFilter(sink=sink)
    for i in range(1000):
        storm.filter(rec(f"key {i}", 0.0))
        storm.filter(rec(f"key {i}", 0.0))
    assert sink.records == []
    storm.filter(rec("key 1000", 0.0))
    assert sink.messages == ["key 0 (repeated 1 times in the last 0.0s)"]
    storm.flush()
    assert len(sink.records) == 1000


def test_flush_on_close(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out)
    name = config.logger.name
    for i in range(4):
        config.logger.handle(rec("read error on %s", 7.0 + i / 10, i, name=name))
    config.logger.handle(rec("other", 7.0, name=name))
    assert messages(out.getvalue()) == ["read error on 0", "other"]
    config.close()
    assert messages(out.getvalue())[2:] == ["read error on 3 (repeated 3 times in the last 0.3s)"]


def test_summary_of_a_message_with_a_percent_sign() -> None:
    sink = Sink()
    storm = log.StormFilter(sink=sink)
    storm.filter(rec("disk 100% full", 0.0))
    storm.filter(rec("disk 100% full", 0.2))
    storm.flush()
    assert sink.messages == ["disk 100% full (repeated 1 times in the last 0.2s)"]


def test_without_a_sink_summaries_go_through_the_originating_logger() -> None:
    logger = logging.getLogger("test_log.no_sink")
    logger.propagate = False
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect()
    storm = log.StormFilter()
    handler.addFilter(storm)
    logger.addHandler(handler)
    try:
        for t in (0.0, 0.1, 0.2):
            logger.handle(rec("x", t, name=logger.name))
        storm.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert seen == ["x", "x (repeated 2 times in the last 0.2s)"]


@pytest.mark.parametrize(
    "kwargs", [{"window": 0}, {"window": -1.0}, {"window": float("nan")}, {"max_keys": 0}]
)
def test_storm_filter_rejects_bad_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        log.StormFilter(**kwargs)


# --- the public surface -------------------------------------------------------------


def test_all_names_exist_and_are_documented() -> None:
    assert sorted(log.__all__) == sorted(
        [
            "TRACE",
            "setup",
            "use_color",
            "LogConfig",
            "connection_logger",
            "ConnectionLogger",
            "StormFilter",
            "LEVELS",
            "FORMATS",
            "WIRE_PREVIEW_BYTES",
            "wire_preview",
        ]
    )
    assert log.__doc__
    for name in log.__all__:
        assert hasattr(log, name), name
        obj = getattr(log, name)
        if callable(obj):
            assert obj.__doc__, name


def test_same_error_from_many_connections_is_one_storm() -> None:
    stream = io.StringIO()
    config = log.setup("info", stream=stream, color="never")
    try:
        for conn_id in range(1, 101):
            log.connection_logger(config.logger, conn_id, f"127.0.0.1:{5000 + conn_id}").error(
                "bad input: %s", "x"
            )
        config.close()
    finally:
        config.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "#1 127.0.0.1:5001 bad input: x" in lines[0]
    assert "(repeated 99 times" in lines[1]


def test_distinct_lifecycle_lines_are_written_at_once(configure: Setup) -> None:
    """Issue: three "listening on" lines in one second showed as one, then a summary."""
    out = io.StringIO()
    config = configure(stream=out)
    logger = config.logger
    for port in (7001, 7002, 7003):
        logger.info("listening on %s", f"tcp://127.0.0.1:{port}")
    logger.info("SIGHUP: reloading")
    logger.info("SIGHUP: reloading")
    # Written before any later record arrives, not held back for a summary.
    assert messages(out.getvalue()) == [
        "listening on tcp://127.0.0.1:7001",
        "listening on tcp://127.0.0.1:7002",
        "listening on tcp://127.0.0.1:7003",
        "SIGHUP: reloading",
        "SIGHUP: reloading",
    ]
    config.close()


def test_peer_caused_info_lines_still_collapse(configure: Setup) -> None:
    """Lines from connection loggers are what a hostile peer can multiply: they collapse."""
    out = io.StringIO()
    config = configure(stream=out)
    for i in range(100):
        conn_log = log.connection_logger(config.logger, i, f"127.0.0.1:{5000 + i}")
        conn_log.info("bad request; answering 400 and closing")
    config.close()
    written = messages(out.getvalue())
    assert written[0] == "#0 127.0.0.1:5000 bad request; answering 400 and closing"
    assert len(written) == 2
    assert written[1].endswith("(repeated 99 times in the last 0.0s)")


def test_storm_filter_passes_own_info_records_and_collapses_warnings() -> None:
    sink = Sink()
    storm = log.StormFilter(sink=sink)
    infos = [rec("listening on %s", 0.1 * i, f"p{i}", level=logging.INFO) for i in range(3)]
    assert [storm.filter(r) for r in infos] == [True] * 3
    warnings = [rec("accept failed: %s", 0.1 * i, f"p{i}", level=logging.WARNING) for i in range(3)]
    assert [storm.filter(r) for r in warnings] == [True, False, False]
    storm.flush()
    assert sink.messages == ["accept failed: p2 (repeated 2 times in the last 0.2s)"]
