"""The command line: ``python -m daemonkit TARGET [options]``.

``python -m daemonkit bots BOTFILE ...`` runs bots instead (see
:mod:`daemonkit.cli.bots`).
``python -m daemonkit ctl COMMAND --control PATH`` talks to a running daemon
(:mod:`daemonkit.cli.ctl`).

``main(argv) -> int`` is the whole program and is what the tests call; the
console script and ``python -m daemonkit`` wrap it. Every failure a user can
cause (a bad target, a bad endpoint, a port in use, no permission) ends with
one line on stderr and its own exit code, never a traceback:

====  =========================================================
code  meaning
====  =========================================================
0     stopped cleanly (or ``--check`` passed)
1     unexpected error (a bug: the traceback is logged)
2     bad command-line usage
3     the target cannot be loaded
4     a setting or endpoint is invalid
5     an address is already in use
6     permission denied (e.g. a port below 1024)
7     ``on_start`` raised
12    already running: another process holds the ``--pidfile``
====  =========================================================
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from daemonkit import __version__
from daemonkit.cli.argtypes import duration, whole_number
from daemonkit.cli.loader import load_daemon_class
from daemonkit.core.log import LEVELS, setup
from daemonkit.core.reactor import BACKENDS, new_event_loop
from daemonkit.daemon import Daemon, StartError, override_listen
from daemonkit.errors import ConfigError, LoadError
from daemonkit.ops.control import check_operations
from daemonkit.ops.memguard import parse_size
from daemonkit.ops.pidfile import AlreadyRunning, PidfileError, check_pidfile_dir
from daemonkit.ops.process import Deployment, DetachError, resolve_credentials
from daemonkit.ops.reloader import is_reload_child, supervise
from daemonkit.ops.upgrade import report_start_failure

__all__ = [
    "EXIT_ADDRESS_IN_USE",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_LOAD",
    "EXIT_OK",
    "EXIT_PERMISSION",
    "EXIT_RUNNING",
    "EXIT_START",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "main_entry",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LOAD = 3
EXIT_CONFIG = 4
EXIT_ADDRESS_IN_USE = 5
EXIT_PERMISSION = 6
EXIT_START = 7
EXIT_RUNNING = 12


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``daemonkit [run] TARGET``."""
    parser = argparse.ArgumentParser(
        prog="daemonkit",
        description="Run a daemonkit daemon in the foreground. "
        "SIGTERM/SIGINT stop it gracefully (twice: at once), SIGHUP calls on_reload, "
        "SIGUSR1 reopens the log file.",
        epilog="TARGET is path/to/file.py, pkg.module, or either with :ClassName.",
    )
    parser.add_argument("target", metavar="TARGET", help="the daemon to run")
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ENDPOINT",
        help="endpoint to listen on, e.g. tcp://0.0.0.0:7000 or unix:///run/app.sock "
        "(repeatable; replaces the class's listen setting), or NAME=URL to move the "
        "endpoint named NAME",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="event loop (default: auto = uvloop if installed)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=list(LEVELS),
        help="least severe level to log (default: info)",
    )
    parser.add_argument("--log-file", metavar="PATH", help="log to this file (reopened on SIGUSR1)")
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the log (auto: on a terminal unless NO_COLOR is set)",
    )
    parser.add_argument("--max-connections", type=whole_number(1), metavar="N")
    parser.add_argument("--idle-timeout", type=duration("idle_timeout"), metavar="SECONDS")
    parser.add_argument("--frame-timeout", type=duration("frame_timeout"), metavar="SECONDS")
    parser.add_argument("--send-timeout", type=duration("send_timeout"), metavar="SECONDS")
    parser.add_argument("--shutdown-timeout", type=duration("shutdown_timeout"), metavar="SECONDS")
    parser.add_argument("--control", metavar="PATH", help="open a control socket at PATH")
    parser.add_argument("--metrics", metavar="ENDPOINT", help="serve Prometheus metrics here")
    parser.add_argument("--pidfile", metavar="PATH", help="record the pid here, locked")
    parser.add_argument("--daemon", action="store_true", help="detach into the background")
    parser.add_argument("--user", metavar="NAME", help="switch to this user after binding")
    parser.add_argument("--group", metavar="NAME", help="switch to this group after binding")
    parser.add_argument(
        "--max-memory",
        type=_size,
        metavar="SIZE",
        help="when the RSS passes SIZE (e.g. 512M), replace the process by a fresh copy "
        "with a zero-downtime upgrade",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="development: run the daemon in a child process and restart it when a .py "
        "file next to TARGET changes",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="load and validate the daemon and its settings, then exit",
    )
    parser.add_argument("--version", action="version", version=f"daemonkit {__version__}")
    return parser


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fail(code: int, message: str) -> int:
    print(f"daemonkit: error: {message}", file=sys.stderr)
    report_start_failure(message)  # to the process we replace, if an upgrade started us
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "bots":
        from daemonkit.cli.bots import main as bots_main

        return bots_main(args_list[1:])
    if args_list and args_list[0] == "ctl":
        from daemonkit.cli.ctl import main as ctl_main

        return ctl_main(args_list[1:])
    if args_list and args_list[0] == "run":
        args_list = args_list[1:]
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    try:
        log_config = setup(args.log_level, file=args.log_file, color=args.color)
    except (ConfigError, OSError) as exc:
        return _fail(EXIT_CONFIG, f"cannot set up logging: {exc}")
    try:
        if args.reload and not is_reload_child():
            return supervise(args_list, args.target)
        return _run(args, log_config)
    finally:
        log_config.close()


