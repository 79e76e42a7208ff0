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
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from daemonkit import __version__
from daemonkit.cli.argtypes import VERSION_LINE
from daemonkit.cli.config import (
    ENV_CONFIG,
    Layers,
    SourceError,
    add_options,
    build_listen,
    daemon_settings,
    format_effective,
    gather,
    runner_settings,
)
from daemonkit.cli.loader import load_daemon_class
from daemonkit.core.endpoints import address_of
from daemonkit.core.log import setup
from daemonkit.core.reactor import Reactor, new_event_loop
from daemonkit.daemon import Daemon, StartError
from daemonkit.errors import ConfigError, LoadError
from daemonkit.ops.control import check_operations
from daemonkit.ops.pidfile import AlreadyRunning, PidfileError, check_pidfile_dir
from daemonkit.ops.process import Deployment, DetachError, resolve_credentials
from daemonkit.ops.reloader import is_reload_child, supervise
from daemonkit.ops.upgrade import report_start_failure, upgrading_from
from daemonkit.ops.workers import (
    STOP_MARGIN,
    Supervisor,
    bind_endpoints,
    check_workers,
    release_endpoints,
    tag_worker_logs,
    worker_id_from_env,
)

__all__ = [
    "EXIT_ADDRESS_IN_USE",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_LOAD",
    "EXIT_OK",
    "EXIT_PERMISSION",
    "EXIT_RECYCLE",
    "EXIT_RUNNING",
    "EXIT_START",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "main_entry",
    "top_help",
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
#: A worker daemon (no listener to hand over) stopped itself because its
#: ``max_runtime`` passed: start a fresh one. 75 is sysexits.h's EX_TEMPFAIL
#: ("try again later"); non-zero, so ``Restart=on-failure`` restarts it too.
EXIT_RECYCLE = 75


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``daemonkit [run] TARGET``.

    Its setting options come from :data:`daemonkit.cli.config.SETTINGS`, the
    table that also gives the config file's keys and the ``DAEMONKIT_*``
    variables.
    """
    parser = argparse.ArgumentParser(
        prog="daemonkit",
        usage="python -m daemonkit [run] TARGET [-c FILE] [options]",
        description="Run a daemonkit daemon in the foreground. "
        "SIGTERM/SIGINT stop it gracefully (twice: at once), SIGHUP calls on_reload, "
        "SIGUSR1 reopens the log file, SIGUSR2 starts a zero-downtime upgrade.",
        epilog="TARGET is path/to/file.py, pkg.module, or either with :ClassName. "
        "Every setting comes from, lowest to highest: the class, the config file, "
        "the DAEMONKIT_* variable named after it, the option. "
        "Durations: 30, 30s, 500ms, 2m, 1h. Sizes: 512M, 64K, or bytes. "
        "Exit status: 0 ok, 2 usage or a bad setting from the file/environment, "
        "3 load, 4 invalid setting, 5 address in use, 6 permission, 7 on_start, "
        "12 already running.",
    )
    parser.add_argument("target", metavar="TARGET", help="the daemon to run")
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"read settings from this TOML file (default: ${ENV_CONFIG}, else none)",
    )
    add_options(parser, "settings (also from the config file and DAEMONKIT_*)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="load and validate the daemon and its settings, then exit",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print every setting's effective value and where it came from, then exit",
    )
    parser.add_argument("--version", action="version", version=VERSION_LINE)
    return parser


def _fail(code: int, message: str) -> int:
    print(f"daemonkit: error: {message}", file=sys.stderr)
    report_start_failure(message)  # to the process we replace, if an upgrade started us
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list:
        print(top_help(), file=sys.stderr)
        return EXIT_USAGE
    if args_list[0] in ("-h", "--help"):
        print(top_help())
        return EXIT_OK
    if args_list[0] == "help":
        return _help(args_list[1:])
    if args_list[0] == "bots":
        from daemonkit.cli.bots import main as bots_main

        return bots_main(args_list[1:])
    if args_list and args_list[0] == "ctl":
        from daemonkit.cli.ctl import main as ctl_main

        return ctl_main(args_list[1:])
    if args_list and args_list[0] == "build-pyuv":
        from daemonkit.cli.build_pyuv import main as build_pyuv_main

        return build_pyuv_main(args_list[1:])
    if args_list and args_list[0] == "run":
        args_list = args_list[1:]
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        layers = gather(args, os.environ, config=args.config)
    except SourceError as exc:
        return _fail(EXIT_USAGE, str(exc))
    for name, value in runner_settings(layers).items():
        setattr(args, name, value)

    try:
        log_config = setup(
            args.log_level,
            file=args.log_file,
            color=args.color,
            format=args.log_format,
            config=args.log_config,
        )
    except (ConfigError, OSError) as exc:
        return _fail(EXIT_CONFIG, f"cannot set up logging: {exc}")
    worker = worker_id_from_env()
    if worker is not None:
        tag_worker_logs(worker)  # every line of a worker says which one it is
    try:
        if args.reload and not is_reload_child():
            return supervise(args_list, args.target)
        return _run(args, log_config, layers, supervised=worker is not None)
    finally:
        log_config.close()


def _run(
    args: argparse.Namespace, log_config: Any, layers: Layers, *, supervised: bool = False
) -> int:
    try:
        cls = load_daemon_class(args.target)
    except LoadError as exc:
        return _fail(EXIT_LOAD, str(exc))

    overrides = daemon_settings(layers)
    try:
        listen = build_listen(cls.listen, layers)
    except SourceError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    if listen is not None:
        overrides["listen"] = listen
    try:
        daemon: Daemon = cls(**overrides)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    except Exception as exc:
        return _fail(EXIT_LOAD, f"creating {cls.__name__} failed: {type(exc).__name__}: {exc}")

    if args.print_config:
        print(format_effective(daemon, layers, runner_settings(layers)))
        return EXIT_OK
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
    if args.workers > 1 and not supervised:
        return _supervise(daemon, args)
    deployment = Deployment(
        # A worker: its supervisor holds the pidfile and detached; it drops privileges itself.
        pidfile=None if supervised else args.pidfile,
        detach=args.daemon and not supervised,
        user=args.user,
        group=args.group,
    )
    try:
        return deployment.run(daemon, lambda: _serve(daemon, args))
    except PidfileError as exc:
        return _pidfile_failure(exc)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    except DetachError as exc:
        return _fail(EXIT_ERROR, str(exc))


def _supervise(daemon: Daemon, args: argparse.Namespace) -> int:
    """``--workers N``: bind every endpoint once here, run N workers on them (ops.workers).

    The supervisor is what ``--pidfile``, ``--daemon`` and systemd manage
    (:meth:`Deployment.run_supervisor <daemonkit.ops.process.Deployment.run_supervisor>`);
    the workers run the same command line and drop ``--user``/``--group`` themselves.
    """
    try:
        check_workers(args.workers, force=args.workers_force)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    deployment = Deployment(
        pidfile=args.pidfile, detach=args.daemon, user=args.user, group=args.group
    )
    try:
        return deployment.run_supervisor(daemon, lambda prepare: _start_set(daemon, args, prepare))
    except PidfileError as exc:
        return _pidfile_failure(exc)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    except PermissionError as exc:
        return _fail(EXIT_PERMISSION, str(exc.strerror or exc))
    except DetachError as exc:
        return _fail(EXIT_ERROR, str(exc))


def _start_set(
    daemon: Daemon, args: argparse.Namespace, prepare: Callable[[Supervisor], None]
) -> int:
    """Bind what systemd or an upgrade did not pass, and run the supervisor; the exit code."""
    log = daemon.log.getChild("supervisor")
    # Handed over by systemd or an upgrading supervisor: ours now. The "@control"
    # and "@metrics" ones stay for the set's operations (ops.workerset) to take.
    inherited = daemon.inherited_sockets
    sockets = {name: inherited.pop(name) for name in list(inherited) if not name.startswith("@")}
    replacing = upgrading_from() is not None
    try:
        sockets.update(bind_endpoints([e for e in daemon.endpoints if str(e.name) not in sockets]))
    except OSError as exc:
        release_endpoints(sockets, unlink=not replacing)
        if exc.errno == errno.EADDRINUSE:
            return _fail(EXIT_ADDRESS_IN_USE, f"cannot bind: {exc}")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return _fail(EXIT_PERMISSION, f"cannot bind: {exc}")
        return _fail(EXIT_CONFIG, f"cannot bind: {exc}")
    for name, sock in sockets.items():
        log.info("listening on %s (%s) for %d workers", address_of(sock), name, args.workers)
    reactor = Reactor(args.backend, log=log)
    try:
        supervisor = Supervisor(
            reactor,
            sockets,
            args.workers,
            log=log,
            stop_timeout=daemon.shutdown_timeout + STOP_MARGIN,
            drain=daemon.upgrade_drain,
            quiet=args.daemon,
            strict_start=replacing,
        )
        prepare(supervisor)
        code = _run_supervisor(daemon, supervisor)
    finally:
        reactor.close()
    if replacing:  # we stopped before all our workers were ready: tell the old supervisor why
        report_start_failure(supervisor.failure or f"the new supervisor exited with status {code}")
    return code


def _run_supervisor(daemon: Daemon, supervisor: Supervisor) -> int:
    """Serve ``--control``/``--metrics`` for the set (ops.workerset) around ``supervisor.run()``."""
    ops = None
    if daemon.control is not None or daemon.metrics is not None:
        from daemonkit.ops.workerset import SetOperations

        try:
            ops = SetOperations.open(daemon, supervisor)
        except (ConfigError, StartError) as exc:
            release_endpoints(supervisor.sockets, unlink=supervisor.owns_files)
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                return _fail(EXIT_ADDRESS_IN_USE, str(exc))
            if isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM):
                return _fail(EXIT_PERMISSION, str(exc))
            return _fail(EXIT_CONFIG, str(exc))
        if ops is not None:
            supervisor.service_listeners = ops.listeners  # handed over by an upgrade
    for name in [n for n in daemon.inherited_sockets if n.startswith("@")]:
        supervisor.log.warning("upgrade: %s handed over but not configured now; closing it", name)
        daemon.inherited_sockets.pop(name).close()
    try:
        return supervisor.run()
    finally:
        if ops is not None:
            ops.close()


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
    return EXIT_RECYCLE if daemon.retired else EXIT_OK


#: The subcommands and their one line, in the order the top-level help lists them.
_COMMANDS = (
    ("run", "run a daemon in the foreground (the default: python -m daemonkit TARGET)"),
    ("bots", "load a daemon with simulated users (bots) and report what they measured"),
    ("ctl", "query or steer a running daemon through its control socket"),
    ("build-pyuv", "build and install pyuv, for --backend pyuv (it has no wheel for this Python)"),
    ("help", "print this help, or a command's: python -m daemonkit help run"),
)

#: What each signal does to a running daemon (see docs/cli.md).
_SIGNALS = (
    ("SIGTERM, SIGINT", "stop gracefully: stop accepting, drain, exit 0 (twice: at once)"),
    ("SIGHUP", "call on_reload()"),
    ("SIGUSR1", "reopen the log file (for logrotate)"),
    ("SIGUSR2", "zero-downtime upgrade: a fresh process takes over the listening sockets"),
)


def top_help() -> str:
    """The help of ``python -m daemonkit``: every subcommand with a line, and the signals."""
    width = max(len(name) for name, _ in _SIGNALS)
    return "\n".join(
        [
            "usage: python -m daemonkit [run] TARGET [-c FILE] [options]",
            "       python -m daemonkit bots BOTFILE --target ENDPOINT [options]",
            "       python -m daemonkit ctl COMMAND [--control PATH]",
            "       python -m daemonkit build-pyuv [--python PYTHON]",
            "       python -m daemonkit help [COMMAND]",
            "",
            f"daemonkit {__version__}: long-lived network daemons.",
            "",
            "commands:",
            *(f"  {name:<10}  {line}" for name, line in _COMMANDS),
            "",
            "signals to a running daemon:",
            *(f"  {name:<{width}}  {line}" for name, line in _SIGNALS),
            "",
            "settings come from the class, a TOML file (-c FILE), DAEMONKIT_* variables",
            "and options, in that order; every command takes --help and --version.",
        ]
    )


def _help(words: list[str]) -> int:
    """``daemonkit help [COMMAND]``: print the top-level help or that command's."""
    if not words:
        print(top_help())
        return EXIT_OK
    command = words[0]
    if command == "run":
        build_parser().print_help()
    elif command == "bots":
        from daemonkit.cli.bots import build_parser as bots_parser

        bots_parser().print_help()
    elif command == "ctl":
        from daemonkit.cli.ctl import build_parser as ctl_parser

        ctl_parser().print_help()
    elif command == "build-pyuv":
        from daemonkit.cli.build_pyuv import build_parser as build_pyuv_parser

        build_pyuv_parser().print_help()
    elif command == "help":
        print(top_help())
    else:
        names = ", ".join(name for name, _ in _COMMANDS)
        print(f"daemonkit: error: no command {command!r}; there are: {names}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def main_entry() -> NoReturn:
    """Console-script entry point: ``sys.exit(main())``."""
    sys.exit(main())
