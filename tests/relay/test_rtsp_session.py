"""The sans-IO RTSP client against canned server answers (401 Digest/Basic challenges, SDP, Transport),
fed whole and one byte at a time, and RTP built from the fixture frames."""

from __future__ import annotations

from typing import Any

import pytest

from mediasrv.codec import rtp
from mediasrv.codec.bits import avcc_to_nals
from mediasrv.core.frames import MediaFrame, TrackKind
from mediasrv.relay.errors import AuthFailed, ProtocolViolation, Refused, StreamNotFound, UnsupportedMedia
from mediasrv.relay.rtsp_session import (
    Described,
    Ended,
    Notice,
    Playing,
    RtspClientSession,
    RtspEvent,
    RtspTransport,
    control_url,
)
from mediasrv.relay.url import RelayUrl
from mediasrv.rtsp import digest, media
from mediasrv.rtsp.parser import RtspParser, RtspRequest, encode_interleaved, encode_response, parse_transport
from tests.relay.support import AUDIO_TRACK, FRAMES, VIDEO_TRACK, feed

BYTES = [False, True]
SDP = media.describe({TrackKind.VIDEO: VIDEO_TRACK, TrackKind.AUDIO: AUDIO_TRACK}, "127.0.0.1", 1).encode()


class Camera:
    """Plays the server: reads the client's requests, answers them."""

    def __init__(self, url: str = "rtsp://bob:hunter2@cam.local/live/cam?token=1",
                 transport: RtspTransport = RtspTransport.TCP, byte_at_a_time: bool = False) -> None:
        self.session = RtspClientSession(RelayUrl.parse(url), transport)
        self.parser = RtspParser()
        self.byte = byte_at_a_time
        self.now = 1000.0

    def requests(self) -> list[RtspRequest]:
        return [r for r in self.parser.feed(self.session.data_to_send()) if isinstance(r, RtspRequest)]

    def request(self) -> RtspRequest:
        reqs = self.requests()
        assert len(reqs) == 1, reqs
        return reqs[0]

    def send(self, data: bytes) -> list[RtspEvent]:
        return feed(lambda d: self.session.receive_data(d, self.now), data, self.byte)

    def reply(self, req: RtspRequest, status: int = 200, headers: list[tuple[str, str]] | None = None,
              body: bytes = b"") -> list[RtspEvent]:
        return self.send(encode_response(status, [("CSeq", req.cseq or "")] + (headers or []), body))

    def to_play(self, challenge: str | None = None) -> Playing:
        """OPTIONS, DESCRIBE (with a 401 first if ``challenge``), SETUPs, PLAY."""
        self.session.start()
        opts = self.request()
        assert opts.method == "OPTIONS"
        self.reply(opts, headers=[("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")])
        desc = self.request()
        assert desc.method == "DESCRIBE" and desc.header("Accept") == "application/sdp"
        if challenge is not None:
            self.reply(desc, 401, [("WWW-Authenticate", challenge)])
            desc = self.request()
            assert desc.method == "DESCRIBE" and desc.header("Authorization")
        events = self.reply(desc, headers=[("Content-Base", "rtsp://cam.local/live/cam/"),
                                           ("Content-Type", "application/sdp")], body=SDP)
        assert [type(e) for e in events] == [Described]
        described = events[0]
        assert isinstance(described, Described)
        ports = {m.index: (50000 + 2 * m.index, 50001 + 2 * m.index) for m in described.media}
        self.session.setup(ports if self.session.transport is RtspTransport.UDP else None)
        for i in range(len(described.media)):
            setup = self.request()
            assert setup.method == "SETUP"
            spec = parse_transport(setup.header("Transport") or "")[0]
            if spec.tcp:
                answer = f"RTP/AVP/TCP;unicast;interleaved={spec.interleaved[0]}-{spec.interleaved[1]}"  # type: ignore[index]
            else:
                answer = f"RTP/AVP;unicast;client_port={spec.client_port[0]}-{spec.client_port[1]};server_port={6000 + 2 * i}-{6001 + 2 * i}"  # type: ignore[index]
            self.reply(setup, headers=[("Session", "12345678;timeout=30"), ("Transport", answer)])
        play = self.request()
        assert play.method == "PLAY" and play.header("Session") == "12345678"
        events = self.reply(play, headers=[("Session", "12345678;timeout=30")])
        assert [type(e) for e in events] == [Playing]
        assert isinstance(events[0], Playing)
        return events[0]


