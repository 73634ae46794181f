"""The write-through TCP transport over a real loopback socket with the real reactor.

These tests pin the Twisted behaviour mediasrv/net/writethrough.py relies on (``doWrite`` sends the
buffer through ``writeSomeData``, ``stopWriting`` when drained, producer pause/resume around
``bufferSize``, abort/lose/half-close), so a Twisted upgrade that changes it fails here.

The client end is a raw non-blocking socket read (or not read) by the test, so the test decides when
the server's socket is full. A write "went out without the reactor" when the transport neither called
``startWriting`` (counted by a subclass) nor sits in ``reactor.getWriters()`` right after the write.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application import strports
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from zope.interface import implementer

from mediasrv.net.writethrough import WriteThroughPort, WriteThroughServer, WriteThroughServerEndpoint

R: Any = reactor
SMALL_SNDBUF = 16 * 1024


class SpyServer(WriteThroughServer):
    """Counts the times the transport asked the reactor for writability."""

    starts = 0

    def startWriting(self) -> None:
        self.starts += 1
        super().startWriting()


class Recorder(Protocol):
    def __init__(self) -> None:
        self.made: defer.Deferred[Recorder] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        self.made.callback(self)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.closed.callback(None)

    async def lost(self) -> Failure:
        """The reason the connection was lost, once it is."""
        await self.closed
        assert self.reason is not None
        return self.reason


class OneShotFactory(Factory):
    def __init__(self) -> None:
        self.protocols: list[Recorder] = []

    def buildProtocol(self, addr: Any) -> Recorder:
        p = Recorder()
        p.factory = self
        self.protocols.append(p)
        return p


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await deferLater(R, 0.002)


async def read_exactly(sock: socket.socket, n: int, timeout: float = 20.0) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < n:
        try:
            chunk = sock.recv(min(1 << 20, n - len(out)))
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {len(out)} of {n} bytes") from None
            await deferLater(R, 0.002)
            continue
        if not chunk:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


async def read_to_eof(sock: socket.socket, timeout: float = 20.0) -> tuple[bytes, str]:
    """All bytes until EOF or reset; returns (bytes, "eof" | "reset")."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no EOF after {len(out)} bytes") from None
            await deferLater(R, 0.002)
            continue
        except ConnectionResetError:
            return bytes(out), "reset"
        if not chunk:
            return bytes(out), "eof"
        out += chunk


@asynccontextmanager
async def connection(rcvbuf: int | None = None, sndbuf: int | None = None
                     ) -> AsyncIterator[tuple[SpyServer, Recorder, socket.socket]]:
    """A write-through server connection and the raw client socket at its other end."""
    factory = OneShotFactory()
    port = WriteThroughPort(0, factory, 50, "127.0.0.1", R)
    port.transport = SpyServer
    port.startListening()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client.connect(("127.0.0.1", port.getHost().port))
        client.setblocking(False)
        await until(lambda: bool(factory.protocols))
        proto = await factory.protocols[0].made
        transport = proto.transport
        assert isinstance(transport, SpyServer)
        if sndbuf:
            transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        yield transport, proto, client
        if transport.connected:
            transport.abortConnection()
        await proto.lost()
    finally:
        client.close()
        await port.stopListening()


def numbered(i: int) -> bytes:
    return b"<%06d>" % i


@pytest_twisted.ensureDeferred
async def test_small_writes_go_out_at_once_without_the_reactor() -> None:
    # buffers far larger than the ~14 KB written, so a busy machine's late ACKs cannot fill the socket
    async with connection(rcvbuf=1 << 20, sndbuf=1 << 20) as (t, _proto, client):
        assert t.getTcpNoDelay()
        expected = []
        for i in range(1000):
            if i % 2:
                t.write(numbered(i))
                expected.append(numbered(i))
            else:
                parts = [numbered(i), b"|", numbered(i)]
                t.writeSequence(parts)
                expected += parts
            assert t not in R.getWriters()
        want = b"".join(expected)
        assert t.starts == 0
        # the bytes are in the kernel already: readable without running the reactor
        got = client.recv(len(want) + 1, socket.MSG_PEEK)
        assert len(got) > 0
        assert await read_exactly(client, len(want)) == want


