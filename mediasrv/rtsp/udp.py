"""RTP/RTCP over UDP: one even/odd server port pair per track of a session.

RFC 3550 11 wants RTP on an even port and RTCP on the next (odd) one; the
pair is bound on the interface the RTSP connection arrived on and announced in
``Transport: ...;server_port=<rtp>-<rtcp>``.  Datagrams from any address other
than the RTSP client's are ignored (nobody can inject into a session or use
it as a reflector).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

log = Logger()

MAX_BIND_ATTEMPTS = 32

Receiver = Callable[[bytes, tuple[str, int]], None]


class _Endpoint(DatagramProtocol):
    noisy = False

    def __init__(self, receive: Receiver) -> None:
        self.receive = receive

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.receive(datagram, addr)


class UdpPair:
    """The RTP and RTCP sockets of one track of one session."""

    def __init__(self, rtp_port: IListeningPort, rtcp_port: IListeningPort, rtp_proto: _Endpoint,
                 rtcp_proto: _Endpoint) -> None:
        self._rtp = rtp_port
        self._rtcp = rtcp_port
        self._rtp_proto = rtp_proto
        self._rtcp_proto = rtcp_proto
        self.client: tuple[str, int, int] | None = None  # (ip, rtp port, rtcp port)
        self.closed = False

    @property
    def ports(self) -> tuple[int, int]:
        return self._rtp.getHost().port, self._rtcp.getHost().port  # type: ignore[attr-defined]

    def send_rtp(self, data: bytes) -> None:
        client = self.client
        if client is not None and not self.closed and self._rtp_proto.transport is not None:
            try:
                self._rtp_proto.transport.write(data, (client[0], client[1]))  # type: ignore[call-arg]
            except OSError:
                pass  # ICMP unreachable and friends: UDP is best effort

    def send_rtcp(self, data: bytes) -> None:
        client = self.client
        if client is not None and not self.closed and self._rtcp_proto.transport is not None:
            try:
                self._rtcp_proto.transport.write(data, (client[0], client[2]))  # type: ignore[call-arg]
            except OSError:
                pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._rtp.stopListening()
        self._rtcp.stopListening()


def listen_pair(reactor: Any, interface: str, on_rtp: Receiver, on_rtcp: Receiver) -> UdpPair:
    """Bind an even RTP port and the odd RTCP port after it.

    :raises CannotListenError: no pair found after ``MAX_BIND_ATTEMPTS``.
    """
    last: Exception | None = None
    for _ in range(MAX_BIND_ATTEMPTS):
        rtp_proto = _Endpoint(on_rtp)
        try:
            rtp_port = reactor.listenUDP(0, rtp_proto, interface=interface)
        except CannotListenError as e:
            last = e
            continue
        port = rtp_port.getHost().port
        if port % 2:
            rtp_port.stopListening()
            continue
        rtcp_proto = _Endpoint(on_rtcp)
        try:
            rtcp_port = reactor.listenUDP(port + 1, rtcp_proto, interface=interface)
        except CannotListenError as e:
            last = e
            rtp_port.stopListening()
            continue
        return UdpPair(rtp_port, rtcp_port, rtp_proto, rtcp_proto)
    raise CannotListenError(interface, 0, last or OSError("no free even/odd UDP port pair"))
