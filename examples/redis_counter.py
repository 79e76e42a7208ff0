"""Counters in Redis: an asyncio client library used inside a daemon.

Each line a client sends is a command, answered with one line:

    INCR key    ->  the new value           (Redis's INCR)
    GET key     ->  the value, or (nil)
    anything else, or Redis unreachable  ->  a line starting with ERR

The daemon talks to Redis with redis-py's asyncio client (``redis.asyncio``).
That works because the daemon's loop *is* an asyncio loop (uvloop or the
stdlib one): ``on_read`` is a plain callback, so it starts a coroutine with
``self.spawn()`` and the coroutine sends the answer when Redis has replied.
One client, with one bounded connection pool, serves the whole daemon: made
in ``on_start``, closed in ``on_stop`` once the commands in flight are done.

Needs the ``redis`` package (pip install redis) and a Redis server.
Run it:   redis-server --port 6379 --save '' --appendonly no &
          REDIS_URL=redis://127.0.0.1:6379/0 python -m daemonkit examples/redis_counter.py
Try it:   printf 'INCR hits\\nINCR hits\\nGET hits\\n' | nc -q1 127.0.0.1 7002
"""

import asyncio
import os

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from daemonkit import Daemon, Lines

# Seconds Redis may take to accept a connection or to answer a command: redis-py's
# own default (5 s). A client never waits longer than this (plus the retries) for an ERR.
REDIS_TIMEOUT = 5.0
# Connections to Redis at most; a command waits (up to REDIS_TIMEOUT) for a free one.
# Redis answers each connection in turn on one thread, so a few dozen keep it busy;
# an unbounded pool would open one per client under load.
REDIS_CONNECTIONS = 16
# A command that failed to reach Redis is tried this many more times, after 10 ms,
# 20 ms... (at most 0.5 s) between tries: enough for a restart of Redis or a dropped
# connection, short enough that a client soon hears "ERR" when Redis is down.
REDIS_RETRIES = 2

COMMANDS = (b"INCR", b"GET")


class RedisCounter(Daemon):
    listen = "tcp://127.0.0.1:7002"
    framing = Lines

    def __init__(self, redis_url=None, **settings):
        super().__init__(**settings)
        self.redis_url = redis_url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        self.redis = None  # the client, from on_start until it is closed
        self.in_flight = set()  # the tasks of the commands not answered yet

    def on_start(self):
        # Making the client does not connect: the pool connects on first use,
        # in the loop, when a command needs a connection.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=REDIS_CONNECTIONS,
            timeout=REDIS_TIMEOUT,  # waiting for a free connection of the pool
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), REDIS_RETRIES),
        )
        # from_pool: the client owns the pool, so closing the client closes it.
        self.redis = redis.asyncio.Redis.from_pool(pool)

    def on_accept(self, conn):
        # One command of a connection runs at a time, in the order they came
        # (asyncio.Lock wakes its waiters first come, first served): answers
        # go back in order, and "INCR n" then "GET n" reads what it wrote.
        conn.state["turn"] = asyncio.Lock()

    def on_read(self, conn, line):
        # Start the coroutine and return at once: the loop serves the other
        # clients while this one waits for Redis.
        task = self.spawn(self.answer(conn, line))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def answer(self, conn, line):
        async with conn.state["turn"]:  # even an error line waits for the answers before it
            conn.send(await self.run_command(line))  # False, and dropped, if the client left

    async def run_command(self, line):
        words = line.split()
        command = words[0].upper() if words else b""
        if command not in COMMANDS or len(words) != 2:
            return b"ERR say INCR key or GET key"
        if self.redis is None:  # on_stop closed it: lines read after that get this
            return b"ERR shutting down"
        key = words[1]
        try:
            if command == b"INCR":
                return b"%d" % await self.redis.incr(key)
            value = await self.redis.get(key)
        except redis.RedisError as exc:
            # Redis down, slow or refusing: this client hears it, the daemon
            # goes on serving (the pool connects again on next use).
            self.log.warning("redis %s %r failed: %s", command.decode(), key, exc)
            return b"ERR redis unavailable"
        return b"(nil)" if value is None else value

    def on_stop(self):
        # A graceful stop waits for the tasks of spawn() before it closes any
        # connection: this one lets the commands in flight finish, so their
        # answers are still written, then closes the client and its pool.
        self.spawn(self.close_redis())

    async def close_redis(self):
        try:
            while self.in_flight:  # lines still being read may add commands
                await asyncio.wait(list(self.in_flight))
        finally:  # also when a stop cut short (shutdown_timeout) cancels this task
            client, self.redis = self.redis, None
            if client is not None:
                await client.aclose()
