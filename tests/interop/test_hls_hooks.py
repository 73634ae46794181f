"""HLS viewers and HTTP files against a real hook backend (tests/support/hookserver.py):
on_play asked once per HLS viewer across many playlist/segment requests (cookie,
query string), the viewer's end (kick) reported and its cookie refused;
on_http_access asked once per cookie and path, its err/path/second honoured."""

from __future__ import annotations

import http.cookiejar
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.clients import FFMPEG, needs_ffmpeg, start_publisher, stop
from tests.support.hookserver import HookServer, fields_of, running_hookserver
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

SECRET = "hls-secret"
H = "/index/hook/"


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    with running_hookserver(tmp_path_factory.mktemp("hls-backend")) as hs:
        hs.set_rules([
            {"match": {"path": H + "on_http_access", "field": {"path": "/private/x.txt"}},
             "body": {"code": 0, "err": "members only", "path": "/private/", "second": 60}},
            {"match": {"path": H + "on_http_access"}, "body": {"code": 0, "err": "", "path": "/vod/", "second": 60}},
        ])
        yield hs


@pytest.fixture(scope="module")
def server(hooks: HookServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("hls-hooks")
    (work / "www" / "vod").mkdir(parents=True)
    (work / "www" / "vod" / "a.txt").write_text("alpha")
    (work / "www" / "vod" / "b.txt").write_text("beta")
    (work / "www" / "private").mkdir()
    (work / "www" / "private" / "x.txt").write_text("secret")
    (work / "www" / "other.txt").write_text("other")
    sets = ["hook.enable=1", "hook.timeoutSec=3", f"hook.outbox={work / 'outbox'}", "general.flowThreshold=0",
            f"api.secret={SECRET}"]
    sets += [f"hook.{h}={hooks.url(H + h)}" for h in ("on_play", "on_flow_report", "on_http_access")]
    with running_server(work, *sets) as srv:
        yield srv


@pytest.fixture(scope="module")
def stream(server: Server) -> Iterator[str]:
    proc = start_publisher(f"{server.rtmp}/live/hooked", size="320x240", bitrate="300k")
    time.sleep(5)
    assert proc.poll() is None, stop(proc)
    yield "live/hooked"
    stop(proc)


class Client:
    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        try:
            with self.op.open(urllib.request.Request(url, headers=headers or {}), timeout=20) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def hls_plays(hooks: HookServer, stream: str) -> list[dict[str, Any]]:
    return [fields_of(r) for r in hooks.find(H + "on_play", schema="hls", stream=stream)]


def test_one_on_play_per_viewer_across_many_requests(server: Server, hooks: HookServer, stream: str) -> None:
    app, name = stream.split("/")
    viewer = Client()
    for _ in range(4):
        status, body = viewer.get(f"{server.http}/{stream}/hls.m3u8")
        assert status == 200
        for uri in [line for line in body.decode().splitlines() if line and not line.startswith("#")]:
            assert viewer.get(f"{server.http}/{stream}/{uri}")[0] == 200
        time.sleep(0.5)
    plays = hls_plays(hooks, name)
    assert len(plays) == 1, plays
    assert plays[0]["protocol"] == "http" and plays[0]["app"] == app and plays[0]["ip"] == "127.0.0.1"
    # a second viewer is asked once too
    other = Client()
    for _ in range(3):
        assert other.get(f"{server.http}/{stream}/hls.m3u8")[0] == 200
    assert len(hls_plays(hooks, name)) == 2


def test_query_string_viewer_without_cookies(server: Server, hooks: HookServer, stream: str) -> None:
    name = stream.split("/")[1]
    before = len(hls_plays(hooks, name))
    for _ in range(3):
        with urllib.request.urlopen(f"{server.http}/{stream}/hls.m3u8?token=q1", timeout=20) as r:
            uris = [line for line in r.read().decode().splitlines() if line and not line.startswith("#")]
        assert all(u.endswith("?token=q1") for u in uris)
        with urllib.request.urlopen(f"{server.http}/{stream}/{uris[-1]}", timeout=20) as r:
            assert r.status == 200
    plays = hls_plays(hooks, name)[before:]
    assert len(plays) == 1 and plays[0]["params"] == "token=q1"


def test_ffmpeg_viewer_is_asked_once(server: Server, hooks: HookServer, stream: str) -> None:
    name = stream.split("/")[1]
    before = len(hls_plays(hooks, name))
    r = subprocess.run([FFMPEG or "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i",
                        f"{server.http}/{stream}/hls.m3u8", "-t", "6", "-f", "null", "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(hls_plays(hooks, name)) == before + 1


def test_kicked_viewer_is_reported_and_refused(server: Server, hooks: HookServer, stream: str) -> None:
    name = stream.split("/")[1]
    viewer = Client()
    assert viewer.get(f"{server.http}/{stream}/hls.m3u8?who=kickme")[0] == 200
    (play,) = [p for p in hls_plays(hooks, name) if p["params"] == "who=kickme"]
    sid = play["id"]
    query = urllib.parse.urlencode({"secret": SECRET})
    with urllib.request.urlopen(f"{server.http}/index/api/getAllSession?{query}", timeout=10) as r:
        sessions = json.loads(r.read())["data"]
    assert any(s["id"] == sid for s in sessions)
    with urllib.request.urlopen(f"{server.http}/index/api/kick_session?{query}&id={sid}", timeout=10) as r:
        assert json.loads(r.read())["code"] == 0
    (report,) = hooks.wait(H + "on_flow_report", id=sid)
    body = fields_of(report)
    assert body["player"] is True and body["schema"] == "hls" and body["totalBytes"] > 0
    assert viewer.get(f"{server.http}/{stream}/hls.m3u8?who=kickme")[0] == 403
    assert [p for p in hls_plays(hooks, name) if p["params"] == "who=kickme"] == [play]
    time.sleep(1)
    assert len(hooks.find(H + "on_flow_report", id=sid)) == 1


def test_on_http_access_cached_by_cookie(server: Server, hooks: HookServer) -> None:
    client = Client()
    assert client.get(f"{server.http}/vod/a.txt?k=1", {"User-Agent": "interop/1"}) == (200, b"alpha")
    assert client.get(f"{server.http}/vod/b.txt") == (200, b"beta")
    assert client.get(f"{server.http}/vod/a.txt") == (200, b"alpha")
    calls = [fields_of(r) for r in hooks.find(H + "on_http_access")]
    vod = [c for c in calls if c["path"].startswith("/vod/")]
    assert len(vod) == 1
    c = vod[0]
    assert c["path"] == "/vod/a.txt" and c["params"] == "k=1" and c["is_dir"] is False
    assert c["file_path"].endswith("/www/vod/a.txt") and c["header.User-Agent"] == "interop/1"
    assert c["ip"] == "127.0.0.1" and isinstance(c["port"], int)
    # outside the granted path: asked again
    assert client.get(f"{server.http}/other.txt")[0] == 200
    assert len([r for r in hooks.find(H + "on_http_access") if fields_of(r)["path"] == "/other.txt"]) == 1


def test_on_http_access_denial(server: Server, hooks: HookServer) -> None:
    client = Client()
    status, body = client.get(f"{server.http}/private/x.txt")
    assert status == 401 and b"members only" in body
    assert client.get(f"{server.http}/private/x.txt")[0] == 401  # replayed from the cookie
    asked = [r for r in hooks.find(H + "on_http_access") if fields_of(r)["path"] == "/private/x.txt"]
    assert len(asked) == 1
