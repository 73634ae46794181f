"""RtspServerProtocol on StringTransport, task.Clock and a fake UDP reactor.

Play (TCP interleaved and UDP), publish (ANNOUNCE/SETUP/RECORD), Digest/Basic
auth through fake ``core.rtsp_realm`` / ``core.rtsp_auth``, keep-alive and bad
input.  No sockets, no reactor; the ``clock`` fixture fails a test that leaves
a delayed call behind.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from mediasrv.codec import h264, rtp
from mediasrv.codec.bits import avcc_to_nals
from mediasrv.codec.sdp import parse_sdp
from mediasrv.core.frames import Codec, MediaFrame, TrackKind
from mediasrv.core.sessions import Role
from mediasrv.hooks.model import AccessRequest, Action
from mediasrv.rtsp import media
from mediasrv.rtsp.muxer import TrackMuxer
from tests.rtsp.support import (
    AUDIO_TRACK,
    FRAMES,
    VIDEO_TRACK,
    Harness,
    RtspTestClient,
    TlsLikeTransport,
    fresh,
    headers,
)

URL = "rtsp://127.0.0.1:8554/live/test"


@pytest.fixture
def h(clock: Clock) -> Iterator[Harness]:
    harness = Harness(clock)
    yield harness
    harness.close_all()


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


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
            if d.active() and ("Rtsp" in repr(d) or "Deferred" in repr(d) or "expire" in repr(d))]


def rtp_on(c: RtspTestClient, channel: int) -> list[rtp.RtpPacket]:
    c.pump()
    return [rtp.RtpPacket.parse(f.data) for f in c.frames if f.channel == channel]


# -- basics -------------------------------------------------------------------------------------------


def test_options(h: Harness) -> None:
    c = h.client()
    resp = c.request("OPTIONS", URL)
    assert resp is not None and resp.status == 200
    hd = headers(resp)
    assert hd["cseq"] == "1" and hd["server"].startswith("mediasrv/")
    assert hd["public"] == "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, PAUSE, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
    assert "session" not in hd


def test_unknown_method_is_501(h: Harness) -> None:
    c = h.client()
    resp = c.request("REDIRECT", URL)
    assert resp is not None and resp.status == 501 and not c.lost


def test_request_without_cseq_gets_400_and_is_closed(h: Harness, log_events: list[LogEvent]) -> None:
    c = h.client()
    c.send(c.raw("OPTIONS", URL, cseq=False))
    c.pump()
    assert c.responses[-1].status == 400 and c.lost
    assert len(mediasrv_lines(log_events, LogLevel.warn)) == 1
    h.clock.advance(5)


def test_huge_header_gets_400_and_is_closed(h: Harness, log_events: list[LogEvent]) -> None:
    c = h.client()
    c.send(b"DESCRIBE " + URL.encode() + b" RTSP/1.0\r\nCSeq: 1\r\nX-Junk: " + b"a" * 20000)
    c.pump()
    assert c.responses[-1].status == 400 and c.lost
    (line,) = mediasrv_lines(log_events, LogLevel.warn)
    assert "header block exceeds" in line
    h.clock.advance(5)


def test_require_is_refused_with_551(h: Harness) -> None:
    c = h.client()
    resp = c.request("OPTIONS", URL, [("Require", "implicit-play")])
    assert resp is not None and resp.status == 551 and headers(resp)["unsupported"] == "implicit-play"


def test_tls_failure_is_one_line(h: Harness, log_events: list[LogEvent]) -> None:
    """Garbage on the RTSPS port never reaches dataReceived: TLS refuses it and
    the connection is lost with an SSL error, which gets its line (as RTMPS)."""
    c = h.client()
    c.lost = True
    c.proto.connectionLost(Failure(SSL.Error([("SSL routines", "", "wrong version number")])))
    (line,) = mediasrv_lines(log_events, LogLevel.warn)
    assert "TLS failed" in line and "wrong version number" in line and c.proto.session.id in line
    assert len(h.core.sessions) == 0


# -- play -------------------------------------------------------------------------------------------


def test_describe_sdp_and_headers(h: Harness) -> None:
    h.publish()
    c = h.client()
    resp = c.request("DESCRIBE", URL + "?token=abc", [("Accept", "application/sdp")], byte_by_byte=True)
    assert resp is not None and resp.status == 200
    hd = headers(resp)
    assert hd["content-base"] == URL + "/" and hd["content-type"] == "application/sdp"
    sd = parse_sdp(resp.body)
    assert sd.control == "*"
    video, audio = sd.media
    assert video.rtpmap(96) == ("H264", 90000, 0) and video.control == "trackID=0"
    fmtp = video.fmtp(96)
    cfg = h264.parse_avc_config(VIDEO_TRACK.config)
    assert fmtp["packetization-mode"] == "1"
    assert fmtp["profile-level-id"] == cfg.sps[0][1:4].hex().upper()
    assert [media._b64decode(x) for x in fmtp["sprop-parameter-sets"].split(",")] == cfg.sps + cfg.pps
    assert audio.rtpmap(97) == ("MPEG4-GENERIC", 44100, AUDIO_TRACK.channels)
    afmtp = audio.fmtp(97)
    assert afmtp["config"] == AUDIO_TRACK.config.hex().upper() and afmtp["mode"] == "AAC-hbr"
    assert afmtp["sizelength"] == "13"
    s = c.proto.session
    assert (s.role, s.app, s.stream, s.params) == (Role.PLAYER, "live", "test", "token=abc")


def test_play_tcp_starts_at_keyframe_with_parameter_sets_and_rtp_info(h: Harness) -> None:
    h.publish()
    c = h.client()
    r = play_tcp(c)
    s1, s2 = r["setup"]
    t1 = headers(s1)["transport"]
    assert re.fullmatch(r"RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=[0-9A-F]{8}", t1), t1
    session = headers(s1)["session"]
    assert re.fullmatch(r"[0-9A-F]{16};timeout=15", session)
    assert headers(s2)["session"] == session
    play = headers(r["play"])
    assert play["range"] == "npt=0.000-"
    info = {}
    for part in play["rtp-info"].split(","):
        fields = dict(f.split("=", 1) for f in part.split(";"))
        info[fields["url"]] = (int(fields["seq"]), int(fields["rtptime"]))
    video = rtp_on(c, 0)
    audio = rtp_on(c, 2)
    assert video and audio
    assert info[URL + "/trackID=0"] == (video[0].sequence, video[0].timestamp)
    assert info[URL + "/trackID=1"] == (audio[0].sequence, audio[0].timestamp)
    assert f"{video[0].ssrc:08X}" == t1.rsplit("=", 1)[1]
    # sequence numbers are contiguous; the first access unit is SPS, PPS, IDR
    assert [p.sequence for p in video] == [(video[0].sequence + i) & 0xFFFF for i in range(len(video))]
    d = rtp.H264Depacketizer()
    aus = [au for p in video for au in d.feed(p)]
    cfg = h264.parse_avc_config(VIDEO_TRACK.config)
    assert aus[0].nals[:2] == [cfg.sps[0], cfg.pps[0]] and any(n[0] & 0x1F == 5 for n in aus[0].nals)
    assert aus[0].nals[2:] == avcc_to_nals(FRAMES[0].payload)
    # 90 kHz timestamps follow the frames' pts
    vframes = [f for f in FRAMES if f.codec is Codec.H264]
    assert (aus[1].timestamp - aus[0].timestamp) % (1 << 32) == 90 * (vframes[1].pts - vframes[0].pts)
    assert c.proto.session.role is Role.PLAYER
    # a sender report for each track comes before the first RTP packet (receivers time
    # packets with it from the start); its NTP ↔ RTP pair maps "now" onto the newest frame
    assert [f.channel for f in c.frames[:2]] == [1, 3]
    sr = rtp.parse_rtcp(c.frames[0].data)[0]
    assert isinstance(sr, rtp.SenderReport) and sr.ssrc == video[0].ssrc and sr.packet_count == 0
    newest = FRAMES[29].pts  # the last frame written: the newest in the GOP cache
    assert sr.rtp_timestamp == (video[0].timestamp + 90 * (newest - FRAMES[0].pts)) & 0xFFFFFFFF
    assert rtp.unix_from_ntp(sr.ntp) == pytest.approx(h.clock.seconds())
    h.clock.advance(5)
    c.pump()
    sr2 = rtp.parse_rtcp(c.frames[-2].data)[0]
    assert isinstance(sr2, rtp.SenderReport) and sr2.packet_count == len(video)
    assert sr2.rtp_timestamp - sr.rtp_timestamp == 5 * 90000  # one fixed mapping: 5 s later, 5 s of RTP clock


def test_live_frames_are_shared_bytes_between_players(h: Harness) -> None:
    stream = h.publish()
    a, b = h.client(), h.client()
    play_tcp(a)
    play_tcp(b)
    a.pump(), b.pump()
    a.frames.clear(), b.frames.clear()
    frame = fresh(FRAMES[40], 10_000)
    stream.write(frame)
    a.pump(), b.pump()
    assert a.frames and [(f.channel, f.data) for f in a.frames] == [(f.channel, f.data) for f in b.frames]
    keys = [k for k in frame.muxed if k.startswith("rtp:")]
    assert len(keys) == 2  # the packets and their interleaved form on one channel: built once for both


def test_frames_keep_their_rtp_timestamp_cadence(h: Harness) -> None:
    stream = h.publish(frames=1)
    c = h.client()
    play_tcp(c)
    for f in FRAMES[1:60]:
        stream.write(fresh(f))
    video = rtp_on(c, 0)
    audio = rtp_on(c, 2)
    vts = sorted({p.timestamp for p in video})
    assert vts[1] - vts[0] == 90 * (sorted({f.pts for f in FRAMES[:60] if f.codec is Codec.H264})[1]
                                    - sorted({f.pts for f in FRAMES[:60] if f.codec is Codec.H264})[0])
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in zip(audio, audio[1:], strict=False)}
    assert steps == {1024}  # AAC timestamps snap to whole frames despite ms rounding


def test_udp_play(h: Harness) -> None:
    stream = h.publish()
    c = h.client()
    d = c.request("DESCRIBE", URL)
    assert d is not None and d.status == 200
    s = c.request("SETUP", URL + "/trackID=0", [("Transport", "RTP/AVP;unicast;client_port=6000-6001")])
    assert s is not None and s.status == 200
    t = headers(s)["transport"]
    m = re.fullmatch(r"RTP/AVP;unicast;client_port=6000-6001;server_port=(\d+)-(\d+);ssrc=([0-9A-F]{8})", t)
    assert m, t
    rtp_port, rtcp_port = int(m.group(1)), int(m.group(2))
    assert rtp_port % 2 == 0 and rtcp_port == rtp_port + 1
    p = c.request("PLAY", URL)
    assert p is not None and p.status == 200
    port = h.udp.ports[rtp_port]
    assert port.sent and {addr for _, addr in port.sent} == {("127.0.0.1", 6000)}
    first = rtp.RtpPacket.parse(port.sent[0][0])
    assert f"{first.ssrc:08X}" == m.group(3) and first.payload_type == 96
    assert h.udp.ports[rtcp_port].sent[0][1] == ("127.0.0.1", 6001)  # the first sender report
    # no audio was set up: nothing but video goes out
    assert all(rtp.RtpPacket.parse(d).payload_type == 96 for d, _ in port.sent)
    assert c.proto.session.bytes_out > sum(len(d) for d, _ in port.sent)
    stream.write(fresh(FRAMES[40], 10_000))
    assert len(port.sent) > 1
    t = c.request("TEARDOWN", URL)
    assert t is not None and t.status == 200 and headers(t)["session"] == c.session
    assert not h.udp.ports and not stream.readers and not c.lost  # the client closes the connection
    c.interleave(1, rtp.build_receiver_report(5))  # RTCP still in flight: ignored
    assert c.request("OPTIONS", URL) is not None and not c.lost
    h.clock.advance(16)  # and an idle connection without a session goes after rtsp.handshakeSecond
    c.pump()
    assert c.lost


def test_udp_session_times_out_without_keepalive(h: Harness, log_events: list[LogEvent]) -> None:
    h.publish()
    c = h.client()
    c.request("DESCRIBE", URL)
    c.request("SETUP", URL + "/trackID=0", [("Transport", "RTP/AVP;unicast;client_port=6000-6001")])
    c.request("PLAY", URL)
    rtcp_port = max(h.udp.ports)
    for _ in range(6):  # receiver reports every 5 s keep it alive
        h.clock.advance(5)
        h.udp.ports[rtcp_port].deliver(rtp.build_receiver_report(1), ("127.0.0.1", 6001))
    h.clock.advance(5)
    c.request("GET_PARAMETER", URL)  # and so do requests
    assert not c.lost
    h.clock.advance(10)
    h.udp.ports[rtcp_port].deliver(rtp.build_receiver_report(1), ("10.9.9.9", 6001))  # not the client: ignored
    h.clock.advance(10)
    c.pump()
    assert c.lost
    (line,) = mediasrv_lines(log_events, LogLevel.warn)
    assert "timed out" in line and "rtsp.keepAliveSecond" in line


def test_tcp_player_needs_no_keepalive(h: Harness) -> None:
    h.publish()
    c = h.client()
    play_tcp(c)
    h.clock.advance(120)
    c.pump()
    assert not c.lost


def test_idle_connection_times_out(h: Harness) -> None:
    c = h.client()
    c.request("OPTIONS", URL)
    h.clock.advance(16)
    c.pump()
    assert c.lost


def test_pause_then_play_resumes_at_a_keyframe(h: Harness) -> None:
    stream = h.publish()
    c = h.client()
    play_tcp(c)
    assert c.request("PAUSE", URL + "/") is not None
    c.frames.clear()
    stream.write(fresh(FRAMES[40], 10_000))
    assert not rtp_on(c, 0)
    p = c.request("PLAY", URL + "/")
    assert p is not None and p.status == 200
    assert rtp_on(c, 0)


def test_pause_and_play_again_over_tls(h: Harness) -> None:
    """A TLS transport keeps its producer out of sight (``_producer``): PAUSE
    must still unregister the player, or the next PLAY's registration fails."""
    h.publish()
    c = h.client(TlsLikeTransport)
    play_tcp(c)
    assert c.request("PAUSE", URL + "/") is not None
    assert c.transport._producer is None  # type: ignore[attr-defined]
    c.pump()
    c.frames.clear()
    p = c.request("PLAY", URL + "/")
    assert p is not None and p.status == 200
    assert rtp_on(c, 0) and c.proto.play is not None
    assert c.transport._producer is c.proto.play.player  # type: ignore[attr-defined]


