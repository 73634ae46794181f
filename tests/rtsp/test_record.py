"""Record (rtsp/record.py): ANNOUNCE, SETUP, RECORD and ingest over TCP
interleaved and UDP, on StringTransport, task.Clock and a fake UDP reactor.
"""

from __future__ import annotations

import re

import pytest
from twisted.logger import LogEvent, LogLevel

from mediasrv.codec.bits import avcc_to_nals
from mediasrv.core.frames import Codec, MediaFrame
from mediasrv.core.sessions import Role
from tests.rtsp.support import (
    AUDIO_TRACK,
    FRAMES,
    PUB_URL,
    VIDEO_TRACK,
    Harness,
    announce_sdp,
    headers,
    mediasrv_lines,
    play_tcp,
    record_tcp,
    rtp_of,
    rtp_on,
)


def test_publish_over_tcp_writes_frames(h: Harness) -> None:
    c = h.client()
    record_tcp(c)
    stream = h.core.registry._streams[h.core.registry.key("", "live", "pub")]
    assert stream.video == VIDEO_TRACK and stream.audio == AUDIO_TRACK and not stream.ready
    assert c.proto.session.role is Role.PUBLISHER
    got: list[MediaFrame] = []
    from tests.core.test_core import RecordingReader

    for channel, packet in rtp_of(FRAMES[:50]):
        c.interleave(channel, packet)
        if stream.ready and not got:
            reader = RecordingReader(10**9)
            stream.add_reader(reader)
            got = reader.frames
    reader_frames = got
    assert stream.ready and not c.lost
    videos = [f for f in reader_frames if f.codec is Codec.H264]
    sent_videos = [f for f in FRAMES[:50] if f.codec is Codec.H264]
    assert videos[0].keyframe and len(videos) == len(sent_videos)
    assert [f.keyframe for f in videos] == [f.keyframe for f in sent_videos]

    def without_parameter_sets(payload: bytes) -> list[bytes]:
        return [n for n in avcc_to_nals(payload) if n[0] & 0x1F not in (7, 8)]

    # the parameter sets the muxer puts ahead of keyframes come through in band; the rest is unchanged
    assert [without_parameter_sets(f.payload) for f in videos] == [avcc_to_nals(f.payload) for f in sent_videos]
    # timestamps keep their spacing (one origin for the session)
    assert [f.pts - videos[0].pts for f in videos] == [f.pts - sent_videos[0].pts for f in sent_videos[: len(videos)]]
    assert all(f.dts <= f.pts for f in videos) and all(a.dts < b.dts for a, b in zip(videos, videos[1:], strict=False))
    audios = [f for f in reader_frames if f.codec is Codec.AAC]
    assert audios and all(f.payload for f in audios)


def test_publish_then_play_over_rtsp(h: Harness) -> None:
    pub = h.client()
    record_tcp(pub)
    for channel, packet in rtp_of(FRAMES[:30]):
        pub.interleave(channel, packet)
    c = h.client()
    play_tcp(c, PUB_URL)
    assert rtp_on(c, 0) and rtp_on(c, 2)


def test_publish_garbage_rtp_closes(h: Harness, log_events: list[LogEvent]) -> None:
    c = h.client()
    record_tcp(c)
    c.interleave(0, b"\x80\x60\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x1e")  # reserved NAL type 30
    c.pump()
    assert c.lost
    (line,) = mediasrv_lines(log_events, LogLevel.warn)
    assert "bad RTP on track 0" in line and "reserved NAL unit type 30" in line


def test_publish_busy_is_406(h: Harness) -> None:
    h.publish("pub")
    c = h.client()
    a = c.request("ANNOUNCE", PUB_URL, [("Content-Type", "application/sdp")], announce_sdp())
    assert a is not None and a.status == 406


@pytest.mark.parametrize("body, ctype, status", [
    (b"v=0\r\nm=audio 0 RTP/AVP 0\r\n", "application/sdp", 415),
    (b"not sdp", "application/sdp", 400),
    (b"v=0\r\n", "text/plain", 415),
    (b"v=0\r\n" + b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n" * 9, "application/sdp", 400),
])
def test_bad_announce(h: Harness, body: bytes, ctype: str, status: int) -> None:
    c = h.client()
    a = c.request("ANNOUNCE", PUB_URL, [("Content-Type", ctype)], body)
    assert a is not None and a.status == status


def test_publish_over_udp(h: Harness) -> None:
    c = h.client()
    url = PUB_URL
    c.request("ANNOUNCE", url, [("Content-Type", "application/sdp")], announce_sdp())
    ports = []
    for i in range(2):
        s = c.request("SETUP", f"{url}/streamid={i}",
                      [("Transport", f"RTP/AVP/UDP;unicast;client_port={7000 + 2 * i}-{7001 + 2 * i};mode=record")])
        assert s is not None and s.status == 200
        m = re.search(r"server_port=(\d+)-(\d+)", headers(s)["transport"])
        assert m
        ports.append(int(m.group(1)))
    c.request("RECORD", url)
    for channel, packet in rtp_of(FRAMES[:30]):
        h.udp.ports[ports[channel // 2]].deliver(packet, ("127.0.0.1", 7000))
    h.udp.ports[ports[0]].deliver(b"garbage", ("127.0.0.1", 7000))  # dropped, logged, not fatal
    stream = h.core.registry.find(h.core.registry.key("", "live", "pub"))
    assert stream is not None and stream.frames_in > 10 and not c.lost


def test_teardown_of_a_publisher_unpublishes(h: Harness) -> None:
    c = h.client()
    record_tcp(c)
    for channel, packet in rtp_of(FRAMES[:10]):
        c.interleave(channel, packet)
    c.request("TEARDOWN", PUB_URL)
    assert h.core.registry.find(h.core.registry.key("", "live", "pub")) is None
    # the connection may start over: a new ANNOUNCE on it publishes again
    c.session = ""
    record_tcp(c)
    assert not c.lost


def test_publisher_times_out_without_data(h: Harness) -> None:
    c = h.client()
    record_tcp(c)
    h.clock.advance(16)
    c.pump()
    assert c.lost
    h.clock.advance(20)  # the stream's continue_push grace
