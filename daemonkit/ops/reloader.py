"""Development mode: run the daemon in a child process, restart it when its source changes.

``python -m daemonkit app.py --reload`` does not serve: it supervises a
child running the same command line and, when a ``.py`` file under the
watched directories changes, stops the child and starts a new one, as
uvicorn's ``--reload`` does. For development only: clients are dropped at
each restart (production has :mod:`daemonkit.ops.upgrade`).

Rules it keeps:

* **One child at a time.** A change stops it (SIGTERM, then SIGKILL after
  :data:`RELOAD_STOP_TIMEOUT`) before the next one starts, so the port is
  free again.
* **A crash is not a loop.** A child that exits by itself is restarted at
  the next change only, so its traceback stays the last thing on screen.
* **Signals.** SIGTERM and SIGINT stop the child and the supervisor;
  SIGHUP is passed on to the child (its ``on_reload``). The handlers the
  supervisor replaced are restored when it returns.
* **Watching** uses watchfiles (inotify) when it is installed, else polls
  modification times every :data:`RELOAD_POLL_INTERVAL`. A change is acted
  on once the files have settled (:data:`RELOAD_SETTLE`), so a file written
  in steps is one restart, not two.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "ENV_RELOAD_CHILD",
    "RELOAD_POLL_INTERVAL",
    "RELOAD_SETTLE",
    "RELOAD_SETTLE_MAX",
    "RELOAD_STOP_TIMEOUT",
    "Reloader",
    "is_reload_child",
    "reload_paths",
    "supervise",
]

#: Set in the child's environment, so its CLI serves instead of supervising again.
ENV_RELOAD_CHILD = "DAEMONKIT_RELOAD_CHILD"

#: Seconds between two scans of the sources without watchfiles, and the
#: longest the supervisor goes without checking its child: uvicorn's
#: StatReload scans every 0.25 s (its ``reload_delay``).
RELOAD_POLL_INTERVAL = 0.25

#: Seconds between the rescans that wait for a changed file to settle: a
#: restart comes after the sources have been still this long.
RELOAD_SETTLE = 0.05

#: The longest the supervisor waits for the sources to settle before it
#: restarts anyway (a file rewritten without pause would otherwise hold it up).
RELOAD_SETTLE_MAX = 1.0

#: Seconds a child has to stop after SIGTERM before SIGKILL. A graceful stop
#: closes every connection at once; only clients that do not read hold it up,
#: and in development nobody should wait for those (uvicorn waits 5 s too).
RELOAD_STOP_TIMEOUT = 5.0

# Directories never scanned: tool caches and virtualenvs (watchfiles' list).
_SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", ".venv", ".tox", ".mypy_cache", ".pytest_cache", ".hypothesis"}
    | {"__pycache__", "node_modules"}
)
# Files scanned at most per directory tree, so a reload pointed at / by
# mistake does not stat forever.
_MAX_FILES = 100_000

_Snapshot = dict[str, tuple[int, int]]


def is_reload_child(environ: MutableMapping[str, str] | None = None) -> bool:
    """True in a child started by the reloader (and forget it, for our own children)."""
    env = os.environ if environ is None else environ
    return env.pop(ENV_RELOAD_CHILD, None) == "1"


def reload_paths(target: str) -> list[str]:
    """The directories to watch for a CLI target: a file's directory, else the current one."""
    spec = target.partition(":")[0]
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        return [str(path.resolve().parent)]
    return [os.getcwd()]


def _diff(before: _Snapshot, now: _Snapshot) -> set[str]:
    """The paths added, removed or changed between two scans."""
    return {p for p in before.keys() | now.keys() if before.get(p) != now.get(p)}


def _scan(paths: Sequence[str]) -> _Snapshot:
    """``{path: (mtime_ns, size)}`` of every ``.py`` file under ``paths``."""
    found: _Snapshot = {}
    for root in paths:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
            for name in files:
                if not name.endswith(".py"):
                    continue
                full = os.path.join(folder, name)
                with contextlib.suppress(OSError):
                    info = os.stat(full)
                    found[full] = (info.st_mtime_ns, info.st_size)
            if len(found) > _MAX_FILES:
                return found
    return found