def test_stream_end_sends_bye_and_closes(h: Harness) -> None:
    stream = h.publish()
    c = h.client()
    play_tcp(c)
    h.core.registry.close_stream(stream.key, "unpublished")
    c.pump()
    byes = [item for f in c.frames if f.channel in (1, 3) for item in rtp.parse_rtcp(f.data)
            if isinstance(item, rtp.Bye)]
    assert len(byes) == 2 and c.lost
    h.clock.advance(5)


def test_describe_of_a_missing_stream_waits_then_404(h: Harness) -> None:
    h.configure("general.maxStreamWaitMS=3000")
    c = h.client()
    assert c.request("DESCRIBE", URL) is None  # waiting for the stream
    c.send(c.raw("OPTIONS", URL))  # pipelined: answered after the DESCRIBE
    c.pump()
    assert not c.responses
    h.clock.advance(3)
    c.pump()
    assert [r.status for r in c.responses] == [404, 200]
    assert [headers(r)["cseq"] for r in c.responses] == ["1", "2"]


def test_describe_waits_for_a_stream_that_appears(h: Harness) -> None:
    c = h.client()
    assert c.request("DESCRIBE", URL) is None
    h.publish()
    assert c.last().status == 200


def test_client_leaving_cancels_the_wait(h: Harness) -> None:
    c = h.client()
    c.request("DESCRIBE", URL)
    c.drop()
    assert not ours(h)


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


