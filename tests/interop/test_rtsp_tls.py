"""RTSPS (RTSP over TLS on ``rtsp.sslport``) against the real server and real ffmpeg/ffprobe.

ffmpeg speaks ``rtsps://`` with RTP interleaved in the TLS connection; it does
not verify the self-signed certificate unless asked.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.interop.test_rtmps import write_self_signed
from tests.support.clients import FFMPEG, ffprobe_streams, needs_ffmpeg, start_publisher, stop
from tests.support.server import Server, free_port, running_server, wait_port

pytestmark = [pytest.mark.interop, needs_ffmpeg]


def _ffmpeg_has_rtsps() -> bool:
    if not FFMPEG:
        return False
    r = subprocess.run([FFMPEG, "-hide_banner", "-protocols"], capture_output=True, text=True, timeout=30)
    return "tls" in r.stdout.split()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    if not _ffmpeg_has_rtsps():
        pytest.skip("this ffmpeg is built without TLS (no 'tls' in `ffmpeg -protocols`)")
    workdir = tmp_path_factory.mktemp("rtsps")
    cert, key = write_self_signed(workdir)
    ssl_port = free_port()
    with running_server(workdir, f"rtsp.sslport={ssl_port}", f"ssl.certFile={cert}", f"ssl.keyFile={key}") as srv:
        wait_port(ssl_port, srv.proc)
        yield srv, f"rtsps://127.0.0.1:{ssl_port}"


def test_play_and_publish_over_rtsps(tls: tuple[Server, str]) -> None:
    srv, rtsps = tls
    proc = start_publisher(f"{srv.rtmp}/live/tls")
    try:
        time.sleep(3)
        assert proc.poll() is None, stop(proc)
        streams = ffprobe_streams(f"{rtsps}/live/tls")
        assert {s["codec_name"] for s in streams} == {"h264", "aac"}
    finally:
        stop(proc)
    # ffmpeg publishing over RTSPS, read back over plain RTMP
    args = [FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
            "testsrc2=size=640x360:rate=25", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
            "-pix_fmt", "yuv420p", "-f", "rtsp", f"{rtsps}/live/tlspub"]
    pub = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(3)
        assert pub.poll() is None, stop(pub)
        (video,) = ffprobe_streams(f"{srv.rtmp}/live/tlspub")
        assert (video["codec_name"], video["width"]) == ("h264", 640)
    finally:
        stop(pub)
    log = srv.log()
    assert "rtsp session" in log and "Traceback" not in log
