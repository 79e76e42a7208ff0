"""Broker: groups that span processes and machines, through Redis.

With ``broker = "redis://host:port/db"`` every :class:`~daemonkit.Group` of
every process sharing that Redis database is one group. This module is the
link to Redis; it is imported, and ``redis`` with it, only when a daemon has
a broker. The design follows Socket.IO's Redis *streams* adapter rather than
its pub/sub one, because a stream keeps a bounded backlog a reader can catch
up from after a short outage, where pub/sub loses what was sent meanwhile.

The rules it keeps:

* **One stream per cluster** (``daemonkit:stream``), appended with
  ``XADD MAXLEN ~`` :data:`BROKER_BACKLOG`, read with ``XREAD BLOCK`` from
  the last entry id seen. One entry carries up to 100 messages of one
  sender (the cost of Redis and redis-py is per entry); a reader delivers
  one entry per loop turn. A process's own entries are skipped by the
  reader: its local members got the message directly, with no round trip.
* **Exactly once, in order per sender.** Each process numbers its messages;
  a reader delivers a number once (a retried ``XADD`` cannot deliver twice)
  and counts the numbers it never saw as ``lost``.
* **Bounded everywhere.** Outgoing messages wait in an outbox of at most
  :data:`BROKER_OUTBOX_LIMIT`; past it the newest are refused and counted
  (``dropped``). A read takes at most :data:`BROKER_READ_COUNT` entries. No
  call blocks the loop: the link runs as two tasks (a writer, a reader),
  each with its own connection to Redis.
* **An outage degrades to local delivery.** Local members keep getting every
  message; the outbox keeps what was sent meanwhile and writes it, in order,
  once Redis is back (``delayed`` counts those); the reader resumes from the
  last id it saw, so a Redis that stayed up (a network cut) loses nothing
  within the backlog. A Redis that *restarted* without persistence lost the
  entries no reader had read yet: the readers count them in ``lost``.
  Reconnects back off from :data:`BROKER_RECONNECT_MIN` to
  :data:`BROKER_RECONNECT_MAX`, with full jitter.
* **Presence by heartbeats.** Every :data:`DEFAULT_BROKER_HEARTBEAT` seconds
  (and soon after a membership change) a process writes its member counts
  per group as a note on the stream and as a key expiring after
  :data:`HEARTBEAT_MISSES` heartbeats (read by processes that start later).
  A process that is not heard from for that long is forgotten: the members
  of a process that died leave every count within
  ``(HEARTBEAT_MISSES + 1) * heartbeat`` seconds; one that stops cleanly
  says so and leaves at once.
* **Listings by question and answers.** ``group.members()`` writes a
  question on the stream; every other process answers with its members of
  the group (at most the ``limit`` asked, up to
  :data:`~daemonkit.framework.groups.MEMBERS_LIMIT`), addressed to the
  asker. The asker knows which processes should answer (the live peers
  when it asked) and completes when all have, or at its deadline naming
  the silent ones, as Socket.IO's ``fetchSockets()`` does with its
  expected response count (which, unlike this, fails the whole call at
  its timeout). At most :data:`BROKER_MAX_LISTINGS` wait at once.
* **Malformed entries** (another program writing to the stream, another
  version) are dropped and counted; the first is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from daemonkit.core.durations import check_duration
from daemonkit.errors import ConfigError, DaemonkitError
from daemonkit.framework.groups import (
    MEMBERS_LIMIT,
    Group,
    Member,
    Members,
    _check_meta,
    _finish,
    _OnMembers,
)
from daemonkit.framework.links import Backoff

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from daemonkit.core.reactor import Reactor
    from daemonkit.core.timers import Timer

__all__ = [
    "BROKER_BACKLOG",
    "BROKER_CLOSE_TIMEOUT",
    "BROKER_EXTRA",
    "BROKER_MAX_LISTINGS",
    "BROKER_MAX_MESSAGE",
    "BROKER_OUTBOX_LIMIT",
    "BROKER_READ_BLOCK",
    "BROKER_READ_COUNT",
    "BROKER_RECONNECT_MAX",
    "BROKER_RECONNECT_MIN",
    "BROKER_TIMEOUT",
    "DEFAULT_BROKER_HEARTBEAT",
    "DEFAULT_BROKER_PREFIX",
    "HEARTBEAT_MISSES",
    "Broker",
    "BrokerError",
    "check_broker_url",
]

#: Entries the cluster's stream keeps (``XADD MAXLEN ~``): the backlog a reader
#: catches up from after an outage. 10,000 is Socket.IO's redis-streams adapter's
#: ``maxLen``; at 1 KiB a message it is about 10 MiB of Redis memory.
BROKER_BACKLOG = 10_000
#: Messages a process keeps for Redis while it cannot write them (an outage);
#: past it the newest are refused and counted. The backlog's size: an outbox
#: the stream could not hold anyway would be read by no one.
BROKER_OUTBOX_LIMIT = 10_000
#: Largest message a broadcast sends to other processes, in bytes: Socket.IO's
#: ``maxHttpBufferSize`` (1e6), rounded to 1 MiB. Bigger raises ValueError.
BROKER_MAX_MESSAGE = 1 << 20
#: Entries one ``XREAD`` returns at most: Socket.IO's redis-streams ``readCount``.
BROKER_READ_COUNT = 100
#: Seconds one ``XREAD`` blocks for new entries before it asks again.
BROKER_READ_BLOCK = 2.0
#: Seconds Redis may take to accept a connection or answer a command: redis-py's
#: ``socket_connect_timeout`` in its docs' examples and Socket.IO's
#: ``requestsTimeout`` (5,000 ms). Past it the link is down and reconnects.
BROKER_TIMEOUT = 5.0
#: Seconds before the first reconnect: links' base backoff (AWS, Netty).
BROKER_RECONNECT_MIN = 0.1
#: Seconds the reconnect delay never exceeds: ioredis's default ``retryStrategy``
#: caps at 2 s. Short, because what was sent meanwhile waits in the outbox.
BROKER_RECONNECT_MAX = 2.0
#: Seconds between two heartbeats: Socket.IO's cluster adapter ``heartbeatInterval``.
DEFAULT_BROKER_HEARTBEAT = 5.0
#: Heartbeats a process may miss before its members leave the counts: 2, as
#: Socket.IO's ``heartbeatTimeout`` (10 s) is twice its interval.
HEARTBEAT_MISSES = 2
#: Seconds a stopping process gives to writing its outbox and its goodbye.
BROKER_CLOSE_TIMEOUT = 1.0
#: Membership listings of one process waiting for answers at once; past it
#: ``members()`` raises RuntimeError. RFC 9113 asks HTTP/2 peers to allow at
#: least 100 concurrent streams: a listing is a request in flight like one.
BROKER_MAX_LISTINGS = 100
#: The prefix of every Redis key the broker uses.
DEFAULT_BROKER_PREFIX = "daemonkit"
#: What to install for a broker.
BROKER_EXTRA = "pip install 'daemonkit[broker]'"

_VERSION = b"1"
_MESSAGES, _PRESENCE, _EXIT = b"m", b"p", b"x"
_QUERY, _ANSWER = b"q", b"a"  # a members() question, and an answer to one asker
# Questions and answers waiting for Redis at most (an outage): each answer is
# at most MEMBERS_LIMIT members; past it the newest are dropped and counted.
_CONTROL_LIMIT = BROKER_MAX_LISTINGS
# Longest peer address in an answer: an IPv6 address with a scope and a port
# is under 64 characters; a unix socket's path under 108 (sun_path).
_MAX_PEER = 128
# One message inside a messages entry: group length, data length, flags; then
# the group (UTF-8) and the data. Flags: _TEXT (a str, else bytes), _DROP (the
# "drop" policy, else "skip"); any other bit makes the entry malformed.
_RECORD = struct.Struct(">HIB")
_TEXT, _DROP = 1, 2
# Messages packed into one stream entry at most, and bytes: one XADD carries
# many messages, so Redis's and redis-py's cost is per entry, not per message.
_ENTRY_MESSAGES = 100
_ENTRY_BYTES = 64 * 1024
_SCHEMES = ("redis", "rediss", "unix")
_WRITE_BATCH = 1000  # messages per pipelined round trip (in entries of _ENTRY_MESSAGES)
# Senders whose last message number is kept (for exactly-once) without being a
# live peer: a bound on memory against entries written by others under ever-new
# names; past it those are forgotten (live peers' numbers always stay).
_MAX_STRANGERS = 10_000
# Processes remembered as gone after their goodbye, so that a presence note
# they wrote before it but that reached the stream after it (their writer task
# was mid-command) cannot bring them back until expiry. Names are never reused
# (host:pid:random), so only the newest are kept.
_MAX_DEPARTED = 1024


class BrokerError(DaemonkitError):
    """The broker cannot be reached or refused us (at start: the daemon does not start)."""


def check_broker_url(url: object) -> str:
    """``url`` if it names a Redis database; :class:`~daemonkit.errors.ConfigError` if not.

    ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``unix:///path/to/redis.sock[?db=N]``; the database is a number.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError(f"broker must be a URL such as redis://127.0.0.1:6379/0, not {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            f"broker {_redact(url)!r}: the scheme must be redis://, rediss:// or unix://"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"broker {_redact(url)!r}: unix:// needs the socket's path")
        return url
    if not parts.hostname:
        raise ConfigError(f"broker {_redact(url)!r} names no host; write redis://HOST:PORT/DB")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"broker {_redact(url)!r}: the port is not a number 1-65535") from None
    if port == 0:
        raise ConfigError(f"broker {_redact(url)!r}: the port is not a number 1-65535")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError(f"broker {_redact(url)!r}: the database must be a number, not {db!r}")
    return url