def _run(args: argparse.Namespace, log_config: Any) -> int:
    try:
        cls = load_daemon_class(args.target)
    except LoadError as exc:
        return _fail(EXIT_LOAD, str(exc))

    overrides: dict[str, Any] = {}
    if args.listen:
        try:
            overrides["listen"] = override_listen(cls.listen, args.listen)
        except ConfigError as exc:
            return _fail(EXIT_CONFIG, str(exc))
    if args.max_memory is not None:
        overrides["max_memory"] = args.max_memory
    for key in (
        "max_connections",
        "idle_timeout",
        "frame_timeout",
        "send_timeout",
        "shutdown_timeout",
        "control",
        "metrics",
    ):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    try:
        daemon: Daemon = cls(**overrides)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    except Exception as exc:
        return _fail(EXIT_LOAD, f"creating {cls.__name__} failed: {type(exc).__name__}: {exc}")

    if args.check:
        try:
            _start_checks(daemon, args)
            loop, backend = new_event_loop(args.backend)
        except PidfileError as exc:
            return _pidfile_failure(exc)
        except ConfigError as exc:
            return _fail(EXIT_CONFIG, str(exc))
        loop.close()
        endpoints = ", ".join(str(a) for a in daemon.endpoints)
        print(f"ok: {cls.__name__} from {args.target}; listen {endpoints}; backend {backend}")
        return EXIT_OK

    daemon._on_log_reopen = log_config.reopen
    deployment = Deployment(
        pidfile=args.pidfile, detach=args.daemon, user=args.user, group=args.group
    )
    try:
        return deployment.run(daemon, lambda: _serve(daemon, args))
    except PidfileError as exc:
        return _pidfile_failure(exc)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    except DetachError as exc:
        return _fail(EXIT_ERROR, str(exc))


def _start_checks(daemon: Daemon, args: argparse.Namespace) -> None:
    """For ``--check``: what the start checks before it binds, by the code the start runs.

    The user and group (:func:`~daemonkit.ops.process.resolve_credentials`),
    the pidfile's directory (:func:`~daemonkit.ops.pidfile.check_pidfile_dir`,
    which ``Pidfile.acquire`` calls) and the control socket and metrics
    settings (:func:`~daemonkit.ops.control.check_operations`, which the start
    of the control socket calls). Raises what the start would raise.
    """
    resolve_credentials(args.user, args.group)
    if args.pidfile is not None:
        check_pidfile_dir(args.pidfile)
    check_operations(daemon.control, daemon.metrics)


def _pidfile_failure(exc: PidfileError) -> int:
    """Report a pidfile error with its exit code (already running, no permission, other)."""
    if isinstance(exc, AlreadyRunning):
        return _fail(EXIT_RUNNING, str(exc))
    denied = isinstance(exc.__cause__, PermissionError)
    return _fail(EXIT_PERMISSION if denied else EXIT_CONFIG, str(exc))


def _serve(daemon: Daemon, args: argparse.Namespace) -> int:
    """Run ``daemon`` in this process until it stops; the exit code."""
    try:
        daemon.run(backend=args.backend)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    except StartError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError):
            if cause.errno == errno.EADDRINUSE:
                return _fail(EXIT_ADDRESS_IN_USE, str(exc))
            if cause.errno in (errno.EACCES, errno.EPERM):
                return _fail(EXIT_PERMISSION, str(exc))
            return _fail(EXIT_CONFIG, str(exc))
        daemon.log.error("%s", exc, exc_info=cause)
        return _fail(EXIT_START, str(exc))
    except Exception as exc:
        daemon.log.critical("daemon crashed: %s", exc, exc_info=exc)
        return _fail(EXIT_ERROR, f"daemon crashed: {type(exc).__name__}: {exc}")
    return EXIT_OK


def main_entry() -> NoReturn:
    """Console-script entry point: ``sys.exit(main())``."""
    sys.exit(main())