def test_setup_without_transport_and_unknown_track(h: Harness) -> None:
    h.publish()
    c = h.client()
    c.request("DESCRIBE", URL)
    assert c.request("SETUP", URL + "/trackID=0").status == 461  # type: ignore[union-attr]
    r = c.request("SETUP", URL + "/trackID=7", [("Transport", "RTP/AVP/TCP;interleaved=0-1")])
    assert r is not None and r.status == 404


def test_play_before_setup_is_455_and_wrong_session_454(h: Harness) -> None:
    h.publish()
    c = h.client()
    c.request("DESCRIBE", URL)
    assert c.request("PLAY", URL).status == 455  # type: ignore[union-attr]
    c.request("SETUP", URL + "/trackID=0", [("Transport", "RTP/AVP/TCP;interleaved=0-1")])
    r = c.request("PLAY", URL, [("Session", "NOTMINE")])
    assert r is not None and r.status == 454


def test_interleaved_data_on_an_unknown_channel_closes(h: Harness, log_events: list[LogEvent]) -> None:
    h.publish()
    c = h.client()
    play_tcp(c)
    c.interleave(1, rtp.build_receiver_report(5))  # a receiver report: fine
    c.pump()
    assert not c.lost
    c.interleave(9, b"junk")
    c.pump()
    assert c.lost
    (line,) = mediasrv_lines(log_events, LogLevel.warn)
    assert "channel 9" in line


