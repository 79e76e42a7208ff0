"""The process around a daemon: pidfile, detaching, user and group, systemd.

:class:`Deployment` is what the command line's ``--pidfile``, ``--daemon``,
``--user`` and ``--group`` do, plus the systemd integration that is always
on (and a no-op outside systemd). It keeps this order, so every error a
user can cause reaches the terminal with its own exit code:

1. resolve the user and group, take the sockets systemd passed
   (:func:`~daemonkit.ops.systemd.adopt_listen_fds`, before a fork changes our
   pid), and acquire the pidfile: in the original process;
2. detach (:class:`Detacher`: double fork, ``setsid``); the original
   process then only waits for the daemon to report its start through a
   pipe, and exits with the code it reports;
3. in the daemon: record its pid in the pidfile, bind, drop privileges
   (:func:`drop_privileges`) right after binding, so ports below 1024 and
   root-only paths are bound first, call ``on_start``; once the daemon is
   ready, detach its standard streams and report success;
4. at a clean exit, remove the pidfile if it still records our pid.

Without ``--daemon`` the same happens in one process, minus the pipe.

With ``--workers N`` (:meth:`Deployment.run_supervisor`) the process
managed is the supervisor (:mod:`daemonkit.ops.workers`): it holds the
pidfile, detaches, talks to systemd and takes the sockets systemd or an
upgrading supervisor passed; it binds the other endpoints and keeps its
privileges (docs/design.md, "Workers"), while each worker drops them right
after taking the listeners, as a single process does after binding. The
new process of a zero-downtime upgrade (:mod:`daemonkit.ops.upgrade`) neither
detaches again nor acquires the pidfile its parent holds: once ready, it
takes the pidfile over (:meth:`~daemonkit.ops.pidfile.Pidfile.take_over`),
tells systemd its pid (``MAINPID=``) and inherits the watchdog pings.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import sys
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daemonkit.daemon import StartError
from daemonkit.errors import ConfigError, DaemonkitError
from daemonkit.ops.pidfile import Pidfile, PidfileError
from daemonkit.ops.systemd import Notified, SystemdNotifier, adopt_listen_fds
from daemonkit.ops.upgrade import adopt_handed_over, report_ready, upgrading_from
from daemonkit.ops.workers import Supervisor

if TYPE_CHECKING:
    from daemonkit.daemon import Daemon

__all__ = [
    "DEFAULT_UMASK",
    "Credentials",
    "Deployment",
    "DetachError",
    "Detacher",
    "check_can_switch",
    "drop_privileges",
    "resolve_credentials",
]

#: File-mode mask of a detached daemon. Stevens' daemon_init() and
#: python-daemon clear it to 0, which leaves files the daemon creates
#: world-writable; 022 is what login shells and systemd services get.
DEFAULT_UMASK = 0o022

# What the original process exits with when the detached daemon vanished
# before reporting: the CLI's "unexpected error".
_EXIT_LOST = 1


class DetachError(DaemonkitError):
    """The detached daemon ended before it reported how its start went.

    It was killed, or crashed below Python; its log file (``--log-file``)
    may say more, since its standard streams may already be gone.
    """


@dataclass(frozen=True)
class Credentials:
    """The user and group a daemon switches to; None leaves that id alone."""

    uid: int | None
    gid: int | None
    user: str | None = None
    group: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.uid is not None:
            parts.append(f"user {self.user or self.uid} (uid {self.uid})")
        if self.gid is not None:
            parts.append(f"group {self.group or self.gid} (gid {self.gid})")
        return " and ".join(parts) or "the current user"


def resolve_credentials(user: str | None, group: str | None) -> Credentials | None:
    """Look ``user`` and ``group`` up (names or numeric ids); None when neither is given.

    Without ``group`` the user's primary group is used. A number with no
    entry in the user database is taken as it is (containers often run
    with such ids). Raises :class:`~daemonkit.errors.ConfigError` for an
    unknown name: check the spelling, or ``getent passwd NAME``.
    """
    if user is None and group is None:
        return None
    uid = gid = None
    user_name = group_name = None
    if user is not None:
        uid, gid, user_name = _lookup_user(user)
    if group is not None:
        gid, group_name = _lookup_group(group)
    elif gid is not None:
        group_name = _lookup_group(str(gid))[1]
    return Credentials(uid=uid, gid=gid, user=user_name, group=group_name)


def _lookup_user(text: str) -> tuple[int, int | None, str | None]:
    """uid, primary gid and name of a user name or id."""
    try:
        entry = pwd.getpwnam(text)
    except KeyError:
        if not text.isdigit():
            raise ConfigError(
                f"unknown user {text!r}: not in the user database (check `getent passwd {text}`)"
            ) from None
        try:
            entry = pwd.getpwuid(int(text))
        except KeyError:
            return int(text), None, None
    return entry.pw_uid, entry.pw_gid, entry.pw_name


def _lookup_group(text: str) -> tuple[int, str | None]:
    """gid and name of a group name or id."""
    try:
        entry = grp.getgrnam(text)
    except KeyError:
        if not text.isdigit():
            raise ConfigError(
                f"unknown group {text!r}: not in the group database (check `getent group {text}`)"
            ) from None
        try:
            entry = grp.getgrgid(int(text))
        except KeyError:
            return int(text), None
    return entry.gr_gid, entry.gr_name


def drop_privileges(credentials: Credentials) -> None:
    """Switch the process to ``credentials``: supplementary groups, then group, then user.

    The order matters: once the uid is not root, the groups can no longer
    be changed. Supplementary groups are cleared when running as root.
    Raises ``OSError`` (``PermissionError`` unless root) if the kernel
    refuses, and ``RuntimeError`` if root could be regained afterwards.
    Call it after binding privileged ports, before serving anyone.
    """
    if credentials.gid is not None:
        if os.geteuid() == 0:
            os.setgroups([])
        os.setgid(credentials.gid)
    if credentials.uid is not None:
        os.setuid(credentials.uid)
        if credentials.uid != 0:
            try:
                os.setuid(0)  # must fail now (CERT POS37-C: verify the drop)
            except PermissionError:
                return
            raise RuntimeError(f"switched to {credentials} but could switch back to root")


def check_can_switch(credentials: Credentials) -> None:
    """Raise ``PermissionError`` now if this process could not switch to ``credentials``.

    Only root can take another user's or group's id. The ``--workers``
    supervisor asks before it starts a worker, so the mistake is one clear
    error at start, not every worker failing in a crash loop.
    """
    if os.geteuid() == 0:
        return
    if credentials.uid not in (None, os.geteuid()) or credentials.gid not in (None, os.getegid()):
        raise PermissionError(errno.EPERM, f"cannot switch to {credentials} (only root can)")


class Detacher:
    """Detach from the terminal the classic way, and report the start back through a pipe.

    :meth:`detach` forks twice with ``setsid`` in between, so the daemon
    is in a session of its own and, not being its leader, can never get a
    controlling terminal again. It returns False in the original process,
    which then calls :meth:`wait`; True in the daemon, which calls
    :meth:`finish` once it is ready (to let go of the terminal) and
    :meth:`report` with its exit code (0 for "started") in any case.
    """

    def __init__(self, *, umask: int = DEFAULT_UMASK) -> None:
        self.umask = umask
        self._read: int | None = None
        self._write: int | None = None

    def detach(self) -> bool:
        """Fork the daemon; True in it, False in the original process (after the middle exited)."""
        read, write = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or both processes would write what is buffered
        middle = os.fork()
        if middle:
            os.close(write)
            os.waitpid(middle, 0)  # exits at once; reap it now
            self._read = read
            return False
        try:  # the middle process: never return into the caller's code
            os.close(read)
            os.setsid()
            if os.fork():
                os._exit(0)
        except BaseException:
            os._exit(_EXIT_LOST)
        # The daemon. Its session has no terminal, so no SIGHUP comes from
        # the middle process's exit (Stevens ignores it for SVR4 only).
        os.umask(self.umask)
        self._write = write
        return True

    def wait(self) -> int:
        """In the original process: block until the daemon reports, and return its exit code.

        Raises :class:`DetachError` if the daemon ended without reporting.
        """
        read, self._read = self._read, None
        if read is None:
            raise RuntimeError("wait() is for the original process, after detach()")
        chunks = []
        try:
            while chunk := os.read(read, 64):
                chunks.append(chunk)
        finally:
            os.close(read)
        text = b"".join(chunks).strip()
        if not text.isdigit():
            raise DetachError(
                "the detached daemon ended before it finished starting (killed?); see its log file"
            )
        return int(text)

    def finish(self) -> None:
        """In the daemon, once started: ``chdir("/")`` and stdin/stdout/stderr to ``/dev/null``.

        After this, log to a file (``--log-file``): the terminal is gone.
        """
        os.chdir("/")  # do not keep a mount point busy
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:
            os.close(null)

    def report(self, code: int) -> None:
        """In the daemon: have the original process exit with ``code``; later calls do nothing."""
        write, self._write = self._write, None
        if write is None:
            return
        try:
            os.write(write, f"{code}\n".encode())
        except OSError:
            pass  # the original process is gone (killed); nobody is waiting
        finally:
            os.close(write)


class Deployment:
    """Run a daemon under the process options of the command line; see the module docstring.

    ``pidfile`` is a path or None; ``detach`` forks the daemon into the
    background (``--daemon``); ``user`` and ``group`` are names or ids to
    switch to after binding. ``environ`` (default ``os.environ``) is where
    the systemd variables are read, and the socket-activation ones unset.
    """

    def __init__(
        self,
        *,
        pidfile: str | None = None,
        detach: bool = False,
        user: str | None = None,
        group: str | None = None,
        environ: MutableMapping[str, str] | None = None,
    ) -> None:
        self.pidfile = pidfile
        self.detach = detach
        self.user = user
        self.group = group
        self._env = os.environ if environ is None else environ

    def run(self, daemon: Daemon, serve: Callable[[], int]) -> int:
        """Prepare the process, call ``serve()`` (which runs ``daemon``) and return its exit code.

        In the original process of a detached daemon, returns the code the
        daemon reported instead. Before anything runs, raises
        :class:`~daemonkit.errors.ConfigError` (unknown user or group,
        unusable systemd sockets), :class:`~daemonkit.ops.pidfile.AlreadyRunning`
        or :class:`~daemonkit.ops.pidfile.PidfileError`; in the original process,
        :class:`DetachError` if the daemon vanished during its start.
        ``serve`` must not raise; privilege errors reach it as
        :class:`~daemonkit.daemon.StartError` from ``daemon.run()``.
        """

        def start(prepare: Callable[[Notified], None]) -> int:
            prepare(daemon)
            return serve()

        return self._deploy(daemon, start, supervisor=False)

    def run_supervisor(
        self, daemon: Daemon, serve: Callable[[Callable[[Supervisor], None]], int]
    ) -> int:
        """As :meth:`run` for a ``--workers`` set: the supervisor is the process managed.

        Before anything runs, the sockets systemd passed, and those an
        upgrading supervisor handed over, go to ``daemon.inherited_sockets``
        by endpoint name. Then ``serve(prepare)`` binds the other endpoints,
        makes the :class:`~daemonkit.ops.workers.Supervisor`, calls
        ``prepare(supervisor)`` (which hooks the pidfile, ``--daemon`` and
        systemd to the set's events) and runs it; it returns the exit code
        and must not raise. The workers drop privileges themselves; this
        raises ``PermissionError`` first if they could not, besides what
        :meth:`run` raises.
        """

        def start(prepare: Callable[[Notified], None]) -> int:
            return serve(prepare)

        return self._deploy(daemon, start, supervisor=True)

    def _deploy(
        self,
        daemon: Daemon,
        serve: Callable[[Callable[[Notified], None]], int],
        *,
        supervisor: bool,
    ) -> int:
        """:meth:`run` or :meth:`run_supervisor`: ``serve(prepare)`` calls ``prepare`` on the
        process to follow (the daemon, or the set's supervisor) before running it."""
        credentials = resolve_credentials(self.user, self.group)
        if supervisor and credentials is not None:
            check_can_switch(credentials)
        adopt_listen_fds(daemon, environ=self._env)
        # In the new process of an upgrade: the old one holds the pidfile
        # (we take it over once ready) and has detached already.
        replacing = upgrading_from(self._env)
        files: dict[str, tuple[int, int]] = {}
        if supervisor:  # a single process does it in runner.attach(), before it binds
            files = adopt_handed_over(daemon, self._env)
        pidfile = Pidfile(self.pidfile) if self.pidfile is not None else None
        if pidfile is not None and replacing is None:
            pidfile.acquire()
        detacher = Detacher() if self.detach and replacing is None else None
        try:
            in_daemon = detacher is None or detacher.detach()
        except BaseException:
            if pidfile is not None:
                pidfile.release()
            raise
        if detacher is not None and not in_daemon:
            if pidfile is not None:
                pidfile.close()  # the daemon's copy of the descriptor keeps the lock
            return detacher.wait()
        code = _EXIT_LOST
        try:
            if pidfile is not None and detacher is not None:
                pidfile.rewrite()
                daemon.log.info("detached: pid %d", os.getpid())

            def prepare(managed: Notified) -> None:
                if replacing is not None:
                    self._replace(managed, replacing, pidfile)
                if credentials is not None and not supervisor:
                    daemon.add_lifecycle_hook(_privileges_hook(daemon, credentials))
                # systemd must hear MAINPID= before the original process exits.
                main_pid = self.detach or replacing is not None  # systemd's main pid changes
                status = managed.status if isinstance(managed, Supervisor) else None
                SystemdNotifier(
                    managed, environ=self._env, main_pid=main_pid, status=status
                ).install()
                if detacher is not None:
                    managed.add_lifecycle_hook(_detach_hook(managed, detacher))
                if replacing is not None and isinstance(managed, Supervisor):
                    # Last: the old supervisor hears of us once the pidfile and
                    # systemd name our pid. Until then its socket files are its own.
                    managed.owns_files = False
                    managed.add_lifecycle_hook(_replaced_hook(managed, self._env, files))

            code = serve(prepare)
            return code
        finally:
            if detacher is not None:
                detacher.report(code)
            if pidfile is not None:
                try:
                    pidfile.release()
                except PidfileError as exc:
                    daemon.log.warning("%s", exc)

    def _replace(self, daemon: Notified, old_pid: int, pidfile: Pidfile | None) -> None:
        """In the new process of an upgrade: inherit what the old one held."""
        if self._env.get("WATCHDOG_PID") == str(old_pid):
            self._env["WATCHDOG_PID"] = str(os.getpid())  # the pings are ours to send now
        if pidfile is not None:
            daemon.add_lifecycle_hook(_takeover_hook(daemon, pidfile))


def _replaced_hook(
    supervisor: Supervisor, environ: MutableMapping[str, str], files: dict[str, tuple[int, int]]
) -> Callable[[str], None]:
    """The new supervisor of an upgrade, once its set is ready: tell the old one, own the files."""

    def on_event(event: str) -> None:
        if event != "ready":
            return
        supervisor.owns_files = True
        report_ready(environ)
        for name, listener in supervisor.service_listeners():
            identity = files.get(name)  # the set's control socket, handed over
            if identity is not None and listener.address.scheme == "unix":
                listener.claim_socket_file((listener.address.path, *identity))
        supervisor.log.info("upgrade: every worker ready; the old supervisor stops now")

    return on_event


def _takeover_hook(daemon: Notified, pidfile: Pidfile) -> Callable[[str], None]:
    def on_event(event: str) -> None:
        if event == "ready":
            try:
                pidfile.take_over()
            except PidfileError as exc:
                daemon.log.warning("%s", exc)

    return on_event


def _privileges_hook(daemon: Daemon, credentials: Credentials) -> Callable[[str], None]:
    def on_event(event: str) -> None:
        if event != "bound":
            return
        try:
            drop_privileges(credentials)
        except OSError as exc:
            raise StartError(
                f"cannot switch to {credentials}: {exc.strerror or exc}"
                + (" (only root can)" if isinstance(exc, PermissionError) else "")
            ) from exc
        daemon.log.info("running as %s", credentials)

    return on_event


def _detach_hook(daemon: Notified, detacher: Detacher) -> Callable[[str], None]:
    def started() -> None:
        detacher.finish()
        detacher.report(0)

    def on_event(event: str) -> None:
        if event == "ready":
            # On the loop's first turn: uvloop listens for signals only once its
            # loop runs, and a SIGTERM sent as soon as we report would be lost.
            daemon.reactor.call_soon(started)

    return on_event
