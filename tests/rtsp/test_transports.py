"""Transport choice and channel / UDP port allocation (rtsp/transports.py):
directly, and through SETUP.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import CannotListenError

from mediasrv.rtsp.parser import TransportSpec, parse_transport
from mediasrv.rtsp.reply import RtspError
from mediasrv.rtsp.transports import Transports
from tests.rtsp.support import URL, FakeUdpReactor, Harness


@pytest.mark.parametrize("transport", [
    "RTP/AVP;multicast;client_port=6000-6001",
    "RTP/AVP;unicast",
    "RAW/RAW/UDP;unicast",
])
def test_unsupported_transport_is_461(h: Harness, transport: str) -> None:
    h.publish()
    c = h.client()
    c.request("DESCRIBE", URL)
    s = c.request("SETUP", URL + "/trackID=0", [("Transport", transport)])
    assert s is not None and s.status == 461 and not c.lost


def test_bad_transport_syntax_is_461(h: Harness) -> None:
    h.publish()
    c = h.client()
    c.request("DESCRIBE", URL)
    s = c.request("SETUP", URL + "/trackID=0", [("Transport", "RTP/AVP;client_port=x")])
    assert s is not None and s.status == 461


def spec(transport: str) -> list[TransportSpec]:
    return parse_transport(transport)


def test_lowest_free_channel_pair_and_conflicts() -> None:
    t = Transports(FakeUdpReactor())
    assert t.tcp is None
    assert t.take_channels(None) == (0, 1) and t.tcp is True
    assert t.take_channels((4, 5)) == (4, 5)
    assert t.take_channels(None) == (2, 3)
    for taken in ((2, 3), (3, 6), (6, 5)):
        with pytest.raises(RtspError, match="already in use") as caught:
            t.take_channels(taken)
        assert caught.value.status == 461
    t.release_channels(2, 3)
    assert t.take_channels(None) == (2, 3)
    t.clear()
    assert t.tcp is None and t.take_channels(None) == (0, 1)


def test_the_first_usable_alternative_and_no_mixing() -> None:
    t = Transports(FakeUdpReactor())
    chosen = t.choose(spec("RTP/AVP;multicast,RTP/AVP/TCP;unicast;interleaved=0-1,RTP/AVP;unicast;client_port=6000-6001"))
    assert chosen.tcp and chosen.interleaved == (0, 1)
    t.take_channels(chosen.interleaved)
    with pytest.raises(RtspError, match="mixing TCP and UDP") as caught:
        t.choose(spec("RTP/AVP;unicast;client_port=6000-6001,RTP/AVP/TCP;unicast"))
    assert caught.value.status == 461
    with pytest.raises(RtspError, match="no supported transport"):
        t.choose(spec("RTP/AVP;unicast"))


def test_udp_pairs_are_even_odd_sent_to_the_client_and_closed() -> None:
    reactor = FakeUdpReactor()
    t = Transports(reactor)
    got: list[bytes] = []
    pair = t.bind_udp("127.0.0.1", ("10.0.0.9", 6000, 6001), lambda d, a: got.append(d), lambda d, a: None)
    rtp_port, rtcp_port = pair.ports
    assert rtp_port % 2 == 0 and rtcp_port == rtp_port + 1 and t.tcp is False
    pair.send_rtp(b"rtp")
    pair.send_rtcp(b"rtcp")
    assert reactor.ports[rtp_port].sent == [(b"rtp", ("10.0.0.9", 6000))]
    assert reactor.ports[rtcp_port].sent == [(b"rtcp", ("10.0.0.9", 6001))]
    reactor.ports[rtp_port].deliver(b"in", ("10.0.0.9", 6000))
    assert got == [b"in"]
    other = t.bind_udp("127.0.0.1", ("10.0.0.9", 6002, 6003), lambda d, a: None, lambda d, a: None)
    t.release_udp(pair)
    assert set(reactor.ports) == set(other.ports)
    t.clear()
    assert not reactor.ports and other.closed


def test_no_udp_pair_is_453(monkeypatch: pytest.MonkeyPatch) -> None:
    reactor = FakeUdpReactor()

    def refuse(port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> Any:
        raise CannotListenError(interface, port, OSError("no ports left"))

    monkeypatch.setattr(reactor, "listenUDP", refuse)
    with pytest.raises(RtspError, match="no UDP port pair available") as caught:
        Transports(reactor).bind_udp("127.0.0.1", ("10.0.0.9", 6000, 6001), lambda d, a: None, lambda d, a: None)
    assert caught.value.status == 453
