"""A TCP server transport that writes through to the socket when nothing is queued.

Twisted's ``FileDescriptor.write`` never sends at once: it appends to a buffer and registers the
descriptor for writability (``epoll_ctl(MOD, +EPOLLOUT)``); the next reactor turn dispatches
``doWrite``, which sends and unregisters (``epoll_ctl(MOD, -EPOLLOUT)``). For a server that writes a
little to many sockets every turn (a live fan-out) that is two ``epoll_ctl`` calls, one dispatched
event and ~20 Python calls per socket per turn, for bytes the kernel would have taken at once.
asyncio's selector transport tries ``send`` first; :class:`WriteThroughServer` does the same:

* ``write``/``writeSequence`` send at once (one ``send`` per call; ``writeSequence`` joins its parts
  first) when the connection is healthy and *nothing is queued*: no byte is waiting in Twisted's
  buffer, no half-close or abort has started, no ``loseConnection`` is pending, TLS was not started on
  the transport (``startTLS``), and no *pull* (non-streaming) producer is registered (a pull producer
  is asked for more by ``doWrite`` only, so its writes keep going through the buffer);
* whatever the socket does not take (or everything, when one of those conditions fails) goes to
  Twisted's own ``write``: buffered, flushed by ``doWrite``, a streaming producer paused when the buffer
  passes ``bufferSize`` and resumed when it drains, errors reported by ``doWrite`` as before. Order is
  kept: once anything is buffered, every later write is buffered behind it until the buffer drained.

"Nothing is queued" is tracked without Twisted's private attributes: ``_unsent`` counts the bytes handed
to ``FileDescriptor.write``/``writeSequence`` and is decremented by what ``writeSomeData`` reports sent
when ``doWrite`` calls it (``writeSomeData`` is the documented way ``doWrite`` sends; the direct path
calls ``Connection.writeSomeData`` itself and is not counted). Only public names of ``twisted.internet``
are used: ``tcp.Server``, ``tcp.Port`` (and its ``transport`` attribute, documented as the seam to change
the transport class), ``writeSomeData``, ``connected``, ``disconnecting``, ``producer``,
``streamingProducer``, ``TLS``, ``setTcpNoDelay``. ``tests/net/test_writethrough.py`` pins that
behaviour over a real loopback socket, so a Twisted upgrade that changes it fails a test.

Accepted connections also get ``TCP_NODELAY`` (as nginx sets by default): with writes going out as they
are made, small control replies must not wait for Nagle + delayed ACK.

Listening: :class:`WriteThroughServerEndpoint` (an ``IStreamServerEndpoint``), or the strports/endpoint
strings ``wtcp:PORT[:interface=IP][:backlog=N][:nodelay=0]`` and
``wssl:PORT:certKey=PEM[:privateKey=PEM][:extraCertChain=PEM][:interface=IP][:backlog=N]`` (plugins in
``twisted/plugins/mediasrv_endpoints.py``). TLS wraps the protocol factory in ``TLSMemoryBIOFactory``
over the same write-through port (what ``reactor.listenSSL`` does over a plain ``tcp.Port``): ciphertext
records are written through. On a reactor that is not one of Twisted's POSIX socket reactors
(``posixbase.PosixReactorBase``: epoll, poll, select, asyncio) the endpoint falls back to
``reactor.listenTCP``, i.e. plain Twisted transports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer, interfaces, posixbase, tcp
from twisted.internet.error import ConnectionLost
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer


def _must_be_bytes(data: object) -> None:
    if not isinstance(data, bytes):  # the same check (and error) as FileDescriptor.write
        raise TypeError("Data must be bytes")


class WriteThroughServer(tcp.Server):
    """``tcp.Server`` whose writes go straight to the socket while nothing is queued (see the module)."""

    # bytes handed to Twisted's buffer and not yet reported sent by writeSomeData from doWrite
    _unsent = 0
    # abortConnection or loseWriteConnection was called: Twisted's own path decides what happens to writes
    _closing = False
    nodelay = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.nodelay:
            self.setTcpNoDelay(True)

    def _can_write_through(self) -> bool:
        return bool(self.connected and not self.disconnecting and not self._unsent and not self._closing
                    and not self.TLS and (self.producer is None or self.streamingProducer))

    def write(self, data: bytes) -> None:
        _must_be_bytes(data)
        if not data:
            return
        if self._can_write_through():
            sent = tcp.Connection.writeSomeData(self, data)
            if isinstance(sent, int):
                if sent >= len(data):
                    return
                data = data[sent:]
            # an exception instance means the connection is lost: buffer it, and doWrite reports the same
            # error through Twisted's usual path
        self._buffer([data])

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        parts = list(iovec)
        for part in parts:
            _must_be_bytes(part)
        if self._can_write_through():
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if data:
                self.write(data)
            return
        self._buffer(parts)

    def _buffer(self, parts: list[bytes]) -> None:
        if self.connected and not self.TLS and not self._closing:
            self._unsent += sum(len(p) for p in parts)
        super().writeSequence(parts)

    def writeSomeData(self, data: bytes) -> int | ConnectionLost:
        # Called by doWrite for the buffered bytes (and, under TLS, for ciphertext Twisted buffered itself).
        sent = super().writeSomeData(data)
        if isinstance(sent, int):
            self._unsent = max(0, self._unsent - sent)
        return sent

    def abortConnection(self) -> None:
        self._closing = True
        super().abortConnection()

    def loseWriteConnection(self) -> None:
        self._closing = True
        super().loseWriteConnection()


class WriteThroughPort(tcp.Port):
    """``tcp.Port`` whose accepted connections are :class:`WriteThroughServer` (or ``transport``)."""

    transport = WriteThroughServer


class _NoDelayOffServer(WriteThroughServer):
    nodelay = False


@implementer(interfaces.IStreamServerEndpoint)
class WriteThroughServerEndpoint:
    """Listen on TCP with :class:`WriteThroughPort`; with ``tls`` (an ``IOpenSSLServerConnectionCreator``
    or context factory), TLS runs in ``TLSMemoryBIOFactory`` over the same port.

    Reactors other than Twisted's POSIX socket reactors get ``reactor.listenTCP`` (plain transports)."""

    def __init__(self, reactor: Any, port: int, backlog: int = 50, interface: str = "", *,
                 nodelay: bool = True, tls: Any = None) -> None:
        self.reactor = reactor
        self.port = port
        self.backlog = backlog
        self.interface = interface
        self.nodelay = nodelay
        self.tls = tls

    def write_through(self) -> bool:
        """True when listen() uses the write-through transport (the reactor is a POSIX socket reactor)."""
        return isinstance(self.reactor, posixbase.PosixReactorBase)

    def listen(self, protocolFactory: interfaces.IProtocolFactory) -> defer.Deferred[Any]:
        factory: interfaces.IProtocolFactory = protocolFactory
        if self.tls is not None:
            factory = TLSMemoryBIOFactory(self.tls, False, protocolFactory)  # type: ignore[arg-type]
        if not self.write_through():
            return defer.execute(self.reactor.listenTCP, self.port, factory, backlog=self.backlog,
                                 interface=self.interface)

        def start() -> WriteThroughPort:
            p = WriteThroughPort(self.port, factory, self.backlog, self.interface, self.reactor)
            if not self.nodelay:
                p.transport = _NoDelayOffServer
            if self.tls is not None:
                p._type = "TLS"  # log prefix only, as reactor.listenSSL sets it
            p.startListening()
            return p

        return defer.execute(start)


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_wtcp(reactor: Any, port: str, interface: str = "", backlog: str = "50",
               nodelay: str = "1") -> WriteThroughServerEndpoint:
    """``wtcp:PORT[:interface=IP][:backlog=N][:nodelay=0|1]``"""
    return WriteThroughServerEndpoint(reactor, int(port), int(backlog), interface, nodelay=_flag(nodelay))


