"""RTSP play interop: an RTMP-published ffmpeg stream played over RTSP by ffprobe/ffmpeg
(TCP and UDP), GStreamer's rtspsrc (TCP and UDP), and a replay of the request
sequence VLC's live555 client sends (UDP first, then its TCP fallback).

live555's sequence, as VLC 3 logs it (e.g. caprica/vlcj#362, media-kit/media-kit#1177,
bluenviron/mediamtx#2908): ``OPTIONS``; ``DESCRIBE`` with ``Accept: application/sdp``;
one ``SETUP`` per ``m=`` section on the track's ``a=control`` resolved against
``Content-Base``, ``Transport: RTP/AVP;unicast;client_port=<even>-<odd>`` (the
second one carrying ``Session``); ``PLAY`` on the aggregate (base) URL with
``Range: npt=0.000-``; RTCP receiver reports to the server's RTCP port;
``GET_PARAMETER`` keep-alives (used when ``Public`` lists it); ``TEARDOWN``.
When no UDP data arrives VLC tears down and starts again with
``RTP/AVP/TCP;unicast;interleaved=0-1`` / ``2-3``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from mediasrv.codec import rtp
from mediasrv.codec.sdp import parse_sdp
from mediasrv.rtsp.parser import InterleavedFrame, RtspParser, RtspResponse
from tests.support.clients import ffprobe_streams, needs_ffmpeg, start_publisher, stop
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

GST = shutil.which("gst-launch-1.0")
needs_gst = pytest.mark.skipif(not GST and not os.environ.get("CI"), reason="gst-launch-1.0 not installed (scripts/test.sh installs it)")
USER_AGENT = "LibVLC/3.0.18 (LIVE555 Streaming Media v2022.07.14)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("rtsp-play"), "general.maxStreamWaitMS=3000") as srv:
        yield srv


@pytest.fixture(scope="module")
def url(server: Server) -> Iterator[str]:
    proc = start_publisher(f"{server.rtmp}/live/rtsp")
    time.sleep(3)
    assert proc.poll() is None, stop(proc)
    yield f"{server.rtsp}/live/rtsp"
    stop(proc)


def _check_probe(streams: list[dict[str, object]]) -> None:
    by_type = {s["codec_type"]: s for s in streams}
    assert by_type["video"]["codec_name"] == "h264"
    assert (by_type["video"]["width"], by_type["video"]["height"]) == (1280, 720)
    assert by_type["audio"]["codec_name"] == "aac" and by_type["audio"]["sample_rate"] == "44100"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_ffprobe(url: str, transport: str) -> None:
    _check_probe(ffprobe_streams(url, extra=["-rtsp_transport", transport]))


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_ffmpeg_decodes_3s_without_errors(url: str, transport: str) -> None:
    video, audio, err = _decode(url, transport)
    assert err.strip() == "", err
    assert video >= 70, f"only {video} video frames"
    assert audio >= 120, f"only {audio} audio frames"


def _decode(url: str, transport: str, seconds: float = 3.0) -> tuple[int, int, str]:
    r = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-rtsp_transport", transport, "-i", url,
                        "-t", str(seconds), "-f", "framecrc", "-"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x.strip() and not x.startswith("#")]
    video = sum(1 for x in lines if x.split(",", 1)[0].strip() == "0")
    audio = sum(1 for x in lines if x.split(",", 1)[0].strip() == "1")
    return video, audio, r.stderr


def test_concurrent_players_get_monotonic_timestamps(url: str) -> None:
    """Four players at once (two per transport) remux 4 s without ffmpeg's
    "non monotonically increasing dts" complaint: the RTCP sender reports come
    before the first RTP packet and keep one NTP ↔ RTP mapping."""
    procs = [subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-rtsp_transport", t, "-i", url,
                               "-t", "4", "-c", "copy", "-f", "null", "-"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for t in ("tcp", "udp", "tcp", "udp")]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0 and err.strip() == "", err


@needs_gst
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_gstreamer_decodes_video_and_audio(url: str, transport: str) -> None:
    """rtspsrc → depayloaders → libav decoders → fakesink; each sink ends the
    pipeline after 50 buffers (EOS), so gst-launch exits by itself."""
    r = subprocess.run([GST or "gst-launch-1.0", "-v", "rtspsrc", f"location={url}", f"protocols={transport}",
                        "name=src",
                        "src.", "!", "rtph264depay", "!", "h264parse", "!", "avdec_h264", "!",
                        "fakesink", "name=video", "num-buffers=50", "silent=false",
                        "src.", "!", "rtpmp4gdepay", "!", "aacparse", "!", "avdec_aac", "!",
                        "fakesink", "name=audio", "num-buffers=50", "silent=false"],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
    assert 'Got EOS from element "pipeline0"' in out
    # decoded 1280x720 I420 pictures (1382400 bytes) and decoded audio reached the sinks
    assert re.search(r"video: last-message = chain .*\(1382400 bytes", out)
    assert re.search(r"audio: last-message = chain .*GstAudioMeta", out)
    assert "ERROR" not in out


# -- a live555 (VLC) replay -----------------------------------------------------------------------------


@dataclass
class Live555Client:
    """The RTSP requests and headers of VLC 3's live555 client, replayed over a socket."""

    url: str
    sock: socket.socket = field(init=False)
    parser: RtspParser = field(default_factory=RtspParser)
    cseq: int = 1
    session: str = ""
    frames: list[InterleavedFrame] = field(default_factory=list)

    def __post_init__(self) -> None:
        u = urlsplit(self.url)
        self.sock = socket.create_connection((u.hostname, u.port or 554), timeout=15)

    def request(self, method: str, url: str, *headers: str) -> RtspResponse:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", f"User-Agent: {USER_AGENT}"]
        if self.session:
            lines.append(f"Session: {self.session}")
        lines += headers
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.monotonic() + 15
        reply: RtspResponse | None = None
        while reply is None and time.monotonic() < deadline:
            for event in self.parser.feed(self.sock.recv(65536)):
                if isinstance(event, InterleavedFrame):
                    self.frames.append(event)  # media may follow the reply in the same read
                elif isinstance(event, RtspResponse):
                    assert event.headers.get("CSeq") == str(self.cseq)
                    sid = event.headers.get("Session")
                    if sid:
                        self.session = sid.split(";")[0]
                    reply = event
        if reply is None:
            raise TimeoutError(f"no reply to {method}")
        return reply

    def read_frames(self, count: int) -> list[InterleavedFrame]:
        deadline = time.monotonic() + 15
        while len(self.frames) < count and time.monotonic() < deadline:
            for event in self.parser.feed(self.sock.recv(65536)):
                if isinstance(event, InterleavedFrame):
                    self.frames.append(event)
        return self.frames

    def close(self) -> None:
        self.sock.close()


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    """Like live555: an even RTP port and the odd RTCP port after it."""
    for _ in range(50):
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
        if port % 2 == 0:
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                b.bind(("127.0.0.1", port + 1))
                a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                return a, b
            except OSError:
                b.close()
        a.close()
    raise RuntimeError("no UDP port pair")