def _redact(url: str) -> str:
    """``url`` without its password (for logs and ``ctl status``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc[2]}").geturl()


def _import_redis() -> Any:
    try:
        import redis.asyncio
    except ImportError:
        raise ConfigError(f"a broker needs the redis package: {BROKER_EXTRA}") from None
    return redis.asyncio


class _Peer:
    """Another process, as its presence notes describe it."""

    __slots__ = ("counts", "expires")

    def __init__(self, counts: dict[str, int], expires: float) -> None:
        self.counts = counts
        self.expires = expires


class _Listing:
    """A ``members()`` call waiting for the other processes' answers."""

    __slots__ = (
        "answered",
        "found",
        "future",
        "limit",
        "malformed",
        "missing",
        "on_done",
        "timer",
        "truncated",
        "waiting",
    )

    def __init__(
        self,
        future: asyncio.Future[Members],
        on_done: _OnMembers | None,
        limit: int,
        found: list[Member],
        truncated: bool,
        waiting: set[str],
    ) -> None:
        self.future = future
        self.on_done = on_done
        self.limit = limit
        self.found = found
        self.truncated = truncated
        self.waiting = waiting  # asked, not answered yet
        self.answered: set[str] = set()
        self.missing: list[str] = []
        self.malformed = 0
        self.timer: Timer | None = None