@pytest_twisted.ensureDeferred
async def test_a_write_overflowing_the_socket_falls_back_to_the_buffer_in_order() -> None:
    async with connection(rcvbuf=8192, sndbuf=SMALL_SNDBUF) as (t, _proto, client):
        head = b"".join(numbered(i) for i in range(10))
        for i in range(10):
            t.write(numbered(i))
        assert t.starts == 0
        big = bytes(range(256)) * (16 * 1024)  # 4 MiB: far more than the socket buffers hold
        t.write(big)
        assert t.starts >= 1 and t in R.getWriters()  # the rest waits in Twisted's buffer
        tail = [numbered(i) for i in range(10, 1010)]
        for i, piece in enumerate(tail):
            if i % 3:
                t.write(piece)
            else:
                t.writeSequence([piece])
        assert t in R.getWriters()
        want = head + big + b"".join(tail)
        assert await read_exactly(client, len(want)) == want
        await until(lambda: t not in R.getWriters())  # drained: doWrite stopped writing
        starts = t.starts
        t.write(b"after the drain")
        assert t.starts == starts and t not in R.getWriters()  # direct again
        assert await read_exactly(client, 15) == b"after the drain"


@implementer(IPushProducer)
class PushProducer:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumes += 1

    def stopProducing(self) -> None:
        self.stopped = True