def _describe(c: Live555Client) -> tuple[str, list[str], str]:
    opts = c.request("OPTIONS", c.url)
    assert opts.status == 200
    public = opts.headers.get("Public") or ""
    assert "GET_PARAMETER" in public  # so live555 keeps the session alive with GET_PARAMETER
    d = c.request("DESCRIBE", c.url, "Accept: application/sdp")
    assert d.status == 200 and d.headers.get("Content-Type") == "application/sdp"
    base = d.headers.get("Content-Base") or c.url
    sd = parse_sdp(d.body)
    controls = []
    for m in sd.media:
        control = m.control or ""
        controls.append(control if "://" in control else base.rstrip("/") + "/" + control)
    aggregate = base if (sd.control or "*") == "*" else sd.control or base
    return base, controls, aggregate


def _rtp_info(resp: RtspResponse) -> dict[str, tuple[int, int]]:
    info = {}
    for part in (resp.headers.get("RTP-Info") or "").split(","):
        fields = dict(f.strip().split("=", 1) for f in part.split(";"))
        info[fields["url"]] = (int(fields["seq"]), int(fields["rtptime"]))
    return info


def _same_start(first: rtp.RtpPacket, info: tuple[int, int], rate: int) -> None:
    """RTP-Info names the first packet exactly when its frame is in the GOP cache; a track
    whose next frame has not arrived yet (audio right after a keyframe) gets the next
    sequence number and an rtptime estimated from the stream clock."""
    assert first.sequence == info[0]
    assert abs((first.timestamp - info[1] + (1 << 31)) % (1 << 32) - (1 << 31)) <= rate // 20


