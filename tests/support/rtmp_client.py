"""A small RTMP client for protocol tests, driven entirely in memory.

It is built from the same sans-IO pieces as the server (``ClientHandshake``,
``ChunkReader``, ``messages.command``) and talks to one
:class:`~mediasrv.rtmp.protocol.RtmpServerProtocol` over a
:class:`ClosingTransport` (a ``StringTransport``) on a ``task.Clock``.
Nothing touches a socket or the reactor, so every test is deterministic.

Closing behaves as with a reactor: ``loseConnection``/``abortConnection``
only mark the transport, and ``connectionLost`` reaches the protocol on the
next turn of the clock (``clock.advance(0)``), which :meth:`RtmpTestClient.send`
and :meth:`RtmpTestClient.settle` do.  That keeps the re-entrancy the server
sees in production (no ``connectionLost`` inside ``dataReceived``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim

from mediasrv.codec import amf0
from mediasrv.core.context import Core
from mediasrv.core.sessions import SessionInfo
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import DEFAULT_CHUNK_SIZE, MAX_MESSAGE_LENGTH, ChunkReader, RtmpMessage, encode_message
from mediasrv.rtmp.handshake import ClientHandshake
from mediasrv.rtmp.protocol import RtmpFactory, RtmpServerProtocol


class ClosingTransport(StringTransport):
    """A ``StringTransport`` that delivers ``connectionLost`` one clock turn
    after ``loseConnection``/``abortConnection``, and remembers every object
    passed to ``write`` (for the fan-out identity checks)."""

    def __init__(self, clock: Clock, peer: IPv4Address, host: IPv4Address) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self.clock = clock
        self.protocol: RtmpServerProtocol | None = None
        self.aborted = False
        self.writes: list[bytes] = []
        self.lost_reason: Failure | None = None
        self._close_call: IDelayedCall | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self._close_call = self.clock.callLater(0, self._deliver, ConnectionDone("closed by the server"))

    def abortConnection(self) -> None:
        self.aborted = True
        self.disconnected = True
        self.loseConnection()

    def peer_drops(self, reason: Exception | None = None) -> None:
        """The peer vanishes (TCP reset, a TLS error): ``connectionLost`` at once."""
        if self._close_call is not None and self._close_call.active():
            self._close_call.cancel()
        self._deliver(reason if reason is not None else ConnectionLost("peer went away"))

    def _deliver(self, reason: Exception) -> None:
        self._close_call = None
        if not self.connected:
            return
        self.connected = False
        if self.producer is not None:
            self.producer.stopProducing()
        self.lost_reason = Failure(reason)
        assert self.protocol is not None
        self.protocol.connectionLost(self.lost_reason)


class RtmpTestClient:
    """One client connection to a fresh ``RtmpServerProtocol`` of ``core``.

    ``send`` writes raw bytes (all at once, or one byte per ``dataReceived``
    with ``byte_by_byte``); ``pump`` parses what the server wrote since the
    last call into :attr:`messages`.
    """

    def __init__(self, core: Core, *, port: int = 50000, digest: bool = False, secure: bool = False,
                 byte_by_byte: bool = False) -> None:
        assert isinstance(core.clock, Clock)
        self.core = core
        self.clock: Clock = core.clock
        self.byte_by_byte = byte_by_byte
        self.proto = self._connect(IPv4Address("TCP", "127.0.0.1", port), IPv4Address("TCP", "127.0.0.1", 1935),
                                   secure)
        self.session: SessionInfo = self.proto.session
        self.handshake = ClientHandshake(digest=digest)
        self.reader = ChunkReader(max_message_size=MAX_MESSAGE_LENGTH)
        self.messages: list[RtmpMessage] = []
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._offset = 0
        self._txn = 1.0

    # -- the wire (overridden by TlsRtmpTestClient) -------------------------------------
    def _connect(self, peer: IPv4Address, host: IPv4Address, secure: bool) -> RtmpServerProtocol:
        proto = RtmpServerProtocol(self.core, secure)
        self.transport = ClosingTransport(self.clock, peer, host)
        self.transport.protocol = proto
        proto.makeConnection(self.transport)
        return proto

    def _feed(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def _new_output(self) -> bytes:
        raw = self.transport.value()
        data, self._offset = raw[self._offset:], len(raw)
        return data

    def settle(self) -> None:
        """Let zero-delay calls run (a close reaching ``connectionLost``)."""
        self.clock.advance(0)

    @property
    def closed(self) -> bool:
        """The server closed (or aborted) the connection."""
        return bool(self.transport.disconnecting)

    @property
    def lost(self) -> bool:
        """``connectionLost`` has reached the server's protocol."""
        return not self.transport.connected

    def drop(self, reason: Exception | None = None) -> None:
        """The client vanishes without a goodbye (``reason`` defaults to ConnectionLost)."""
        self.transport.peer_drops(reason)

    # -- raw I/O --------------------------------------------------------------------
    def send(self, data: bytes, byte_by_byte: bool | None = None) -> None:
        one = self.byte_by_byte if byte_by_byte is None else byte_by_byte
        if one:
            for i in range(len(data)):
                if self.lost:
                    break
                self._feed(data[i:i + 1])
        else:
            self._feed(data)
        self.settle()

    def pump(self) -> list[RtmpMessage]:
        """Parse the server's new output; return the messages it completed."""
        data = self._new_output()
        if not self.handshake.complete:
            self.handshake.receive_data(data)
            if not self.handshake.complete:
                return []
            data = self.handshake.leftover
        new = self.reader.feed(data)
        self.messages += new
        return new

    # -- RTMP -------------------------------------------------------------------------
    def do_handshake(self) -> None:
        self.send(self.handshake.initial_bytes())
        self.pump()
        c2 = self.handshake.data_to_send()
        assert c2, "no S0/S1 from the server"
        self.send(c2)
        assert self.handshake.complete, "no S2 from the server"

    def next_txn(self) -> float:
        txn, self._txn = self._txn, self._txn + 1
        return txn

    def command(self, name: str, *args: Any, obj: Any = None, stream_id: int = 0, txn: float | None = None,
                csid: int = m.CSID_COMMAND) -> float:
        if txn is None:
            txn = self.next_txn()
        self.send(m.command(name, txn, obj, *args, stream_id=stream_id, chunk_size=self.chunk_size, csid=csid))
        return txn

    def connect(self, app: str = "live", tc_url: str | None = None, **extra: Any) -> float:
        obj = {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; test)",
               "tcUrl": tc_url if tc_url is not None else f"rtmp://127.0.0.1:1935/{app}", **extra}
        return self.command("connect", obj=obj)

    def start(self, app: str = "live") -> None:
        """Handshake and connect."""
        self.do_handshake()
        self.connect(app)
        self.pump()

    def publish(self, name: str, stream_id: int = 1) -> None:
        """What ffmpeg and OBS send: releaseStream, FCPublish, createStream, publish."""
        self.command("releaseStream", name)
        self.command("FCPublish", name)
        self.command("createStream")
        self.command("publish", name, "live", stream_id=stream_id, txn=0, csid=m.CSID_DATA)
        self.pump()

    def play(self, name: str, stream_id: int = 1, reset: bool | None = None) -> None:
        self.command("createStream")
        args: list[Any] = [name, -2000.0]
        if reset is not None:
            args += [-1000.0, reset]
        self.command("play", *args, stream_id=stream_id, txn=0, csid=m.CSID_DATA)
        self.pump()

    def set_chunk_size(self, n: int) -> None:
        self.send(m.set_chunk_size(n, chunk_size=self.chunk_size))
        self.chunk_size = n

    def message(self, type_id: int, payload: bytes, timestamp: int = 0, stream_id: int = 1,
                csid: int | None = None) -> None:
        if csid is None:
            csid = {m.VIDEO: m.CSID_VIDEO, m.AUDIO: m.CSID_AUDIO}.get(type_id, m.CSID_DATA)
        self.send(encode_message(csid, type_id, stream_id, timestamp, payload, self.chunk_size))

    def data(self, *values: Any, stream_id: int = 1) -> None:
        self.message(m.DATA_AMF0, amf0.encode(*values), stream_id=stream_id)

    # -- reading replies ------------------------------------------------------------------
    def commands(self) -> list[m.Command]:
        return [m.parse_command(msg) for msg in self.messages if msg.type_id == m.COMMAND_AMF0]

    def statuses(self) -> list[str]:
        """The ``code`` of every onStatus received, in order."""
        return [c.args[0]["code"] for c in self.commands() if c.name == "onStatus"]

    def data_messages(self) -> list[tuple[str, list[Any]]]:
        return [m.parse_data(msg) for msg in self.messages if msg.type_id == m.DATA_AMF0]

    def media(self) -> list[RtmpMessage]:
        return [msg for msg in self.messages if msg.type_id in (m.VIDEO, m.AUDIO)]

    def of_type(self, type_id: int) -> list[RtmpMessage]:
        return [msg for msg in self.messages if msg.type_id == type_id]


