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
per-member policy there; ``count()`` and ``counts()`` are cluster-wide,
and :meth:`Group.members` lists the members of every process (a question on
the broker that each process answers before a deadline). Without a broker
they are this process's figures. The group reaches the broker only through
the :class:`GroupBroker` interface.

A member may carry a small ``meta`` dict about itself (``add(conn,
meta={"nick": "ann"})``): flat, JSON, at most :data:`MEMBER_META_MAX` bytes,
because a listing carries it across processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from daemonkit.core.connection import CloseReason, Connection
from daemonkit.core.durations import check_duration

__all__ = [
    "DEFAULT_MEMBERS_TIMEOUT",
    "MEMBERS_LIMIT",
    "MEMBER_META_MAX",
    "POLICIES",
    "Group",
    "GroupBroker",
    "Member",
    "Members",
]

#: What :meth:`Group.broadcast` does with a member over its high-water mark.
POLICIES = ("skip", "drop")

# At most one "slow member" line per group per this many seconds.
_LOG_EVERY = 1.0

#: Members one :meth:`Group.members` listing returns at most (and the most a
#: caller may ask for): Slack's ``conversations.members`` pages at most 1,000.
#: Past it the listing says ``truncated``; ``count()`` still counts them all.
MEMBERS_LIMIT = 1000
#: Bytes of JSON a member's ``meta`` may take: with an id and a peer, a whole
#: answer of :data:`MEMBERS_LIMIT` members stays under half of
#: ``BROKER_MAX_MESSAGE`` (1 MiB), one stream entry Redis handles at ease.
MEMBER_META_MAX = 256
#: Seconds a listing waits for the other processes: Socket.IO's
#: ``requestsTimeout`` (5,000 ms) for ``fetchSockets()``.
DEFAULT_MEMBERS_TIMEOUT = 5.0