def test_setup_without_describe_is_gated_too(h: Harness) -> None:
    h.publish()
    c = h.client()
    s = c.request("SETUP", URL + "/trackID=0", [("Transport", "RTP/AVP/TCP;interleaved=0-1")])
    assert s is not None and s.status == 200
    p = c.request("PLAY", URL)
    assert p is not None and p.status == 200 and rtp_on(c, 0)


def test_play_denied_by_the_gate_is_403(h: Harness) -> None:
    h.publish()
    from mediasrv.hooks.model import Decision

    class Deny:
        def authorize(self, request: AccessRequest) -> defer.Deferred[Decision]:
            return defer.succeed(Decision(False, "no token"))

    h.core.gate = Deny()
    c = h.client()
    r = c.request("DESCRIBE", URL)
    assert r is not None and r.status == 403 and b"no token" in r.body


def test_kick(h: Harness) -> None:
    h.publish()
    c = h.client()
    play_tcp(c)
    assert h.core.sessions.kick(c.proto.session.id)
    c.pump()
    assert c.lost and c.proto.play is not None and c.proto.play.player is None


# -- publish -----------------------------------------------------------------------------------------


def announce_sdp() -> bytes:
    video = media.media_for_track(VIDEO_TRACK, "streamid=0")
    audio = media.media_for_track(AUDIO_TRACK, "streamid=1")
    sd = parse_sdp("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nt=0 0\r\n")
    sd.media += [video, audio]
    return sd.serialize().encode()


