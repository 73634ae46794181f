"""RTMPS (RTMP over TLS on ``rtmp.sslport``) against the real server and real ffmpeg.

A self-signed certificate is made for the test with ``cryptography`` (which
pyOpenSSL depends on).  ffmpeg does not verify certificates unless asked
(``-tls_verify 1``), so it accepts it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.clients import FFMPEG, decode_seconds, ffprobe_streams, needs_ffmpeg, start_publisher, stop
from tests.support.rtmp_client import self_signed_pem
from tests.support.server import Server, free_port, running_server, wait_port

pytestmark = [pytest.mark.interop, needs_ffmpeg]


def _ffmpeg_has_rtmps() -> bool:
    if not FFMPEG:
        return False
    r = subprocess.run([FFMPEG, "-hide_banner", "-protocols"], capture_output=True, text=True, timeout=30)
    return "rtmps" in r.stdout.split()


needs_rtmps = pytest.mark.skipif(FFMPEG is not None and not _ffmpeg_has_rtmps(),
                                 reason="this ffmpeg is built without TLS, so it has no rtmps protocol "
                                        "(check `ffmpeg -protocols`)")


def write_self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key, as PEM files."""
    cert_pem, key_pem = self_signed_pem()
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return cert_path, key_path


class TlsServer:
    def __init__(self, server: Server, ssl_port: int) -> None:
        self.server = server
        self.ssl_port = ssl_port

    @property
    def rtmps(self) -> str:
        return f"rtmps://127.0.0.1:{self.ssl_port}"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    workdir = tmp_path_factory.mktemp("rtmps")
    cert, key = write_self_signed(workdir)
    ssl_port = free_port()
    with running_server(workdir, f"rtmp.sslport={ssl_port}", f"ssl.certFile={cert}", f"ssl.keyFile={key}") as srv:
        wait_port(ssl_port, srv.proc)  # running_server waits for the rtmp and http ports only
        yield TlsServer(srv, ssl_port)


def _check_probe(streams: list[dict[str, object]]) -> None:
    by_type = {s["codec_type"]: s for s in streams}
    assert by_type["video"]["codec_name"] == "h264"
    assert (by_type["video"]["width"], by_type["video"]["height"]) == (1280, 720)
    assert by_type["audio"]["codec_name"] == "aac"


@contextmanager
def publishing(url: str) -> Iterator[None]:
    """ffmpeg publishes lavfi testsrc2 1280x720 H.264 + AAC to ``url`` while the block runs."""
    proc = start_publisher(url)
    time.sleep(3)
    try:
        assert proc.poll() is None, stop(proc)
        yield
    finally:
        stop(proc)


@needs_rtmps
def test_play_over_rtmps(tls_server: TlsServer) -> None:
    """ffmpeg publishes over plain RTMP, ffprobe and ffmpeg read it back over RTMPS."""
    with publishing(f"{tls_server.server.rtmp}/live/plain?token=abc"):
        _check_probe(ffprobe_streams(f"{tls_server.rtmps}/live/plain"))
        video, audio, err = decode_seconds(f"{tls_server.rtmps}/live/plain", 2)
        assert err.strip() == "" and video >= 45 and audio > 50, err


@needs_rtmps
def test_publish_over_rtmps(tls_server: TlsServer) -> None:
    """ffmpeg publishes over RTMPS; players read it over both RTMP and RTMPS."""
    with publishing(f"{tls_server.rtmps}/live/secure?token=abc"):
        _check_probe(ffprobe_streams(f"{tls_server.server.rtmp}/live/secure"))
        _check_probe(ffprobe_streams(f"{tls_server.rtmps}/live/secure"))
    assert "Traceback" not in tls_server.server.log()


@needs_rtmps
def test_plain_rtmp_on_the_tls_port_is_refused(tls_server: TlsServer) -> None:
    """A plain RTMP client on the RTMPS port fails cleanly; the server keeps serving."""
    r = subprocess.run([FFMPEG or "ffmpeg", "-hide_banner", "-v", "error", "-rw_timeout", "5000000",
                        "-i", f"rtmp://127.0.0.1:{tls_server.ssl_port}/live/plain", "-t", "1", "-f", "null", "-"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    deadline = time.monotonic() + 10
    while "TLS failed" not in tls_server.server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    (line,) = [x for x in tls_server.server.log().splitlines() if "TLS failed" in x]
    assert "rtmp session" in line and "127.0.0.1" in line
    with publishing(f"{tls_server.server.rtmp}/live/after"):
        _check_probe(ffprobe_streams(f"{tls_server.rtmps}/live/after"))