class Reloader:
    """Runs ``command`` as a child and restarts it when a ``.py`` file under ``paths`` changes.

    ``watcher`` is ``"auto"`` (watchfiles when importable), ``"watchfiles"``
    or ``"poll"``. :meth:`run` blocks until :meth:`stop` (thread-safe) or
    SIGTERM/SIGINT; it returns 0.
    """

    def __init__(
        self,
        command: Sequence[str],
        paths: Sequence[str],
        *,
        watcher: str = "auto",
        interval: float = RELOAD_POLL_INTERVAL,
        stop_timeout: float = RELOAD_STOP_TIMEOUT,
        log: logging.Logger | None = None,
    ) -> None:
        if watcher not in ("auto", "watchfiles", "poll"):
            raise ValueError(f"watcher must be 'auto', 'watchfiles' or 'poll', not {watcher!r}")
        if watcher == "auto":
            try:
                import watchfiles  # noqa: F401
            except ImportError:
                watcher = "poll"
            else:
                watcher = "watchfiles"
        #: ``"watchfiles"`` or ``"poll"``: how changes are noticed.
        self.watcher = watcher
        self.command = list(command)
        self.paths = list(paths)
        self.interval = interval
        self.stop_timeout = stop_timeout
        self.log = log or logging.getLogger("daemonkit.reload")
        #: How many times the child was restarted after a change.
        self.restarts = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()

    @property
    def pid(self) -> int | None:
        """The running child's pid, or None."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def stop(self) -> None:
        """Make :meth:`run` stop the child and return; safe from any thread or a signal handler."""
        self._stopping.set()

    def run(self, *, install_signals: bool = True) -> int:
        """Supervise until stopped; returns 0. See the module doc for what it does."""
        restore: list[tuple[int, Any]] = []
        if install_signals:
            for signum, handler in (
                (signal.SIGTERM, self._on_stop_signal),
                (signal.SIGINT, self._on_stop_signal),
                (signal.SIGHUP, self._on_hup),
            ):
                restore.append((signum, signal.signal(signum, handler)))
        self.log.info(
            "reload: watching %s for changes to .py files (%s)", ", ".join(self.paths), self.watcher
        )
        try:
            self._spawn()
            exited = False
            for changes in self._changes():
                if self._stopping.is_set():
                    break
                child = self._child
                if not exited and child is not None and child.poll() is not None:
                    exited = True
                    self.log.warning(
                        "reload: the daemon exited with status %d; waiting for a change "
                        "to start it again",
                        child.returncode,
                    )
                if changes:
                    names = ", ".join(sorted(os.path.relpath(p) for p in changes)[:5])
                    self.log.info("reload: %s changed; restarting", names)
                    self._stop_child()
                    self._spawn()
                    self.restarts += 1
                    exited = False
        finally:
            self._stop_child()
            for signum, handler in reversed(restore):
                signal.signal(signum, handler)
        return 0

    # -- the child ---------------------------------------------------------------

    def _spawn(self) -> None:
        env = dict(os.environ)
        env[ENV_RELOAD_CHILD] = "1"
        self._child = subprocess.Popen(self.command, env=env)
        self.log.info("reload: started the daemon as pid %d", self._child.pid)

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.poll() is None:
            with contextlib.suppress(OSError):
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.log.warning(
                    "reload: pid %d still running %gs after SIGTERM; killing it",
                    child.pid,
                    self.stop_timeout,
                )
                child.kill()
                child.wait()
        else:
            child.wait()

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGHUP)

    # -- watching ----------------------------------------------------------------

    def _changes(self) -> Iterator[set[str]]:
        """Sets of changed files, or empty sets every ``interval``, until stopped."""
        if self.watcher == "watchfiles":
            return self._watchfiles()
        return self._poll()

    def _poll(self) -> Iterator[set[str]]:
        before = _scan(self.paths)
        while not self._stopping.wait(self.interval):
            now = _scan(self.paths)
            changed = _diff(before, now)
            if changed:
                now = self._settle(now, changed)
            yield changed
            before = now

    def _settle(self, now: _Snapshot, changed: set[str]) -> _Snapshot:
        """Rescan until the files stop changing; add what changed meanwhile to ``changed``.

        An editor, or ``Path.write_text``, writes a file in steps (truncate,
        then write), and a scan between the steps would otherwise be a
        restart of its own. Waits :data:`RELOAD_SETTLE` between rescans and
        at most :data:`RELOAD_SETTLE_MAX` in all, as watchfiles' debounce does.
        """
        deadline = time.monotonic() + RELOAD_SETTLE_MAX
        while time.monotonic() < deadline and not self._stopping.wait(RELOAD_SETTLE):
            later = _scan(self.paths)
            more = _diff(now, later)
            if not more:
                break
            changed |= more
            now = later
        return now

    def _watchfiles(self) -> Iterator[set[str]]:
        import watchfiles

        changes: Callable[..., Iterator[set[tuple[Any, str]]]] = watchfiles.watch
        for batch in changes(
            *self.paths,
            watch_filter=watchfiles.PythonFilter(),
            stop_event=self._stopping,
            rust_timeout=max(1, int(self.interval * 1000)),
            yield_on_timeout=True,
            raise_interrupt=False,
        ):
            yield {path for _, path in batch}


def supervise(argv: Sequence[str], target: str) -> int:
    """The CLI's ``--reload``: supervise ``python -m daemonkit ARGV``, watching the target."""
    command = [sys.executable, "-m", "daemonkit", *argv]
    return Reloader(command, reload_paths(target)).run()