def parse_wssl(reactor: Any, port: str, privateKey: str = "", certKey: str = "", extraCertChain: str = "",
               interface: str = "", backlog: str = "50", nodelay: str = "1") -> WriteThroughServerEndpoint:
    """``wssl:PORT:certKey=PEM[:privateKey=PEM][:extraCertChain=PEM][:interface=IP][:backlog=N]``, the
    certificate options of Twisted's ``ssl:`` (``certKey`` defaults to ``privateKey`` and vice versa)."""
    from twisted.internet import ssl

    cert_path = certKey or privateKey
    key_path = privateKey or certKey
    if not cert_path:
        raise ValueError("wssl: needs certKey= (and privateKey= unless certKey holds the key too)")
    with open(cert_path, "rb") as f:
        cert_pem = f.read()
    with open(key_path, "rb") as f:
        key_pem = f.read()
    private = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    chain = []
    if extraCertChain:
        with open(extraCertChain, "rb") as f:
            blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", f.read(), re.DOTALL)
        if not blocks:
            raise ValueError(f"{extraCertChain}: no PEM certificate")
        chain = [ssl.Certificate.loadPEM(b).original for b in blocks]
    options = ssl.CertificateOptions(privateKey=private.privateKey.original, certificate=private.original,
                                     extraCertChain=chain or None)
    return WriteThroughServerEndpoint(reactor, int(port), int(backlog), interface, nodelay=_flag(nodelay),
                                      tls=options)

