"""RTSP publish interop: ffmpeg publishes with ANNOUNCE/SETUP/RECORD (TCP and UDP);
the stream plays over RTMP, HTTP-FLV and RTSP (ffprobe / ffmpeg)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.clients import FFMPEG, FFPROBE, ffprobe_streams, needs_ffmpeg, publish_args, stop
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]


def rtsp_publish_args(url: str, transport: str, **kw: object) -> list[str]:
    """ffmpeg's usual test source, sent with ``-f rtsp`` instead of FLV."""
    args = publish_args(url, **kw)  # type: ignore[arg-type]
    i = len(args) - 3
    assert args[i : i + 2] == ["-f", "flv"]
    return args[:i] + ["-f", "rtsp", "-rtsp_transport", transport, url]


def start_rtsp_publisher(url: str, transport: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(rtsp_publish_args(url, transport), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("rtsp-pub"), "general.maxStreamWaitMS=5000") as srv:
        yield srv


@pytest.fixture(scope="module", params=["tcp", "udp"])
def published(request: pytest.FixtureRequest, server: Server) -> Iterator[str]:
    transport: str = request.param
    name = f"live/from_rtsp_{transport}"
    proc = start_rtsp_publisher(f"{server.rtsp}/{name}", transport)
    time.sleep(3)
    assert proc.poll() is None, stop(proc)
    yield name
    err = stop(proc)
    assert "Connection refused" not in err, err


def _check(streams: list[dict[str, object]]) -> None:
    by_type = {s["codec_type"]: s for s in streams}
    assert by_type["video"]["codec_name"] == "h264"
    assert (by_type["video"]["width"], by_type["video"]["height"]) == (1280, 720)
    assert by_type["audio"]["codec_name"] == "aac" and by_type["audio"]["sample_rate"] == "44100"


def test_plays_over_rtmp(server: Server, published: str) -> None:
    _check(ffprobe_streams(f"{server.rtmp}/{published}"))


def test_plays_over_http_flv(server: Server, published: str) -> None:
    _check(ffprobe_streams(f"{server.http}/{published}.live.flv"))


def test_plays_over_rtsp(server: Server, published: str) -> None:
    _check(ffprobe_streams(f"{server.rtsp}/{published}", extra=["-rtsp_transport", "tcp"]))


def test_rtmp_decode_has_clean_monotonic_timestamps(server: Server, published: str) -> None:
    """3 s decoded over RTMP without a decoder error; packet timestamps of both
    tracks are monotonic and stay within 200 ms of each other (A/V sync)."""
    r = subprocess.run([FFMPEG or "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i",
                        f"{server.rtmp}/{published}", "-t", "3", "-f", "framecrc", "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    lines = [x for x in r.stdout.splitlines() if x.strip() and not x.startswith("#")]
    assert sum(1 for x in lines if x.startswith("0,")) >= 70
    probe = subprocess.run([FFPROBE or "ffprobe", "-v", "error", "-read_intervals", "%+3", "-show_entries",
                            "packet=stream_index,pts_time,dts_time", "-of", "json", f"{server.rtmp}/{published}"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    packets = json.loads(probe.stdout)["packets"]
    last: dict[int, float] = {}
    for p in packets:
        dts = float(p["dts_time"])
        assert dts >= last.get(p["stream_index"], -1.0), p
        assert float(p["pts_time"]) >= dts - 0.001, p
        last[p["stream_index"]] = dts
    assert len(last) == 2 and abs(last[0] - last[1]) < 0.2, last


def test_second_publisher_is_refused(server: Server, published: str) -> None:
    r = subprocess.run(rtsp_publish_args(f"{server.rtsp}/{published}", "tcp", duration=3), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "406" in r.stderr, r.stderr


def test_server_logged_the_publisher(server: Server, published: str) -> None:
    transport = published.rsplit("_", 1)[1]
    assert f"publishes __defaultVhost__/{published} over {transport}" in server.log()
    assert "Traceback" not in server.log()


def test_h265_publish_plays_over_rtsp(server: Server) -> None:
    """ffmpeg publishes HEVC (libx265) over RTSP; ffmpeg decodes it back over RTSP
    (TCP and UDP) and GStreamer's rtph265depay/avdec_h265 accept it."""
    url = f"{server.rtsp}/live/hevc"
    proc = subprocess.Popen([FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
                             "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                             "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                             "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
                             "-f", "rtsp", "-rtsp_transport", "tcp", url],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(4)
        assert proc.poll() is None, stop(proc)
        streams = ffprobe_streams(url, extra=["-rtsp_transport", "tcp"])
        by_type = {s["codec_type"]: s for s in streams}
        assert by_type["video"]["codec_name"] == "hevc" and by_type["video"]["width"] == 640
        assert by_type["audio"]["codec_name"] == "aac" and by_type["audio"]["sample_rate"] == "48000"
        for transport in ("tcp", "udp"):
            r = subprocess.run([FFMPEG or "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-rtsp_transport",
                                transport, "-i", url, "-t", "2", "-f", "framecrc", "-"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
            assert sum(1 for x in r.stdout.splitlines() if x.startswith("0,")) >= 45
        gst = shutil.which("gst-launch-1.0")
        if gst:
            g = subprocess.run([gst, "-q", "rtspsrc", f"location={url}", "protocols=tcp", "!", "rtph265depay", "!",
                                "h265parse", "!", "avdec_h265", "!", "fakesink", "num-buffers=50"],
                               capture_output=True, text=True, timeout=60)
            assert g.returncode == 0, g.stdout + g.stderr + server.log()[-3000:]
    finally:
        stop(proc)
