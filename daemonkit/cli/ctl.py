"""``python -m daemonkit ctl COMMAND [ARG] --control PATH``: talk to a running daemon.

The client of the control socket (:mod:`daemonkit.ops.control`): it sends one
request line, reads one reply line, prints it as a table (``status``,
``connections``) or a line of text, or as raw JSON with ``--json``, and
exits. ``main(argv) -> int`` is the whole command and what the tests call.

====  ==============================================================
code  meaning
====  ==============================================================
0     the daemon carried out the command
1     the daemon answered with an error (printed on stderr)
2     bad command-line usage
10    cannot connect: no socket at PATH, nobody listening, or no permission
11    connected, but no reply within ``--timeout`` (or not a JSON reply)
====  ==============================================================
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from daemonkit.cli.argtypes import VERSION_LINE, duration, whole_number
from daemonkit.core.log import LEVELS
from daemonkit.errors import DaemonkitError
from daemonkit.ops.control import COMMANDS, CONTROL_MAX_REPLY

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENV_CONTROL",
    "EXIT_CANNOT_CONNECT",
    "EXIT_ERROR_REPLY",
    "EXIT_NO_REPLY",
    "CannotConnect",
    "NoReply",
    "build_parser",
    "format_connections",
    "format_set_status",
    "format_status",
    "main",
    "request",
]

EXIT_OK = 0
#: The daemon answered ``{"ok": false, ...}``.
EXIT_ERROR_REPLY = 1
EXIT_USAGE = 2
#: No daemon could be reached at the control socket path.
EXIT_CANNOT_CONNECT = 10
#: The daemon did not answer in time, or not with a JSON object.
EXIT_NO_REPLY = 11

#: Seconds to wait for the connection and the reply: a status takes
#: milliseconds, so 10 s only ever passes when the loop is stuck.
DEFAULT_TIMEOUT = 10.0

#: The environment variable that supplies ``--control`` when it is not given.
ENV_CONTROL = "DAEMONKIT_CONTROL"


class CannotConnect(DaemonkitError):
    """No daemon answers at the control socket path (missing, refused, or no permission)."""


class NoReply(DaemonkitError):
    """The daemon did not reply within the timeout, closed without replying, or sent junk."""


def request(path: str, payload: dict[str, Any], *, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Send ``payload`` to the control socket at ``path`` and return the reply object.

    Raises :class:`CannotConnect` or :class:`NoReply`; an error *reply*
    (``{"ok": false, "error": ...}``) is returned like any other.
    """
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise CannotConnect(
                f"cannot connect to the control socket {path}: {exc.strerror or exc} "
                "(is the daemon running with --control at this path, and are you its user?)"
            ) from exc
        data = b""
        try:
            sock.sendall(json.dumps(payload).encode() + b"\n")
            while not data.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > CONTROL_MAX_REPLY:
                    raise NoReply(f"reply from {path} is longer than {CONTROL_MAX_REPLY} bytes")
        except TimeoutError:
            raise NoReply(f"no reply from {path} within {timeout:g}s") from None
        except OSError:
            pass  # reset or broken pipe: what arrived before it may still be the reply
    if not data.endswith(b"\n"):
        raise NoReply(
            f"{path} closed the connection without a reply "
            "(too many control clients at once, or the daemon is stopping)"
        )
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise NoReply(f"{path} sent something that is not JSON: {data[:80]!r}") from exc
    if not isinstance(reply, dict) or "ok" not in reply:
        raise NoReply(f"{path} sent a reply without 'ok': {data[:80]!r}")
    return reply


# -- formatting ------------------------------------------------------------------


def _bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop returns


