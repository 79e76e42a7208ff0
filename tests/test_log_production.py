"""Tests for production logging: the root logger, JSON lines, pid and offset, dictConfig,
journald, TRACE wire dumps and faults while logging.

Every set-up is closed by the ``configure`` fixture, which also checks that
closing gave the root logger back as it was. Nothing here sleeps or reads the
wall clock to decide: the error-notice interval runs on a fake clock.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from daemonkit import Connection, Daemon
from daemonkit.core import log
from daemonkit.errors import ConfigError
from daemonkit.testing import DaemonRunner, MemoryTransport

Setup = Callable[..., log.LogConfig]

# "2024-05-01 12:00:00.123+02:00 [4242] INFO    name: message"
TEXT = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})(?P<offset>[+-]\d\d:\d\d) "
    r"\[(?P<pid>\d+)\] (?P<level>[A-Z]+) +(?P<name>\S+): (?P<message>.*)$"
)
# Under the journal: "<6>INFO    name: message" (the journal adds time and pid).
JOURNAL = re.compile(r"^<(?P<prio>\d)>(?P<level>[A-Z]+) +(?P<name>\S+): (?P<message>.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def configure(request: pytest.FixtureRequest) -> Iterator[Setup]:
    """log.setup with a per-test logger name; closes every config, then checks the root."""
    root = logging.getLogger()
    level = root.level
    made: list[log.LogConfig] = []

    def _setup(**kwargs: Any) -> log.LogConfig:
        kwargs.setdefault("logger_name", f"test_prod.{request.node.name}")
        config = log.setup(**kwargs)
        made.append(config)
        return config

    yield _setup
    for config in reversed(made):
        config.close()
    # pytest's own capture handlers come and go per phase: check ours are gone.
    assert root.level == level, "close() did not restore the root's level"
    assert not [h for h in root.handlers if hasattr(h, "_daemonkit_log_config")]


@pytest.fixture
def tz_plus_0530(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC+05:30 (a POSIX TZ string: no tz database needed)."""
    monkeypatch.setenv("TZ", "IST-05:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# --- the root logger --------------------------------------------------------------


def test_an_application_logger_reaches_the_log_file(
    configure: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "d.log"
    config = configure(file=path, level="info")
    logging.getLogger("myapp").info("app info")
    logging.getLogger("myapp.db").warning("app warning")
    config.logger.info("daemon line")
    config.close()
    found = [TEXT.match(line) for line in path.read_text().splitlines()]
    assert all(found)
    assert [(m["name"], m["message"]) for m in found if m] == [
        ("myapp", "app info"),
        ("myapp.db", "app warning"),
        (config.logger.name, "daemon line"),
    ]
    assert capsys.readouterr().err == ""  # nothing raw on stderr, nothing twice


def test_the_root_has_one_handler_replaced_not_stacked(configure: Setup) -> None:
    first_out, second_out = io.StringIO(), io.StringIO()
    first = configure(stream=first_out)
    second = configure(stream=second_out)
    root = logging.getLogger()
    assert root.handlers == [second.handler]
    assert first.handler.stream is first_out  # a stream handler never closes its stream
    assert second.logger.handlers == [] and second.logger.propagate is True
    second.logger.info("once")
    logging.getLogger("myapp").info("once too")
    assert first_out.getvalue() == ""
    assert [m["message"] for m in map(TEXT.match, second_out.getvalue().splitlines()) if m] == [
        "once",
        "once too",
    ]


def test_close_gives_back_the_root_and_the_named_logger(configure: Setup) -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    named = logging.getLogger("test_prod.close_restores")
    named.setLevel(logging.ERROR)
    named.propagate = False
    try:
        config = log.setup(stream=io.StringIO(), level="debug", logger_name=named.name)
        assert foreign not in root.handlers
        assert (root.level, named.level, named.propagate) == (logging.DEBUG, logging.DEBUG, True)
        config.close()
        assert foreign in root.handlers
        assert (named.level, named.propagate) == (logging.ERROR, False)
        config.close()  # idempotent
        assert root.handlers.count(foreign) == 1
    finally:
        root.removeHandler(foreign)
        named.setLevel(logging.NOTSET)
        named.propagate = True


def test_the_level_applies_to_application_loggers(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out, level="warning")
    app = logging.getLogger("myapp.level")
    app.info("hidden")
    app.warning("shown")
    config.set_level("debug")
    app.debug("now shown")
    assert [m["message"] for m in map(TEXT.match, out.getvalue().splitlines()) if m] == [
        "shown",
        "now shown",
    ]


def test_application_warnings_storm_collapses_and_lifecycle_lines_do_not(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out)
    app = logging.getLogger("myapp.storm")
    for i in range(50):
        app.warning("cache miss for %s", i)
    for port in (1, 2):
        config.logger.info("listening on %s", port)
    config.close()
    messages = [m["message"] for m in map(TEXT.match, out.getvalue().splitlines()) if m]
    assert messages[0] == "cache miss for 0"
    assert messages[1:3] == ["listening on 1", "listening on 2"]
    assert len(messages) == 4 and messages[3].startswith("cache miss for 49 (repeated 49 times")


# --- text format: pid and offset ------------------------------------------------------


def test_text_lines_carry_the_pid_and_the_utc_offset(configure: Setup, tz_plus_0530: None) -> None:
    out = io.StringIO()
    config = configure(stream=out, color="never")
    config.logger.warning("hello")
    (line,) = out.getvalue().splitlines()
    match = TEXT.match(line)
    assert match, line
    assert match["offset"] == "+05:30"
    assert int(match["pid"]) == os.getpid()
    assert (match["level"], match["message"]) == ("WARNING", "hello")


def test_colored_text_has_the_same_layout(configure: Setup, tz_plus_0530: None) -> None:
    out = io.StringIO()
    config = configure(stream=out, color="always")
    config.logger.error("red")
    text = out.getvalue()
    assert ANSI.search(text)
    match = TEXT.match(ANSI.sub("", text.splitlines()[0]))
    assert match and match["offset"] == "+05:30" and match["message"] == "red"


# --- JSON lines --------------------------------------------------------------------------


def test_json_lines_parse_back(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out, format="json", level="debug")
    awkward = 'say "hi"\nsecond line\t\\ é ✓ 日本 \x00 \ud800'
    config.logger.info("%s", awkward)
    config.logger.debug("100% literal, no args")
    try:
        raise ValueError('boom "quoted"\nmultiline')
    except ValueError:
        logging.getLogger("myapp").exception("failed: %d", 7)
    logging.getLogger("myapp").info("with extra", extra={"user": "ann", "obj": object()})
    text = out.getvalue()
    assert text.isascii()  # whatever the stream's encoding, the line survives
    records = json_lines(text)
    assert len(records) == 4 == len(text.splitlines())
    first, second, third, fourth = records
    assert first["message"] == awkward
    assert first["logger"] == config.logger.name and first["level"] == "INFO"
    assert second["message"] == "100% literal, no args"
    assert third["message"] == "failed: 7" and third["level"] == "ERROR"
    assert third["exc"].startswith("Traceback (most recent call last):")
    assert third["exc"].endswith('ValueError: boom "quoted"\nmultiline')
    assert fourth["user"] == "ann" and fourth["obj"].startswith("<object object")
    for record in records:
        assert record["pid"] == os.getpid()
        assert "conn_id" not in record and "peer" not in record
        stamp = record["time"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
        assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).utcoffset() == timedelta(0)


def test_json_time_is_utc_whatever_the_local_zone(configure: Setup, tz_plus_0530: None) -> None:
    out = io.StringIO()
    config = configure(stream=out, format="json")
    record = logging.LogRecord(config.logger.name, logging.INFO, __file__, 1, "x", None, None)
    record.created = 1714557600.25  # 2024-05-01 10:00:00.250 UTC
    record.msecs = 250.0
    config.handler.handle(record)
    (line,) = json_lines(out.getvalue())
    assert line["time"] == "2024-05-01T10:00:00.250Z"
    assert datetime.fromisoformat(line["time"].replace("Z", "+00:00")) == datetime(
        2024, 5, 1, 10, 0, 0, 250000, tzinfo=timezone.utc
    )


def test_json_connection_records_carry_id_and_peer(configure: Setup) -> None:
    out = io.StringIO()
    config = configure(stream=out, format="json")
    conn = log.connection_logger(config.logger, 17, "127.0.0.1:5123")
    conn.info("bad request from %s: %r", "x", 'a"b')
    for i in range(3):
        log.connection_logger(config.logger, 20 + i, f"[::1]:{6000 + i}").warning("slow")
    config.close()
    first, second, summary = json_lines(out.getvalue())
    assert first["message"] == "bad request from x: 'a\"b'"  # the prefix is in the fields
    assert (first["conn_id"], first["peer"]) == (17, "127.0.0.1:5123")
    assert (second["conn_id"], second["peer"], second["message"]) == (20, "[::1]:6000", "slow")
    assert summary["message"] == "slow (repeated 2 times in the last 0.0s)"
    assert summary["conn_id"] == 22


def test_connection_records_carry_id_and_peer_as_attributes(configure: Setup) -> None:
    seen: list[logging.LogRecord] = []
    config = configure(stream=io.StringIO())
    config.handler.addFilter(lambda record: seen.append(record) or True)
    log.connection_logger(config.logger, 5, "peer:1").info("x", extra={"k": 1})
    (record,) = seen
    assert (record.conn_id, record.peer, record.k) == (5, "peer:1", 1)  # type: ignore[attr-defined]


def test_json_to_a_file_is_plain_json(configure: Setup, tmp_path: Path) -> None:
    path = tmp_path / "d.json.log"
    config = configure(file=path, format="json", color="always")
    logging.getLogger("myapp").warning("to the file")
    config.close()
    (line,) = json_lines(path.read_text())
    assert line["message"] == "to the file" and line["logger"] == "myapp"


@pytest.mark.parametrize("bad", ["xml", "", "JSONL", None])
def test_unknown_format_is_a_config_error(configure: Setup, bad: object) -> None:
    with pytest.raises(ConfigError, match=r"unknown log format .*; choose text or json"):
        configure(stream=io.StringIO(), format=bad)


def test_formats_are_public() -> None:
    assert log.FORMATS == ("text", "json")
    assert "FORMATS" in log.__all__


# --- dictConfig from a file ---------------------------------------------------------------


def audit_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "audit": {
                "class": "logging.FileHandler",
                "filename": str(tmp_path / "audit.log"),
                "formatter": "plain",
            }
        },
        "loggers": {"myapp.audit": {"handlers": ["audit"], "level": "INFO", "propagate": False}},
    }


