"""``python -m daemonkit bots BOTFILE --target ENDPOINT ...``: run bots from the shell.

``main(argv) -> int`` is the whole command and what the tests call. Exit
codes extend those of ``daemonkit run``:

====  =========================================================
code  meaning
====  =========================================================
0     the run finished: nothing failed, or no ``--fail-if`` condition held
1     unexpected error
2     bad command-line usage
3     the bot file cannot be loaded
4     a setting is invalid (e.g. a bad target or threshold)
8     something failed (without ``--fail-if`` and ``--allow-failures``),
      or a ``--fail-if`` condition held
9     no bot could connect (nothing was measured)
====  =========================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from daemonkit.bots.bot import Bot
from daemonkit.bots.procs import run_procs
from daemonkit.bots.progress import Progress, choose_progress
from daemonkit.bots.report import (
    format_summary,
    write_csv,
    write_html,
    write_json,
    write_search_csv,
    write_search_html,
)
from daemonkit.bots.result import RunResult
from daemonkit.bots.runner import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    MAX_DURATION,
    BotRunner,
)
from daemonkit.bots.search import search_max_rate
from daemonkit.bots.thresholds import Threshold, check_thresholds, parse_threshold
from daemonkit.cli.argtypes import VERSION_LINE, whole_number
from daemonkit.cli.loader import load_bot_class
from daemonkit.core.durations import check_duration
from daemonkit.core.durations import parse_duration as _parse_duration
from daemonkit.core.log import LEVELS, setup
from daemonkit.core.reactor import BACKENDS
from daemonkit.errors import ConfigError, LoadError

__all__ = [
    "EXIT_NO_CONNECTION",
    "EXIT_THRESHOLD",
    "MAX_RATE",
    "build_parser",
    "main",
    "parse_duration",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LOAD = 3
EXIT_CONFIG = 4
#: A ``--fail-if`` condition was violated.
EXIT_THRESHOLD = 8
#: Not one bot connected: the run measured nothing.
EXIT_NO_CONNECTION = 9

#: The highest ``--rate`` and ``--spawn-rate`` taken, per second. wrk, in C,
#: peaks at a few million requests a second on a whole machine, and one bots
#: process sends far fewer, so a larger figure is a typo; 1e308 once made the
#: open model's schedule loop without end.
MAX_RATE = 10_000_000.0


def parse_duration(text: str) -> float:
    """``"30s"``, ``"2m"``, ``"500ms"``, ``"1h"`` or a plain number of seconds → seconds.

    :func:`daemonkit.core.durations.parse_duration`, the one duration syntax,
    raising ``argparse.ArgumentTypeError`` as an argparse type must.
    """
    try:
        return _parse_duration(text)
    except ConfigError as exc:  # a ValueError: argparse would drop its message
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(name: str, *, positive: bool = True) -> Callable[[str], float]:
    """An argparse type: a duration for ``name``, checked by ``check_duration``, at most 24 h."""

    def parse(text: str) -> float:
        value = parse_duration(text)
        try:
            check_duration(name, value, positive=positive)
        except ConfigError as exc:  # a ValueError: argparse would drop its message
            raise argparse.ArgumentTypeError(str(exc)) from None
        if value > MAX_DURATION:
            raise argparse.ArgumentTypeError(f"{name} must be at most 24h, not {text}")
        return value

    parse.__name__ = "duration"  # what argparse names in its errors
    return parse


def _rate(name: str) -> Callable[[str], float]:
    """An argparse type: ``N`` or ``N/s``, finite, more than 0, at most :data:`MAX_RATE`."""

    def parse(text: str) -> float:
        body = text.strip().removesuffix("/s")
        try:
            value = float(body)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a rate; write e.g. 500 or 500/s"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number, not {text}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be more than 0, not {text}")
        if value > MAX_RATE:
            raise argparse.ArgumentTypeError(
                f"{name} must be at most {MAX_RATE:,.0f} per second, not {text}"
            )
        return value

    parse.__name__ = "rate"
    return parse


def _weights(text: str) -> list[int]:
    """An argparse type: ``3,1``, whole numbers of at least 1."""
    try:
        weights = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of whole numbers, e.g. 3,1"
        ) from None
    if any(w < 1 for w in weights):
        raise argparse.ArgumentTypeError(f"every weight must be at least 1, not {text}")
    return weights


def _threshold(text: str) -> Threshold:
    try:
        return parse_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``daemonkit bots``."""
    p = argparse.ArgumentParser(
        prog="daemonkit bots",
        description="Load a daemon with simulated users (bots) and report what they measured.",
        epilog="BOTFILE is path/to/file.py, pkg.module, or either with :ClassName. "
        "Exit codes: 0 ok, 8 something failed (or a --fail-if condition held), "
        "9 no bot connected.",
    )
    p.add_argument(
        "botfiles",
        nargs="+",
        metavar="BOTFILE",
        help="the Bot subclass to run; several share the bots by their weights",
    )
    p.add_argument(
        "--weights",
        type=_weights,
        metavar="W,W...",
        help="the bot classes' shares, one whole number per BOTFILE, e.g. 3,1 (default: "
        "each class's weight attribute, 1 unless set)",
    )
    # The short flags are Locust's: -H host, -u users, -r spawn rate, -t run time.
    p.add_argument(
        "-H", "--target", required=True, metavar="ENDPOINT", help="e.g. tcp://127.0.0.1:7000"
    )
    p.add_argument(
        "-u", "--bots", type=whole_number(1), default=10, metavar="N", help="bots (default 10)"
    )
    p.add_argument(
        "-r",
        "--spawn-rate",
        type=_rate("spawn_rate"),
        metavar="N",
        help="bots started per second (default: all)",
    )
    p.add_argument(
        "-t",
        "--duration",
        type=_duration("duration"),
        default=10.0,
        metavar="TIME",
        help="how long to load, e.g. 30s, 2m, 500ms or 1h (default 10s; counted from the "
        "first spawn)",
    )
    p.add_argument(
        "--rate",
        type=_rate("rate"),
        metavar="N/s",
        help="open model: N requests per second in all, on a fixed schedule, latency "
        "measured from the scheduled time (default: closed model)",
    )
    p.add_argument(
        "--procs", type=whole_number(1), default=1, metavar="N", help="spread over N processes"
    )
    p.add_argument("--seed", default="0", help="seed of every bot's random (default 0)")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    p.add_argument("--csv", metavar="PREFIX", help="write PREFIX_stats/_history/_failures.csv")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.add_argument(
        "--fail-if",
        type=_threshold,
        action="append",
        default=[],
        metavar="COND",
        help='exit 8 if COND holds at the end, e.g. "p99>50ms", "error_rate>1%%", '
        '"echo.p99.9>100ms", "rps<1000" (repeatable); given, these conditions replace '
        'the default "errors>0"',
    )
    p.add_argument(
        "--allow-failures",
        action="store_true",
        help="exit 0 even if requests failed (default: any failure exits 8, as errors>0 would)",
    )
    p.add_argument(
        "--reconnect",
        action="store_true",
        help="a bot whose connection the daemon drops connects again, with backoff "
        "(default: the bot class's reconnect setting)",
    )
    tls = p.add_mutually_exclusive_group()
    tls.add_argument(
        "--cafile",
        metavar="FILE",
        help="tls://, https://, wss://: trust the CAs in FILE (PEM) instead of the system's "
        "(overrides the bot class's cafile)",
    )
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="tls://, https://, wss://: check neither the server's certificate nor its name "
        "(overrides the bot class's verify; for tests only)",
    )
    p.add_argument(
        "--server-pid", type=int, metavar="PID", help="sample this daemon's RSS: memory per bot"
    )
    p.add_argument(
        "--max-rate-search",
        action="store_true",
        help="find the highest --rate that keeps p99 under --p99 (each step runs --duration)",
    )
    p.add_argument("--p99", type=_duration("p99"), metavar="TIME", help="p99 target of the search")
    p.add_argument(
        "--connect-timeout",
        type=_duration("connect_timeout"),
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="TIME",
        help=f"how long one bot may take to connect (default {DEFAULT_CONNECT_TIMEOUT:g}s)",
    )
    p.add_argument(
        "--stop-timeout",
        type=_duration("stop_timeout", positive=False),
        default=DEFAULT_STOP_TIMEOUT,
        metavar="TIME",
        help="how long the bots may take to finish at the end of the run "
        f"(default {DEFAULT_STOP_TIMEOUT:g}s)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="event loop (default: auto = uvloop if installed)",
    )
    p.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the log and the progress (auto: on a terminal unless NO_COLOR is set)",
    )
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,
        choices=list(LEVELS),
        help="least severe level to log (default: warning)",
    )
    p.add_argument("--version", action="version", version=VERSION_LINE)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run ``daemonkit bots`` with ``argv``; return the exit code."""
    stream = out or sys.stdout
    parser = build_parser()
    try:
        words = list(sys.argv[2:] if argv is None else argv)
        args = parser.parse_args(words)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.command = shlex.join(["python", "-m", "daemonkit", "bots", *words])
    if args.max_rate_search and args.p99 is None:
        return _fail(EXIT_USAGE, "--max-rate-search needs --p99, e.g. --p99 10ms")
    unwritable = _unwritable_report(args)
    if unwritable is not None:
        return _fail(EXIT_CONFIG, unwritable)
    try:
        log_config = setup(args.log_level, color=args.color)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, f"cannot set up logging: {exc}")
    try:
        return _run(args, stream)
    finally:
        log_config.close()


def _fail(code: int, message: str) -> int:
    print(f"daemonkit bots: error: {message}", file=sys.stderr)
    return code


def _unwritable_report(args: argparse.Namespace) -> str | None:
    """Why a report file could not be written after the run, checked before it; or None."""
    for option, value in (("--json", args.json), ("--csv", args.csv), ("--html", args.html)):
        if value is None:
            continue
        directory = os.path.dirname(os.path.abspath(value))
        if not os.path.isdir(directory):
            return f"{option} {value}: the directory {directory} does not exist"
    return None


def _run(args: argparse.Namespace, stream: TextIO) -> int:
    try:
        bot_class = [load_bot_class(spec) for spec in args.botfiles]
    except LoadError as exc:
        return _fail(EXIT_LOAD, str(exc))
    if args.server_pid is not None and not os.path.exists(f"/proc/{args.server_pid}"):
        return _fail(EXIT_CONFIG, f"--server-pid {args.server_pid}: no such process")
    if args.cafile is not None:
        try:
            ssl.create_default_context(cafile=args.cafile)
        except (OSError, ssl.SSLError) as exc:
            return _fail(EXIT_CONFIG, f"--cafile {args.cafile}: {exc}")
    if args.insecure and not args.worker:
        # An explicit choice, said once (the workers of --procs say nothing).
        logging.getLogger("daemonkit.bots").warning(
            "--insecure: TLS certificates and server names are not verified; "
            "for tests only, or give the CA with --cafile"
        )

    if args.worker:
        return _run_worker(args, bot_class)
    progress = choose_progress(stream, color=args.color, quiet=args.quiet)
    shown: list[str] = []  # warnings the live display showed already
    try:
        if args.max_rate_search:
            return _search(args, bot_class, stream, progress)
        if args.procs > 1:
            result = run_procs(args, _worker_argv(args), progress=progress, out=stream)
        else:
            runner = _runner(args, bot_class, progress=progress)
            result = _run_interruptible(runner)
            shown = runner.shown_warnings
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    finally:
        progress.close()
    return _report(args, result, stream, shown=shown)


def _runner(
    args: argparse.Namespace,
    bot_class: list[type[Bot]],
    *,
    progress: Progress | None,
    rate: float | None = None,
) -> BotRunner:
    return BotRunner(
        bot_class,
        args.target,
        bots=args.bots,
        duration=args.duration,
        spawn_rate=args.spawn_rate,
        rate=rate if rate is not None else args.rate,
        backend=args.backend,
        seed=args.seed,
        first_index=args.first_index,
        progress=progress,
        server_pid=args.server_pid,
        connect_timeout=args.connect_timeout,
        stop_timeout=args.stop_timeout,
        reconnect=True if args.reconnect else None,
        weights=args.weights,
        cafile=args.cafile,
        verify=False if args.insecure else None,
    )


def _run_interruptible(runner: BotRunner) -> RunResult:
    """Run; Ctrl-C (or SIGTERM) ends the run early but still reports what was measured."""
    previous = {}

    def on_signal(signum: int, frame: Any) -> None:
        loop = runner._reactor.loop if runner._reactor is not None else None
        if loop is not None:
            loop.call_soon_threadsafe(runner.stop)

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, on_signal)
        except ValueError:
            pass  # not the main thread: no signal handling
    try:
        return runner.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _write_reports(
    result: RunResult, json_path: str | None, csv_prefix: str | None, html_path: str | None
) -> list[str]:
    """Write the reports asked for; return their paths (``OSError`` if one cannot be)."""
    written = []
    if json_path:
        write_json(result, json_path)
        written.append(json_path)
    if csv_prefix:
        written.extend(str(p) for p in write_csv(result, csv_prefix))
    if html_path:
        write_html(result, html_path)
        written.append(html_path)
    return written


def _report(
    args: argparse.Namespace, result: RunResult, stream: TextIO, *, shown: Sequence[str] = ()
) -> int:
    print(format_summary(result, shown=shown), file=stream)
    # The reports show how the run was made and judged.
    result.command = args.command
    result.spawn_rate = args.spawn_rate
    result.verdicts = [threshold.check(result)[2] for threshold in args.fail_if]
    if not args.fail_if and not args.allow_failures:
        gate = _default_gate(args, result)
        result.verdicts.append(gate if gate is not None else "ok errors>0: actual 0")
    try:
        written = _write_reports(result, args.json, args.csv, args.html)
    except OSError as exc:
        return _fail(EXIT_CONFIG, f"cannot write the report: {exc}")
    for path in written:
        print(f"wrote {path}", file=stream)
    failures = check_thresholds(result, args.fail_if)
    for line in failures:
        print(line, file=stream)
    if failures:
        return EXIT_THRESHOLD
    if result.peak_connected == 0:
        return _fail(EXIT_NO_CONNECTION, f"no bot could connect to {result.target}")
    gate = _default_gate(args, result)
    if gate is not None:
        print(gate, file=stream)
        return EXIT_THRESHOLD
    return EXIT_OK


def _default_gate(args: argparse.Namespace, result: RunResult) -> str | None:
    """Without ``--fail-if`` or ``--allow-failures``, a run with any failure fails (as Locust)."""
    errors = result.stats.errors
    if args.fail_if or args.allow_failures or errors == 0:
        return None
    return (
        f"FAIL errors>0: actual {errors:,} (any failure fails the run; "
        "--allow-failures accepts them, --fail-if sets other conditions)"
    )


def _step_path(path: str | None, step: int, rate: float, *, prefix: bool = False) -> str | None:
    """``r.html`` -> ``r_step3_4000.html`` (a CSV prefix gets the tag at its end)."""
    if path is None:
        return None
    tag = f"_step{step}_{rate:.0f}"
    if prefix:
        return path + tag
    stem, ext = os.path.splitext(path)
    return stem + tag + ext


def _search(
    args: argparse.Namespace, bot_class: list[type[Bot]], stream: TextIO, progress: Progress
) -> int:
    """``--max-rate-search``: every step runs as a run would (``--procs``, ``--fail-if``),
    writes the reports asked for with its step in their names, and the search
    writes its summary to the names given."""

    def trial(rate: float) -> RunResult:
        progress.log(f"trying {rate:,.0f} req/s for {args.duration:g} s")
        if args.procs > 1:
            step = argparse.Namespace(**{**vars(args), "rate": rate})
            return run_procs(step, _worker_argv(args), progress=None, out=stream)
        return _run_interruptible(_runner(args, bot_class, progress=None, rate=rate))

    def check(result: RunResult) -> list[str]:
        if args.fail_if:
            return check_thresholds(result, args.fail_if)
        errors = result.stats.errors
        if args.allow_failures or errors == 0:
            return []
        return [f"FAIL errors>0: actual {errors:,}"]

    def reports(step: int, rate: float, result: RunResult) -> list[str]:
        return _write_reports(
            result,
            _step_path(args.json, step, rate),
            _step_path(args.csv, step, rate, prefix=True),
            _step_path(args.html, step, rate),
        )

    try:
        search = search_max_rate(
            trial,
            p99=args.p99,
            start=args.rate or 100.0,
            log=progress.log,
            check=check,
            reports=reports if args.json or args.csv or args.html else None,
        )
    except OSError as exc:
        return _fail(EXIT_CONFIG, f"cannot write the report: {exc}")
    progress.close()
    print(search.format(), file=stream)
    written = []
    try:
        if args.json:
            Path(args.json).write_text(json.dumps(search.to_dict(), indent=2) + "\n")
            written.append(args.json)
        if args.csv:
            written.append(str(write_search_csv(search, args.csv + "_search.csv")))
        if args.html:
            write_search_html(search, args.html, settings=_search_settings(args, bot_class))
            written.append(args.html)
    except OSError as exc:
        return _fail(EXIT_CONFIG, f"cannot write the report: {exc}")
    for trial_done in search.trials:
        for path in trial_done.reports:
            print(f"wrote {path}", file=stream)
    for path in written:
        print(f"wrote {path}", file=stream)
    if search.best is None:
        return _fail(EXIT_THRESHOLD, "no rate kept p99 under the target")
    return EXIT_OK


def _search_settings(args: argparse.Namespace, bot_class: list[type[Bot]]) -> list[tuple[str, str]]:
    items = [
        ("target", args.target),
        ("bot", ", ".join(cls.__name__ for cls in bot_class)),
        ("bots", f"{args.bots:,}"),
        ("procs", str(args.procs)),
        ("step duration", f"{args.duration:g}s"),
        ("p99 target", f"{args.p99 * 1e3:g}ms"),
    ]
    items += [("fail if", str(t)) for t in args.fail_if]
    if not args.fail_if:
        items.append(("fail if", "errors>0" if not args.allow_failures else "(failures allowed)"))
    return items


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one worker process of ``--procs`` (its share is set by procs)."""
    argv = [sys.executable, "-m", "daemonkit", "bots", *args.botfiles, "--target", args.target]
    if args.weights is not None:
        argv += ["--weights", ",".join(str(w) for w in args.weights)]
    argv += ["--duration", f"{args.duration}s", "--backend", args.backend, "--worker"]
    argv += ["--connect-timeout", f"{args.connect_timeout}s"]
    argv += ["--stop-timeout", f"{args.stop_timeout}s", "--log-level", args.log_level]
    if args.reconnect:
        argv.append("--reconnect")
    if args.cafile is not None:
        argv += ["--cafile", os.path.abspath(args.cafile)]
    if args.insecure:
        argv.append("--insecure")
    return argv


def _run_worker(args: argparse.Namespace, bot_class: list[type[Bot]]) -> int:
    """A ``--procs`` worker: no display; one JSON line per interval and one at the end."""
    from daemonkit.bots.procs import WorkerReporter

    reporter = WorkerReporter(sys.stdout)
    runner = _runner(args, bot_class, progress=None)
    reporter.attach(runner)
    result = _run_interruptible(runner)
    reporter.finish(result, unfinished=runner.fleet.unfinished if runner.fleet else 0)
    return EXIT_OK
