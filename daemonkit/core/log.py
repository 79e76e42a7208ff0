"""Logging set-up for daemons: one handler, honest colour, no log storms.

:func:`setup` configures one named logger (``"daemonkit"`` by default, never
the root logger) and returns a :class:`LogConfig` that owns what it made.
The rules it keeps:

* **Exactly one handler.** Calling :func:`setup` again replaces the handler
  (the old one is flushed and closed); it never stacks a second one.
  ``propagate`` is off, so lines are not written twice through the root logger.
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
  ``debug()`` costs one cached ``isEnabledFor``.
* **No global state** beyond registering the ``TRACE`` level name.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TextIO

import colorlog

from daemonkit.errors import ConfigError

__all__ = [
    "LEVELS",
    "TRACE",
    "ConnectionLogger",
    "LogConfig",
    "StormFilter",
    "connection_logger",
    "setup",
    "use_color",
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

_COLOR_CHOICES = ("auto", "always", "never")

# One layout for both formatters: "2024-05-01 12:00:00.123 INFO    daemonkit: ready".
_LAYOUT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"
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


def _make_formatter(colored: bool) -> logging.Formatter:
    """Return the formatter for the decision already taken by :func:`use_color`."""
    if colored:
        # force_color=True: colorlog must not re-decide from FORCE_COLOR/NO_COLOR/isatty.
        formatter: logging.Formatter = colorlog.ColoredFormatter(
            "%(log_color)s" + _LAYOUT,
            datefmt=_DATEFMT,
            log_colors=_LEVEL_COLORS,
            force_color=True,
        )
        return formatter
    return logging.Formatter(_LAYOUT, datefmt=_DATEFMT)


class StormFilter(logging.Filter):
    """Collapse a storm of identical log records into one line and one summary.

    Only records that can come in storms are considered: those at WARNING or
    above, and those written through a :class:`ConnectionLogger` (a line per
    peer, which a hostile client can multiply). Every other record — the
    daemon's own lifecycle lines at INFO or DEBUG, such as each endpoint's
    "listening on" — passes at once, untouched.

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
        record.msg = f"{message} (repeated {self.count} times in the last {span:.1f}s)"
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
    """True for records that come in storms: warnings and up, and per-connection lines."""
    return record.levelno >= logging.WARNING or hasattr(record, _TEMPLATE_ATTR)


def _storm_key(record: logging.LogRecord) -> tuple[object, ...]:
    """Return what makes two records "the same" for :class:`StormFilter`."""
    # A connection logger records its template without the "#id peer"
    # prefix, so the same error from many connections is one storm.
    msg = getattr(record, _TEMPLATE_ATTR, record.msg)
    template = msg if isinstance(msg, str) else f"<{type(msg).__qualname__}>"
    exc_type = record.exc_info[0] if record.exc_info else None
    return (record.name, record.levelno, template, exc_type)


