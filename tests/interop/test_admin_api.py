"""The admin HTTP surfaces of the real server over real sockets: each API
style with and without credentials, the connection closed after a ZLMediaKit
error reply, /metrics with a live ffmpeg stream parsed by prometheus_client,
and the console's shipped files."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import needs_ffmpeg, start_publisher, stop
from tests.support.server import Server, running_server

pytestmark = pytest.mark.interop

SECRET, NIMBLE = "api-secret-1", "nimble-token-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("api"), f"api.secret={SECRET}",
                        f"api.nimble_token={NIMBLE}") as srv:
        yield srv


def request(server: Server, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, bool]:
    """One request on a fresh connection; the last item says whether the server closed it."""
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        closed = r.will_close
        if not closed:
            # a kept-alive connection takes a second request
            conn.request("GET", "/index/api/getApiList?secret=" + SECRET)
            conn.getresponse().read()
        return r.status, hdrs, data, closed
    finally:
        conn.close()


def nimble_query() -> str:
    salt = "777"
    h = base64.b64encode(hashlib.md5(f"{salt}/{NIMBLE}".encode()).digest()).decode()
    return f"salt={salt}&hash={h.replace('+', '%2B').replace('/', '%2F').replace('=', '%3D')}"


@pytest.mark.parametrize("path", ["/index/api/getMediaList", "/index/api/getAllSession",
                                  "/index/api/kick_sessions", "/index/api/close_streams",
                                  "/index/api/getServerConfig", "/index/api/setServerConfig"])
def test_zlm_without_secret_refused_and_connection_closed(server: Server, path: str) -> None:
    status, hdrs, body, closed = request(server, "GET", path)
    assert status == 200 and json.loads(body)["code"] == -100
    assert closed and hdrs.get("connection") == "close"
    status, _, body, closed = request(server, "GET", f"{path}?secret={SECRET}")
    assert json.loads(body)["code"] == 0 and not closed


def test_srs_and_nimble_and_metrics_need_credentials(server: Server) -> None:
    for path in ("/api/v1/clients/", "/api/v1/streams/", "/metrics"):
        assert request(server, "GET", path)[0] == 401
        assert request(server, "GET", f"{path}?secret={SECRET}")[0] == 200
    assert request(server, "GET", "/manage/sessions")[0] == 403
    status, _, body, _ = request(server, "GET", f"/manage/sessions?{nimble_query()}")
    assert status == 200 and json.loads(body)["status"] == "ok"


def metrics(server: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    status, hdrs, body, _ = request(server, "GET", "/metrics", headers={"Authorization": f"Bearer {SECRET}"})
    assert status == 200 and hdrs["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


@needs_ffmpeg
def test_metrics_follow_a_live_stream(server: Server) -> None:
    pub = start_publisher(f"{server.rtmp}/live/metrics", size="320x240", bitrate="300k")
    try:
        deadline = time.monotonic() + 20
        m: dict[str, Any] = {}
        while time.monotonic() < deadline:
            m = metrics(server)
            if m.get("mediasrv_streams", {}).get((("protocol", "rtmp"),)) == 1:
                break
            time.sleep(0.5)
        assert m["mediasrv_sessions"][(("protocol", "rtmp"), ("role", "publisher"))] == 1
        first = m["mediasrv_received_bytes_total"][(("protocol", "rtmp"),)]
        time.sleep(1.5)
        assert metrics(server)["mediasrv_received_bytes_total"][(("protocol", "rtmp"),)] > first > 0
    finally:
        stop(pub)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = metrics(server)
        if (("protocol", "rtmp"), ("role", "publisher")) not in m.get("mediasrv_sessions", {}):
            break
        time.sleep(0.3)
    assert m["mediasrv_received_bytes_total"][(("protocol", "rtmp"),)] > first, "counters survive the session"


def test_console_files(server: Server) -> None:
    status, hdrs, body, _ = request(server, "GET", "/console")
    assert status == 301 and hdrs["location"] == "/console/"
    status, hdrs, body, _ = request(server, "GET", "/console/")
    assert status == 200 and hdrs["content-type"].startswith("text/html") and b"mediasrv console" in body
    assert "content-security-policy" in hdrs
    for path, kind in (("/console/console.js", "text/javascript"), ("/console/console.css", "text/css"),
                       ("/console/vendor/mpegts.js", "text/javascript"),
                       ("/console/vendor/hls.min.js", "text/javascript"),
                       ("/console/vendor/mpegts.js.LICENSE", "text/plain"),
                       ("/console/vendor/hls.js.LICENSE", "text/plain")):
        status, hdrs, body, _ = request(server, "GET", path)
        assert status == 200 and hdrs["content-type"].startswith(kind), path
        assert body
    assert request(server, "GET", "/console/../setup.cfg")[0] == 404
    assert request(server, "GET", "/console/__init__.py")[0] == 404