def _seconds(s: Any) -> str:
    if not isinstance(s, int | float):
        return "-"
    if s < 60:
        return f"{s:.1f}s"
    minutes, secs = divmod(int(s), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def _ms(s: Any) -> str:
    return f"{s * 1000:.1f}ms" if isinstance(s, int | float) else "-"


def _state(status: dict[str, Any]) -> str:
    """The state, and while draining what is left of the drain."""
    state, drain = str(status.get("state")), status.get("drain")
    if state != "draining" or not isinstance(drain, dict):
        return state
    return (
        f"draining: {drain.get('connections')} connection(s) left, "
        f"{_seconds(drain.get('seconds_left'))} to the deadline"
    )


def format_status(status: dict[str, Any]) -> str:
    """The ``status`` reply's object as a two-column table (a ``--workers`` set: and a table)."""
    if status.get("role") == "supervisor":
        return format_set_status(status)
    lag = status.get("loop_lag") or {}
    endpoints = status.get("endpoints") or []
    rows: list[tuple[str, str]] = [
        ("daemon", f"{status.get('name')} (pid {status.get('pid')})"),
        ("state", _state(status)),
        ("uptime", _seconds(status.get("uptime"))),
        ("backend", str(status.get("backend"))),
    ]
    width = max((len(str(e.get("name"))) for e in endpoints), default=0)
    for i, e in enumerate(endpoints):
        rows.append(
            (
                "endpoints" if i == 0 else "",
                f"{str(e.get('name')).ljust(width)}  {e.get('address') or '(not bound)'}  "
                f"{e.get('connections')} connection(s)",
            )
        )
    for i, link in enumerate(status.get("links") or []):  # outbound links (Daemon.connect)
        error = link.get("last_error")
        rows.append(
            (
                "links" if i == 0 else "",
                f"{link.get('url')}  {link.get('state')} (reconnects {link.get('reconnects')}, "
                f"failures {link.get('failures')}){f', last error: {error}' if error else ''}",
            )
        )
    rows += [
        (
            "connections",
            f"{status.get('connections')} (accepted {status.get('accepted')}, "
            f"closed {status.get('closed')}, rejected {status.get('rejected')}, "
            f"errors {status.get('errors')})",
        ),
        (
            "bytes",
            f"in {_bytes(status.get('bytes_in'))}, out {_bytes(status.get('bytes_out'))}, "
            f"buffered {_bytes(status.get('write_buffer'))}",
        ),
        ("timers", str(status.get("timers"))),
        ("tasks", str(status.get("tasks"))),
        ("open fds", str(status.get("open_fds") if status.get("open_fds") is not None else "-")),
        ("rss", _bytes(status.get("rss"))),
        (
            "loop lag",
            f"p50 {_ms(lag.get('p50'))}, p99 {_ms(lag.get('p99'))}, max {_ms(lag.get('max'))} "
            f"({lag.get('samples', 0)} samples)",
        ),
        ("slow callbacks", str(status.get("slow_callbacks"))),
        ("log level", str(status.get("log_level"))),
        ("control", str(status.get("control") or "-")),
        ("metrics", str(status.get("metrics") or "-")),
    ]
    key_width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(key_width)}  {value}".rstrip() for key, value in rows)


def format_set_status(status: dict[str, Any]) -> str:
    """The ``status`` of a ``--workers`` set: the supervisor, then one row per worker."""
    rows: list[tuple[str, str]] = [
        ("supervisor", f"{status.get('name')} (pid {status.get('pid')})"),
        ("state", str(status.get("state"))),
        ("uptime", _seconds(status.get("uptime"))),
        (
            "workers",
            f"{status.get('workers_configured')} configured, {status.get('workers_ready')} ready",
        ),
        ("connections", str(status.get("connections"))),
        ("control", str(status.get("control") or "-")),
        ("metrics", str(status.get("metrics") or "-")),
    ]
    key_width = max(len(key) for key, _ in rows)
    lines = [f"{key.ljust(key_width)}  {value}".rstrip() for key, value in rows]
    header = ("WORKER", "PID", "STATE", "CONNS", "RSS", "LAG P99", "UPTIME", "RESTARTS", "RECYCLES")
    table = []
    for w in status.get("workers") or []:
        lag = w.get("loop_lag") or {}
        conns = w.get("connections")
        table.append(
            (
                str(w.get("id")),
                str(w.get("pid") or "-"),
                str(w.get("state")),
                str(conns) if conns is not None else "-",
                _bytes(w.get("rss")),
                _ms(lag.get("p99")),
                _seconds(w.get("uptime")),
                str(w.get("restarts")),
                str(w.get("recycles")),
            )
        )
    lines += ["", *_table(header, table)]
    for w in status.get("workers") or []:
        if w.get("error"):
            lines.append(f"worker {w.get('id')} (pid {w.get('pid')}): {w.get('error')}")
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def format_connections(reply: dict[str, Any]) -> str:
    """The ``connections`` reply as a table, one row per connection (and its worker, if any)."""
    entries = reply.get("connections") or []
    workers = any("worker" in c for c in entries) or "unresponsive" in reply
    header = ("ID", "ENDPOINT", "PEER", "AGE", "IDLE", "IN", "OUT", "WBUF")
    rows = [
        (
            *((str(c.get("worker")),) if workers else ()),
            str(c.get("id")),
            str(c.get("endpoint")),
            str(c.get("peer")),
            _seconds(c.get("age")),
            _seconds(c.get("idle")),
            _bytes(c.get("bytes_in")),
            _bytes(c.get("bytes_out")),
            _bytes(c.get("write_buffer")),
        )
        for c in entries
    ]
    lines = _table(("WORKER", *header) if workers else header, rows)
    total = reply.get("total", len(rows))
    if total != len(rows):
        lines.append(f"({len(rows)} of {total} shown)")
    missing = reply.get("unresponsive") or []
    if missing:
        lines.append(f"(no answer in time from worker(s) {', '.join(map(str, missing))})")
    return "\n".join(lines)


