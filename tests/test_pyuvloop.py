"""The pyuv backend's event loop on its own: transports, timers, signals, wake-ups.

The rest of the suite runs daemonkit on this loop through the ``backend``
fixture; these tests pin the loop's own promises, the ones asyncio code
relies on and the stdlib loop keeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pyuv = pytest.importorskip(
    "pyuv", reason="pyuv is not installed: run python -m daemonkit build-pyuv"
)

from daemonkit.core.pyuvloop import PyuvEventLoop  # noqa: E402

# Every wait in these tests gives up after this long.
DEADLINE = 10.0


@pytest.fixture
def loop() -> Iterator[PyuvEventLoop]:
    loop = PyuvEventLoop()
    yield loop
    loop.close()


class Recorder(asyncio.Protocol):
    """Records what the transport delivers; answers with ``reply`` and closes on first data."""

    def __init__(self, reply: bytes | None = None) -> None:
        self.reply = reply
        self.data = b""
        self.eof = False
        self.paused = 0
        self.resumed = 0
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.reply is not None:
            self.transport.write(self.reply)
            self.transport.close()
            self.reply = None

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def recv_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_reply_then_close_reaches_a_peer_that_sent_more_than_one_read(
    loop: PyuvEventLoop,
) -> None:
    # libuv reads 64 KiB at a time: the close must not reset the peer for the rest.
    ours, theirs = socket.socketpair()
    theirs.settimeout(DEADLINE)
    theirs.sendall(b"x" * 150_000)

    async def main() -> None:
        ours.setblocking(False)
        await loop.connect_accepted_socket(lambda: Recorder(reply=b"bye"), ours)

    loop.run_until_complete(main())
    assert recv_all(theirs) == b"bye"
    theirs.close()
    loop.run_until_complete(asyncio.sleep(0))


def test_write_queues_what_the_kernel_refuses_and_pauses_the_protocol(
    loop: PyuvEventLoop,
) -> None:
    ours, theirs = socket.socketpair()
    theirs.settimeout(DEADLINE)
    payload = bytearray(os.urandom(4 << 20))  # far more than a socket buffer

    async def main() -> Recorder:
        ours.setblocking(False)
        transport, proto = await loop.connect_accepted_socket(Recorder, ours)
        transport.write(payload)
        payload[:] = b"\0" * len(payload)  # the transport must have copied it
        assert transport.get_write_buffer_size() > 0
        assert proto.paused == 1
        transport.write_eof()
        return proto

    reader = threading.Thread(target=lambda: got.append(recv_all(theirs)))
    got: list[bytes] = []
    expected = bytes(payload)
    proto = loop.run_until_complete(main())
    reader.start()
    loop.run_until_complete(asyncio.wait_for(_until(lambda: bool(got)), DEADLINE))
    reader.join(DEADLINE)
    assert got == [expected]
    assert proto.resumed == 1
    proto.transport.close()
    assert loop.run_until_complete(asyncio.wait_for(proto.lost, DEADLINE)) is None
    theirs.close()


def test_eof_and_abort(loop: PyuvEventLoop) -> None:
    ours, theirs = socket.socketpair()

    async def main() -> None:
        ours.setblocking(False)
        transport, proto = await loop.connect_accepted_socket(Recorder, ours)
        theirs.sendall(b"hi")
        theirs.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(_until(lambda: proto.eof), DEADLINE)
        assert proto.data == b"hi"
        transport.write(b"after eof")  # the half-closed peer still reads
        transport.abort()
        transport.abort()  # idempotent
        assert await asyncio.wait_for(proto.lost, DEADLINE) is None

    loop.run_until_complete(main())
    theirs.close()


def test_timers_and_threadsafe_wakeups(loop: PyuvEventLoop) -> None:
    order: list[str] = []

    async def main() -> None:
        loop.call_later(0.02, order.append, "later")
        loop.call_later(0.01, order.append, "sooner")
        loop.call_later(0.01, order.append, "cancelled").cancel()
        done = loop.create_future()
        threading.Thread(target=loop.call_soon_threadsafe, args=(done.set_result, 1)).start()
        assert await asyncio.wait_for(done, DEADLINE) == 1
        await asyncio.sleep(0.03)

    loop.run_until_complete(main())
    assert order == ["sooner", "later"]


def test_a_signal_sent_before_the_loop_runs_is_delivered_when_it_does(
    loop: PyuvEventLoop,
) -> None:
    got: list[int] = []
    # What was there before (SIG_DFL, or what an earlier loop of this test
    # process restored) is what removing the handler must put back.
    before = signal.getsignal(signal.SIGUSR1)
    loop.add_signal_handler(signal.SIGUSR1, got.append, signal.SIGUSR1)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)  # the loop is not running yet
        loop.run_until_complete(asyncio.wait_for(_until(lambda: bool(got)), DEADLINE))
        assert got == [signal.SIGUSR1]
    finally:
        assert loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) == before


def test_a_python_signal_handler_runs_while_the_loop_waits(loop: PyuvEventLoop) -> None:
    """signal.signal's handler (Ctrl-C's KeyboardInterrupt too) needs no pyuv.Signal.

    The loop waits for a timer DEADLINE away; the signal must end that wait at
    once, not when the timer comes due (libuv retries an interrupted wait).
    """
    fired: list[str] = []
    handled: list[int] = []

    def too_late() -> None:
        fired.append("the far timer")
        loop.stop()

    def handler(signum: int, frame: object) -> None:
        handled.append(signum)
        loop.stop()

    far = loop.call_later(DEADLINE, too_late)
    before = signal.signal(signal.SIGUSR2, handler)
    wakeup_before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_before)
    sender = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR2))
    try:
        sender.start()
        loop.run_forever()
        assert handled == [signal.SIGUSR2] and fired == []
    finally:
        sender.join()
        far.cancel()
        signal.signal(signal.SIGUSR2, before)
    assert signal.set_wakeup_fd(wakeup_before) == wakeup_before  # the old one is back


def test_a_wakeup_fd_set_by_someone_else_is_kept(loop: PyuvEventLoop) -> None:
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    with reader, writer:
        previous = signal.set_wakeup_fd(writer.fileno())
        try:
            loop.call_soon(loop.stop)
            loop.run_forever()
            assert signal.set_wakeup_fd(writer.fileno()) == writer.fileno()
        finally:
            signal.set_wakeup_fd(previous)


def test_signal_handlers_only_from_the_main_thread(loop: PyuvEventLoop) -> None:
    errors: list[BaseException] = []

    def add() -> None:
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except ValueError as exc:
            errors.append(exc)

    t = threading.Thread(target=add)
    t.start()
    t.join(DEADLINE)
    assert len(errors) == 1


def test_udp_round_trip(loop: PyuvEventLoop) -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data.upper(), addr)

    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.settimeout(DEADLINE)
    peer.bind(("127.0.0.1", 0))

    async def main() -> None:
        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        peer.sendto(b"ping", transport.get_extra_info("sockname"))
        reply = await loop.run_in_executor(None, peer.recv, 100)
        assert reply == b"PING"
        transport.close()
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    peer.close()


def test_udp_over_ipv6_keeps_the_four_part_addresses(loop: PyuvEventLoop) -> None:
    got: list[Any] = []

    class Keep(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            got.append((data, addr))

    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    peer.settimeout(DEADLINE)
    try:
        peer.bind(("::1", 0))
    except OSError:
        peer.close()
        pytest.skip("no IPv6 loopback here")

    async def main() -> None:
        transport, _ = await loop.create_datagram_endpoint(Keep, local_addr=("::1", 0))
        peer.sendto(b"ping", transport.get_extra_info("sockname"))
        await asyncio.wait_for(_until(lambda: bool(got)), DEADLINE)
        data, addr = got[0]
        assert data == b"ping"
        assert len(addr) == 4 and addr[:2] == peer.getsockname()[:2]
        transport.sendto(b"pong", addr)  # a 4-part address goes back out as it came
        assert await loop.run_in_executor(None, peer.recv, 100) == b"pong"
        transport.close()
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    peer.close()


def test_unix_datagrams_are_refused_with_a_clear_error(loop: PyuvEventLoop) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.close()

    async def main() -> None:
        with pytest.raises(NotImplementedError, match="pyuv backend"):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=a)

    loop.run_until_complete(main())
    a.close()


async def _until(predicate: Any) -> None:
    """Yield to the loop until ``predicate()`` holds (callers bound it with wait_for)."""
    while not predicate():
        await asyncio.sleep(0.001)