# What a member's meta may hold: flat JSON values.
_META_TYPES = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a group, in whichever process it is connected to.

    ``process`` is the process's name in the cluster (``"local"`` without a
    broker), ``id`` the connection's id there (``conn.id``), ``peer`` its
    address (``127.0.0.1:5123``), ``meta`` what it was added with (or None).
    """

    process: str
    id: int
    peer: str
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Members:
    """What :meth:`Group.members` found: the members, and how complete that is.

    ``members``: at most the ``limit`` asked for, this process's first.
    ``missing``: the processes that were asked and did not answer before
    the deadline (paused, cut from Redis, or dying: their members are not
    listed). ``truncated``: there were more members than ``limit``.
    ``malformed``: answers dropped as unreadable (counted in the broker's
    ``malformed`` too).
    """

    members: tuple[Member, ...]
    missing: tuple[str, ...] = ()
    truncated: bool = False
    malformed: int = 0

    @property
    def complete(self) -> bool:
        """Every process answered and nothing was cut: ``members`` is the whole group."""
        return not self.missing and not self.truncated and not self.malformed


#: The listing's callback: called once, in the loop thread, with the result.
_OnMembers = Callable[[Members], object]


def _check_meta(meta: object) -> dict[str, Any]:
    """``meta`` as a member may carry it, copied; TypeError/ValueError if it cannot be.

    A flat dict of str keys to str, int, float, bool or None, at most
    :data:`MEMBER_META_MAX` bytes as JSON.
    """
    if not isinstance(meta, dict):
        raise TypeError(f"a member's meta is a dict, not {type(meta).__name__}")
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, _META_TYPES):
            raise TypeError(
                f"a member's meta maps str to str, int, float, bool or None; not {key!r}: {value!r}"
            )
    size = len(json.dumps(meta, separators=(",", ":"), allow_nan=False).encode())
    if size > MEMBER_META_MAX:
        raise ValueError(
            f"a member's meta is {size} bytes of JSON, over MEMBER_META_MAX={MEMBER_META_MAX}"
        )
    return dict(meta)


def _check_limit(limit: object) -> int:
    """``limit`` if it is a whole number 1..:data:`MEMBERS_LIMIT`; ValueError/TypeError if not."""
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise TypeError(f"limit must be a whole number, not {limit!r}")
    if not 1 <= limit <= MEMBERS_LIMIT:
        raise ValueError(f"limit must be 1..MEMBERS_LIMIT={MEMBERS_LIMIT}, not {limit}")
    return limit


def _finish(
    future: asyncio.Future[Members],
    on_done: _OnMembers | None,
    result: Members,
    log: logging.Logger,
) -> None:
    """Hand ``result`` to the listing's future and callback; a callback's error is logged."""
    if not future.done():
        future.set_result(result)
    if on_done is not None:
        try:
            on_done(result)
        except Exception as exc:
            log.error(
                "the callback %s of a members() listing failed: %s: %s",
                getattr(on_done, "__qualname__", on_done),
                type(exc).__name__,
                exc,
                exc_info=exc,
            )


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

    def query(
        self,
        group: Group,
        limit: int,
        timeout: float,
        future: asyncio.Future[Members],
        on_done: _OnMembers | None,
    ) -> None:
        """Ask the other processes for their members of ``group``; ``future`` by ``timeout``."""

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
        # Each member and the meta it was added with (None: none).
        self._members: dict[Connection, dict[str, Any] | None] = {}
        self._log = log
        self._now = now
        self._last_log = float("-inf")
        self.sent = 0
        self.skipped = 0
        self.dropped = 0

    def add(self, conn: Connection, *, meta: dict[str, Any] | None = None) -> None:
        """Make ``conn`` a member (again: no effect, but a ``meta`` given replaces its meta).

        ``meta`` is what the member shows of itself in :meth:`members`
        listings, in every process: a flat dict of str to str, int, float,
        bool or None, at most :data:`MEMBER_META_MAX` bytes as JSON
        (``TypeError``/``ValueError`` otherwise). It is copied.
        """
        checked = None if meta is None else _check_meta(meta)
        if conn.closed:
            return
        if conn not in self._members:
            self._members[conn] = checked
            if self._broker is not None:
                self._broker.changed(self.name)
        elif checked is not None:
            self._members[conn] = checked
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

    def members(
        self,
        on_done: _OnMembers | None = None,
        *,
        timeout: float = DEFAULT_MEMBERS_TIMEOUT,
        limit: int = MEMBERS_LIMIT,
    ) -> asyncio.Future[Members]:
        """List the members everywhere; the :class:`Members` come to ``on_done`` and the future.

        Without a broker the listing is this process's members, and the
        returned future is already done. With one, every other live process
        is asked on the broker and answers with its members; the listing
        completes when all have answered, or after ``timeout`` seconds with
        the silent ones named in ``Members.missing`` (their members are not
        listed): it always completes. ``on_done(members)`` runs once, in
        the loop thread, never before this call returns; an error in it is
        logged. Or ``await`` the future in a coroutine.

        At most ``limit`` members are listed (1..:data:`MEMBERS_LIMIT`;
        ``Members.truncated`` says there were more). ``ValueError`` or
        ``TypeError`` for a bad ``limit`` or ``timeout``; ``RuntimeError``
        outside the running loop, or when
        :data:`~daemonkit.framework.broker.BROKER_MAX_LISTINGS` listings
        are already waiting (try again later).
        """
        _check_limit(limit)
        check_duration("members timeout", timeout, positive=True)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "group.members() works in the daemon's loop thread, from on_start on"
            ) from None
        future: asyncio.Future[Members] = loop.create_future()
        if self._broker is not None:
            self._broker.query(self, limit, timeout, future, on_done)
            return future
        found, total = self._listing(limit)
        local = tuple(Member("local", cid, peer, meta) for cid, peer, meta in found)
        result = Members(local, truncated=total > limit)
        future.set_result(result)
        if on_done is not None:
            loop.call_soon(_finish, future, on_done, result, self._log)
        return future

    def _listing(self, limit: int) -> tuple[list[tuple[int, str, dict[str, Any] | None]], int]:
        """(id, peer, meta) of this process's first ``limit`` live members, and how many it has."""
        found: list[tuple[int, str, dict[str, Any] | None]] = []
        total = 0
        for conn, meta in self._members.items():
            if conn._closing:
                continue
            total += 1
            if len(found) < limit:  # a copy: a listing must not change the member's meta
                found.append((conn.id, conn.peer, None if meta is None else dict(meta)))
        return found, total

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
        for conn in list(self._members):
            if conn is exclude:
                continue
            sent = conn._offer(message)  # one compiled call per member
            if sent > 0:
                delivered += 1
            elif sent < 0:  # closing
                self._members.pop(conn, None)
            else:  # behind: over its high-water mark, or writing paused
                slow += 1
                if policy == "drop":
                    self._members.pop(conn, None)
                    self.dropped += 1
                    conn._close(CloseReason.OVERFLOW)
                else:
                    self.skipped += 1
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