class LogConfig:
    """The logging set-up :func:`setup` made, and the handle to change or undo it.

    ``logger`` is the configured logger and ``handler`` its one handler.
    Call :meth:`reopen` after logrotate renamed the file (SIGUSR1), and
    :meth:`close` at shutdown.
    """

    def __init__(
        self, logger: logging.Logger, handler: logging.Handler, storm: StormFilter
    ) -> None:
        self._logger = logger
        self._handler = handler
        self._storm = storm
        self._closed = False

    @property
    def logger(self) -> logging.Logger:
        """The configured logger; get children with ``logger.getChild(...)``."""
        return self._logger

    @property
    def handler(self) -> logging.Handler:
        """The one handler: a ``FileHandler`` with ``file=``, else a ``StreamHandler``."""
        return self._handler

    def set_level(self, level: str | int) -> None:
        """Change the logger's level (a name from :data:`LEVELS` or an int).

        Raises :class:`ConfigError` for an unknown level; the level is then unchanged.
        """
        self._logger.setLevel(_parse_level(level))

    def reopen(self) -> None:
        """Close and reopen the log file at the same path (for logrotate).

        Pending storm summaries are written to the old file first. After
        logrotate renamed the file, new lines go to a fresh file at the
        original path. A no-op for a stream, and after :meth:`close`.
        Raises ``OSError`` if the file cannot be reopened; the old file then
        stays in use. Call it from the event loop, not from a raw signal handler.
        """
        if self._closed:
            return
        self._storm.flush()
        handler = self._handler
        if isinstance(handler, logging.FileHandler):
            new = open(handler.baseFilename, "a", encoding=_FILE_ENCODING, errors=_FILE_ERRORS)  # noqa: SIM115
            old = handler.setStream(new)
            if old is not None:
                old.close()

    def close(self) -> None:
        """Emit pending storm summaries, then remove and close the handler. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._storm.flush()
        self._logger.removeHandler(self._handler)
        self._handler.close()


def setup(
    level: str | int = "info",
    file: str | os.PathLike[str] | None = None,
    color: str = "auto",
    stream: TextIO | None = None,
    logger_name: str = "daemonkit",
) -> LogConfig:
    """Configure the ``logger_name`` logger with one handler and return its :class:`LogConfig`.

    Lines go to ``file`` (opened for appending, never coloured) if given,
    else to ``stream`` (default ``sys.stderr``), coloured as
    :func:`use_color` decides from ``color`` and ``os.environ``. The handler
    carries a :class:`StormFilter`. Any handler already on the logger is
    flushed, removed and closed; the logger stops propagating to the root.

    Raises :class:`ConfigError` for an unknown ``level`` or ``color``, or a
    file that cannot be opened; the previous configuration is then untouched.
    """
    number = _parse_level(level)
    color = _parse_color(color)
    handler: logging.Handler
    if file is not None:
        try:
            handler = logging.FileHandler(
                file, mode="a", encoding=_FILE_ENCODING, errors=_FILE_ERRORS
            )
        except OSError as exc:
            raise ConfigError(f"cannot open log file {os.fspath(file)!r}: {exc.strerror}") from exc
        colored = False
    else:
        out = sys.stderr if stream is None else stream
        handler = logging.StreamHandler(out)
        colored = use_color(color, out, os.environ)
    handler.setFormatter(_make_formatter(colored))
    storm = StormFilter(sink=handler.handle)
    handler.addFilter(storm)

    logger = logging.getLogger(logger_name)
    for old in list(logger.handlers):
        for old_filter in old.filters:
            if isinstance(old_filter, StormFilter):
                old_filter.flush()
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(number)
    logger.propagate = False
    return LogConfig(logger, handler, storm)


if TYPE_CHECKING:
    _AdapterBase = logging.LoggerAdapter[logging.Logger]
else:  # LoggerAdapter is subscriptable only from Python 3.11
    _AdapterBase = logging.LoggerAdapter


class ConnectionLogger(_AdapterBase):
    """A logger for one connection: every message starts with ``#<id> <peer>``.

    ``log.info("connected")`` writes ``"#17 127.0.0.1:5123 connected"``.
    Cheap enough to create per connection; the prefix is built once and
    added only after the level check passed. ``extra`` holds ``conn_id`` and
    ``peer`` for introspection; records are not given extra attributes.
    """

    def __init__(self, base: logging.Logger, conn_id: int, peer: str) -> None:
        super().__init__(base, {"conn_id": conn_id, "peer": peer})
        self._prefix = f"#{conn_id} {peer} "

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Return *msg* with the connection prefix; the bare template goes in ``extra``."""
        extra = kwargs.get("extra")
        kwargs["extra"] = {_TEMPLATE_ATTR: msg} if extra is None else {**extra, _TEMPLATE_ATTR: msg}
        return f"{self._prefix}{msg}", kwargs

    if TYPE_CHECKING:

        def trace(self, msg: object, *args: object, **kwargs: Any) -> None:
            """Log at :data:`TRACE` (wire dumps): ``log.trace("recv %r", data)``."""

    else:
        # A partialmethod, not a def: no extra Python frame, so the record's
        # funcName/lineno name the caller on every Python version (stacklevel
        # counts frames differently before 3.11). LoggerAdapter.log checks the
        # level before anything is formatted.
        trace = functools.partialmethod(logging.LoggerAdapter.log, TRACE)


def connection_logger(base: logging.Logger, conn_id: int, peer: str) -> ConnectionLogger:
    """Return a :class:`ConnectionLogger` prefixing ``#<conn_id> <peer>`` to *base*'s messages."""
    return ConnectionLogger(base, conn_id, peer)