def rtp_packets(frames: list[MediaFrame]) -> list[tuple[int, bytes]]:
    """(media index, RTP packet) for the frames, as our own RTSP server would send them."""
    out: list[tuple[int, bytes]] = []
    seq = [100, 200]
    for f in frames:
        if f.kind is TrackKind.VIDEO:
            index, payloads, ts = 0, rtp.packetize_h264(avcc_to_nals(f.payload)), f.pts * 90
        else:
            index, payloads, ts = 1, rtp.packetize_aac(f.payload), f.pts * 44100 // 1000
        for i, p in enumerate(payloads):
            out.append((index, rtp.build_rtp(96 + index, seq[index], 5000 + ts, 0x1234 + index, i == len(payloads) - 1,
                                             p)))
            seq[index] += 1
    return out


@pytest.mark.parametrize("byte_at_a_time", BYTES)
def test_digest_challenge_then_play_over_tcp(byte_at_a_time: bool) -> None:
    cam = Camera(byte_at_a_time=byte_at_a_time)
    cam.session.start()
    opts = cam.request()
    assert opts.uri == "rtsp://cam.local:554/live/cam?token=1" and opts.header("User-Agent")
    assert "hunter2" not in opts.uri and opts.header("Authorization") is None
    cam.reply(opts, headers=[("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")])
    desc = cam.request()
    assert cam.reply(desc, 401, [("WWW-Authenticate", 'Digest realm="cam", nonce="n0nce"'),
                                 ("WWW-Authenticate", 'Basic realm="cam"')]) == []
    retry = cam.request()
    assert retry.method == "DESCRIBE" and retry.uri == desc.uri
    creds = digest.parse_authorization(retry.header("Authorization") or "")
    assert isinstance(creds, digest.DigestCredentials) and creds.username == "bob" and creds.realm == "cam"
    assert digest.verify_digest(creds, "DESCRIBE", password="hunter2")
    events = cam.reply(retry, headers=[("Content-Base", "rtsp://cam.local/live/cam/")], body=SDP)
    assert [type(e) for e in events] == [Described]
    cam.session.setup()
    setups = []
    for _ in range(2):
        setup = cam.request()
        setups.append(setup)
        creds = digest.parse_authorization(setup.header("Authorization") or "")
        assert isinstance(creds, digest.DigestCredentials) and digest.verify_digest(creds, "SETUP", password="hunter2")
        spec = parse_transport(setup.header("Transport") or "")[0]
        cam.reply(setup, headers=[("Session", "ABCD;timeout=20"),
                                  ("Transport", f"RTP/AVP/TCP;unicast;interleaved={spec.interleaved[0] + 10}-"  # type: ignore[index]
                                                f"{spec.interleaved[1] + 10}")])  # type: ignore[index]
    assert [s.uri for s in setups] == ["rtsp://cam.local/live/cam/trackID=0", "rtsp://cam.local/live/cam/trackID=1"]
    assert [s.header("Transport") for s in setups] == ["RTP/AVP/TCP;unicast;interleaved=0-1",
                                                       "RTP/AVP/TCP;unicast;interleaved=2-3"]
    assert setups[1].header("Session") == "ABCD"
    play = cam.request()
    assert play.uri == "rtsp://cam.local/live/cam/" and play.header("Range") == "npt=0.000-"
    events = cam.reply(play, headers=[("Session", "ABCD;timeout=20")])
    assert events == [Playing(20.0, cam.session.transports)]
    assert cam.session.session_timeout == 20.0 and cam.session.channels == {
        10: (0, False), 11: (0, True), 12: (1, False), 13: (1, True)}
    assert cam.session.initial_tracks() == [VIDEO_TRACK, AUDIO_TRACK]

    frames = FRAMES[:40]
    data = b"".join(encode_interleaved(10 + 2 * index, pkt) for index, pkt in rtp_packets(frames))
    out = [e for e in cam.send(data) if isinstance(e, MediaFrame)]
    video = [f for f in out if f.kind is TrackKind.VIDEO]
    expected = [f for f in frames if f.kind is TrackKind.VIDEO]
    assert [f.payload for f in video] == [f.payload for f in expected][:len(video)]
    assert len(video) >= len(expected) - 3  # the last pictures wait in the reorder window
    assert video[0].keyframe and all(a.dts < b.dts for a, b in zip(video, video[1:], strict=False))
    audio = [f for f in out if f.kind is TrackKind.AUDIO]
    assert [f.payload for f in audio] == [f.payload for f in frames if f.kind is TrackKind.AUDIO][:len(audio)]
    assert audio

    cam.session.keepalive()
    ka = cam.request()
    assert (ka.method, ka.header("Session"), ka.uri) == ("GET_PARAMETER", "ABCD", "rtsp://cam.local/live/cam/")
    creds = digest.parse_authorization(ka.header("Authorization") or "")
    assert isinstance(creds, digest.DigestCredentials) and digest.verify_digest(creds, "GET_PARAMETER",
                                                                               password="hunter2")
    cam.reply(ka)
    cam.session.teardown()
    td = cam.request()
    assert (td.method, td.header("Session")) == ("TEARDOWN", "ABCD")