def record_tcp(c: RtspTestClient, url: str = "rtsp://127.0.0.1:8554/live/pub") -> None:
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
    play_tcp(c, "rtsp://127.0.0.1:8554/live/pub")
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
    a = c.request("ANNOUNCE", "rtsp://127.0.0.1:8554/live/pub", [("Content-Type", "application/sdp")], announce_sdp())
    assert a is not None and a.status == 406


@pytest.mark.parametrize("body, ctype, status", [
    (b"v=0\r\nm=audio 0 RTP/AVP 0\r\n", "application/sdp", 415),
    (b"not sdp", "application/sdp", 400),
    (b"v=0\r\n", "text/plain", 415),
    (b"v=0\r\n" + b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n" * 9, "application/sdp", 400),
])
def test_bad_announce(h: Harness, body: bytes, ctype: str, status: int) -> None:
    c = h.client()
    a = c.request("ANNOUNCE", "rtsp://127.0.0.1:8554/live/pub", [("Content-Type", ctype)], body)
    assert a is not None and a.status == status


def test_publish_over_udp(h: Harness) -> None:
    c = h.client()
    url = "rtsp://127.0.0.1:8554/live/pub"
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
    c.request("TEARDOWN", "rtsp://127.0.0.1:8554/live/pub")
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


# -- auth -----------------------------------------------------------------------------------------------


class FakeAuth:
    def __init__(self, realm: str, password: str, encrypted: bool = False) -> None:
        self.realm = realm
        self.password = password
        self.encrypted = encrypted
        self.realm_calls: list[AccessRequest] = []
        self.auth_calls: list[tuple[str, str, bool]] = []

    def rtsp_realm(self, request: AccessRequest) -> defer.Deferred[str]:
        self.realm_calls.append(request)
        return defer.succeed(self.realm)

    def rtsp_auth(self, request: AccessRequest, user: str, realm: str, must_no_encrypt: bool
                  ) -> defer.Deferred[tuple[bool, str]]:
        self.auth_calls.append((user, realm, must_no_encrypt))
        if self.encrypted and not must_no_encrypt:
            return defer.succeed((True, hashlib.md5(f"{user}:{realm}:{self.password}".encode()).hexdigest()))
        return defer.succeed((False, self.password))


def install(h: Harness, auth: FakeAuth) -> None:
    h.core.rtsp_realm = auth.rtsp_realm  # type: ignore[attr-defined]
    h.core.rtsp_auth = auth.rtsp_auth  # type: ignore[attr-defined]


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def digest_header(resp_401: Any, user: str, password: str, method: str = "DESCRIBE", uri: str = URL) -> str:
    challenge = headers(resp_401)["www-authenticate"]
    realm = re.search(r'realm="([^"]*)"', challenge).group(1)  # type: ignore[union-attr]
    nonce = re.search(r'nonce="([^"]*)"', challenge).group(1)  # type: ignore[union-attr]
    response = md5(f"{md5(f'{user}:{realm}:{password}')}:{nonce}:{md5(f'{method}:{uri}')}")
    return f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}"'


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_digest_auth(h: Harness, encrypted: bool, log_events: list[LogEvent]) -> None:
    h.publish()
    auth = FakeAuth("mediasrv", "s3cret", encrypted)
    install(h, auth)
    c = h.client()
    first = c.request("DESCRIBE", URL)
    assert first is not None and first.status == 401
    assert re.fullmatch(r'Digest realm="mediasrv", nonce="[0-9a-f]{32}"', headers(first)["www-authenticate"])
    assert not mediasrv_lines(log_events, LogLevel.info)  # the first challenge is routine
    # wrong password: 401 with a fresh nonce, after a delay
    assert c.request("DESCRIBE", URL, [("Authorization", digest_header(first, "alice", "wrong"))]) is None
    h.clock.advance(2)
    second = c.last()
    assert second.status == 401 and headers(second)["www-authenticate"] != headers(first)["www-authenticate"]
    assert auth.auth_calls == [("alice", "mediasrv", False)]
    assert c.proto.auth.failures == 1
    (line,) = mediasrv_lines(log_events, LogLevel.info)
    assert "401" in line and "wrong credentials for user 'alice'" in line
    # the right one
    ok = c.request("DESCRIBE", URL, [("Authorization", digest_header(second, "alice", "s3cret"))])
    assert ok is not None and ok.status == 200
    assert auth.realm_calls[0].action is Action.PLAY and auth.realm_calls[0].schema == "rtsp"


