"""RTSP relay client: play rtsp:// and rtsps:// sources (cameras, other servers), RTP over TCP or UDP.

A thin adapter between the RTSP connection (:class:`~mediasrv.relay.client.TcpRelayClient`),
UDP port pairs for ``transport="udp"`` (bound with the RTSP server's own
:func:`mediasrv.rtsp.udp.listen_pair`, on the local address of the RTSP
connection, accepting datagrams only from the RTSP server's address) and the
sans-IO :class:`~mediasrv.relay.rtsp_session.RtspClientSession`.  It keeps
the session alive every half session timeout and sends TEARDOWN when it
stops.  Started once the tracks are known.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IOpenSSLClientConnectionCreator
from twisted.logger import Logger

from mediasrv.core.frames import MediaFrame, Track
from mediasrv.relay.client import DEFAULT_TIMEOUT_SEC, PullDelivery, TcpRelayClient
from mediasrv.relay.errors import ConnectFailed, RelayError, SourceEnded, UnsupportedUrl
from mediasrv.relay.interfaces import RelaySink
from mediasrv.relay.rtsp_session import (
    Described,
    Ended,
    Notice,
    Playing,
    RtspClientSession,
    RtspEvent,
    RtspTransport,
)
from mediasrv.relay.url import RelayUrl
from mediasrv.rtsp.udp import Receiver, UdpPair, listen_pair

__all__ = ["RtspPullClient"]

log = Logger()


class RtspPullClient(TcpRelayClient):
    """Play an RTSP source into ``sink``.

    :param transport: ``"tcp"`` (interleaved, the default) or ``"udp"``
        (ZLMediaKit's ``rtp_type`` 0 and 1).
    """

    role = "pull"

    def __init__(self, url: str | RelayUrl, sink: RelaySink, reactor: Any, *,
                 transport: RtspTransport | str = RtspTransport.TCP, timeout_sec: float = DEFAULT_TIMEOUT_SEC,
                 tls: IOpenSSLClientConnectionCreator | None = None) -> None:
        super().__init__(url, reactor, timeout_sec=timeout_sec, tls=tls)
        if self.url.scheme not in ("rtsp", "rtsps"):
            raise UnsupportedUrl(f"{self.url.masked()} is not an rtsp:// or rtsps:// URL")
        self.session = RtspClientSession(self.url, RtspTransport(transport))
        self.delivery = PullDelivery(self, sink)
        self.udp: dict[int, UdpPair] = {}
        self._server_ip = ""
        self._keepalive: IDelayedCall | None = None

    # -- the RTSP connection ----------------------------------------------------------------------
    def _on_connected(self) -> None:
        peer = self.transport.getPeer() if self.transport is not None else None
        self._server_ip = getattr(peer, "host", "")
        self.session.start()
        self.write(self.session.data_to_send())

    def _on_data(self, data: bytes) -> None:
        events = self.session.receive_data(data, self.clock.seconds())
        self._handle(events)

    def _handle(self, events: list[RtspEvent]) -> None:
        for event in events:
            if self.closed:
                return
            if isinstance(event, MediaFrame):
                self.delivery.assembler.frame(event)
            elif isinstance(event, Track):
                self.delivery.assembler.track(event)
            elif isinstance(event, Described):
                self._described(event)
            elif isinstance(event, Playing):
                self._playing(event)
            elif isinstance(event, Ended):
                self._fail(SourceEnded(f"{self.url.masked()} ended the stream: {event.description}"))
            elif isinstance(event, Notice):
                log.info("relay pull {url}: {text}", url=self.url.masked(), text=event.text)
        self.write(self.session.data_to_send())

    def _described(self, event: Described) -> None:
        # the SDP's tracks are known now, so media arriving before PLAY's answer (UDP
        # datagrams can overtake it) is kept; the tracks count as ready once playing
        assembler = self.delivery.assembler
        assembler.hold()
        assembler.expect(self.session.expected_kinds())
        for track in self.session.initial_tracks():
            assembler.track(track)
        self.session.setup(self._bind_udp(event) if self.session.transport is RtspTransport.UDP else None)

    def _playing(self, event: Playing) -> None:
        self.delivery.assembler.release()
        self._arm_keepalive()

    # -- keep-alive -----------------------------------------------------------------------------------
    def _arm_keepalive(self) -> None:
        self._keepalive = self.clock.callLater(self.session.session_timeout / 2, self._send_keepalive)

    def _send_keepalive(self) -> None:
        self._keepalive = None
        if self.closed:
            return
        self.session.keepalive()
        self.write(self.session.data_to_send())
        self._arm_keepalive()

    # -- UDP ------------------------------------------------------------------------------------------
    def _bind_udp(self, event: Described) -> dict[int, tuple[int, int]]:
        host = self.transport.getHost() if self.transport is not None else None
        interface = getattr(host, "host", "")
        ports: dict[int, tuple[int, int]] = {}
        for media in event.media:
            index = media.index
            try:
                pair = listen_pair(self.reactor, interface, self._datagram(index, False), self._datagram(index, True))
            except CannotListenError as e:
                raise ConnectFailed(f"no UDP port pair for RTP from {self.url.masked()}: {e}") from None
            self.udp[index] = pair
            ports[index] = pair.ports
        return ports

    def _datagram(self, index: int, is_rtcp: bool) -> Receiver:
        def receive(data: bytes, addr: tuple[str, int]) -> None:
            if self.closed or addr[0] != self._server_ip:
                return
            self._touch(len(data))
            try:
                now = self.clock.seconds()
                events = self.session.rtcp(index, data, now) if is_rtcp else self.session.rtp(index, data, now)
                self._handle(events)
            except RelayError as e:
                self._fail(e)
            except Exception:
                log.failure("relay pull {url}: internal error", url=self.url.masked())
                self._fail(RelayError(f"internal error in the pull client of {self.url.masked()}"))

        return receive

    # -- closing -----------------------------------------------------------------------------------------
    def _goodbye(self) -> bytes:
        self.session.teardown()
        return self.session.data_to_send()

    def _teardown(self, reason: RelayError) -> None:
        timer, self._keepalive = self._keepalive, None
        if timer is not None and timer.active():
            timer.cancel()
        try:
            super()._teardown(reason)
        finally:
            pairs, self.udp = self.udp, {}
            for pair in pairs.values():
                pair.close()

    def _deliver_close(self, reason: RelayError) -> None:
        self.delivery.closed(reason)

    def _start_stage(self) -> str:
        state = self.session.state
        return f" (RTSP {state})" if state not in ("idle", "playing") else (" (no tracks)" if state == "playing" else "")
