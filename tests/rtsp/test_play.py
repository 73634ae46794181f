"""Play (rtsp/play.py): DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN over TCP
interleaved and UDP, RTP-Info and sender reports, the play gate and the stream
wait, on StringTransport, task.Clock and a fake UDP reactor.
"""

from __future__ import annotations

import re

import pytest
from twisted.internet import defer
from twisted.logger import LogEvent, LogLevel

from mediasrv.codec import h264, rtp
from mediasrv.codec.bits import avcc_to_nals
from mediasrv.codec.sdp import parse_sdp
from mediasrv.core.frames import Codec, TrackKind
from mediasrv.core.sessions import Role
from mediasrv.hooks.model import AccessRequest, Decision
from mediasrv.rtsp import media
from tests.rtsp.support import (
    AUDIO_TRACK,
    FRAMES,
    URL,
    VIDEO_TRACK,
    Harness,
    TlsLikeTransport,
    fresh,
    headers,
    mediasrv_lines,
    ours,
    play_tcp,
    rtp_on,
)


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
    for c in (a, b):
        c.pump()
        c.frames.clear()
    frame = fresh(FRAMES[40], 10_000)
    stream.write(frame)
    a.pump()
    b.pump()
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


def test_setup_without_transport_and_unknown_track(h: Harness) -> None:
    h.publish()
    c = h.client()
    c.request("DESCRIBE", URL)
    assert c.request("SETUP", URL + "/trackID=0").status == 461  # type: ignore[union-attr]
    r = c.request("SETUP", URL + "/trackID=7", [("Transport", "RTP/AVP/TCP;interleaved=0-1")])
    assert r is not None and r.status == 404
