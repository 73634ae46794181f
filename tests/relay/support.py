"""Helpers for the relay client unit tests: a recording sink, a scripted RTMP
server built from the server-side sans-IO pieces, canned media, and a way to
hand a client's connection attempt on a ``MemoryReactorClock`` a
``StringTransport``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from mediasrv.codec import aac, h264, h265
from mediasrv.codec.amf0 import EcmaArray
from mediasrv.codec.bits import avcc_to_nals
from mediasrv.core import flvmux
from mediasrv.core.frames import Codec, MediaFrame, Track, TrackKind
from mediasrv.relay.errors import RelayError
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import ChunkReader, RtmpMessage, encode_message
from mediasrv.rtmp.handshake import ServerHandshake
from tests.rtsp.support import AUDIO_TRACK, FRAMES, VIDEO_TRACK

__all__ = ["AUDIO_TRACK", "FRAMES", "VIDEO_TRACK", "Recorder", "ScriptedRtmpServer", "TcpPeer", "feed"]


@dataclass
class Recorder:
    """A RelaySink that remembers every call, in order."""

    calls: list[str] = field(default_factory=list)
    tracks: list[list[Track]] = field(default_factory=list)
    frames: list[MediaFrame] = field(default_factory=list)
    reasons: list[RelayError] = field(default_factory=list)

    def tracks_ready(self, tracks: Sequence[Track]) -> None:
        self.calls.append("tracks_ready")
        self.tracks.append(list(tracks))

    def frame(self, frame: MediaFrame) -> None:
        self.calls.append("frame")
        self.frames.append(frame)

    def closed(self, reason: RelayError) -> None:
        self.calls.append("closed")
        self.reasons.append(reason)

    def of(self, kind: TrackKind) -> list[MediaFrame]:
        return [f for f in self.frames if f.kind is kind]


def feed(receive: Any, data: bytes, byte_at_a_time: bool) -> list[Any]:
    """Call ``receive(data)`` whole or one byte at a time; return all events."""
    if not byte_at_a_time:
        return list(receive(data))
    events: list[Any] = []
    for i in range(len(data)):
        events += receive(data[i:i + 1])
    return events


class ScriptedRtmpServer:
    """The server end of an RTMP connection, driven by the test line by line."""

    CHUNK = 128

    def __init__(self) -> None:
        self.handshake = ServerHandshake()
        self.reader = ChunkReader()
        self.messages: list[RtmpMessage] = []
        self.chunk_size = self.CHUNK

    def receive(self, data: bytes) -> bytes:
        """Take the client's bytes; return the server's handshake answer (if any)."""
        if not self.handshake.complete:
            self.handshake.receive_data(data)
            out = self.handshake.data_to_send()
            if not self.handshake.complete:
                return out
            data = self.handshake.leftover
        else:
            out = b""
        self.messages += self.reader.feed(data)
        return out

    def commands(self) -> list[m.Command]:
        return [m.parse_command(msg) for msg in self.messages if msg.type_id == m.COMMAND_AMF0]

    def command_names(self) -> list[str]:
        return [c.name for c in self.commands()]

    def command(self, name: str, txn: float, obj: Any, *args: Any, stream_id: int = 0) -> bytes:
        return m.command(name, txn, obj, *args, stream_id=stream_id, chunk_size=self.chunk_size)

    def status(self, code: str, level: str = "status", stream_id: int = 1, description: str = "") -> bytes:
        info = {"level": level, "code": code, "description": description}
        return self.command("onStatus", 0, None, info, stream_id=stream_id)

    def set_chunk_size(self, n: int) -> bytes:
        out = m.set_chunk_size(n, chunk_size=self.chunk_size)
        self.chunk_size = n
        return out

    def media(self, type_id: int, timestamp: int, payload: bytes, stream_id: int = 1) -> bytes:
        csid = m.CSID_VIDEO if type_id == m.VIDEO else m.CSID_AUDIO
        return encode_message(csid, type_id, stream_id, timestamp, payload, self.chunk_size)

    def metadata(self, values: dict[str, Any], stream_id: int = 1) -> bytes:
        return m.data("onMetaData", EcmaArray(values), stream_id=stream_id, chunk_size=self.chunk_size)

    def configs(self, stream_id: int = 1) -> bytes:
        return (self.media(m.VIDEO, 0, flvmux.config_body(VIDEO_TRACK), stream_id)
                + self.media(m.AUDIO, 0, flvmux.config_body(AUDIO_TRACK), stream_id))

    def frames(self, count: int, stream_id: int = 1) -> bytes:
        out = []
        for f in FRAMES[:count]:
            type_id = m.VIDEO if f.kind is TrackKind.VIDEO else m.AUDIO
            out.append(self.media(type_id, f.dts, flvmux.frame_body(f), stream_id))
        return b"".join(out)

    def answer_connect(self, txn: float = 1.0) -> bytes:
        return (m.window_ack_size(2_500_000) + m.set_peer_bandwidth(2_500_000, 2)
                + self.command("_result", txn, {"fmsVer": "FMS/3,0,1,123"},
                               {"level": "status", "code": "NetConnection.Connect.Success"}))



class TcpPeer:
    """The far end of a client's TCP attempt on a MemoryReactorClock."""

    def __init__(self, reactor: MemoryReactorClock, index: int = -1) -> None:
        host, port, factory, _timeout, _bind = reactor.tcpClients[index]
        self.reactor = reactor
        self.factory = factory
        proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert proto is not None
        self.proto: IProtocol = proto
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, port),
                                         hostAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.proto.makeConnection(self.transport)
        self._read = 0

    def sent(self) -> bytes:
        """What the client wrote since the last call."""
        value = self.transport.value()
        data, self._read = value[self._read:], len(value)
        return data

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def close(self, reason: Exception | None = None) -> None:
        self.proto.connectionLost(Failure(reason or ConnectionDone("peer closed")))


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait on the real reactor (interop tests) until ``predicate()`` holds, polling, with a deadline."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    clock: Any = reactor
    deadline = clock.seconds() + timeout
    while not predicate():
        if clock.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await deferLater(clock, 0.05, lambda: None)