def test_stale_nonce_and_realm_mismatch_fail(h: Harness) -> None:
    h.publish()
    install(h, FakeAuth("mediasrv", "pw"))
    c = h.client()
    first = c.request("DESCRIBE", URL)
    other = h.client()
    foreign = other.request("DESCRIBE", URL)  # a nonce issued on another connection
    assert c.request("DESCRIBE", URL, [("Authorization", digest_header(foreign, "u", "pw"))]) is None
    h.clock.advance(2)
    assert c.last().status == 401
    bad_realm = digest_header(first, "u", "pw").replace('realm="mediasrv"', 'realm="other"')
    c.request("DESCRIBE", URL, [("Authorization", bad_realm)])
    h.clock.advance(2)
    assert c.last().status == 401


def test_basic_auth_only_when_enabled(h: Harness) -> None:
    import base64

    h.configure("rtsp.authBasic=1")
    h.publish()
    auth = FakeAuth("mediasrv", "pw", encrypted=True)
    install(h, auth)
    c = h.client()
    first = c.request("DESCRIBE", URL)
    assert first is not None and first.headers.get_all("WWW-Authenticate")[1] == 'Basic realm="mediasrv"'
    basic = "Basic " + base64.b64encode(b"bob:pw").decode()
    ok = c.request("DESCRIBE", URL, [("Authorization", basic)])
    assert ok is not None and ok.status == 200
    assert auth.auth_calls == [("bob", "mediasrv", True)]  # must_no_encrypt: Basic needs the plaintext