def test_live555_udp_then_tcp_fallback(url: str) -> None:
    # -- UDP, as VLC tries first
    c = Live555Client(url)
    base, controls, aggregate = _describe(c)
    assert base == url + "/" and len(controls) == 2
    socks = [_udp_pair(), _udp_pair()]
    server_ports = []
    ssrcs = []
    for control, (rtp_sock, _) in zip(controls, socks, strict=False):
        port = rtp_sock.getsockname()[1]
        s = c.request("SETUP", control, f"Transport: RTP/AVP;unicast;client_port={port}-{port + 1}")
        assert s.status == 200, s
        transport = s.headers.get("Transport") or ""
        m = re.search(r"server_port=(\d+)-(\d+)", transport)
        assert m and f"client_port={port}-{port + 1}" in transport, transport
        server_ports.append(int(m.group(1)))
        ssrcs.append(int(re.search(r"ssrc=([0-9A-Fa-f]+)", transport).group(1), 16))  # type: ignore[union-attr]
        assert re.fullmatch(r"[0-9A-F]+;timeout=\d+", s.headers.get("Session") or "")
    play = c.request("PLAY", aggregate, "Range: npt=0.000-")
    assert play.status == 200 and play.headers.get("Range", "").startswith("npt=")
    info = _rtp_info(play)
    assert set(info) == set(controls)
    for i, (rtp_sock, rtcp_sock) in enumerate(socks):
        rtp_sock.settimeout(10)
        first = rtp.RtpPacket.parse(rtp_sock.recvfrom(65536)[0])
        assert first.ssrc == ssrcs[i] and first.payload_type == (96, 97)[i]
        _same_start(first, info[controls[i]], (90000, 44100)[i])
        # the receiver report live555 sends to the server's RTCP port
        rtcp_sock.sendto(rtp.build_receiver_report(0x1234), ("127.0.0.1", server_ports[i] + 1))
    received = 0
    socks[0][0].settimeout(5)
    while received < 200:
        pkt = rtp.RtpPacket.parse(socks[0][0].recvfrom(65536)[0])
        assert pkt.ssrc == ssrcs[0]
        received += 1
    keep = c.request("GET_PARAMETER", aggregate)
    assert keep.status == 200
    assert c.request("TEARDOWN", aggregate).status == 200
    c.close()
    for a, b in socks:
        a.close(), b.close()

    # -- the TCP fallback VLC uses when UDP is blocked
    c = Live555Client(url)
    base, controls, aggregate = _describe(c)
    for i, control in enumerate(controls):
        s = c.request("SETUP", control, f"Transport: RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}")
        assert s.status == 200 and f"interleaved={2 * i}-{2 * i + 1}" in (s.headers.get("Transport") or "")
    play = c.request("PLAY", aggregate, "Range: npt=0.000-")
    assert play.status == 200
    info = _rtp_info(play)
    frames = c.read_frames(300)
    video = [rtp.RtpPacket.parse(f.data) for f in frames if f.channel == 0]
    audio = [rtp.RtpPacket.parse(f.data) for f in frames if f.channel == 2]
    sr = [item for f in frames if f.channel in (1, 3) for item in rtp.parse_rtcp(f.data)]
    assert (video[0].sequence, video[0].timestamp) == info[controls[0]]
    _same_start(audio[0], info[controls[1]], 44100)
    assert any(isinstance(x, rtp.SenderReport) for x in sr)
    d = rtp.H264Depacketizer()
    aus = [au for p in video for au in d.feed(p)]
    assert [n[0] & 0x1F for n in aus[0].nals][:2] == [7, 8]  # SPS and PPS ahead of the IDR
    assert any(n[0] & 0x1F == 5 for n in aus[0].nals)
    assert c.request("GET_PARAMETER", aggregate).status == 200
    assert c.request("TEARDOWN", aggregate).status == 200
    c.close()


def test_missing_stream_is_404(server: Server) -> None:
    r = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", f"{server.rtsp}/live/nothing"],
                       capture_output=True, text=True, timeout=40)
    assert r.returncode != 0 and "404" in r.stderr, r.stderr


def test_server_logged_the_players(server: Server, url: str) -> None:
    log = server.log()
    assert "over tcp (video, audio)" in log and "over udp (video, audio)" in log
    assert "Traceback" not in log
