"""Helpers for the RTSP unit tests: media from the fixtures, a fake UDP reactor,
an RTSP client on StringTransport driving a real RtspServerProtocol, and the
play / record steps the tests share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, LogLevel, formatEvent

from mediasrv import config
from mediasrv.codec import flv, rtp
from mediasrv.codec.sdp import parse_sdp
from mediasrv.core import flvmux
from mediasrv.core.context import Core
from mediasrv.core.frames import Codec, MediaFrame, Track, TrackKind
from mediasrv.core.stream import Stream
from mediasrv.rtsp import media
from mediasrv.rtsp.muxer import TrackMuxer
from mediasrv.rtsp.parser import (
    InterleavedFrame,
    RtspParser,
    RtspResponse,
    encode_interleaved,
)
from mediasrv.rtsp.protocol import RtspFactory, RtspServerProtocol
from tests.conftest import FIXTURES

# -- media from the FLV fixture (1280x720 H.264 High + AAC 44.1 kHz) ------------------------------------

_TAGS = flv.FlvReader().feed((FIXTURES / "h264_aac_720p.flv").read_bytes())


def _tracks_and_frames() -> tuple[Track, Track, list[MediaFrame]]:
    video = audio = None
    frames: list[MediaFrame] = []
    for tag in _TAGS:
        if tag.tag_type == flv.TAG_VIDEO:
            pkt = flv.parse_video(tag.payload)
            if pkt.codec is None:
                continue
            if pkt.kind is flv.VideoKind.CONFIG:
                video = flvmux.track_from_config(pkt.codec, pkt.data)
            elif pkt.kind is flv.VideoKind.FRAME:
                frames.append(MediaFrame(pkt.codec, tag.timestamp, tag.timestamp + pkt.cts, pkt.keyframe, pkt.data))
        elif tag.tag_type == flv.TAG_AUDIO:
            apkt = flv.parse_audio(tag.payload)
            if apkt.config:
                audio = flvmux.track_from_config(Codec.AAC, apkt.data)
            else:
                frames.append(MediaFrame(Codec.AAC, tag.timestamp, tag.timestamp, True, apkt.data))
    assert video is not None and audio is not None
    return video, audio, frames


VIDEO_TRACK, AUDIO_TRACK, FRAMES = _tracks_and_frames()


def fresh(frame: MediaFrame, offset: int = 0) -> MediaFrame:
    """A copy without the mux cache (each test's stream builds its own packets)."""
    return MediaFrame(frame.codec, frame.dts + offset, frame.pts + offset, frame.keyframe, frame.payload)


# -- a fake IReactorUDP ------------------------------------------------------------------------------


@dataclass
class FakeUdpPort:
    reactor: FakeUdpReactor
    port: int
    interface: str
    protocol: DatagramProtocol
    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    listening: bool = True

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def stopListening(self) -> None:
        self.listening = False
        self.reactor.ports.pop(self.port, None)

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        self.protocol.datagramReceived(data, addr)


class FakeUdpReactor:
    def __init__(self) -> None:
        self.ports: dict[int, FakeUdpPort] = {}
        self.next_port = 50001  # odd first: listen_pair must retry for an even one

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
                  ) -> FakeUdpPort:
        if port == 0:
            port = self.next_port
            self.next_port += 1
        if port in self.ports:
            raise CannotListenError(interface, port, OSError("in use"))
        p = FakeUdpPort(self, port, interface, protocol)
        self.ports[port] = p
        protocol.makeConnection(p)  # type: ignore[arg-type]
        return p


# -- the client ------------------------------------------------------------------------------------------


class TlsLikeTransport(StringTransport):
    """Keeps its producer the way ``TLSMemoryBIOProtocol`` does: as
    ``_producer`` (``producer`` stays None), and a second registration without
    an unregistration in between raises."""

    _producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError("a producer is already registered")
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None


class RtspTestClient:
    def __init__(self, factory: RtspFactory, port: int, transport: type[StringTransport] = StringTransport) -> None:
        self.proto: RtspServerProtocol = factory.buildProtocol(None)
        self.transport = transport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8554),
                                   peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        self.proto.makeConnection(self.transport)
        self.parser = RtspParser()
        self.cseq = 0
        self.responses: list[RtspResponse] = []
        self.frames: list[InterleavedFrame] = []
        self.lost = False
        self.session = ""

    def send(self, data: bytes, byte_by_byte: bool = False) -> None:
        if byte_by_byte:
            for i in range(len(data)):
                self.proto.dataReceived(data[i : i + 1])
        else:
            self.proto.dataReceived(data)

    def pump(self) -> None:
        data = self.transport.value()
        self.transport.clear()
        for event in self.parser.feed(data):
            if isinstance(event, RtspResponse):
                self.responses.append(event)
            elif isinstance(event, InterleavedFrame):
                self.frames.append(event)
        if self.transport.disconnecting and not self.lost:
            self.lost = True
            self.proto.connectionLost()

    def raw(self, method: str, url: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
            cseq: bool = True) -> bytes:
        lines = [f"{method} {url} RTSP/1.0"]
        if cseq:
            self.cseq += 1
            lines.append(f"CSeq: {self.cseq}")
        lines.append("User-Agent: mediasrv-test")
        if self.session and not any(k.lower() == "session" for k, _ in headers or []):
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in headers or []]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def request(self, method: str, url: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                byte_by_byte: bool = False) -> RtspResponse | None:
        """Send a request; return its response if it came at once (None while the server waits)."""
        before = len(self.responses)
        self.send(self.raw(method, url, headers, body), byte_by_byte)
        self.pump()
        if len(self.responses) > before:
            resp = self.responses[before]
            sid = resp.headers.get("Session")
            if sid:
                self.session = sid.split(";")[0]
            return resp
        return None

    def last(self) -> RtspResponse:
        self.pump()
        resp = self.responses[-1]
        sid = resp.headers.get("Session")
        if sid:
            self.session = sid.split(";")[0]
        return resp

    def interleave(self, channel: int, data: bytes) -> None:
        self.send(encode_interleaved(channel, data))

    def drop(self) -> None:
        if not self.lost:
            self.lost = True
            self.proto.connectionLost()


