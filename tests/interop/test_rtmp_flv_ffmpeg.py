"""Interop with real ffmpeg/ffprobe against the real server (``twistd -n mediasrv``).

ffmpeg publishes lavfi testsrc2 1280x720 H.264 + AAC with ``?token=abc``;
ffprobe and ffmpeg read it back over RTMP, HTTP-FLV and WS-FLV.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import (
    decode_seconds,
    ffprobe_streams,
    needs_ffmpeg,
    publish_args,
    start_publisher,
    stop,
    ws_read_flv,
)
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("srv")) as srv:
        yield srv


@pytest.fixture(scope="module")
def published(server: Server) -> Iterator[str]:
    proc = start_publisher(f"{server.rtmp}/live/test?token=abc")
    time.sleep(3)
    assert proc.poll() is None, stop(proc)
    yield "live/test"
    err = stop(proc)
    assert "error" not in err.lower() or "Conversion failed" not in err, err


def _check_probe(streams: list[dict[str, object]]) -> None:
    by_type = {s["codec_type"]: s for s in streams}
    assert by_type["video"]["codec_name"] == "h264"
    assert (by_type["video"]["width"], by_type["video"]["height"]) == (1280, 720)
    assert by_type["audio"]["codec_name"] == "aac"


def test_ffprobe_over_rtmp(server: Server, published: str) -> None:
    _check_probe(ffprobe_streams(f"{server.rtmp}/{published}"))


def test_ffprobe_over_http_flv(server: Server, published: str) -> None:
    _check_probe(ffprobe_streams(f"{server.http}/{published}.live.flv"))
    _check_probe(ffprobe_streams(f"{server.http}/{published}.flv"))


def test_ffprobe_over_ws_flv(server: Server, published: str, tmp_path: Path) -> None:
    data = ws_read_flv("127.0.0.1", server.http_port, f"/{published}.live.flv", 400_000)
    assert data[:3] == b"FLV"
    f = tmp_path / "ws.flv"
    f.write_bytes(data)
    _check_probe(ffprobe_streams(str(f)))


def test_decode_3s_over_rtmp_without_errors(server: Server, published: str) -> None:
    video, audio, err = decode_seconds(f"{server.rtmp}/{published}", 3.5)
    assert err.strip() == ""
    assert video >= 75, f"only {video} video frames decoded"
    assert audio > 100


def test_decode_3s_over_http_flv_without_errors(server: Server, published: str) -> None:
    video, audio, err = decode_seconds(f"{server.http}/{published}.live.flv", 3.5)
    assert err.strip() == ""
    assert video >= 75


def test_http_flv_headers(server: Server, published: str) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    conn.request("GET", f"/{published}.live.flv", headers={"Origin": "http://player.example"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "video/x-flv"
    assert resp.getheader("Access-Control-Allow-Origin") == "http://player.example"
    assert resp.read(3) == b"FLV"
    conn.close()


def test_second_publisher_is_refused(server: Server, published: str) -> None:
    r = subprocess.run(publish_args(f"{server.rtmp}/{published}", duration=5), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "already publishing" in r.stderr.lower() or "error" in r.stderr.lower(), r.stderr
    # the first publisher is untouched
    _check_probe(ffprobe_streams(f"{server.rtmp}/{published}"))


def test_player_waiting_first_gets_stream(server: Server) -> None:
    result: dict[str, object] = {}

    def probe() -> None:
        try:
            result["streams"] = ffprobe_streams(f"{server.rtmp}/live/late", timeout=40)
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=probe)
    t.start()
    time.sleep(2)
    proc = start_publisher(f"{server.rtmp}/live/late")
    try:
        t.join(40)
    finally:
        stop(proc)
    assert "error" not in result, result.get("error")
    _check_probe(result["streams"])  # type: ignore[arg-type]


def test_missing_stream_http_flv_404_after_wait(tmp_path: Path) -> None:
    import http.client

    with running_server(tmp_path, "general.maxStreamWaitMS=500") as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
        conn.request("GET", "/live/nothing.live.flv")
        assert conn.getresponse().status == 404