def test_a_json_dict_config_is_applied_on_top(configure: Setup, tmp_path: Path) -> None:
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(audit_config(tmp_path)))
    reactor_logger = logging.getLogger("daemonkit.reactor")  # made before the config
    out = io.StringIO()
    config = configure(stream=out, config=path)
    logging.getLogger("myapp.audit").info("user %s logged in", "ann")
    logging.getLogger("myapp.web").info("ordinary line")
    assert not reactor_logger.disabled  # disable_existing_loggers defaults to False
    audit = logging.getLogger("myapp.audit")
    (file_handler,) = audit.handlers
    config.close()
    assert (tmp_path / "audit.log").read_text() == "INFO myapp.audit user ann logged in\n"
    assert [m["message"] for m in map(TEXT.match, out.getvalue().splitlines()) if m] == [
        "ordinary line"
    ]
    assert audit.handlers == []  # close removes what the file made
    assert isinstance(file_handler, logging.FileHandler) and file_handler.stream is None
    audit.propagate = True


def test_a_toml_dict_config_can_replace_the_root_handler(configure: Setup, tmp_path: Path) -> None:
    path = tmp_path / "logging.toml"
    path.write_text(
        "version = 1\n"
        "[formatters.plain]\n"
        "format = '%(levelname)s %(name)s %(message)s'\n"
        "[handlers.all]\n"
        "class = 'logging.FileHandler'\n"
        f"filename = '{tmp_path / 'all.log'}'\n"
        "formatter = 'plain'\n"
        "[root]\n"
        "level = 'WARNING'\n"
        "handlers = ['all']\n"
    )
    out = io.StringIO()
    config = configure(stream=out, level="debug", config=str(path))
    logging.getLogger("myapp").info("below the file's root level")
    logging.getLogger("myapp").warning("to all.log")
    assert out.getvalue() == ""
    rotated = tmp_path / "all.log.1"
    (tmp_path / "all.log").rename(rotated)
    config.reopen()  # SIGUSR1 reopens the file's FileHandlers too
    logging.getLogger("myapp").error("after reopen")
    config.close()
    assert rotated.read_text() == "WARNING myapp to all.log\n"
    assert (tmp_path / "all.log").read_text() == "ERROR myapp after reopen\n"


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("bad.json", "{not json", r"not valid JSON: .*line 1"),
        ("bad.toml", "version = = 1", r"not valid TOML: "),
        ("list.json", "[1, 2]", r"must hold a table/object, not list"),
        ("noversion.json", "{}", r"dictionary doesn't specify a version"),
        (
            "badclass.json",
            json.dumps({"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}, "root": {}}),
            r"Unable to configure handler 'h'.*No module named 'no'",
        ),
        ("log.yaml", "version: 1", r"use a \.json or \.toml file"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file(
    configure: Setup, tmp_path: Path, name: str, content: str, why: str
) -> None:
    out = io.StringIO()
    before = configure(stream=out)
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        configure(stream=io.StringIO(), config=path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"log config {path}: ")
    assert re.search(why, message), message
    assert logging.getLogger().handlers == [before.handler]  # the previous set-up stays
    logging.getLogger("myapp").warning("still here")
    assert "still here" in out.getvalue()


def test_a_missing_config_file_is_a_config_error(configure: Setup, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^log config .*nope\.json: cannot read it: "):
        configure(stream=io.StringIO(), config=tmp_path / "nope.json")


# --- journald -------------------------------------------------------------------------------


class FakeTTYFile(io.TextIOWrapper):
    """A real file that claims to be a terminal, as a journal stream never is."""

    def isatty(self) -> bool:
        return True


def journal_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> io.TextIOWrapper:
    stream = FakeTTYFile(open(path, "wb"), encoding="utf-8")  # noqa: SIM115
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    return stream


def test_under_the_journal_no_timestamp_and_no_colour(
    configure: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    with journal_file(tmp_path / "journal", monkeypatch) as stream:
        config = configure(stream=stream, level="debug")
        config.logger.info("ready")
        logging.getLogger("myapp").error("broken")
        logging.getLogger("myapp").debug("detail")
        stream.flush()
        text = (tmp_path / "journal").read_text()
    assert "\x1b" not in text
    found = [JOURNAL.match(line) for line in text.splitlines()]
    assert all(found), text
    assert [(m["prio"], m["level"], m["message"]) for m in found if m] == [
        ("6", "INFO", "ready"),
        ("3", "ERROR", "broken"),
        ("7", "DEBUG", "detail"),
    ]


def test_json_under_the_journal_keeps_its_fields(
    configure: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with journal_file(tmp_path / "journal", monkeypatch) as stream:
        config = configure(stream=stream, format="json")
        config.logger.info("ready")
        stream.flush()
        (line,) = json_lines((tmp_path / "journal").read_text())
    assert line["message"] == "ready" and line["time"].endswith("Z")


@pytest.mark.parametrize("value", ["1:2", "garbage", "", ":", "12:x"])
def test_another_journal_stream_or_a_bad_value_is_not_the_journal(
    configure: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", value)
    out = io.StringIO()  # no fileno() at all
    config = configure(stream=out)
    config.logger.info("x")
    with open(tmp_path / "f", "w") as stream:  # a file, but not the journal's
        config = configure(stream=stream)
        config.logger.info("y")
        stream.flush()
        assert TEXT.match((tmp_path / "f").read_text().splitlines()[0])
    assert TEXT.match(out.getvalue().splitlines()[0])


def test_a_log_file_is_never_journal_formatted(
    configure: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.log"
    path.touch()
    st = os.stat(path)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    config = configure(file=path)
    config.logger.info("x")
    config.close()
    assert TEXT.match(path.read_text().splitlines()[0])


# --- TRACE wire dumps -------------------------------------------------------------------------


def test_wire_preview_is_bounded_hex_and_ascii() -> None:
    assert log.wire_preview(b"hello\r\n") == "7 bytes: 68 65 6c 6c 6f 0d 0a |hello..|"
    assert log.wire_preview(b"") == "0 bytes"
    big = bytes(range(256)) * 40
    preview = log.wire_preview(big)
    assert preview.startswith("10240 bytes, first 64: 00 01 02")
    assert preview.endswith("|................................ !\"#$%&'()*+,-./0123456789:;<=>?|")
    assert len(preview) < 300
    assert log.wire_preview(b"\xffabc", limit=2) == "4 bytes, first 2: ff 61 |.a|"
    assert log.WIRE_PREVIEW_BYTES == 64


class Echo(Daemon):
    listen = "tcp://127.0.0.1:0"

    def on_read(self, conn: Connection, data: bytes) -> None:
        conn.write(data)


def talk(runner: DaemonRunner, chunks: list[bytes]) -> None:
    """Send each chunk and wait for its echo, so every chunk is one read and one write."""
    host, port = runner.address.host, runner.address.port
    with socket.create_connection((host, port), timeout=10) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
            got = b""
            while len(got) < len(chunk):
                part = sock.recv(65536)
                assert part, "connection closed early"
                got += part
            assert got == chunk


def wire_lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [
        line
        for line in json_lines(out.getvalue())
        if line["level"] == "TRACE" and line["message"].startswith(("read ", "write "))
    ]


def test_trace_dumps_every_read_and_write(configure: Setup, run_daemon: Any) -> None:
    out = io.StringIO()
    configure(stream=out, format="json", level="trace")
    runner = run_daemon(Echo())
    talk(runner, [b"hello\n", b"x" * 100, b"hello\n"])
    runner.stop()
    dumps = wire_lines(out)
    assert [d["message"] for d in dumps] == [
        "read 6 bytes: 68 65 6c 6c 6f 0a |hello.|",
        "write 6 bytes: 68 65 6c 6c 6f 0a |hello.|",
        "read 100 bytes, first 64: " + " ".join(["78"] * 64) + " |" + "x" * 64 + "|",
        "write 100 bytes, first 64: " + " ".join(["78"] * 64) + " |" + "x" * 64 + "|",
        "read 6 bytes: 68 65 6c 6c 6f 0a |hello.|",  # never collapsed as a storm
        "write 6 bytes: 68 65 6c 6c 6f 0a |hello.|",
    ]
    assert {d["conn_id"] for d in dumps} == {dumps[0]["conn_id"]}
    assert dumps[0]["peer"].startswith("127.0.0.1:")
    assert dumps[0]["logger"].startswith("daemonkit.Echo")


def test_no_dumps_above_trace(configure: Setup, run_daemon: Any) -> None:
    out = io.StringIO()
    configure(stream=out, format="json", level="debug")
    runner = run_daemon(Echo())
    talk(runner, [b"hello\n"])
    runner.stop()
    assert wire_lines(out) == []


class Explodes(bytes):
    """Bytes whose preview fails the test if anyone formats it."""

    def hex(self, *args: Any) -> str:
        raise AssertionError("a disabled wire dump was formatted")

    def __getitem__(self, key: Any) -> Any:
        raise AssertionError("a disabled wire dump was formatted")


def memory_connection(daemon: Daemon) -> tuple[Connection, MemoryTransport]:
    conn = daemon._new_connection()
    transport = MemoryTransport(conn)
    conn.connection_made(transport)
    return conn, transport


def test_the_trace_decision_is_taken_once_per_connection(configure: Setup) -> None:
    """At TRACE when it connected: dumps (while TRACE stays on); above TRACE: never looked at."""
    from daemonkit.core.reactor import Reactor

    out = io.StringIO()
    config = configure(stream=out, format="json", level="info")
    daemon = Echo(idle_timeout=None)
    reactor = Reactor("asyncio")
    try:
        daemon.start(reactor, install_signals=False, bind=False)
        quiet, _ = memory_connection(daemon)
        config.set_level("trace")
        traced, transport = memory_connection(daemon)
        quiet.data_received(Explodes(b"abc"))  # decided at INFO: no dump, no formatting
        traced.data_received(b"abc")
        assert bytes(transport.data) == b"abc"
        config.set_level("debug")
        traced.data_received(Explodes(b"def"))  # the level is still checked per dump
        assert [d["message"] for d in wire_lines(out)] == [
            "read 3 bytes: 61 62 63 |abc|",
            "write 3 bytes: 61 62 63 |abc|",
        ]
        quiet.abort()
        traced.abort()
    finally:
        reactor.close()


# --- faults while logging ---------------------------------------------------------------------


class FullDisk(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_write_error_never_raises_and_is_one_bounded_notice(
    configure: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configure(stream=FullDisk())
    clock = FakeClock()
    config.handler._notice.clock = clock  # type: ignore[attr-defined]
    app = logging.getLogger("myapp.disk")
    for i in range(100):
        app.info("line %d", i)
        config.logger.error("error %d", i)
    err = capsys.readouterr().err
    assert err == (
        "daemonkit: cannot write the log: OSError: [Errno 28] No space left on device"
        " (further failures reported at most once every 60s)\n"
    )
    clock.now += 59.0
    app.info("still inside the interval")
    assert capsys.readouterr().err == ""
    clock.now += 1.0
    app.info("after the interval")
    assert capsys.readouterr().err == (
        "daemonkit: cannot write the log: OSError: [Errno 28] No space left on device"
        " (101 more failures since the last notice)\n"
    )


def test_a_failing_stderr_does_not_raise_either(
    configure: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(stream=FullDisk())
    monkeypatch.setattr(sys, "stderr", FullDisk())
    logging.getLogger("myapp").error("nowhere to go")  # must not raise


def test_a_closed_log_file_does_not_raise(
    configure: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configure(file=tmp_path / "d.log")
    assert isinstance(config.handler, logging.StreamHandler)
    config.handler.stream.close()
    logging.getLogger("myapp").warning("lost")
    err = capsys.readouterr().err
    assert err.startswith("daemonkit: cannot write the log: ValueError: I/O operation on closed")
    assert err.count("\n") == 1


def test_an_unwritable_log_file_is_one_line(configure: Setup, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        configure(file=tmp_path)  # a directory
    assert str(info.value) == f"cannot open log file {str(tmp_path)!r}: Is a directory"