def test_basic_auth_refused_when_disabled(h: Harness) -> None:
    import base64

    h.publish()
    install(h, FakeAuth("mediasrv", "pw"))
    c = h.client()
    c.request("DESCRIBE", URL)
    assert c.request("DESCRIBE", URL, [("Authorization", "Basic " + base64.b64encode(b"bob:pw").decode())]) is None
    h.clock.advance(2)
    assert c.last().status == 401


def test_empty_realm_uses_the_play_gate(h: Harness) -> None:
    h.publish()
    auth = FakeAuth("", "pw")
    install(h, auth)
    c = h.client()
    r = c.request("DESCRIBE", URL)
    assert r is not None and r.status == 200 and auth.realm_calls and not auth.auth_calls


def test_leaving_during_the_auth_delay_cancels_it(h: Harness) -> None:
    h.publish()
    install(h, FakeAuth("mediasrv", "pw"))
    c = h.client()
    first = c.request("DESCRIBE", URL)
    c.request("DESCRIBE", URL, [("Authorization", digest_header(first, "u", "bad"))])
    assert ours(h)
    c.drop()
    assert not ours(h)


def test_enable_rtsp_0_keeps_a_stream_off_rtsp(h: Harness) -> None:
    stream = h.publish()
    stream.options["enable_rtsp"] = "0"
    c = h.client()
    r = c.request("DESCRIBE", URL)
    assert r is not None and r.status == 404 and b"enable_rtsp=0" in r.body
    assert "rtsp" in h.core.schemas


def test_setup_urls_from_clients_that_ignore_content_base(h: Harness) -> None:
    h.publish()
    c = h.client()
    assert c.request("DESCRIBE", URL + "?token=abc").status == 200  # type: ignore[union-attr]
    for i in range(2):
        s = c.request("SETUP", f"{URL}?token=abc/trackID={i}",
                      [("Transport", f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}")])
        assert s is not None and s.status == 200
    assert set(c.proto.play.tracks if c.proto.play else ()) == {TrackKind.VIDEO, TrackKind.AUDIO}
