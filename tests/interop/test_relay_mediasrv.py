"""Relay clients against a real mediasrv subprocess fed by a real ffmpeg publisher (real sockets).

Pulls over RTMP, HTTP-FLV, RTSP/TCP and RTSP/UDP are checked frame by frame
(codec, resolution from the SPS, AAC configuration, frame rates, keyframe
first, increasing timestamps); a push from the RTMP publisher client is
checked with ffprobe; refusals (missing stream, busy name) are typed; a source
server killed with SIGKILL closes every pull at once; a publisher that goes
away ends the pulls after ``continue_push_ms``.  The clients run on
pytest-twisted's reactor in the test process; ffprobe runs through
``getProcessOutputAndValue`` so the reactor keeps serving meanwhile.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from mediasrv.core.frames import Codec
from mediasrv.relay.client import RelayClient, State
from mediasrv.relay.errors import PeerClosed, Refused, RelayError, SourceEnded, Stopped, StreamNotFound
from mediasrv.relay.factory import pull_client, push_client
from mediasrv.relay.source import IteratorSource
from tests.relay.support import Recorder, check_pulled, until, video_span_ms
from tests.support.clients import FFMPEG, FFPROBE, needs_ffmpeg, start_publisher, stop
from tests.support.media import load_flv, looped
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

CLOCK: Any = reactor
SIZE = "320x240"
KEEPALIVE = 3  # rtsp.keepAliveSecond of the source: a UDP pull without keep-alive dies after it


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("relay-src"), f"rtsp.keepAliveSecond={KEEPALIVE}",
                        "general.maxStreamWaitMS=3000", "protocol.continue_push_ms=1000") as srv:
        pub = start_publisher(f"{srv.rtmp}/live/cam", size=SIZE, bitrate="300k")
        yield srv
        stop(pub)


def urls(srv: Server, stream: str) -> dict[str, tuple[str, int]]:
    return {"rtmp": (f"{srv.rtmp}/live/{stream}", 0), "flv": (f"{srv.http}/live/{stream}.live.flv", 0),
            "rtsp-tcp": (f"{srv.rtsp}/live/{stream}", 0), "rtsp-udp": (f"{srv.rtsp}/live/{stream}", 1)}


async def start_pull(url: str, rtp_type: int = 0, timeout: float = 10) -> tuple[RelayClient, Recorder]:
    sink = Recorder()
    client = pull_client(url, sink, CLOCK, rtp_type=rtp_type, timeout_sec=timeout)
    await client.start()
    return client, sink


@pytest.mark.parametrize("kind", ["rtmp", "flv", "rtsp-tcp", "rtsp-udp"])
@pytest_twisted.ensureDeferred
async def test_pull_from_mediasrv(source: Server, kind: str) -> None:
    url, rtp_type = urls(source, "cam")[kind]
    client, sink = await start_pull(url, rtp_type)
    await until(lambda: video_span_ms(sink) >= 2500, 15, "2.5 s of video")
    check_pulled(sink, width=320, height=240, fps=25, sample_rate=44100, channels=1, min_span_ms=2500)
    assert client.bytes_in > 100_000 and client.describe()["state"] == "started"
    client.stop()
    assert isinstance(await client.when_closed(), Stopped) and sink.calls.count("closed") == 1


@pytest_twisted.ensureDeferred
async def test_rtsp_udp_pull_outlives_the_session_timeout(source: Server) -> None:
    """Keep-alives (GET_PARAMETER every half session timeout) keep a UDP session the server would drop."""
    client, sink = await start_pull(f"{source.rtsp}/live/cam", rtp_type=1)
    assert client.session.session_timeout == KEEPALIVE  # type: ignore[attr-defined]
    started = CLOCK.seconds()
    await until(lambda: CLOCK.seconds() - started > 2 * KEEPALIVE + 0.5 or client.closed, 15, "two session timeouts")
    assert client.state is State.STARTED, client.reason
    assert video_span_ms(sink) > 2 * KEEPALIVE * 1000
    client.stop()


@pytest_twisted.ensureDeferred
async def test_missing_stream_is_not_found(source: Server) -> None:
    clients = [pull_client(url, Recorder(), CLOCK, rtp_type=rtp_type)
               for kind, (url, rtp_type) in urls(source, "nosuch").items() if kind != "rtsp-udp"]
    results: list[Any] = []
    for c in clients:
        c.start().addBoth(results.append)
    await until(lambda: len(results) == len(clients), 10, "three refusals")
    for c, r in zip(clients, results, strict=True):
        assert isinstance(r.value, StreamNotFound), (c, r)
        assert isinstance(c.reason, StreamNotFound)


async def ffprobe_json(url: str) -> dict[str, dict[str, Any]]:
    out, err, code = await getProcessOutputAndValue(
        FFPROBE or "ffprobe", ["-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height,sample_rate",
                               "-of", "json", url])
    assert code == 0, err.decode(errors="replace")
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def fixture_source(seconds: float) -> IteratorSource:
    tracks, frames = load_flv()
    return IteratorSource(list(tracks.values()), looped(frames, seconds), CLOCK)


@pytest_twisted.ensureDeferred
async def test_push_to_mediasrv(source: Server) -> None:
    src = fixture_source(8)
    client = push_client(f"{source.rtmp}/live/pushed?token=t", src, CLOCK)
    await client.start()
    streams = await ffprobe_json(f"{source.rtmp}/live/pushed")
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (1280, 720)
    assert streams["audio"]["codec_name"] == "aac" and streams["audio"]["sample_rate"] == "44100"
    client.stop()
    assert isinstance(await client.when_closed(), Stopped)
    assert src.sent > 25 and src._sink is None  # the push stopped its source


@pytest_twisted.ensureDeferred
async def test_push_to_a_busy_name_is_refused(source: Server) -> None:
    client = push_client(f"{source.rtmp}/live/cam", fixture_source(2), CLOCK)
    with pytest.raises(Refused) as e:
        await client.start()
    assert e.value.code == "NetStream.Publish.BadName"


@pytest_twisted.ensureDeferred
async def test_publisher_gone_ends_the_pulls(source: Server) -> None:
    pub = start_publisher(f"{source.rtmp}/live/victim", size=SIZE, bitrate="300k")
    try:
        pulls = [await start_pull(url, rtp_type) for url, rtp_type in urls(source, "victim").values()]
        await until(lambda: all(s.frames for _, s in pulls), 10, "frames on every pull")
    finally:
        pub.send_signal(signal.SIGKILL)
        stop(pub)
    gone = CLOCK.seconds()
    await until(lambda: all(c.closed for c, _ in pulls), 10, "every pull to close")
    took = CLOCK.seconds() - gone
    assert took < 1.0 + 3.0, f"took {took:.1f} s (continue_push_ms is 1 s)"
    for c, sink in pulls:
        assert isinstance(c.reason, (SourceEnded, PeerClosed)), c.reason
        assert sink.calls[-1] == "closed"


@pytest_twisted.ensureDeferred
async def test_source_server_killed_mid_pull(tmp_path: Path) -> None:
    with running_server(tmp_path, "general.maxStreamWaitMS=5000") as srv:
        pub = start_publisher(f"{srv.rtmp}/live/cam", size=SIZE, bitrate="300k")
        try:
            pulls = [await start_pull(url, rtp_type) for url, rtp_type in urls(srv, "cam").values()]
            await until(lambda: all(len(s.frames) > 50 for _, s in pulls), 10, "frames on every pull")
            killed = time.monotonic()
            srv.proc.send_signal(signal.SIGKILL)
            await until(lambda: all(c.closed for c, _ in pulls), 5, "every pull to close")
            took = time.monotonic() - killed
        finally:
            stop(pub)
    assert took < 1.0, f"closed {took:.2f} s after the source died"
    reasons: list[RelayError] = [sink.reasons[0] for _, sink in pulls]
    assert all(isinstance(r, PeerClosed) for r in reasons), reasons


@pytest_twisted.ensureDeferred
async def test_pull_h265(source: Server) -> None:
    """ffmpeg publishes HEVC + AAC over RTSP; the pulls get H.265 over RTSP and over RTMP/HTTP-FLV
    (enhanced RTMP, as mediasrv serves it)."""
    pub = subprocess.Popen([FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
                            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                            "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                            "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
                            "-f", "rtsp", "-rtsp_transport", "tcp", f"{source.rtsp}/live/hevc"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        pulls = [await start_pull(url, rtp_type) for kind, (url, rtp_type) in urls(source, "hevc").items()
                 if kind != "rtsp-udp"]
        await until(lambda: all(video_span_ms(s) >= 2000 for _, s in pulls), 20, "2 s of HEVC on every pull")
    finally:
        stop(pub)
    for client, sink in pulls:
        check_pulled(sink, width=320, height=240, fps=25, sample_rate=48000, channels=1, min_span_ms=2000,
                     codec=Codec.H265)
        client.stop()
