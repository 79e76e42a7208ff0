"""Group: a named set of connections to broadcast to, where a slow member stalls no one.

``self.group("room").add(conn)`` then ``self.group("room").broadcast(msg)``:
the message goes to every member through its own framer (so a line client
and a WebSocket client in one room each get their own encoding). A member
whose output buffer is past its high-water mark is not waited for: by
default it is *skipped* (this message is not queued for it, it stays in the
group), or with ``policy="drop"`` it is closed and leaves the group. Both are
counted on the group and logged at most once a second per group, so a room
of ten thousand with one stuck reader costs the others nothing.

Members leave a group when their connection closes. An empty group is
forgotten by its daemon, so rooms named by clients cannot pile up over a
month; a forgotten group that gets a member again is remembered again.

With a broker (``broker = "redis://..."``, see :mod:`daemonkit.framework.broker`
and docs/scaling.md) a group spans every process sharing it: ``broadcast``
serves the members of this process at once, as without one, and hands the
message to the broker for the members elsewhere, who get it through the same
per-member policy there; ``count()`` and ``counts()`` are cluster-wide.
Without a broker they are this process's figures. The group reaches the
broker only through the :class:`GroupBroker` interface.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

from daemonkit.core.connection import CloseReason, Connection

__all__ = ["POLICIES", "Group", "GroupBroker"]

#: What :meth:`Group.broadcast` does with a member over its high-water mark.
POLICIES = ("skip", "drop")

# At most one "slow member" line per group per this many seconds.
_LOG_EVERY = 1.0


class GroupBroker(Protocol):
    """What a :class:`Group` needs from a broker (:class:`~daemonkit.framework.broker.Broker`)."""

    def publish(self, group: str, message: Any, policy: str) -> None:
        """Send ``message`` to the members of ``group`` in the other processes."""

    def check(self, message: Any) -> None:
        """Raise TypeError/ValueError if ``message`` cannot go to other processes."""

    def changed(self, group: str) -> None:
        """The local member count of ``group`` changed."""

    def remote_count(self, group: str) -> int:
        """Members of ``group`` in the other processes."""

    def counts(self, group: str) -> dict[str, int]:
        """Members of ``group`` per other process."""

    @property
    def process(self) -> str:
        """This process's name in the cluster."""


class Group:
    """A named set of connections; see the module docstring.

    ``skipped`` and ``dropped`` count the deliveries that slow members did
    not get (skip) and the members closed for being slow (drop).
    """

    __slots__ = (
        "_broker",
        "_last_log",
        "_log",
        "_members",
        "_now",
        "_registry",
        "dropped",
        "name",
        "sent",
        "skipped",
    )

    def __init__(
        self,
        name: str,
        log: logging.Logger,
        now: Any = None,
        registry: dict[str, Group] | None = None,
        broker: GroupBroker | None = None,
    ) -> None:
        self.name = name
        # The cluster's side of the group (None: this process only).
        self._broker = broker
        # The daemon's groups by name: an emptied group leaves it (so rooms
        # named by clients cannot pile up), and rejoins it when it gets a member.
        self._registry = registry
        self._members: dict[Connection, None] = {}
        self._log = log
        self._now = now
        self._last_log = float("-inf")
        self.sent = 0
        self.skipped = 0
        self.dropped = 0

    def add(self, conn: Connection) -> None:
        """Make ``conn`` a member (again: no effect)."""
        if conn.closed:
            return
        if conn not in self._members:
            self._members[conn] = None
            if self._broker is not None:
                self._broker.changed(self.name)
        registry = self._registry
        if registry is not None and self.name not in registry:
            registry[self.name] = self

    def discard(self, conn: Connection) -> None:
        """Remove ``conn`` if it is a member (an emptied group is forgotten by its daemon)."""
        if conn in self._members:
            del self._members[conn]
            if self._broker is not None:
                self._broker.changed(self.name)
        if not self._members:
            self._forget()

    def __contains__(self, conn: object) -> bool:
        return conn in self._members

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._members))

    def count(self) -> int:
        """Members everywhere: this process's plus, with a broker, every other live process's.

        The other processes' figures are as of their last presence note
        (sent soon after a change, and every heartbeat); ``len(group)`` is
        this process's alone.
        """
        if self._broker is None:
            return len(self._members)
        return len(self._members) + self._broker.remote_count(self.name)

    def counts(self) -> dict[str, int]:
        """Members per process that has some, by process name (``"local"`` without a broker)."""
        broker = self._broker
        if broker is None:
            return {"local": len(self._members)} if self._members else {}
        found = broker.counts(self.name)
        if self._members:
            found[broker.process] = len(self._members)
        return found

    def broadcast(
        self, message: Any, *, exclude: Connection | None = None, policy: str = "skip"
    ) -> int:
        """Send ``message`` (a frame) to every member but ``exclude``; return how many got it.

        Members over their high-water mark are skipped or dropped (see the
        module docstring); ``ValueError`` for an unknown ``policy``. With a
        broker the count is this process's members; the message goes to the
        others' through it (bytes or str only: ``TypeError`` otherwise,
        ``ValueError`` past :data:`~daemonkit.framework.broker.BROKER_MAX_MESSAGE`,
        raised before anyone gets it).
        """
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        broker = self._broker
        if broker is None:
            return self._deliver(message, exclude, policy)
        broker.check(message)
        delivered = self._deliver(message, exclude, policy)
        broker.publish(self.name, message, policy)
        return delivered

    def _deliver(self, message: Any, exclude: Connection | None, policy: str) -> int:
        """The local part of :meth:`broadcast`; the broker's reader calls it too."""
        before = len(self._members)
        delivered = 0
        slow = 0
        # Per member, the cost of this loop is the broadcast's cost: the
        # checks below read the connection's fields instead of its properties.
        for conn in list(self._members):
            if conn is exclude:
                continue
            if conn._closing:
                self._members.pop(conn, None)
                continue
            size = conn._wsize  # conn.write_buffer_size, inlined
            t = conn.transport
            if t is not None:
                size += t.get_write_buffer_size()
            if size > conn._high:  # -1 while the transport has paused writing
                slow += 1
                if policy == "drop":
                    self._members.pop(conn, None)
                    self.dropped += 1
                    conn._close(CloseReason.OVERFLOW)
                else:
                    self.skipped += 1
                continue
            conn.send(message)
            delivered += 1
        self.sent += delivered
        if slow:
            self._report(slow, policy)
        if len(self._members) != before and self._broker is not None:
            self._broker.changed(self.name)
        if not self._members:
            self._forget()
        return delivered

    def _forget(self) -> None:
        registry = self._registry
        if registry is not None and registry.get(self.name) is self:
            del registry[self.name]

    def _report(self, slow: int, policy: str) -> None:
        now = self._now() if self._now is not None else 0.0
        if now - self._last_log < _LOG_EVERY and self._now is not None:
            return
        self._last_log = now
        action = "dropped" if policy == "drop" else "skipped"
        self._log.warning(
            "group %r: %d slow member(s) %s (past their high-water mark); "
            "%d skipped and %d dropped so far",
            self.name,
            slow,
            action,
            self.skipped,
            self.dropped,
        )

    def __repr__(self) -> str:
        return f"<Group {self.name!r} members={len(self._members)}>"
