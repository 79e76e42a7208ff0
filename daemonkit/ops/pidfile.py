"""Pidfiles: one running instance per file, and a file that tells the truth.

``Pidfile(path).acquire()`` records the process id at ``path`` and holds an
exclusive ``flock`` on that file through a descriptor kept open for the
process's life. The rules it keeps:

* **The lock, not the file, says who runs.** A second instance finds the
  file locked and gets :class:`AlreadyRunning`, naming the pid recorded
  there. The lock is the kernel's and dies with its process, so a file left
  behind by ``kill -9`` is stale and the next start simply replaces it;
  nobody has to guess from a pid whether a process is still alive.
* **The content is atomic.** The pid is written to a temporary file in the
  same directory, locked, and only then put at ``path``: with ``link()``
  when there is no file yet (which fails rather than overwrite a racing
  instance's file), else with ``rename()`` over a stale file whose lock we
  hold. A reader sees a whole pid or none, never a half-written line.
* **Races have one winner.** After locking an existing file we check that
  ``path`` still names the very file we locked (an instance that won in
  between has replaced it); if not, we start over. So two instances
  started at once never both believe they hold the pidfile.
* **It is removed only if it is still ours.** :meth:`Pidfile.release`
  unlinks the file only if it still records our pid: a successor (a
  zero-downtime upgrade) may have rewritten it with its own.

Limits: ``flock`` is advisory and local. Keep pidfiles on a local file
system, ``/run`` (a tmpfs) being the usual place; over NFS the lock is not
reliable. Nothing is fsync'ed: a pidfile must not outlive a reboot anyway.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import warnings
from typing import Any

from daemonkit.errors import DaemonkitError

__all__ = [
    "PIDFILE_MODE",
    "AlreadyRunning",
    "Pidfile",
    "PidfileError",
    "check_pidfile_dir",
    "read_pid",
]

#: Mode of the pidfile: readable by all, writable by its owner, as nginx's,
#: sshd's and start-stop-daemon's pidfiles are (scripts read them unprivileged).
PIDFILE_MODE = 0o644

# Rounds of "link failed, the file we then locked was replaced meanwhile".
# Each round means another instance changed the file during ours, which ends
# as soon as one of them holds the lock; three racers need at most three rounds.
_ATTEMPTS = 16

# A pid is at most 7 digits on Linux (pid_max <= 2**22); read a little more
# so that junk is seen as junk rather than cut into a number.
_MAX_PID_TEXT = 64


class PidfileError(DaemonkitError):
    """The pidfile cannot be written: its directory is missing or not writable.

    The message names the file and the reason; ``__cause__`` is the
    ``OSError``. Fix the path or its permissions and start again.
    """


class AlreadyRunning(PidfileError):
    """Another live process holds the pidfile: this instance must not start.

    ``pid`` is the process id recorded in the file (None if unreadable);
    stop that process first, or give this instance another pidfile.
    """

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"already running: {who} holds the pidfile {path}")


def read_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid recorded in the pidfile at ``path``; None if there is none or it is not a pid.

    Says nothing about whether that process is alive, or still the holder:
    use it for messages and scripts, never to decide whether to start.
    """
    try:
        with open(path, "rb") as file:
            return _parse_pid(file.read(_MAX_PID_TEXT))
    except OSError:
        return None


def check_pidfile_dir(path: str | os.PathLike[str]) -> None:
    """Refuse a pidfile path whose directory is missing, not a directory or not writable.

    Raises :class:`PidfileError` with the same message (and ``__cause__``)
    the start would give. :meth:`Pidfile.acquire` calls it first, and
    ``daemonkit --check`` calls it alone, so a pidfile that would fail the
    start fails the check too. Writes nothing.
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        code = errno.ENOTDIR if os.path.exists(directory) else errno.ENOENT
        raise _cannot_write(path, OSError(code, os.strerror(code), directory))
    effective = os.access in os.supports_effective_ids  # the euid, as open() uses
    if not os.access(directory, os.W_OK | os.X_OK, effective_ids=effective):
        raise _cannot_write(path, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))


def _cannot_write(path: str, exc: OSError) -> PidfileError:
    """The error for a pidfile whose directory refused a new file with ``exc``."""
    directory = os.path.dirname(path)
    if exc.errno == errno.ENOENT:
        message = f"cannot write the pidfile {path}: the directory {directory} does not exist"
    else:
        message = f"cannot write the pidfile {path}: {exc.strerror} in {directory}"
        if exc.errno in (errno.EACCES, errno.EPERM):
            message += " (use a directory this user may write, e.g. systemd's RuntimeDirectory=)"
    error = PidfileError(message)
    error.__cause__ = exc
    return error


def _parse_pid(text: bytes) -> int | None:
    try:
        pid = int(text.strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def _same_file(fd: int, path: str) -> bool:
    """True when ``path`` names the file open at ``fd`` (same device and inode)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


