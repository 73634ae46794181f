"""HLS with real ffmpeg/ffprobe against the real server (``twistd -n mediasrv``),
embedded HLS defaults (segDur 2, segNum 3, segRetain 5).

ffmpeg publishes testsrc2 + sine over RTMP (and, once, over RTSP); ffprobe
reads the playlist and a segment; ffmpeg plays the m3u8; the window rolls.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import (
    FFPROBE,
    decode_seconds,
    ffprobe_streams,
    needs_ffmpeg,
    publish_args,
    start_publisher,
    stop,
)
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

SIZE = "640x360"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("hls")) as srv:
        yield srv


@pytest.fixture(scope="module")
def published(server: Server) -> Iterator[str]:
    proc = start_publisher(f"{server.rtmp}/live/hls?token=abc", size=SIZE, bitrate="800k")
    # the first playlist waits for the first segment; give the window time to fill
    time.sleep(7)
    assert proc.poll() is None, stop(proc)
    yield "live/hls"
    stop(proc)


def opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def get(op: urllib.request.OpenerDirector, url: str) -> tuple[int, dict[str, str], bytes]:
    with op.open(url, timeout=20) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def playlist(op: urllib.request.OpenerDirector, url: str) -> tuple[int, list[float], list[str], str]:
    _, _, body = get(op, url)
    text = body.decode()
    seq = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))  # type: ignore[union-attr]
    durations = [float(x) for x in re.findall(r"#EXTINF:([\d.]+),", text)]
    uris = [line for line in text.splitlines() if line and not line.startswith("#")]
    return seq, durations, uris, text


def test_ffprobe_reads_the_playlist(server: Server, published: str) -> None:
    streams = ffprobe_streams(f"{server.http}/{published}/hls.m3u8")
    by_type = {s["codec_type"]: s for s in streams}
    assert by_type["video"]["codec_name"] == "h264"
    assert (by_type["video"]["width"], by_type["video"]["height"]) == (640, 360)
    assert by_type["audio"]["codec_name"] == "aac" and by_type["audio"]["sample_rate"] == "44100"


def test_playlist_and_segments(server: Server, published: str, tmp_path: Path) -> None:
    op = opener()
    status, headers, _ = get(op, f"{server.http}/{published}/hls.m3u8")
    assert status == 200 and headers["content-type"] == "application/vnd.apple.mpegurl"
    seq, durations, uris, text = playlist(op, f"{server.http}/{published}/hls.m3u8")
    assert "#EXT-X-TARGETDURATION:2" in text
    assert len(uris) == 3 and uris == [f"{seq + i}.ts" for i in range(3)]
    # 2 s GOPs, segDur 2: every segment is one GOP
    assert all(abs(d - 2.0) < 0.1 for d in durations), durations
    status, headers, data = get(op, f"{server.http}/{published}/{uris[-1]}")
    assert status == 200 and headers["content-type"] == "video/mp2t"
    seg = tmp_path / "seg.ts"
    seg.write_bytes(data)
    r = subprocess.run([FFPROBE or "ffprobe", "-v", "error", "-show_entries",
                        "stream=codec_type,codec_name,duration:format=duration", "-of", "json", str(seg)],
                       capture_output=True, text=True, timeout=30)
    info = json.loads(r.stdout)
    assert {s["codec_type"]: s["codec_name"] for s in info["streams"]} == {"video": "h264", "audio": "aac"}
    assert abs(float(info["format"]["duration"]) - 2.0) < 0.15
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(seg), "-f", "null", "-"], capture_output=True,
                             text=True, timeout=30)
    assert decoded.returncode == 0 and decoded.stderr.strip() == ""


def test_ffmpeg_plays_the_m3u8(server: Server, published: str) -> None:
    video, audio, err = decode_seconds(f"{server.http}/{published}/hls.m3u8", 6)
    assert video >= 140, f"only {video} video frames in 6 s"
    assert audio >= 200
    assert "error" not in err.lower(), err


def test_the_window_rolls(server: Server, published: str) -> None:
    op = opener()
    first, _, uris1, _ = playlist(op, f"{server.http}/{published}/hls.m3u8")
    time.sleep(4.5)
    second, _, uris2, _ = playlist(op, f"{server.http}/{published}/hls.m3u8")
    assert second >= first + 2
    assert len(uris2) == 3
    # a segment that slid out of the playlist is still downloadable (segRetain)
    assert get(op, f"{server.http}/{published}/{uris1[0]}")[0] == 200


def test_cors_for_browser_players(server: Server, published: str) -> None:
    req = urllib.request.Request(f"{server.http}/{published}/hls.m3u8",
                                 headers={"Origin": "https://player.example"})
    with opener().open(req, timeout=20) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "https://player.example"
        assert r.headers["Access-Control-Allow-Credentials"] == "true"


def test_hls_from_an_rtsp_publisher(server: Server) -> None:
    args = publish_args(f"{server.rtsp}/live/hls_rtsp", size="320x240", bitrate="300k")
    i = args.index("flv") - 1
    args = args[:i] + ["-f", "rtsp", "-rtsp_transport", "tcp", f"{server.rtsp}/live/hls_rtsp"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(5)
        assert proc.poll() is None, stop(proc)
        streams = ffprobe_streams(f"{server.http}/live/hls_rtsp/hls.m3u8")
        assert {s["codec_type"]: s["codec_name"] for s in streams} == {"video": "h264", "audio": "aac"}
        video, _, err = decode_seconds(f"{server.http}/live/hls_rtsp/hls.m3u8", 3)
        assert video >= 60, err
    finally:
        stop(proc)