class Broker:
    """The link from one process's groups to the cluster's; see the module docstring.

    Made and opened by the daemon when its ``broker`` setting is set (read it
    as ``daemon.broker_link``); closed by the daemon's cleanups. Counters,
    all since the start: ``sent`` (messages written to Redis), ``received``
    (messages of other processes read), ``delayed`` (messages that waited in
    the outbox for Redis to come back, then went out), ``dropped`` (messages
    refused: the outbox was full), ``lost`` (messages of other processes
    never read: gone from the stream before this process read them),
    ``duplicates`` (entries read twice and delivered once), ``malformed``
    (entries dropped as unreadable), ``reconnects`` (times the link came
    back after an outage). :meth:`status` has them all.
    """

    def __init__(
        self,
        url: str,
        *,
        registry: dict[str, Group],
        reactor: Reactor,
        log: logging.Logger,
        heartbeat: float = DEFAULT_BROKER_HEARTBEAT,
        prefix: str = DEFAULT_BROKER_PREFIX,
        backlog: int = BROKER_BACKLOG,
        outbox_limit: int = BROKER_OUTBOX_LIMIT,
    ) -> None:
        self.url = check_broker_url(url)
        self.heartbeat = check_duration("broker_heartbeat", heartbeat, positive=True)
        #: Seconds without a heartbeat after which a process's members leave the counts.
        self.expiry = HEARTBEAT_MISSES * self.heartbeat
        #: This process in the cluster: host, pid and a random tag (pids are reused).
        self.process = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.log = log.getChild("broker")
        self._registry = registry
        self._reactor = reactor
        self._stream = f"{prefix}:stream"
        self._procs_key = f"{prefix}:procs"
        self._prefix = prefix
        self._backlog = backlog
        self._outbox_limit = outbox_limit
        # (fields, queued while down) per message not yet written, oldest first.
        self._outbox: deque[tuple[bytes, bool]] = deque()
        self._out_seq = 1  # the number of the outbox's first message
        self._wake: asyncio.Event | None = None
        self._last_id: bytes = b"0-0"
        self._peers: dict[str, _Peer] = {}
        self._seqs: dict[str, int] = {}  # the last message number read, per process
        self._departed: dict[str, None] = {}  # processes that said goodbye, oldest first
        # Questions and answers of members() listings not yet written, oldest first.
        self._control: deque[dict[bytes, bytes]] = deque()
        self._listings: dict[str, _Listing] = {}  # ours waiting for answers, by id
        self._dirty: set[str] = set()  # groups whose local count changed
        self._full = True  # the next presence note carries every group
        self._down: set[str] = set()  # "reader"/"writer" while they cannot reach Redis
        self._down_since = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._timer: Timer | None = None
        self._writer_client: Redis | None = None
        self._closed = False
        self._logged_malformed = False
        self.sent = 0
        self.received = 0
        self.delayed = 0
        self.dropped = 0
        self.lost = 0
        self.duplicates = 0
        self.malformed = 0
        self.reconnects = 0
        #: Seconds between a message's entry in Redis and its reading (the last one).
        self.lag = 0.0

    # -- life ---------------------------------------------------------------

    def open(self) -> None:
        """Connect, read who else is there, and start the link's tasks.

        Called by the daemon's start, before ``on_start``, while its loop is
        not running yet: the first connection is made now, with a deadline
        of :data:`BROKER_TIMEOUT`, so a wrong host, port, password or
        database stops the start with a :class:`BrokerError` naming it.
        (Started inside a running loop, the first connection is made by the
        tasks instead, and an unreachable Redis is an outage.) Later outages
        never stop the daemon.
        """
        rlib = _import_redis()
        self._wake = asyncio.Event()
        self._writer_client = self._client(rlib, BROKER_TIMEOUT)
        loop = self._reactor.loop
        if not loop.is_running():
            try:
                loop.run_until_complete(self._first_contact())
            except BrokerError:
                loop.run_until_complete(self._writer_client.aclose())
                raise
        self._tasks = [
            self._reactor.spawn(self._write_loop()),
            self._reactor.spawn(self._read_loop(self._client(rlib, BROKER_READ_BLOCK))),
        ]
        self._timer = self._reactor.call_every(self.heartbeat, self._beat)
        for group in self._registry.values():
            group._broker = self
        self.log.info(
            "broker %s: process %s, heartbeat %gs", _redact(self.url), self.process, self.heartbeat
        )

    def _client(self, rlib: Any, extra: float) -> Redis:
        # Our own loops retry (with backoff, counting outages): redis-py's must not.
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client: Redis = rlib.Redis.from_url(
            self.url,
            socket_timeout=BROKER_TIMEOUT + extra,
            socket_connect_timeout=BROKER_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,
        )
        return client

    async def _first_contact(self) -> None:
        client = self._writer_client
        assert client is not None
        try:
            await client.ping()
            last: Any = await client.xrevrange(self._stream, count=1)
            if last:
                self._last_id = last[0][0]
            await self._load_presence(client)
        except Exception as exc:
            raise BrokerError(f"cannot use the broker {_redact(self.url)}: {_why(exc)}") from exc

    async def _load_presence(self, client: Redis) -> None:
        members: Any = await client.smembers(self._procs_key)
        procs = sorted(p.decode() for p in members)
        if not procs:
            return
        values = await client.mget([self._presence_key(p) for p in procs])
        expires = self._reactor.time() + self.expiry
        for proc, value in zip(procs, values, strict=True):
            if value is None:
                await client.srem(self._procs_key, proc)  # it expired: it is gone
                continue
            if proc != self.process:
                try:
                    self._peers[proc] = _Peer(_counts(json.loads(value)), expires)
                except ValueError:
                    self._malformed(b"presence key", ValueError(f"presence of {proc!r}"))

    def close(self) -> None:
        """Say goodbye and stop the heartbeat; the tasks end when the reactor closes. Idempotent.

        The goodbye (bounded by :data:`BROKER_CLOSE_TIMEOUT`) writes what
        the outbox holds, tells the other processes this one is gone (its
        members leave their counts at once) and deletes its presence key.
        """
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # The tasks are the reactor's: its close() cancels them. redis-py may
        # swallow a cancellation that lands inside a command, so the loops
        # also end on this flag.
        self._poke()
        for listing in self._listings.values():
            if listing.timer is not None:
                listing.timer.cancel()
            listing.future.cancel()  # as offload's abandon: no callback at a stop
        self._listings.clear()
        if self._writer_client is not None and not self._down:
            self._goodbye()

    # -- what groups call ---------------------------------------------------------

    def publish(self, group: str, message: Any, policy: str) -> None:
        """Queue ``message`` for the members of ``group`` in the other processes.

        ``TypeError`` unless it is bytes or str; ``ValueError`` over
        :data:`BROKER_MAX_MESSAGE`. Call :meth:`check` first to fail before
        delivering anything. A full outbox drops it (counted in ``dropped``).
        """
        record = _record(group, message, policy)
        if self._closed:
            return
        if len(self._outbox) >= self._outbox_limit:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                self.log.warning(
                    "broker outbox full (%d messages waiting for Redis): %d dropped so far",
                    len(self._outbox),
                    self.dropped,
                )
            return
        self._outbox.append((record, bool(self._down)))
        self._poke()

    @staticmethod
    def check(message: Any) -> None:
        """Raise what :meth:`publish` would for ``message``: TypeError or ValueError."""
        _record("", message, "skip")

    def changed(self, group: str) -> None:
        """The local member count of ``group`` changed: tell the others soon."""
        self._dirty.add(group)
        self._poke()

    def remote_count(self, group: str) -> int:
        """Members of ``group`` in the other live processes."""
        return sum(peer.counts.get(group, 0) for peer in self._peers.values())

    def counts(self, group: str) -> dict[str, int]:
        """Members of ``group`` per other live process that has some."""
        found = {}
        for proc, peer in self._peers.items():
            n = peer.counts.get(group, 0)
            if n:
                found[proc] = n
        return found

    def query(
        self,
        group: Group,
        limit: int,
        timeout: float,
        future: asyncio.Future[Members],
        on_done: _OnMembers | None,
    ) -> None:
        """Ask the other processes for their members of ``group``; see :meth:`Group.members`.

        ``future`` gets the :class:`~daemonkit.framework.groups.Members`
        (and ``on_done`` is called) when every live peer answered, or after
        ``timeout`` seconds with the silent ones in ``missing``; never before
        this returns. ``RuntimeError`` past :data:`BROKER_MAX_LISTINGS`.
        """
        if len(self._listings) >= BROKER_MAX_LISTINGS:
            raise RuntimeError(
                f"{len(self._listings)} members() listings are waiting for answers, at "
                f"BROKER_MAX_LISTINGS={BROKER_MAX_LISTINGS}; try again when one completed"
            )
        found, total = group._listing(limit)
        local = [Member(self.process, cid, peer, meta) for cid, peer, meta in found]
        listing = _Listing(future, on_done, limit, local, total > limit, set(self._peers))
        key = secrets.token_hex(8)
        self._listings[key] = listing
        if not listing.waiting or self._closed:
            listing.missing = sorted(listing.waiting)  # stopping: no one is asked
            listing.waiting.clear()
            self._reactor.call_soon(self._complete, key)
            return
        question = {
            b"v": _VERSION,
            b"p": self.process.encode(),
            b"k": _QUERY,
            b"i": key.encode(),
            b"g": group.name.encode(),
            b"n": b"%d" % limit,
        }
        if not self._queue_control(question):
            listing.missing = sorted(listing.waiting)  # asked no one: no one answers
            listing.waiting.clear()
            self._reactor.call_soon(self._complete, key)
            return
        listing.timer = self._reactor.call_later(timeout, self._expire_listing, key)

    def _queue_control(self, fields: dict[bytes, bytes]) -> bool:
        """Queue a question or an answer for the writer; False (counted) if the queue is full."""
        if len(self._control) >= _CONTROL_LIMIT:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                self.log.warning(
                    "broker: %d listing question(s)/answer(s) already wait for Redis; "
                    "more are dropped (%d dropped so far)",
                    len(self._control),
                    self.dropped,
                )
            return False
        self._control.append(fields)
        self._poke()
        return True

    def _stale(self, fields: dict[bytes, bytes]) -> bool:
        """Is this queued entry a question of a listing that is over?"""
        return fields[b"k"] == _QUERY and fields[b"i"].decode() not in self._listings

    def _expire_listing(self, key: str) -> None:
        listing = self._listings.get(key)
        if listing is None:
            return
        listing.timer = None
        listing.missing.extend(listing.waiting)
        listing.waiting.clear()
        self._complete(key)

    def _complete(self, key: str) -> None:
        listing = self._listings.pop(key, None)
        if listing is None:
            return  # completed already, or cancelled by close()
        if listing.timer is not None:
            listing.timer.cancel()
            listing.timer = None
        result = Members(
            tuple(listing.found),
            tuple(sorted(listing.missing)),
            listing.truncated,
            listing.malformed,
        )
        _finish(listing.future, listing.on_done, result, self.log)

    def _answer(self, asker: str, key: bytes, name: str, limit: int) -> None:
        """Another process asked for the members of group ``name``: queue our answer."""
        group = self._registry.get(name)
        found, total = group._listing(limit) if group is not None else ([], 0)
        data = {"m": [[cid, peer, meta] for cid, peer, meta in found], "n": total}
        answer = {
            b"v": _VERSION,
            b"p": self.process.encode(),
            b"k": _ANSWER,
            b"t": asker.encode(),
            b"i": key,
            b"d": json.dumps(data, separators=(",", ":")).encode(),
        }
        self._queue_control(answer)

    def _answered(self, entry_id: bytes, proc: str, fields: dict[bytes, bytes]) -> None:
        """An answer on the stream: ours (to a listing still waiting) is added, else ignored."""
        if fields.get(b"t") != self.process.encode():
            return  # to another asker
        key = fields.get(b"i", b"").decode(errors="replace")
        listing = self._listings.get(key)
        if listing is None:
            return  # too late: that listing completed without it
        try:
            members, total = _members(proc, json.loads(fields[b"d"]), listing.limit)
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            listing.malformed += 1
            self._malformed(entry_id, exc)
            return
        if proc in listing.answered or proc in listing.missing:
            return  # answered twice (a retried write), or forgotten meanwhile
        listing.answered.add(proc)
        listing.waiting.discard(proc)
        room = listing.limit - len(listing.found)
        listing.found.extend(members[:room])
        listing.truncated = listing.truncated or total > len(members) or len(members) > room
        if not listing.waiting:
            self._complete(key)

    @property
    def state(self) -> str:
        """``"up"`` while both connections to Redis work, ``"down"`` during an outage."""
        return "down" if self._down else "up"

    @property
    def peers(self) -> int:
        """Other processes heard from within the expiry."""
        return len(self._peers)

    def status(self) -> dict[str, Any]:
        """The link's figures, JSON-ready: ``ctl status`` shows them, metrics export them."""
        return {
            "url": _redact(self.url),
            "process": self.process,
            "state": self.state,
            "peers": self.peers,
            "outbox": len(self._outbox),
            "sent": self.sent,
            "received": self.received,
            "delayed": self.delayed,
            "dropped": self.dropped,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "reconnects": self.reconnects,
            "lag": round(self.lag, 6),
            "listings": len(self._listings),
        }

    # -- the writer ---------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _write_loop(self) -> None:
        client = self._writer_client
        assert client is not None and self._wake is not None
        backoff = Backoff(BROKER_RECONNECT_MIN, BROKER_RECONNECT_MAX)
        try:
            while not self._closed:
                if not self._outbox and not self._dirty and not self._full and not self._control:
                    self._wake.clear()
                    await self._wake.wait()
                    continue  # to the loop's test: closed meanwhile?
                try:
                    await self._write_some(client)
                except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:
                    self._failed("writer", exc)
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
                self._recovered("writer")
        finally:
            await _aclose(client)

    async def _write_some(self, client: Redis) -> None:
        batch = [self._outbox[i] for i in range(min(_WRITE_BATCH, len(self._outbox)))]
        if self._control:
            # A question whose listing completed meanwhile (its deadline passed
            # during an outage) would only make every process answer for nothing.
            self._control = deque(f for f in self._control if not self._stale(f))
        control = [self._control[i] for i in range(min(_WRITE_BATCH, len(self._control)))]
        dirty, full = self._dirty, self._full
        self._dirty, self._full = set(), False
        pipe = client.pipeline(transaction=False)
        if dirty or full:
            self._add_presence(pipe, dirty, full)
        for fields in [*control, *self._entries(batch)]:
            pipe.xadd(self._stream, fields, maxlen=self._backlog, approximate=True)  # type: ignore[arg-type]
        try:
            await pipe.execute()
        except BaseException:
            self._dirty |= dirty
            self._full = self._full or full
            raise
        if self._closed:
            return  # the goodbye took the outbox meanwhile (and sent it again: read once)
        for _ in control:
            self._control.popleft()
        for _ in batch:
            _, late = self._outbox.popleft()
            self.delayed += late
        self.sent += len(batch)
        self._out_seq += len(batch)

    def _entries(self, batch: list[tuple[bytes, bool]]) -> list[dict[bytes, bytes]]:
        """The stream entries carrying ``batch``, the outbox's first messages, in order."""
        entries = []
        seq = self._out_seq
        start = 0
        while start < len(batch):
            end, size = start, 0
            while end < len(batch) and end - start < _ENTRY_MESSAGES:
                size += len(batch[end][0])
                if size > _ENTRY_BYTES and end > start:
                    break
                end += 1
            entries.append(
                {
                    b"v": _VERSION,
                    b"p": self.process.encode(),
                    b"k": _MESSAGES,
                    b"s": b"%d" % (seq + start),
                    b"d": b"".join(record for record, _ in batch[start:end]),
                }
            )
            start = end
        return entries

    def _add_presence(self, pipe: Any, dirty: set[str], full: bool) -> None:
        registry = self._registry
        if full:
            counts = {name: len(g) for name, g in registry.items() if len(g)}
        else:
            counts = {name: len(registry[name]) if name in registry else 0 for name in dirty}
        everything = {name: len(g) for name, g in registry.items() if len(g)}
        expiry_ms = int(self.expiry * 1000)
        pipe.set(self._presence_key(self.process), json.dumps(everything), px=expiry_ms)
        pipe.sadd(self._procs_key, self.process)
        note = {
            b"v": _VERSION,
            b"p": self.process.encode(),
            b"k": _PRESENCE,
            b"f": b"1" if full else b"0",
            b"d": json.dumps(counts).encode(),
        }
        pipe.xadd(self._stream, note, maxlen=self._backlog, approximate=True)

    def _goodbye(self) -> None:
        """Write the outbox, the exit note, and remove our presence: one blocking round trip.

        Runs in :meth:`close`, at the very end of a stop (no client is left to
        serve), on a connection of its own with :data:`BROKER_CLOSE_TIMEOUT`
        as its deadline: redis-py's asyncio client cannot be relied on to
        finish a command while the loop is being torn down. Skipped while
        Redis is unreachable (the others then forget us by expiry).
        """
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            self.url,
            socket_timeout=BROKER_CLOSE_TIMEOUT,
            socket_connect_timeout=BROKER_CLOSE_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            pipe = client.pipeline(transaction=False)
            for fields in self._entries(list(self._outbox)):
                pipe.xadd(self._stream, fields, maxlen=self._backlog, approximate=True)  # type: ignore[arg-type]
            note = {b"v": _VERSION, b"p": self.process.encode(), b"k": _EXIT}
            pipe.xadd(self._stream, note, maxlen=self._backlog, approximate=True)  # type: ignore[arg-type]
            pipe.delete(self._presence_key(self.process))
            pipe.srem(self._procs_key, self.process)
            pipe.execute()
        except Exception as exc:
            self.log.warning(
                "broker: could not say goodbye (%s); %d message(s) not sent to other "
                "processes, whose counts keep our members until they expire",
                _why(exc),
                len(self._outbox),
            )
            self.dropped += len(self._outbox)
        else:
            self.sent += len(self._outbox)
            self.delayed += sum(late for _, late in self._outbox)
        finally:
            self._outbox.clear()
            client.close()

    def _presence_key(self, process: str) -> str:
        return f"{self._prefix}:presence:{process}"

    def _beat(self) -> None:
        self._full = True
        self._poke()
        now = self._reactor.time()
        for proc, peer in list(self._peers.items()):
            if peer.expires <= now:
                self._forget(proc, f"not heard from for {self.expiry:g}s")

    def _forget(self, proc: str, why: str) -> None:
        peer = self._peers.pop(proc, None)
        self._seqs.pop(proc, None)
        for key, listing in list(self._listings.items()):
            if proc in listing.waiting:  # it will not answer now
                listing.waiting.discard(proc)
                listing.missing.append(proc)
                if not listing.waiting:
                    self._complete(key)
        if peer is not None:
            members = sum(peer.counts.values())
            self.log.info("process %s left the cluster (%s): %d member(s)", proc, why, members)

    # -- outages ---------------------------------------------------------------------

    def _failed(self, side: str, exc: BaseException) -> None:
        if not self._down:
            self._down_since = time.monotonic()
            self.log.warning(
                "broker %s unreachable (%s): local delivery goes on, "
                "messages for other processes wait in the outbox (at most %d)",
                _redact(self.url),
                _why(exc),
                self._outbox_limit,
            )
        self._down.add(side)

    def _recovered(self, side: str) -> None:
        if side not in self._down:
            return
        self._down.discard(side)
        self._full = True  # a restarted Redis forgot our presence
        self._poke()
        if not self._down:
            self.reconnects += 1
            self.log.warning(
                "broker %s back after %.1fs (%d message(s) waiting in the outbox)",
                _redact(self.url),
                time.monotonic() - self._down_since,
                len(self._outbox),
            )

    # -- the reader -------------------------------------------------------------------

    async def _read_loop(self, client: Redis) -> None:
        backoff = Backoff(BROKER_RECONNECT_MIN, BROKER_RECONNECT_MAX)
        block = int(BROKER_READ_BLOCK * 1000)
        resync = False
        try:
            while not self._closed:
                try:
                    if resync:
                        await self._resync(client)
                        resync = False
                    reply: Any = await client.xread(
                        {self._stream: self._last_id}, count=BROKER_READ_COUNT, block=block
                    )
                except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:
                    self._failed("reader", exc)
                    resync = True
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
                self._recovered("reader")
                streams = reply.items() if isinstance(reply, dict) else reply or ()
                for _name, entries in streams:
                    for entry_id, fields in entries:
                        self._last_id = entry_id
                        self._receive(entry_id, fields)
                        # A loop turn per entry (up to _ENTRY_MESSAGES messages): the
                        # members' writes are flushed once per turn, and a whole read
                        # delivered at once would put each member past its high-water
                        # mark, where the group's policy skips it.
                        await asyncio.sleep(0)
        finally:
            await _aclose(client)

    async def _resync(self, client: Redis) -> None:
        """After an outage: if the stream now ends before our last id, it was made anew.

        A Redis that restarted (or another one at the same address) numbers
        its entries from its own clock, which may be behind the ids we saw:
        reading "after our last id" would then skip everything. Read the new
        stream from its start instead; message numbers keep it exactly once.
        """
        last: Any = await client.xrevrange(self._stream, count=1)
        newest = last[0][0] if last else b"0-0"
        if _id_key(newest) < _id_key(self._last_id):
            self.log.info(
                "broker: the stream was made anew (it ends at %s, before %s): reading it all",
                newest.decode(),
                self._last_id.decode(),
            )
            self._last_id = b"0-0"

    def _receive(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """One entry of the stream: deliver, note presence, or drop it as malformed."""
        try:
            if fields.get(b"v") != _VERSION:
                raise ValueError(f"version {fields.get(b'v')!r}, not {_VERSION!r}")
            proc = fields[b"p"].decode()
            if proc == self.process:
                return  # ours: the local members had it at once
            kind = fields[b"k"]
            if kind == _MESSAGES:
                seq = int(fields[b"s"])
                messages = _unpack(fields[b"d"])
            elif kind == _PRESENCE:
                counts = _counts(json.loads(fields[b"d"]))
                full = fields.get(b"f") == b"1"
            elif kind == _ANSWER:
                self._answered(entry_id, proc, fields)
                return
            elif kind == _QUERY:
                key = fields[b"i"]
                name = fields[b"g"].decode()
                limit = int(fields[b"n"])
                if not 0 < len(key) <= 32 or not 1 <= limit <= MEMBERS_LIMIT:
                    raise ValueError(f"a question with id {key!r} and limit {limit}")
            elif kind != _EXIT:
                raise ValueError(f"kind {kind!r}")
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            self._malformed(entry_id, exc)
            return
        if kind == _MESSAGES:
            millis = entry_id.partition(b"-")[0]
            if millis.isdigit():
                self.lag = max(0.0, time.time() - int(millis) / 1000)
            for i, (group, message, policy) in enumerate(messages):
                self._deliver(proc, seq + i, group, message, policy)
        elif kind == _PRESENCE:
            self._presence(proc, counts, full)
        elif kind == _QUERY:
            self._answer(proc, key, name, limit)
        else:
            self._departed[proc] = None
            if len(self._departed) > _MAX_DEPARTED:
                del self._departed[next(iter(self._departed))]
            self._forget(proc, "it stopped")

    def _deliver(self, proc: str, seq: int, group: str, message: bytes | str, policy: str) -> None:
        last = self._seqs.get(proc)
        if last is not None:
            if seq <= last:
                self.duplicates += 1
                return
            if seq > last + 1:
                self.lost += seq - last - 1
                self.log.warning(
                    "broker: %d message(s) of process %s lost (gone from the stream "
                    "before they were read); %d lost so far",
                    seq - last - 1,
                    proc,
                    self.lost,
                )
        if last is None and len(self._seqs) >= _MAX_STRANGERS + len(self._peers):
            for stranger in [p for p in self._seqs if p not in self._peers]:
                del self._seqs[stranger]
        self._seqs[proc] = seq
        self.received += 1
        target = self._registry.get(group)
        if target is not None:
            target._deliver(message, None, policy)

    def _presence(self, proc: str, counts: dict[str, int], full: bool) -> None:
        if proc in self._departed:
            return  # written before its goodbye, read after it: it is gone
        expires = self._reactor.time() + self.expiry
        peer = self._peers.get(proc)
        if peer is None:
            self._peers[proc] = _Peer({name: n for name, n in counts.items() if n}, expires)
            return
        peer.expires = expires
        if full:
            peer.counts = counts
        else:
            peer.counts.update(counts)
            for name in [name for name, n in counts.items() if not n]:
                del peer.counts[name]

    def _malformed(self, entry_id: bytes, exc: BaseException) -> None:
        self.malformed += 1
        if not self._logged_malformed:
            self._logged_malformed = True
            self.log.warning(
                "broker: dropped a malformed entry %s on %s (%s); further ones are "
                "only counted (malformed in ctl status and metrics)",
                entry_id.decode(errors="replace"),
                self._stream,
                exc,
            )

    def __repr__(self) -> str:
        return f"<Broker {_redact(self.url)} {self.state} process={self.process}>"


def _id_key(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id (``b"1701234567890-3"``) as numbers, for comparing."""
    millis, _, seq = entry_id.partition(b"-")
    return int(millis or 0), int(seq or 0)


async def _aclose(client: Redis) -> None:
    """Close ``client``'s connections, even across the one cancel of the reactor's close.

    That cancel may land inside ``aclose()`` (the tasks end on their own
    once :meth:`Broker.close` ran, and the loop may stop meanwhile), before
    every socket was closed: a second ``aclose()`` closes the rest, or the
    loop would be closed with sockets open.
    """
    for _ in range(2):
        try:
            await client.aclose()
            return
        except asyncio.CancelledError:
            continue


def _record(group: str, message: Any, policy: str) -> bytes:
    """``message`` for ``group`` as one record of a messages entry; TypeError/ValueError."""
    if type(message) is str:
        data, flags = message.encode(), _TEXT
    elif isinstance(message, bytes | bytearray | memoryview):
        data, flags = bytes(message), 0
    else:
        raise TypeError(
            f"a group with a broker carries bytes or str to other processes, "
            f"not {type(message).__name__}"
        )
    if len(data) > BROKER_MAX_MESSAGE:
        raise ValueError(
            f"message of {len(data)} bytes is over BROKER_MAX_MESSAGE={BROKER_MAX_MESSAGE}"
        )
    name = group.encode()
    if policy == "drop":
        flags |= _DROP
    return _RECORD.pack(len(name), len(data), flags) + name + data


def _unpack(blob: bytes) -> list[tuple[str, bytes | str, str]]:
    """The (group, message, policy) records of a messages entry; ValueError if malformed."""
    found: list[tuple[str, bytes | str, str]] = []
    view = memoryview(blob)
    at, end, head = 0, len(blob), _RECORD.size
    while at < end:
        if end - at < head:
            raise ValueError("a record is cut short")
        name_len, data_len, flags = _RECORD.unpack_from(view, at)
        at += head
        if flags & ~(_TEXT | _DROP) or at + name_len + data_len > end:
            raise ValueError("a record has unknown flags or runs past the entry")
        group = bytes(view[at : at + name_len]).decode()
        at += name_len
        data = bytes(view[at : at + data_len])
        at += data_len
        message: bytes | str = data.decode() if flags & _TEXT else data
        found.append((group, message, "drop" if flags & _DROP else "skip"))
    if not found:
        raise ValueError("no message in a messages entry")
    return found


def _members(proc: str, value: object, limit: int) -> tuple[list[Member], int]:
    """An answer's members (of process ``proc``) and its member total; ValueError/TypeError.

    ``{"m": [[id, peer, meta], ...], "n": total}``: at most ``limit``
    members, ids whole numbers, peers short strings, metas as
    :meth:`Group.add` allows them, and a total at least the members listed.
    """
    if not isinstance(value, dict):
        raise ValueError("an answer is not a JSON object")
    listed, total = value["m"], value["n"]
    if not isinstance(listed, list) or len(listed) > limit:
        raise ValueError(f"an answer lists {type(listed).__name__} past the limit {limit}")
    if not isinstance(total, int) or isinstance(total, bool) or total < len(listed):
        raise ValueError(f"an answer's total is {total!r}")
    found = []
    for item in listed:
        if not isinstance(item, list) or len(item) != 3:
            raise ValueError(f"a member is {item!r}, not [id, peer, meta]")
        cid, peer, meta = item
        if not isinstance(cid, int) or isinstance(cid, bool) or cid < 0:
            raise ValueError(f"a member's id is {cid!r}")
        if not isinstance(peer, str) or len(peer) > _MAX_PEER:
            raise ValueError(f"a member's peer is {peer!r}")
        found.append(Member(proc, cid, peer, None if meta is None else _check_meta(meta)))
    return found, total


def _counts(value: object) -> dict[str, int]:
    """A presence note's ``{group: count}``; ValueError if it is anything else."""
    if not isinstance(value, dict):
        raise ValueError("presence is not a JSON object")
    for name, n in value.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"count of {name!r} is {n!r}")
    return value


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