class Pidfile:
    """The pidfile at ``path`` (made absolute now, so a later ``chdir`` does not move it).

    :meth:`acquire` it at start, :meth:`release` it at a clean exit. In a
    process that forks, the child calls :meth:`rewrite` to record its own
    pid (the lock, shared through the inherited descriptor, is kept
    throughout) and the parent calls :meth:`close`. Usable as a context
    manager (acquire ... release). Not thread-safe; one object per process.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True between :meth:`acquire` and :meth:`release` / :meth:`close`."""
        return self._fd is not None

    def acquire(self) -> None:
        """Record our pid at :attr:`path` and hold the file's lock until release.

        Raises :class:`AlreadyRunning` when a live process holds the file
        (do not start), :class:`PidfileError` when it cannot be written (a
        missing or read-only directory: fix the path), ``RuntimeError`` if
        this object already holds it.
        """
        if self._fd is not None:
            raise RuntimeError(f"the pidfile {self.path} is already held")
        check_pidfile_dir(self.path)
        fd, temp = self._locked_temp(os.getpid())
        try:
            for _ in range(_ATTEMPTS):
                try:
                    os.link(temp, self.path)  # fails if a file is there: never overwrite a winner
                except FileExistsError:
                    if self._replace_stale(temp):
                        break
                else:
                    os.unlink(temp)
                    break
            else:
                raise PidfileError(
                    f"cannot take the pidfile {self.path}: it kept being replaced "
                    f"by other processes ({_ATTEMPTS} attempts)"
                )
        except BaseException:
            os.close(fd)
            if os.path.lexists(temp):
                os.unlink(temp)
            raise
        self._fd = fd

    def rewrite(self) -> None:
        """Record the calling process's pid, keeping the lock (for a forked child).

        The new content is put in place atomically, already locked, before
        the previous descriptor is closed, so the lock is never free.
        Raises :class:`PidfileError` if the file cannot be written and
        ``RuntimeError`` if the pidfile is not held.
        """
        if self._fd is None:
            raise RuntimeError(f"the pidfile {self.path} is not held")
        fd = self._put_locked("rewrite")
        old, self._fd = self._fd, fd
        os.close(old)

    def take_over(self) -> None:
        """Record our pid at :attr:`path` and hold it, whoever held it before.

        For the new process of a zero-downtime upgrade, started by the
        holder: the holder's lock stays on the file it had, now unlinked,
        and ends with it; ours is on the file at :attr:`path`, so a third
        instance is refused throughout, and the old process, finding
        another pid there at its exit, leaves the file alone. Raises
        :class:`PidfileError` if the file cannot be written.
        """
        if self._fd is not None:
            raise RuntimeError(f"the pidfile {self.path} is already held")
        self._fd = self._put_locked("take over")

    def _put_locked(self, action: str) -> int:
        """Put a file recording our pid at :attr:`path`, locked; return its descriptor."""
        fd, temp = self._locked_temp(os.getpid())
        try:
            os.rename(temp, self.path)
        except OSError as exc:
            os.close(fd)
            os.unlink(temp)
            raise PidfileError(f"cannot {action} the pidfile {self.path}: {exc.strerror}") from exc
        return fd

    def release(self) -> bool:
        """Remove the file if it still records our pid, then drop the lock; idempotent.

        Returns True when the file was removed. A file that records another
        pid (a successor took it over) is left alone. Raises
        :class:`PidfileError` when the file is ours but cannot be removed
        (the directory is not writable any more, e.g. after dropping
        privileges): the lock is released all the same, and the stale file
        will not block the next start.
        """
        fd = self._fd
        if fd is None:
            return False
        self._fd = None
        try:
            if read_pid(self.path) != os.getpid():
                return False
            os.unlink(self.path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise PidfileError(
                f"cannot remove the pidfile {self.path}: {exc.strerror} "
                "(harmless: its lock is gone, so it does not block the next start)"
            ) from exc
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close our descriptor without touching the file; idempotent.

        For the parent of a fork whose child holds the pidfile: the lock
        lives on in the child's copy of the descriptor.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Pidfile:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Pidfile {self.path} {'held' if self.held else 'not held'}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            _warn(f"unreleased {self!r}", ResourceWarning, source=self)
            os.close(fd)

    # -- steps ------------------------------------------------------------

    def _locked_temp(self, pid: int) -> tuple[int, str]:
        """A new file next to :attr:`path` holding ``pid``, locked; its descriptor and name."""
        directory = os.path.dirname(self.path)
        try:
            fd, temp = tempfile.mkstemp(
                prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=directory
            )
        except OSError as exc:  # the directory changed since check_pidfile_dir()
            raise _cannot_write(self.path, exc) from exc
        try:
            os.write(fd, f"{pid}\n".encode())
            os.fchmod(fd, PIDFILE_MODE)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows this file yet
        except BaseException:
            os.close(fd)
            os.unlink(temp)
            raise
        return fd, temp

    def _replace_stale(self, temp: str) -> bool:
        """Put ``temp`` at :attr:`path` if the file there is unlocked; False to try again.

        Raises :class:`AlreadyRunning` if its lock is held.
        """
        try:
            old = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False  # removed since our link(): link again
        try:
            try:
                fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AlreadyRunning(
                    self.path, _parse_pid(os.pread(old, _MAX_PID_TEXT, 0))
                ) from None
            if not _same_file(old, self.path):
                return False  # a racing instance put its own file there meanwhile
            os.rename(temp, self.path)  # stale: its process died; ours replaces it
            return True
        finally:
            os.close(old)