def video_span_ms(sink: Recorder) -> int:
    video = sink.of(TrackKind.VIDEO)
    return video[-1].dts - video[0].dts if len(video) > 1 else 0


def check_pulled(sink: Recorder, *, width: int, height: int, fps: float, sample_rate: int, channels: int,
                 min_span_ms: int, codec: Codec = Codec.H264) -> None:
    """What a pull of an ffmpeg ``testsrc2`` + ``sine`` publisher must have delivered."""
    assert sink.calls[0] == "tracks_ready", sink.calls[:3]
    tracks = {t.kind: t for t in sink.tracks[0]}
    video, audio = tracks[TrackKind.VIDEO], tracks[TrackKind.AUDIO]
    assert video.codec is codec
    if codec is Codec.H264:
        sps = h264.parse_sps(h264.parse_avc_config(video.config).sps[0])
        size = (sps.width, sps.height)
    else:
        hsps = h265.parse_sps(h265.parse_hevc_config(video.config).sps[0])
        size = (hsps.width, hsps.height)
    assert size == (width, height) == (video.width, video.height)
    asc = aac.parse_asc(audio.config)
    assert audio.codec is Codec.AAC and (asc.sample_rate, asc.channels) == (sample_rate, channels)
    vf, af = sink.of(TrackKind.VIDEO), sink.of(TrackKind.AUDIO)
    assert vf[0].keyframe, "the first video frame is not a keyframe"
    assert all(a.dts < b.dts for a, b in zip(vf, vf[1:], strict=False)), "video dts not increasing"
    assert all(a.dts <= b.dts for a, b in zip(af, af[1:], strict=False)), "audio dts going back"
    for f in vf[:50]:
        nals = avcc_to_nals(f.payload)
        if codec is Codec.H264:
            assert nals and all(1 <= n[0] & 0x1F <= 12 for n in nals)
        else:
            assert nals and all((n[0] >> 1) & 0x3F < 41 for n in nals)
        assert f.keyframe == any(h264.nal_type(n) == h264.NAL_IDR if codec is Codec.H264
                                 else h265.is_irap(h265.nal_type(n)) for n in nals)
    span = video_span_ms(sink)
    assert span >= min_span_ms, f"only {span} ms of video"
    rate = (len(vf) - 1) * 1000 / span
    assert abs(rate - fps) < 1.5, f"video at {rate:.2f} frames/s"
    arate = (len(af) - 1) * 1000 / (af[-1].dts - af[0].dts)
    assert abs(arate - sample_rate / 1024) < 3, f"audio at {arate:.2f} frames/s"