class _Collector(Protocol):
    """The client's application protocol under TLS: keeps what it receives."""

    def __init__(self) -> None:
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class TlsRtmpTestClient(RtmpTestClient):
    """The same client over real TLS (pyOpenSSL memory BIOs on both sides,
    Twisted's ``TLSMemoryBIOProtocol``), connected in memory by
    ``twisted.test.iosim``: RTMPS exactly as the server runs it, including
    how a TLS transport treats producers and closes."""

    def __init__(self, core: Core, server_tls: IOpenSSLServerConnectionCreator,
                 client_tls: IOpenSSLClientConnectionCreator, **kw: Any) -> None:
        self._server_tls = server_tls
        self._client_tls = client_tls
        super().__init__(core, secure=True, **kw)

    def _connect(self, peer: IPv4Address, host: IPv4Address, secure: bool) -> RtmpServerProtocol:
        # The clock matters: TLS transports batch small writes with callLater(0).
        server = TLSMemoryBIOFactory(self._server_tls, False, RtmpFactory(self.core, secure=True),
                                     clock=self.clock).buildProtocol(peer)
        self._app = _Collector()
        client = TLSMemoryBIOFactory(self._client_tls, True, Factory.forProtocol(lambda: self._app),
                                     clock=self.clock).buildProtocol(host)
        self.server_io = iosim.FakeTransport(server, True, host, peer)
        self.client_io = iosim.FakeTransport(client, False, peer, host)
        self.io_pump = iosim.connect(server, self.server_io, client, self.client_io, clock=self.clock)
        proto = server.wrappedProtocol
        assert isinstance(proto, RtmpServerProtocol)
        return proto

    def _feed(self, data: bytes) -> None:
        assert self._app.transport is not None
        self._app.transport.write(data)
        self.io_pump.flush()

    def _new_output(self) -> bytes:
        self.io_pump.flush()
        data = bytes(self._app.received)
        self._app.received.clear()
        return data

    def settle(self) -> None:
        self.io_pump.flush()

    @property
    def closed(self) -> bool:
        """The server closed its TCP connection (after the TLS close_notify)."""
        return bool(self.server_io.disconnecting)

    @property
    def lost(self) -> bool:
        return bool(self.server_io.disconnected and self.client_io.disconnected)

    def drop(self, reason: Exception | None = None) -> None:
        self.client_io.loseConnection()
        self.io_pump.flush()


def self_signed_pem() -> tuple[bytes, bytes]:
    """A self-signed certificate for localhost/127.0.0.1 and its key, PEM
    (made with ``cryptography``, which pyOpenSSL depends on)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