@pytest_twisted.ensureDeferred
async def test_a_streaming_producer_is_paused_when_the_buffer_fills_and_resumed_when_it_drains() -> None:
    async with connection(rcvbuf=8192, sndbuf=SMALL_SNDBUF) as (t, _proto, client):
        producer = PushProducer()
        t.registerProducer(producer, True)
        chunk = b"x" * 8192
        written = 0
        for _ in range(1000):  # the first writes go through, then the socket fills, then the buffer
            t.write(chunk)
            written += len(chunk)
            if producer.paused:
                break
        assert producer.paused and producer.pauses == 1
        assert written > t.bufferSize  # past Twisted's bufferSize, not before
        assert t in R.getWriters()
        got = await read_exactly(client, written)
        assert got == chunk * (written // len(chunk))
        await until(lambda: producer.resumes == 1)
        assert not producer.paused and not producer.stopped
        await until(lambda: t not in R.getWriters())
        starts = t.starts
        t.write(b"resumed")
        assert t.starts == starts
        assert await read_exactly(client, 7) == b"resumed"
        t.unregisterProducer()


@pytest_twisted.ensureDeferred
async def test_a_pull_producer_is_driven_by_the_reactor_as_before() -> None:
    # A non-streaming producer is asked for more by doWrite only: its writes must keep going through the
    # buffer, or it would never be asked again.
    async with connection() as (t, _proto, client):
        pieces = [numbered(i) * 100 for i in range(50)]

        class Pull:
            def __init__(self) -> None:
                self.left = list(pieces)

            def resumeProducing(self) -> None:
                if self.left:
                    t.write(self.left.pop(0))
                else:
                    t.unregisterProducer()

            def stopProducing(self) -> None:
                pass

        t.registerProducer(Pull(), False)
        want = b"".join(pieces)
        assert await read_exactly(client, len(want)) == want
        await until(lambda: t.producer is None)
        t.write(b"direct")  # no producer any more: straight out
        assert t not in R.getWriters()
        assert await read_exactly(client, 6) == b"direct"


@pytest_twisted.ensureDeferred
async def test_lose_connection_flushes_the_buffer_then_closes() -> None:
    async with connection(rcvbuf=8192, sndbuf=SMALL_SNDBUF) as (t, proto, client):
        big = b"y" * (1 << 20)
        t.write(b"first")
        t.write(big)
        t.loseConnection()
        t.write(b"last")  # accepted while disconnecting, sent before the close (Twisted's behaviour)
        data, how = await read_to_eof(client)
        assert how == "eof" and data == b"first" + big + b"last"
        reason = await proto.lost()
        assert reason.check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_lose_connection_with_nothing_queued() -> None:
    async with connection() as (t, proto, client):
        t.write(b"bye")
        t.loseConnection()
        data, how = await read_to_eof(client)
        assert (data, how) == (b"bye", "eof")
        assert (await proto.lost()).check(ConnectionDone)
        t.write(b"after close")  # ignored, no error
        assert not t.connected


@pytest_twisted.ensureDeferred
async def test_abort_drops_what_is_buffered_and_what_comes_after() -> None:
    async with connection(rcvbuf=8192, sndbuf=SMALL_SNDBUF) as (t, proto, client):
        t.write(b"kept")
        t.write(b"z" * (4 << 20))  # most of it waits in Twisted's buffer
        t.abortConnection()
        t.write(b"after abort")
        reason = await proto.lost()
        assert reason.check(ConnectionAborted)
        data, how = await read_to_eof(client)
        assert how == "reset" or len(data) < 4 << 20
        assert b"after abort" not in data


@pytest_twisted.ensureDeferred
async def test_abort_with_nothing_queued_sends_nothing_more() -> None:
    async with connection() as (t, proto, client):
        t.write(b"kept")
        assert await read_exactly(client, 4) == b"kept"
        t.abortConnection()
        t.write(b"after abort")  # the direct path must not send it
        assert (await proto.lost()).check(ConnectionAborted)
        data, how = await read_to_eof(client)
        assert data == b"" and how in ("reset", "eof")


@pytest_twisted.ensureDeferred
async def test_half_close_sends_what_was_written_then_eof() -> None:
    async with connection() as (t, _proto, client):
        t.write(b"half")
        t.loseWriteConnection()
        t.write(b"+queued")  # written before the shutdown happened: Twisted flushes it, then sends FIN
        data, how = await read_to_eof(client)
        assert (data, how) == (b"half+queued", "eof")
        t.write(b"dropped")  # after the half-close: dropped, not sent on a shut-down socket
        assert t.connected and t not in R.getWriters()
        client.sendall(b"the read side still works")


@pytest_twisted.ensureDeferred
async def test_writing_to_a_peer_that_reset_loses_the_connection() -> None:
    async with connection() as (t, proto, client):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()
        await deferLater(R, 0.05)
        for _ in range(100):  # the first send may still succeed; later ones hit EPIPE/ECONNRESET
            if not t.connected:
                break
            t.write(b"into the void" * 100)
            await deferLater(R, 0.005)
        reason = await proto.lost()
        assert reason.check(ConnectionDone) or reason.type is not None


@pytest_twisted.ensureDeferred
async def test_wssl_endpoint_runs_tls_over_the_write_through_port(tmp_path: Path) -> None:
    from twisted.internet import ssl
    from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS

    from tests.support.rtmp_client import self_signed_pem

    cert, key = self_signed_pem()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    ep = serverFromString(R, f"wssl:0:interface=127.0.0.1:certKey={tmp_path / 'cert.pem'}"
                             f":privateKey={tmp_path / 'key.pem'}")
    assert isinstance(ep, WriteThroughServerEndpoint) and ep.tls is not None
    payload = b"".join(numbered(i) for i in range(200_000))  # 1.6 MB of ciphertext through the transport

    class Sender(Protocol):
        def connectionMade(self) -> None:
            assert self.transport is not None
            self.transport.write(b"hello ")
            self.transport.write(payload)
            self.transport.loseConnection()

    port = await ep.listen(Factory.forProtocol(Sender))
    assert isinstance(port, WriteThroughPort)
    received = bytearray()
    done: defer.Deferred[None] = defer.Deferred()

    class Receiver(Protocol):
        def dataReceived(self, data: bytes) -> None:
            received.extend(data)

        def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
            done.callback(None)

    try:
        trust = ssl.Certificate.loadPEM(cert)
        client_ep = wrapClientTLS(ssl.optionsForClientTLS("localhost", trustRoot=trust),
                                  TCP4ClientEndpoint(R, "127.0.0.1", port.getHost().port))
        await client_ep.connect(Factory.forProtocol(Receiver))
        await done
        assert bytes(received) == b"hello " + payload
    finally:
        await port.stopListening()


def test_wtcp_strings_parse_to_the_write_through_endpoint() -> None:
    ep = serverFromString(R, "wtcp:1935:interface=127.0.0.1:backlog=200")
    assert isinstance(ep, WriteThroughServerEndpoint)
    assert (ep.port, ep.interface, ep.backlog, ep.nodelay, ep.tls) == (1935, "127.0.0.1", 200, True, None)
    assert ep.write_through()
    assert not serverFromString(R, "wtcp:0:nodelay=0").nodelay  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        serverFromString(R, "wtcp:0:nodelay=maybe")
    svc = strports.service("wtcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol), reactor=R)
    assert isinstance(svc.endpoint, WriteThroughServerEndpoint)  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_nodelay_can_be_turned_off() -> None:
    factory = OneShotFactory()
    port = await serverFromString(R, "wtcp:0:interface=127.0.0.1:nodelay=0").listen(factory)
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    try:
        await until(lambda: bool(factory.protocols))
        proto = await factory.protocols[0].made
        assert isinstance(proto.transport, WriteThroughServer)
        assert not proto.transport.getTcpNoDelay()
        proto.transport.loseConnection()
        await proto.lost()
    finally:
        client.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_other_reactors_get_plain_listen_tcp() -> None:
    mem = MemoryReactor()
    ep = WriteThroughServerEndpoint(mem, 1935, 50, "127.0.0.1")
    assert not ep.write_through()
    factory = Factory.forProtocol(Protocol)
    await ep.listen(factory)
    assert [(p, f, b, i) for p, f, b, i in mem.tcpServers] == [(1935, factory, 50, "127.0.0.1")]