class Harness:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.udp = FakeUdpReactor()
        self._core: Core | None = None
        self._factory: RtspFactory | None = None
        self.clients: list[RtspTestClient] = []

    def configure(self, *sets: str) -> Core:
        assert self._core is None
        self._core = Core.build(config.load(None, list(sets)), self.clock)
        return self._core

    @property
    def core(self) -> Core:
        return self._core or self.configure()

    @property
    def factory(self) -> RtspFactory:
        if self._factory is None:
            self._factory = RtspFactory(self.core, self.udp)
        return self._factory

    def client(self, transport: type[StringTransport] = StringTransport) -> RtspTestClient:
        c = RtspTestClient(self.factory, 41000 + len(self.clients), transport)
        self.clients.append(c)
        return c

    def publish(self, name: str = "test", frames: int = 30, audio: bool = True) -> Stream:
        """A stream published straight into the registry, with the fixture's first frames."""
        pub = self.core.sessions.open("rtmp", "127.0.0.1", 5000, 1935, 0.0)
        stream = self.core.registry.publish(self.core.registry.key("", "live", name), pub)
        stream.set_track(VIDEO_TRACK)
        if audio:
            stream.set_track(AUDIO_TRACK)
        for f in FRAMES[:frames]:
            if audio or f.codec is not Codec.AAC:
                stream.write(fresh(f))
        return stream

    def close_all(self) -> None:
        for c in self.clients:
            c.drop()
        if self._core is not None:
            self._core.registry.close_all("test over")
        self.clock.advance(0)


def headers(resp: RtspResponse) -> dict[str, Any]:
    return {k.lower(): v for k, v in resp.headers.items()}


# -- helpers of the tests -------------------------------------------------------------------------------

URL = "rtsp://127.0.0.1:8554/live/test"
PUB_URL = "rtsp://127.0.0.1:8554/live/pub"


def mediasrv_lines(events: list[LogEvent], level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if str(e.get("log_namespace", "")).startswith("mediasrv.rtsp")
            and (level is None or e.get("log_level") == level)]


def play_tcp(c: RtspTestClient, url: str = URL) -> dict[str, Any]:
    d = c.request("DESCRIBE", url, [("Accept", "application/sdp")])
    assert d is not None and d.status == 200, d
    base = headers(d)["content-base"]
    s1 = c.request("SETUP", base + "trackID=0", [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")])
    s2 = c.request("SETUP", base + "trackID=1", [("Transport", "RTP/AVP/TCP;unicast;interleaved=2-3")])
    p = c.request("PLAY", base, [("Range", "npt=0.000-")])
    assert s1 is not None and s2 is not None and p is not None
    assert (s1.status, s2.status, p.status) == (200, 200, 200)
    return {"describe": d, "setup": [s1, s2], "play": p}


def ours(h: Harness) -> list[str]:
    """Delayed calls of the RTSP session (its timers, the auth delay, the stream wait)."""
    return [repr(d) for d in h.clock.getDelayedCalls()
            if d.active() and any(word in repr(d) for word in ("Rtsp", "Session", "Deferred", "expire"))]


def rtp_on(c: RtspTestClient, channel: int) -> list[rtp.RtpPacket]:
    c.pump()
    return [rtp.RtpPacket.parse(f.data) for f in c.frames if f.channel == channel]


def announce_sdp() -> bytes:
    video = media.media_for_track(VIDEO_TRACK, "streamid=0")
    audio = media.media_for_track(AUDIO_TRACK, "streamid=1")
    sd = parse_sdp("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nt=0 0\r\n")
    sd.media += [video, audio]
    return sd.serialize().encode()


def record_tcp(c: RtspTestClient, url: str = PUB_URL) -> None:
    a = c.request("ANNOUNCE", url, [("Content-Type", "application/sdp")], announce_sdp())
    assert a is not None and a.status == 200, a
    for i in range(2):
        s = c.request("SETUP", f"{url}/streamid={i}",
                      [("Transport", f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1};mode=record")])
        assert s is not None and s.status == 200
        assert headers(s)["transport"] == f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1};mode=record"
    r = c.request("RECORD", url, [("Range", "npt=0.000-")])
    assert r is not None and r.status == 200


def rtp_of(frames: list[MediaFrame]) -> list[tuple[int, bytes]]:
    """(channel, RTP packet) as a publisher would send them."""
    muxers = {TrackKind.VIDEO: TrackMuxer(VIDEO_TRACK), TrackKind.AUDIO: TrackMuxer(AUDIO_TRACK)}
    out = []
    for f in frames:
        m = muxers[f.kind]
        channel = 0 if f.kind is TrackKind.VIDEO else 2
        out += [(channel, p) for p in m.packetize(fresh(f), VIDEO_TRACK if f.kind is TrackKind.VIDEO else None).packets]
    return out