def test_wrong_password_is_an_auth_failure_not_a_loop() -> None:
    cam = Camera("rtsp://bob:wrong@cam.local/live/cam")
    cam.session.start()
    cam.reply(cam.request())
    cam.reply(cam.request(), 401, [("WWW-Authenticate", 'Digest realm="cam", nonce="1"')])
    retry = cam.request()
    with pytest.raises(AuthFailed, match="wrong user name or password") as e:
        cam.reply(retry, 401, [("WWW-Authenticate", 'Digest realm="cam", nonce="2"')])
    assert "rtsp://bob:***@cam.local:554/live/cam" in str(e.value)  # the password masked


def test_stale_nonce_is_retried_once_more() -> None:
    cam = Camera()
    cam.session.start()
    cam.reply(cam.request())
    cam.reply(cam.request(), 401, [("WWW-Authenticate", 'Digest realm="cam", nonce="1"')])
    cam.reply(cam.request(), 401, [("WWW-Authenticate", 'Digest realm="cam", nonce="2", stale=TRUE')])
    creds = digest.parse_authorization(cam.request().header("Authorization") or "")
    assert isinstance(creds, digest.DigestCredentials) and creds.nonce == "2"


def test_no_credentials_and_a_challenge() -> None:
    cam = Camera("rtsp://cam.local/live/cam")
    cam.session.start()
    cam.reply(cam.request())
    with pytest.raises(AuthFailed, match="carries no credentials"):
        cam.reply(cam.request(), 401, [("WWW-Authenticate", 'Digest realm="cam", nonce="1"')])


def test_basic_only_and_qop_auth() -> None:
    cam = Camera("rtsp://u:p@cam.local/live/cam")
    cam.session.start()
    cam.reply(cam.request())
    cam.reply(cam.request(), 401, [("WWW-Authenticate", 'Basic realm="cam"')])
    creds = digest.parse_authorization(cam.request().header("Authorization") or "")
    assert creds == digest.BasicCredentials("u", "p")

    cam = Camera("rtsp://u:p@cam.local/live/cam")
    cam.session.start()
    cam.reply(cam.request())
    cam.reply(cam.request(), 401, [("WWW-Authenticate", 'Digest realm="r", nonce="n", qop="auth,auth-int", '
                                                         'opaque="op", algorithm=MD5')])
    d = digest.parse_authorization(cam.request().header("Authorization") or "")
    assert isinstance(d, digest.DigestCredentials)
    assert (d.qop, d.nc, d.opaque) == ("auth", "00000001", "op") and d.cnonce
    assert digest.verify_digest(d, "DESCRIBE", password="p")


@pytest.mark.parametrize(("status", "error"), [(404, StreamNotFound), (403, Refused), (454, Refused),
                                               (302, Refused)])
def test_refusals_are_typed(status: int, error: type[Exception]) -> None:
    cam = Camera()
    cam.session.start()
    cam.reply(cam.request())
    with pytest.raises(error, match=f"answered {status}"):
        cam.reply(cam.request(), status, [("Location", "rtsp://elsewhere/x")])


def test_sdp_without_a_codec_we_carry() -> None:
    cam = Camera()
    cam.session.start()
    cam.reply(cam.request())
    sdp = b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\n"
    with pytest.raises(UnsupportedMedia, match="JPEG"):
        cam.reply(cam.request(), body=sdp)


