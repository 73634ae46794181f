"""The lower transports of one RTSP session: which ``Transport`` alternative a
SETUP gets, interleaved channel pairs on the RTSP connection, and UDP port
pairs.

A session uses one kind: once a track is set up over TCP (or UDP), a SETUP
asking for the other is refused with 461, as mixing them is not supported.
TEARDOWN (or the end of the connection) frees everything.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import CannotListenError

from mediasrv.rtsp.parser import TransportSpec
from mediasrv.rtsp.reply import RtspError
from mediasrv.rtsp.udp import Receiver, UdpPair, listen_pair


class Transports:
    """Channel and UDP port allocation of one RTSP connection.  ``reactor``
    binds the UDP ports (``IReactorUDP``)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.tcp: bool | None = None  # the kind of the tracks set up so far (None: none yet)
        self._channels: set[int] = set()
        self._udp: list[UdpPair] = []

    def choose(self, specs: list[TransportSpec]) -> TransportSpec:
        """The first alternative we support: RTP/AVP unicast, over TCP or over
        UDP with a ``client_port``, of the session's kind.

        :raises RtspError: 461 for none, or for one that would mix TCP and UDP.
        """
        for spec in specs:
            if not spec.protocol.upper().startswith("RTP/AVP") or spec.multicast:
                continue
            if spec.tcp or spec.client_port is not None:
                if self.tcp is not None and spec.tcp != self.tcp:
                    raise RtspError(461, "mixing TCP and UDP transports in one session is not supported")
                return spec
        raise RtspError(461, "no supported transport (RTP/AVP unicast over UDP with client_port, or TCP)")

    def take_channels(self, requested: tuple[int, int] | None) -> tuple[int, int]:
        """The interleaved (RTP, RTCP) channels a client asked for, or the
        lowest free even pair.

        :raises RtspError: 461 when one of them is already in use.
        """
        channels = requested or self._free_channels()
        if channels[0] in self._channels or channels[1] in self._channels:
            raise RtspError(461, f"interleaved channel {channels[0]} is already in use")
        self._channels.update(channels)
        self.tcp = True
        return channels

    def release_channels(self, *channels: int | None) -> None:
        self._channels.difference_update(channels)

    def bind_udp(self, interface: str, client: tuple[str, int, int], on_rtp: Receiver,
                 on_rtcp: Receiver) -> UdpPair:
        """A server port pair on ``interface`` sending to ``client``: (ip, RTP port, RTCP port).

        :raises RtspError: 453 when no pair can be bound.
        """
        try:
            pair = listen_pair(self.reactor, interface, on_rtp, on_rtcp)
        except CannotListenError as e:
            raise RtspError(453, f"no UDP port pair available: {e}") from None
        pair.client = client
        self._udp.append(pair)
        self.tcp = False
        return pair

    def release_udp(self, pair: UdpPair) -> None:
        pair.close()
        if pair in self._udp:
            self._udp.remove(pair)

    def clear(self) -> None:
        """Free every channel and close every port pair (TEARDOWN, connection lost)."""
        pairs, self._udp = self._udp, []
        for pair in pairs:
            pair.close()
        self._channels.clear()
        self.tcp = None

    def _free_channels(self) -> tuple[int, int]:
        ch = 0
        while ch in self._channels or ch + 1 in self._channels:
            ch += 2
        return ch, ch + 1
