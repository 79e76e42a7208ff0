"""Logging set-up for daemons: one handler, honest colour, no log storms.

:func:`setup` configures the **root logger**, so the application's own
loggers (``logging.getLogger("myapp")``) and its libraries' follow the same
level, file, format and reopen as daemonkit's, and returns a
:class:`LogConfig` that owns what it made. The rules it keeps:

* **Exactly one handler, on the root.** Calling :func:`setup` again replaces
  the handler (the old one is flushed and closed); it never stacks a second
  one. daemonkit's loggers propagate to it and carry no handler of their
  own, so no line is written twice. :meth:`LogConfig.close` gives the root
  back as it found it (handlers and level).
* **Lines a machine or a person can read.** ``format="text"`` writes
  ``2024-05-01 12:00:00.123+02:00 [4242] INFO    daemonkit: ready`` (local
  time *with* its offset, and the pid, so two processes writing one file
  during an upgrade can be told apart); ``format="json"`` writes one JSON
  object per line with a UTC timestamp, and the connection id and peer of a
  connection logger's records as fields. Under systemd's journal (stderr is
  the ``JOURNAL_STREAM``) text lines carry a ``<N>`` priority prefix instead
  of a timestamp and no colour: the journal adds time and pid itself.
* **A ``logging.config.dictConfig`` file** (JSON or TOML) may be applied on
  top (``config=``), for per-logger levels or handlers of one's own.
* **Logging never stops the daemon.** A write that fails (a full disk)
  prints one line to stderr, at most once every 60 seconds, never a
  traceback; an unwritable file or a bad config is a one-line
  :class:`~daemonkit.errors.ConfigError` at set-up.
* **daemonkit decides colour, colorlog only paints.** :func:`use_color` is a
  pure function of the ``color`` option, the stream and the environment
  (``always`` > ``never`` > ``NO_COLOR`` > is-a-TTY). The decision is forced
  into colorlog, because colorlog's own policy differs (``FORCE_COLOR`` beats
  ``NO_COLOR`` there, and it colours non-TTYs unless handed the stream).
  A log file is never coloured.
* **A log file can be reopened** (:meth:`LogConfig.reopen`), so logrotate can
  rename it and the daemon carries on writing at the original path.
* **Storms are collapsed, lifecycle lines never.** :class:`StormFilter` lets
  the first of a run of identical records through and turns the rest into one
  summary line, so fd exhaustion does not write "accept failed" twenty
  thousand times. It collapses what can come in storms — warnings and errors,
  and anything a connection logger writes (one line per peer) — and lets the
  daemon's own INFO/DEBUG lines ("listening on", "SIGHUP: reloading") through
  at once, however alike they are.
* **The hot path stays cheap.** :class:`ConnectionLogger` prefixes
  ``#<id> <peer>`` only after the level check has passed; a disabled
  ``debug()`` costs one cached ``isEnabledFor``. :func:`wire_preview` is the
  bounded hex/ASCII preview of the ``TRACE`` wire dumps.
* **No global state** beyond registering the ``TRACE`` level name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import logging.config
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TextIO

import colorlog

from daemonkit.errors import ConfigError

__all__ = [
    "FORMATS",
    "LEVELS",
    "TRACE",
    "WIRE_PREVIEW_BYTES",
    "ConnectionLogger",
    "LogConfig",
    "StormFilter",
    "connection_logger",
    "setup",
    "use_color",
    "wire_preview",
]

#: Below DEBUG, for wire dumps; 5 is the value uvicorn and httpcore use for their TRACE.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")  # idempotent: re-registering the same pair changes nothing

#: The level names :func:`setup` accepts (case-insensitively), lowest first.
LEVELS: Mapping[str, int] = MappingProxyType(
    {
        "trace": TRACE,
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warning": logging.WARNING,
        "error": logging.ERROR,
        "critical": logging.CRITICAL,
    }
)

#: The line formats :func:`setup` writes: ``text`` for people, ``json`` (one object a line).
FORMATS = ("text", "json")

_COLOR_CHOICES = ("auto", "always", "never")

# One layout, coloured or not: "2024-05-01 12:00:00.123+02:00 [4242] INFO    daemonkit: ready".
# The time comes from _local_stamp (with its UTC offset), the pid tells processes apart.
_LAYOUT = "%(asctime)s [%(process)d] %(levelname)-7s %(name)s: %(message)s"
# Under the journal: no time or pid (the journal records both), a priority prefix instead.
_JOURNAL_LAYOUT = "%(levelname)-7s %(name)s: %(message)s"
_LEVEL_COLORS = {
    "TRACE": "thin_white",
    "DEBUG": "white",
    "INFO": "green",
    "WARNING": "yellow",
    "ERROR": "red",
    "CRITICAL": "bold_red",
}

# Log files are UTF-8 whatever the locale; an unencodable character is escaped,
# never allowed to raise inside a handler.
_FILE_ENCODING = "utf-8"
_FILE_ERRORS = "backslashreplace"

# Storm window: at most one line plus one summary per message per second, which
# a human can read and which still shows how long a storm lasted (the kernel's
# printk_ratelimit uses a 5 s interval; a daemon's operator wants it sooner).
_STORM_WINDOW = 1.0
# Storm keys remembered at once: 1,000 small entries is well under a megabyte,
# and more distinct messages than that per window is not a storm of *identical*
# errors any more.
_STORM_KEYS = 1000

# Set on summary records so the filter lets its own output through.
_SUMMARY_ATTR = "daemonkit_storm_summary"

# A failing log write is reported on stderr at most once a minute: journald's
# RateLimitIntervalSec is 30 s; a full disk lasts minutes, and one line a
# minute says it still does without burying the rest of stderr.
_ERROR_NOTICE_INTERVAL = 60.0

#: Bytes of a read or write shown by a TRACE wire dump (:func:`wire_preview`):
#: four rows of Netty's ``LoggingHandler`` hex dump, enough for a protocol's header.
WIRE_PREVIEW_BYTES = 64
# Bytes shown as themselves in a preview's ASCII column; the rest become ".".
_PRINTABLE = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))

# sd-daemon(3) priority prefixes, which journald reads from a stream's lines.
_JOURNAL_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_JOURNAL_DEBUG = 7

# The attribute by which setup() finds the handlers (and so the LogConfig) it made.
_OWNER_ATTR = "_daemonkit_log_config"


def _parse_level(level: str | int) -> int:
    """Return the numeric level for a level name or int; raise ConfigError otherwise."""
    if isinstance(level, int) and not isinstance(level, bool) and level >= 0:
        return level
    if isinstance(level, str):
        number = LEVELS.get(level.strip().lower())
        if number is not None:
            return number
    raise ConfigError(
        f"unknown log level {level!r}; choose one of {', '.join(LEVELS)}"
        " (or a non-negative integer)"
    )


def _parse_color(color: str) -> str:
    """Return the normalised colour option; raise ConfigError for anything unknown."""
    choice = color.strip().lower() if isinstance(color, str) else None
    if choice not in _COLOR_CHOICES:
        raise ConfigError(
            f"unknown color option {color!r}; choose one of {', '.join(_COLOR_CHOICES)}"
        )
    return choice


def use_color(color: str, stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Decide whether log lines written to *stream* get ANSI colours.

    ``color`` is ``"always"`` (colour), ``"never"`` (plain) or ``"auto"``:
    plain if ``NO_COLOR`` is set to a non-empty value in *environ*
    (https://no-color.org), otherwise colour exactly when ``stream.isatty()``.
    ``FORCE_COLOR`` is deliberately not consulted; use ``color="always"``.
    A stream that cannot answer ``isatty()`` (closed, or lacking the method)
    counts as not a TTY.

    Pure: reads nothing but its arguments. Raises :class:`ConfigError` for
    any other ``color`` value.
    """
    choice = _parse_color(color)
    if choice == "always":
        return True
    if choice == "never":
        return False
    if environ.get("NO_COLOR", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        return False
    try:
        return bool(isatty())
    except (OSError, ValueError):  # ValueError: I/O operation on closed file
        return False


def _parse_format(style: object) -> str:
    """Return ``style`` if it is one of :data:`FORMATS`; raise ConfigError otherwise."""
    if isinstance(style, str) and style in FORMATS:
        return style
    raise ConfigError(f"unknown log format {style!r}; choose {' or '.join(FORMATS)}")


def _is_journal(stream: object, environ: Mapping[str, str]) -> bool:
    """True if ``stream`` is the journal: its device and inode are ``JOURNAL_STREAM``'s.

    systemd sets ``JOURNAL_STREAM=<dev>:<inode>`` for a service whose stdout or
    stderr goes to the journal (systemd.exec(5)); a stream without a
    descriptor, or a malformed value, is not the journal.
    """
    dev, _, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    fileno = getattr(stream, "fileno", None)
    if fileno is None:
        return False
    try:
        st = os.fstat(fileno())
    except (OSError, ValueError):  # io.UnsupportedOperation, or a closed stream
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _local_stamp(record: logging.LogRecord) -> str:
    """``2024-05-01 12:00:00.123+02:00``: the record's local time, with its UTC offset."""
    ct = time.localtime(record.created)
    offset = ct.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    offset = abs(offset)
    clock = time.strftime("%Y-%m-%d %H:%M:%S", ct)
    return f"{clock}.{int(record.msecs):03d}{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"


def _utc_stamp(record: logging.LogRecord) -> str:
    """``2024-05-01T10:00:00.123Z``: the record's time in UTC, ISO 8601."""
    clock = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{clock}.{int(record.msecs):03d}Z"


class _TextFormatter(logging.Formatter):
    """The text layout, local time with its offset."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _local_stamp(record)


class _ColorFormatter(colorlog.ColoredFormatter):
    """The text layout in colour, local time with its offset."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _local_stamp(record)


class _JournalFormatter(logging.Formatter):
    """Lines for the journal: an sd-daemon ``<N>`` priority on every line, no time."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelno
        priority = next((p for at, p in _JOURNAL_PRIORITIES if level >= at), _JOURNAL_DEBUG)
        prefix = f"<{priority}>"
        # The journal makes an entry of each line: a traceback keeps its priority.
        return prefix + self._inner.format(record).replace("\n", "\n" + prefix)


# LogRecord attributes every record has; anything else came in through ``extra``.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class _JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, pure ASCII.

    Fields: ``time`` (UTC, ISO 8601 with ``Z``), ``level``, ``logger``,
    ``message``, ``pid``; ``conn_id`` and ``peer`` for a connection logger's
    records (whose ``message`` is then without the ``#id peer`` prefix);
    ``exc`` and ``stack`` when there is a traceback; then the record's
    ``extra`` fields (as ``str()`` when JSON has no type for them).
    ``ensure_ascii``: the line survives any stream encoding (an ASCII locale
    would otherwise write ``\\xe9``, which JSON cannot read back).
    """

    def format(self, record: logging.LogRecord) -> str:
        template = getattr(record, _TEMPLATE_ATTR, None)
        message = record.getMessage() if template is None else _render(template, record.args)
        entry: dict[str, object] = {
            "time": _utc_stamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in entry and not key.startswith("daemonkit_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


def _render(template: object, args: Any) -> str:
    """Format a message template with its arguments as ``LogRecord.getMessage`` does."""
    message = str(template)
    return message % args if args else message


def _make_formatter(style: str, colored: bool, journal: bool) -> logging.Formatter:
    """Return the formatter for a format and the colour decision of :func:`use_color`."""
    if style == "json":
        return _JsonFormatter()
    layout = _JOURNAL_LAYOUT if journal else _LAYOUT
    formatter: logging.Formatter
    if colored:
        # force_color=True: colorlog must not re-decide from FORCE_COLOR/NO_COLOR/isatty.
        formatter = _ColorFormatter(
            "%(log_color)s" + layout, log_colors=_LEVEL_COLORS, force_color=True
        )
    else:
        formatter = _TextFormatter(layout)
    return _JournalFormatter(formatter) if journal else formatter


def wire_preview(data: bytes | bytearray | memoryview, limit: int = WIRE_PREVIEW_BYTES) -> str:
    """Return a one-line preview of ``data``: its size, then hex and ASCII of the first ``limit``.

    ``wire_preview(b"hi\\n")`` is ``"3 bytes: 68 69 0a |hi.|"``; past
    ``limit`` bytes the line says ``"<size> bytes, first <limit>: ..."``.
    Bytes outside printable ASCII show as ``.``. For TRACE wire dumps:
    call it only once the level check has passed. Raises ``ValueError``
    if ``limit`` is less than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    size = len(data)
    if not size:
        return "0 bytes"
    head = bytes(data[:limit])
    label = f"{size} bytes" if size <= limit else f"{size} bytes, first {limit}"
    return f"{label}: {head.hex(' ')} |{head.translate(_PRINTABLE).decode('ascii')}|"


class _ErrorNotice:
    """Reports failed log writes on stderr: one line, at most once every ``interval`` seconds."""

    __slots__ = ("clock", "interval", "last", "suppressed")

    def __init__(self, interval: float = _ERROR_NOTICE_INTERVAL) -> None:
        self.interval = interval
        self.clock: Callable[[], float] = time.monotonic
        self.last: float | None = None
        self.suppressed = 0

    def report(self, exc: BaseException | None) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.interval:
            self.suppressed += 1
            return
        what = "unknown error" if exc is None else f"{type(exc).__name__}: {exc}"
        if self.suppressed:
            tail = f"{self.suppressed} more failures since the last notice"
        else:
            tail = f"further failures reported at most once every {self.interval:g}s"
        line = f"daemonkit: cannot write the log: {what} ({tail})".replace("\n", " ")
        self.last = now
        self.suppressed = 0
        try:
            stderr = sys.stderr
            if stderr is not None:
                stderr.write(line + "\n")
                stderr.flush()
        except Exception:  # stderr is as broken as the log: nothing left to tell
            pass


class _QuietErrors(logging.Handler):
    """A handler whose write errors become :class:`_ErrorNotice` lines, never tracebacks."""

    _notice: _ErrorNotice

    def handleError(self, record: logging.LogRecord) -> None:
        """Report the error in one bounded line (nothing if ``raiseExceptions`` is off)."""
        if logging.raiseExceptions:
            self._notice.report(sys.exc_info()[1])


if TYPE_CHECKING:
    _StreamBase = logging.StreamHandler[TextIO]
else:  # StreamHandler is subscriptable only from Python 3.11
    _StreamBase = logging.StreamHandler


class _StreamHandler(_QuietErrors, _StreamBase):
    """daemonkit's stream handler (stderr, or the ``stream`` given to :func:`setup`)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._notice = _ErrorNotice()


class _FileHandler(_QuietErrors, logging.FileHandler):
    """daemonkit's log file handler: appends, UTF-8, never raises into the caller."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, mode="a", encoding=_FILE_ENCODING, errors=_FILE_ERRORS)
        self._notice = _ErrorNotice()


class StormFilter(logging.Filter):
    """Collapse a storm of identical log records into one line and one summary.

    Only records that can come in storms are considered: those at WARNING or
    above, and those written through a :class:`ConnectionLogger` above
    ``TRACE`` (a line per peer, which a hostile client can multiply). Every
    other record — the daemon's own lifecycle lines at INFO or DEBUG, such as
    each endpoint's "listening on", and the TRACE wire dumps an operator asked
    for — passes at once, untouched.

    Two records are "the same" when they share the logger name, the level,
    the message *template* (``record.msg``, not the formatted arguments, so
    ``"accept failed: %s"`` from many peers is one storm) and the exception
    type, if any (a message that is not a string counts by its type). The
    first record of a key passes and opens a window of ``window`` seconds;
    further records of that key inside the window are suppressed and counted.
    Once the window is over, the next record to reach the filter (of any key)
    first causes the summary line
    ``"<message> (repeated N times in the last X.Xs)"`` to be emitted at the
    same level, where ``<message>`` is the last suppressed message, ``N`` the
    number suppressed and ``X.X`` the time from the first to the last of them.
    The summary has no traceback; the first line had it.

    The clock is ``record.created``; the filter never reads the time itself.
    At most ``max_keys`` keys are remembered; the oldest is evicted (its
    summary emitted) to make room. :meth:`flush` emits every pending summary.

    Summaries go to ``sink`` (pass the handler's ``handle`` when the filter
    sits on a handler, as :func:`setup` does); without a sink they go through
    the originating logger's ``handle``. Summary records are marked so the
    filter always lets them through. Thread-safe; do not call :meth:`flush`
    from a raw ``signal.signal`` handler (use ``loop.add_signal_handler``).

    Raises :class:`ConfigError` if ``window`` is not positive or ``max_keys``
    is less than 1.
    """

    def __init__(
        self,
        window: float = _STORM_WINDOW,
        *,
        max_keys: int = _STORM_KEYS,
        sink: Callable[[logging.LogRecord], object] | None = None,
    ) -> None:
        super().__init__()
        if not window > 0:  # also rejects NaN
            raise ConfigError(f"storm window must be a positive number of seconds, got {window!r}")
        if max_keys < 1:
            raise ConfigError(f"storm max_keys must be at least 1, got {max_keys!r}")
        self.window = float(window)
        self.max_keys = max_keys
        self._sink = sink
        self._lock = threading.Lock()
        # key -> _Storm, in order of window start (oldest first).
        self._storms: OrderedDict[tuple[object, ...], _Storm] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False if *record* repeats a key within its window; emit due summaries first."""
        if getattr(record, _SUMMARY_ATTR, False) or not _collapsible(record):
            return True
        key = _storm_key(record)
        now = record.created
        due: list[_Storm] = []
        with self._lock:
            storms = self._storms
            # Windows start in insertion order, so expired ones are at the front.
            while storms:
                oldest = next(iter(storms.values()))
                if not oldest.expired(now, self.window):
                    break
                storms.popitem(last=False)
                if oldest.count:
                    due.append(oldest)
            storm = storms.get(key)
            if storm is not None and storm.expired(now, self.window):
                # Out of order (clock stepped, or a record from another thread).
                del storms[key]
                if storm.count:
                    due.append(storm)
                storm = None
            if storm is not None:
                storm.suppress(record)
                passed = False
            else:
                storms[key] = _Storm(now)
                if len(storms) > self.max_keys:
                    _, evicted = storms.popitem(last=False)
                    if evicted.count:
                        due.append(evicted)
                passed = True
        self._emit(due)
        return passed

    def flush(self) -> None:
        """Emit the summary of every pending storm and forget all windows.

        The next record of any key passes again. :meth:`LogConfig.close` and
        :meth:`LogConfig.reopen` call this so no count is lost.
        """
        with self._lock:
            due = [storm for storm in self._storms.values() if storm.count]
            self._storms.clear()
        self._emit(due)

    def _emit(self, storms: list[_Storm]) -> None:
        for storm in storms:
            summary = storm.summary()
            if self._sink is not None:
                self._sink(summary)
            else:
                logging.getLogger(summary.name).handle(summary)


class _Storm:
    """One key's current window: when it opened, how many were suppressed, the last one."""

    __slots__ = ("count", "last", "latest", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.latest = start  # the newest ``created`` seen; records may arrive out of order
        self.count = 0
        self.last: logging.LogRecord | None = None

    def suppress(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.last = record
        self.latest = max(self.latest, record.created)

    def expired(self, now: float, window: float) -> bool:
        # A record more than a window *before* the start means the wall clock
        # stepped back; start afresh rather than suppress until it catches up.
        return now >= self.start + window or now < self.start - window

    def summary(self) -> logging.LogRecord:
        """Return the summary record, a copy of the last suppressed record."""
        last = self.last
        assert last is not None  # count > 0 implies a suppressed record
        try:
            message = last.getMessage()
        except Exception:  # bad args: the handler reports those; summarise the template
            message = str(last.msg)
        record = logging.makeLogRecord(dict(last.__dict__))
        span = self.latest - self.start
        tail = f" (repeated {self.count} times in the last {span:.1f}s)"
        record.msg = message + tail
        template = getattr(last, _TEMPLATE_ATTR, None)
        if template is not None:
            # A connection logger's message without its "#id peer" prefix (the JSON lines').
            try:
                bare = _render(template, last.args)
            except Exception:
                bare = str(template)
            setattr(record, _TEMPLATE_ATTR, bare + tail)
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        record.__dict__.pop("message", None)
        setattr(record, _SUMMARY_ATTR, True)
        return record


# LogRecord attribute where ConnectionLogger keeps the unprefixed template.
_TEMPLATE_ATTR = "daemonkit_template"


def _collapsible(record: logging.LogRecord) -> bool:
    """True for records that come in storms: warnings and up, and per-connection lines.

    Not TRACE: an operator who asked for wire dumps wants every one of them.
    """
    level = record.levelno
    return level >= logging.WARNING or (level > TRACE and hasattr(record, _TEMPLATE_ATTR))


def _storm_key(record: logging.LogRecord) -> tuple[object, ...]:
    """Return what makes two records "the same" for :class:`StormFilter`."""
    # A connection logger records its template without the "#id peer"
    # prefix, so the same error from many connections is one storm.
    msg = getattr(record, _TEMPLATE_ATTR, record.msg)
    template = msg if isinstance(msg, str) else f"<{type(msg).__qualname__}>"
    exc_type = record.exc_info[0] if record.exc_info else None
    return (record.name, record.levelno, template, exc_type)


class _Saved:
    """What the root and the named loggers were before daemonkit took them over."""

    __slots__ = ("loggers", "root_handlers", "root_level")

    def __init__(self, root_level: int, root_handlers: list[logging.Handler]) -> None:
        self.root_level = root_level
        self.root_handlers = root_handlers
        # logger name -> (level, propagate)
        self.loggers: dict[str, tuple[int, bool]] = {}

    def restore(self, root: logging.Logger) -> None:
        for handler in self.root_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(self.root_level)
        for name, (level, propagate) in self.loggers.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.propagate = propagate


class LogConfig:
    """The logging set-up :func:`setup` made, and the handle to change or undo it.

    ``logger`` is the named logger (``"daemonkit"`` by default) and
    ``handler`` daemonkit's one handler, on the root logger. Call
    :meth:`reopen` after logrotate renamed the file (SIGUSR1), and
    :meth:`close` at shutdown, which gives the root logger back as it was.
    """

    def __init__(
        self,
        logger: logging.Logger,
        handler: logging.Handler,
        storm: StormFilter,
        *,
        made: list[logging.Handler] | None = None,
        saved: _Saved | None = None,
    ) -> None:
        self._logger = logger
        self._handler = handler
        self._storm = storm
        # Handlers a config file made: removed from every logger and closed by close().
        self._made = list(made or ())
        # What close() restores; None once a later setup() took over.
        self._saved = saved
        self._closed = False
        for owned in (handler, *self._made):
            setattr(owned, _OWNER_ATTR, self)

    @property
    def logger(self) -> logging.Logger:
        """The named logger; get children with ``logger.getChild(...)``."""
        return self._logger

    @property
    def handler(self) -> logging.Handler:
        """daemonkit's handler: a ``FileHandler`` with ``file=``, else a ``StreamHandler``.

        It sits on the root logger, unless a config file's ``root`` section
        replaced the root's handlers with its own.
        """
        return self._handler

    def set_level(self, level: str | int) -> None:
        """Change the level of the root logger and of the named logger (a name or an int).

        Raises :class:`ConfigError` for an unknown level; the level is then unchanged.
        """
        number = _parse_level(level)
        logging.getLogger().setLevel(number)
        self._logger.setLevel(number)

    def reopen(self) -> None:
        """Close and reopen the log files at the same paths (for logrotate).

        Reopens daemonkit's file and every ``FileHandler`` a config file
        made. Pending storm summaries are written to the old file first.
        After logrotate renamed a file, new lines go to a fresh file at the
        original path. A no-op for a stream, and after :meth:`close`.
        Raises ``OSError`` if a file cannot be reopened; that file's old
        stream then stays in use (the others are reopened). Call it from the
        event loop, not from a raw signal handler.
        """
        if self._closed:
            return
        self._storm.flush()
        failure: OSError | None = None
        for handler in (self._handler, *self._made):
            if not isinstance(handler, logging.FileHandler):
                continue
            try:
                new = open(  # noqa: SIM115
                    handler.baseFilename,
                    "a",
                    encoding=handler.encoding,
                    errors=getattr(handler, "errors", None),
                )
            except OSError as exc:
                failure = failure or exc
                continue
            old = handler.setStream(new)
            if old is not None:
                old.close()
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Emit pending storm summaries, remove and close the handlers, restore the root.

        The root logger gets back the handlers and level it had before
        :func:`setup`, the named logger its level and ``propagate``. (Levels a
        config file set on other loggers stay.) Idempotent; never raises for
        a log that cannot be flushed.
        """
        if self._closed:
            return
        self._release()
        root = logging.getLogger()
        if self._saved is not None:
            self._saved.restore(root)
            self._saved = None

    def _release(self) -> None:
        """Flush, detach and close every handler this config owns; forget it is current."""
        self._closed = True
        self._storm.flush()
        _detach([self._handler, *self._made])
        for handler in (self._handler, *self._made):
            try:
                handler.close()
            except (OSError, ValueError) as exc:  # flushing a full disk or a closed file
                notice = getattr(self._handler, "_notice", None)
                if isinstance(notice, _ErrorNotice):
                    notice.report(exc)

    def _hand_over(self) -> _Saved | None:
        """A later :func:`setup` takes over: close what this made, return what to restore."""
        saved, self._saved = self._saved, None
        self._release()
        return saved


def _detach(handlers: list[logging.Handler]) -> None:
    """Remove ``handlers`` from the root and from every logger that has them."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        logger
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger) and logger.handlers
    ]
    for logger in loggers:
        for handler in handlers:
            if handler in logger.handlers:
                logger.removeHandler(handler)


# The suffixes a config file may have, and how each is read.
_CONFIG_SUFFIXES = (".json", ".toml")


def _load_config(name: str) -> dict[str, Any]:
    """Read a ``logging.config.dictConfig`` dictionary from a JSON or TOML file.

    ``disable_existing_loggers`` defaults to False (dictConfig's True would
    silence every logger made before, daemonkit's included). Raises
    :class:`ConfigError` naming the file.
    """
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in _CONFIG_SUFFIXES:
        raise ConfigError(
            f"log config {name}: use a .json or .toml file holding a"
            f" logging.config.dictConfig dictionary, not {suffix or 'a file without suffix'}"
        )
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"log config {name}: cannot read it: {exc.strerror or exc}") from None
    loaded: object
    if suffix == ".json":
        try:
            loaded = json.loads(data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ConfigError(f"log config {name}: not valid JSON: {exc}") from None
    else:
        loads = _toml_loads(name)
        try:
            loaded = loads(data.decode("utf-8"))
        except ValueError as exc:  # TOMLDecodeError and UnicodeDecodeError
            raise ConfigError(f"log config {name}: not valid TOML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"log config {name}: must hold a table/object, not {type(loaded).__name__}"
        )
    loaded.setdefault("disable_existing_loggers", False)
    return loaded


def _toml_loads(name: str) -> Callable[[str], Any]:
    """The TOML parser: ``tomllib`` from Python 3.11, else the ``tomli`` package."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads
    try:
        import importlib

        module = importlib.import_module("tomli")
    except ImportError:
        raise ConfigError(
            f"log config {name}: reading TOML needs Python 3.11 or the tomli package"
            " (pip install tomli); or write the file as JSON"
        ) from None
    loads: Callable[[str], Any] = module.loads
    return loads


def _apply_config(name: str, config: dict[str, Any]) -> list[logging.Handler]:
    """Apply ``config`` with dictConfig; return the handlers it made.

    On failure, the handlers made so far are detached and closed and
    :class:`ConfigError` names the file in one line.
    """
    configurator = logging.config.dictConfigClass(config)
    try:
        configurator.configure()
    except Exception as exc:
        made = _config_handlers(configurator)
        _detach(made)
        for handler in made:
            try:
                handler.close()
            except Exception:  # best effort: the error worth reporting is the config's
                pass
        raise ConfigError(f"log config {name}: {_one_line(exc)}") from None
    return _config_handlers(configurator)


def _config_handlers(configurator: Any) -> list[logging.Handler]:
    """The handlers dictConfig made: it replaces each entry of ``handlers`` by its handler."""
    handlers = configurator.config.get("handlers")
    if not isinstance(handlers, dict):
        return []
    return [h for h in dict.values(handlers) if isinstance(h, logging.Handler)]


def _one_line(exc: BaseException) -> str:
    """``exc``'s message with its cause's (dictConfig wraps the useful one), on one line."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return " ".join(text.split())


def setup(
    level: str | int = "info",
    file: str | os.PathLike[str] | None = None,
    color: str = "auto",
    stream: TextIO | None = None,
    logger_name: str = "daemonkit",
    *,
    format: str = "text",
    config: str | os.PathLike[str] | None = None,
) -> LogConfig:
    """Configure the root logger with one handler and return its :class:`LogConfig`.

    Every logger that propagates — daemonkit's, the application's, its
    libraries' — writes through that handler at ``level`` (set on the root
    and on ``logger_name``, which propagates and is :attr:`LogConfig.logger`).

    Lines go to ``file`` (opened for appending, never coloured) if given,
    else to ``stream`` (default ``sys.stderr``), coloured as
    :func:`use_color` decides from ``color`` and ``os.environ``.
    ``format`` is ``"text"`` (local time with its UTC offset, the pid, level,
    logger, message) or ``"json"`` (one object per line: ``time`` in UTC,
    ``level``, ``logger``, ``message``, ``pid``, ``conn_id`` and ``peer`` for
    a connection's records, ``exc``, extra fields). When the stream is the
    systemd journal (``JOURNAL_STREAM`` names it), text lines have an
    ``<N>`` priority prefix and no timestamp or pid (the journal records
    them), and no colour unless ``color="always"``.

    ``config`` names a JSON or TOML file holding a
    ``logging.config.dictConfig`` dictionary, applied after daemonkit's
    handler is in place: it may set levels of chosen loggers, add handlers,
    or replace the root's handlers with a ``root`` section.
    ``disable_existing_loggers`` defaults to False there.

    The handler carries a :class:`StormFilter`, and a write error (a full
    disk) prints one line to stderr at most once a minute instead of a
    traceback. The root's previous handlers are removed (those of an
    earlier :func:`setup` flushed and closed, others kept to be given back
    by :meth:`LogConfig.close`).

    Raises :class:`ConfigError` (one line) for an unknown ``level``,
    ``color`` or ``format``, a file that cannot be opened, or a config file
    that cannot be read or applied; the previous configuration is then in
    place again (though levels a failed config file set on its loggers may
    stay).
    """
    number = _parse_level(level)
    color = _parse_color(color)
    style = _parse_format(format)
    config_name = "" if config is None else os.fspath(config)
    dict_config = None if config is None else _load_config(config_name)
    handler: logging.Handler
    if file is not None:
        try:
            handler = _FileHandler(file)
        except OSError as exc:
            raise ConfigError(f"cannot open log file {os.fspath(file)!r}: {exc.strerror}") from exc
        colored = journal = False
    else:
        out = sys.stderr if stream is None else stream
        handler = _StreamHandler(out)
        journal = _is_journal(out, os.environ)
        colored = use_color(color, out, os.environ) and (color == "always" or not journal)
    handler.setFormatter(_make_formatter(style, colored, journal))
    storm = StormFilter(sink=handler.handle)
    handler.addFilter(storm)

    root = logging.getLogger()
    logger = logging.getLogger(logger_name)
    before = (root.level, logger.level, logger.propagate)
    previous = list(root.handlers)
    owners = [getattr(h, _OWNER_ATTR, None) for h in previous]
    earlier = next((c for c in owners if isinstance(c, LogConfig) and c._saved is not None), None)
    for old in previous:
        for old_filter in old.filters:
            if isinstance(old_filter, StormFilter):
                old_filter.flush()
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    logger.setLevel(number)
    logger.propagate = True

    made: list[logging.Handler] = []
    if dict_config is not None:
        try:
            made = _apply_config(config_name, dict_config)
        except ConfigError:
            _detach([handler])
            handler.close()
            for old in previous:
                if old not in root.handlers:
                    root.addHandler(old)
            root.setLevel(before[0])
            logger.setLevel(before[1])
            logger.propagate = before[2]
            raise

    if earlier is not None:
        saved = earlier._hand_over()
        assert saved is not None  # earlier was chosen for having it
        for old, owner in zip(previous, owners, strict=True):
            if owner is None:  # added while daemonkit owned the root: replaced, as before
                with contextlib.suppress(OSError, ValueError):  # a failing flush
                    old.close()
    else:
        foreign = [old for old, owner in zip(previous, owners, strict=True) if owner is None]
        saved = _Saved(before[0], foreign)
    saved.loggers.setdefault(logger.name, (before[1], before[2]))
    return LogConfig(logger, handler, storm, made=made, saved=saved)


if TYPE_CHECKING:
    _AdapterBase = logging.LoggerAdapter[logging.Logger]
else:  # LoggerAdapter is subscriptable only from Python 3.11
    _AdapterBase = logging.LoggerAdapter


class _PrefixedMessage(str):
    """A log message whose record arguments apply to its template only, not its prefix.

    ``LogRecord.getMessage`` does ``str(msg) % args``: ``str()`` returns this
    object itself and ``%`` formats the template, so a ``%`` in the prefix
    is printed as it is, with or without arguments.
    """

    _prefix: str
    _template: str

    def __new__(cls, prefix: str, template: str) -> _PrefixedMessage:
        self = super().__new__(cls, prefix + template)
        self._prefix = prefix
        self._template = template
        return self

    def __str__(self) -> str:
        return self

    def __mod__(self, args: Any) -> str:
        return self._prefix + str(self._template % args)


class ConnectionLogger(_AdapterBase):
    """A logger for one connection: every message starts with ``#<id> <peer>``.

    ``log.info("connected")`` writes ``"#17 127.0.0.1:5123 connected"``.
    Cheap enough to make for each use (which is what ``conn.log`` does, so
    that no connection keeps one): *peer* may be a string or a function that
    returns it, and the prefix is built only once the level check passed.
    Each record gets ``conn_id`` and ``peer`` as attributes of those names (the
    JSON format writes them as fields), also only once the level check passed.
    """

    def __init__(self, base: logging.Logger, conn_id: int, peer: str | Callable[[], str]) -> None:
        self._conn_id = conn_id
        self._peer = peer
        super().__init__(base)

    @property
    def extra(self) -> dict[str, object]:
        """``conn_id`` and ``peer``, the fields each record of this logger gets."""
        peer = self._peer if isinstance(self._peer, str) else self._peer()
        return {"conn_id": self._conn_id, "peer": peer}

    @extra.setter
    def extra(self, value: object) -> None:
        """Ignored: ``LoggerAdapter.__init__`` sets it; the fields are the connection's."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Return *msg* with the connection prefix; id, peer and bare template go in ``extra``."""
        peer = self._peer if isinstance(self._peer, str) else self._peer()
        fields = {"conn_id": self._conn_id, "peer": peer, _TEMPLATE_ATTR: msg}
        extra = kwargs.get("extra")
        kwargs["extra"] = fields if extra is None else {**extra, **fields}
        prefix = f"#{self._conn_id} {peer} "
        if "%" in prefix and isinstance(msg, str):
            # A peer such as an IPv6 address with its zone (fe80::1%eth0):
            # logging would apply the record's arguments to it too.
            return _PrefixedMessage(prefix, msg), kwargs
        return prefix + str(msg), kwargs

    if TYPE_CHECKING:

        def trace(self, msg: object, *args: object, **kwargs: Any) -> None:
            """Log at :data:`TRACE` (wire dumps): ``log.trace("recv %r", data)``."""

    else:
        # A partialmethod, not a def: no extra Python frame, so the record's
        # funcName/lineno name the caller on every Python version (stacklevel
        # counts frames differently before 3.11). LoggerAdapter.log checks the
        # level before anything is formatted.
        trace = functools.partialmethod(logging.LoggerAdapter.log, TRACE)


def connection_logger(
    base: logging.Logger, conn_id: int, peer: str | Callable[[], str]
) -> ConnectionLogger:
    """Return a :class:`ConnectionLogger` prefixing ``#<conn_id> <peer>`` to *base*'s messages."""
    return ConnectionLogger(base, conn_id, peer)