@pytest.mark.parametrize(("base", "control", "url"), [
    ("rtsp://h/live/cam/", "trackID=1", "rtsp://h/live/cam/trackID=1"),
    ("rtsp://h/live/cam", "trackID=1", "rtsp://h/live/cam/trackID=1"),
    ("rtsp://h/live/cam?token=a", "trackID=1", "rtsp://h/live/cam/trackID=1?token=a"),
    ("rtsp://h/live/cam/?token=a", "streamid=0", "rtsp://h/live/cam/streamid=0?token=a"),
    ("rtsp://h/live/cam", "rtsp://other:8554/x/track1?t=1", "rtsp://other:8554/x/track1?t=1"),
    ("rtsp://h/live/cam", "*", "rtsp://h/live/cam"),
    ("rtsp://h/live/cam", None, "rtsp://h/live/cam"),
    ("rtsp://h/live/cam", "/abs/track", "rtsp://h/abs/track"),
])
def test_control_urls(base: str, control: str | None, url: str) -> None:
    assert control_url(base, control) == url


def test_udp_setup_and_datagrams() -> None:
    cam = Camera(transport=RtspTransport.UDP)
    playing = cam.to_play()
    assert {i: s.server_port for i, s in playing.transports.items()} == {0: (6000, 6001), 1: (6002, 6003)}
    frames: list[RtspEvent] = []
    for index, pkt in rtp_packets(FRAMES[:30]):
        frames += cam.session.rtp(index, pkt, cam.now)
    assert any(isinstance(e, MediaFrame) and e.kind is TrackKind.VIDEO and e.keyframe for e in frames)
    notices = cam.session.rtp(0, b"\x00garbage", cam.now) + cam.session.rtp(0, b"\x00garbage", cam.now)
    assert [type(e) for e in notices] == [Notice] and cam.session.bad_datagrams == 2
    # RTCP BYE on every track ends the stream
    assert cam.session.rtcp(0, rtp.build_bye(0x1234), cam.now) == []
    assert [type(e) for e in cam.session.rtcp(1, rtp.build_bye(0x1235), cam.now)] == [Ended]


def test_udp_needs_client_ports() -> None:
    cam = Camera(transport=RtspTransport.UDP)
    cam.session.start()
    cam.reply(cam.request())
    cam.reply(cam.request(), body=SDP)
    with pytest.raises(ValueError):
        cam.session.setup({})


def test_keepalive_falls_back_to_options() -> None:
    cam = Camera()
    cam.to_play()
    cam.session.keepalive()
    ka = cam.request()
    assert ka.method == "GET_PARAMETER"
    assert cam.reply(ka, 405) == []
    cam.session.keepalive()
    assert cam.request().method == "OPTIONS"


def test_public_without_get_parameter_means_options() -> None:
    cam = Camera("rtsp://cam.local/live/cam")
    cam.session.start()
    cam.reply(cam.request(), headers=[("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN")])
    assert cam.session._keepalive_method == "OPTIONS"


def test_server_requests_are_answered() -> None:
    cam = Camera()
    cam.to_play()
    cam.send(b"OPTIONS * RTSP/1.0\r\nCSeq: 9\r\n\r\nANNOUNCE rtsp://x RTSP/1.0\r\nCSeq: 10\r\n\r\n")
    answers = cam.session.data_to_send().decode()
    assert "RTSP/1.0 200 OK\r\nCSeq: 9" in answers and "RTSP/1.0 501 Not Implemented\r\nCSeq: 10" in answers


@pytest.mark.parametrize("data", [
    b"RTSP/1.0 200 OK\r\n" + b"X-Junk: " + b"a" * 20000,  # endless headers
    b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 999999999\r\n\r\n",  # a huge body
    b"RTSP/1.0 200 OK\r\nnot a header\r\n\r\n",
])
def test_garbage_and_unbounded_input_is_cut_off(data: bytes) -> None:
    cam = Camera()
    cam.session.start()
    cam.request()
    with pytest.raises(ProtocolViolation):
        cam.send(data)


def test_interleaved_data_on_an_unknown_channel() -> None:
    cam = Camera()
    cam.to_play()
    with pytest.raises(ProtocolViolation, match="channel 7"):
        cam.send(encode_interleaved(7, b"\x80" * 20))


def test_bad_rtp_over_tcp_is_fatal() -> None:
    cam = Camera()
    cam.to_play()
    with pytest.raises(ProtocolViolation, match="bad RTP on track 0"):
        cam.send(encode_interleaved(0, b"\x00" * 20))


def test_answer_with_an_unknown_cseq_is_a_notice() -> None:
    cam = Camera()
    cam.to_play()
    events: list[Any] = cam.send(b"RTSP/1.0 200 OK\r\nCSeq: 77\r\n\r\n")
    assert [type(e) for e in events] == [Notice]