def _text(command: str, reply: dict[str, Any]) -> str:
    if command == "status":
        return format_status(reply.get("status") or {})
    if command == "connections":
        return format_connections(reply)
    if command == "metrics":
        return str(reply.get("metrics", "")).rstrip("\n")
    if command == "stop" and "workers" in reply:  # a --workers set
        if reply.get("now"):
            return f"stopping now: {reply.get('workers')} worker(s) told to stop at once"
        return f"stopping {reply.get('workers')} worker(s) gracefully"
    if command == "reload" and "workers" in reply:
        return f"replacing {reply.get('workers')} worker(s) one at a time"
    if command == "stop":
        if reply.get("now"):
            return f"stopping now: aborting {reply.get('connections')} connection(s)"
        timeout = reply.get("timeout")
        deadline = f"{timeout:g}s" if isinstance(timeout, int | float) else "?"
        return (
            f"stopping: {reply.get('connections')} connection(s) to close, "
            f"shutdown timeout {deadline}"
        )
    if command == "log-level":
        line = f"log level: {reply.get('was')} -> {reply.get('level')}"
        workers = reply.get("workers")
        if isinstance(workers, dict):
            line += "".join(f"\nworker {wid}: {answer}" for wid, answer in workers.items())
        return line
    return "ok"


# -- the command -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``daemonkit ctl``."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: the options may come before or after the command without the
    # subcommand's defaults overwriting what was given before it.
    common.add_argument(
        "--control",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"the daemon's control socket (default: ${ENV_CONTROL})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON reply"
    )
    common.add_argument(
        "--timeout",
        type=duration("timeout", positive=True),
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help=f"how long to wait for the daemon, e.g. 5s or 500ms (default: {DEFAULT_TIMEOUT:g}s)",
    )
    parser = argparse.ArgumentParser(
        prog="daemonkit ctl",
        parents=[common],
        description="Query or steer a running daemon through its control socket.",
        epilog="exit status: 0 ok, 1 the daemon answered with an error, 2 usage, "
        "10 cannot connect, 11 no reply in time",
    )
    parser.add_argument("--version", action="version", version=VERSION_LINE)
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, help="what to ask the daemon"
    )
    for name, help_text in COMMANDS.items():
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        if name == "connections":
            sub.add_argument("--limit", type=whole_number(0), metavar="N", help="show the oldest N")
        elif name == "stop":
            sub.add_argument(
                "shutdown_timeout",
                nargs="?",
                type=duration("shutdown_timeout"),
                metavar="SECONDS",
                help="how long to let connections drain, e.g. 30s or 2m "
                "(default: the daemon's shutdown_timeout)",
            )
        elif name == "log-level":
            sub.add_argument(
                "level",
                type=str.lower,
                choices=list(LEVELS),
                metavar="LEVEL",
                help=f"the new least severe level: {', '.join(LEVELS)}",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``daemonkit ctl`` with ``argv`` (default ``sys.argv[2:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[2:] if argv is None else argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    path = getattr(args, "control", None) or os.environ.get(ENV_CONTROL)
    if not path:
        print(
            f"daemonkit ctl: error: give the control socket: --control PATH (or ${ENV_CONTROL})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    payload: dict[str, Any] = {"cmd": args.command}
    if args.command == "connections" and args.limit is not None:
        payload["limit"] = args.limit
    elif args.command == "stop" and args.shutdown_timeout is not None:
        payload["timeout"] = args.shutdown_timeout
    elif args.command == "log-level":
        payload["level"] = args.level
    try:
        reply = request(path, payload, timeout=getattr(args, "timeout", DEFAULT_TIMEOUT))
    except CannotConnect as exc:
        print(f"daemonkit ctl: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_CONNECT
    except NoReply as exc:
        print(f"daemonkit ctl: error: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    if getattr(args, "json", False):
        print(json.dumps(reply, indent=2))
    elif reply.get("ok"):
        print(_text(args.command, reply))
    if not reply.get("ok"):
        print(f"daemonkit ctl: error: {reply.get('error')}", file=sys.stderr)
        return EXIT_ERROR_REPLY
    return EXIT_OK
