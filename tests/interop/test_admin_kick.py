"""Kick means gone, seen from the client side: real ffmpeg players over RTMP
and HTTP-FLV, a WebSocket FLV reader and the ffmpeg publisher are each kicked
through a different admin surface (ZLMediaKit, SRS, Nimble APIs, the shell)
and their processes / sockets end; each kicked session's end hook
(on_flow_report) fires exactly once."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mediasrv.shell.auth import make_hash
from tests.shell.telnet_client import TelnetClient
from tests.support.clients import FFMPEG, needs_ffmpeg, start_publisher, stop
from tests.support.hookserver import HookServer, running_hookserver
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

SECRET, NIMBLE = "kick-secret", "kick-nimble"


def zlm(server: Server, name: str, **args: str) -> dict[str, Any]:
    query = urllib.parse.urlencode({"secret": SECRET, **args})
    with urllib.request.urlopen(f"{server.http}/index/api/{name}?{query}", timeout=10) as r:
        body: dict[str, Any] = json.loads(r.read())
    return body


def srs_delete(server: Server, sid: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{server.http}/api/v1/clients/{sid}?secret={SECRET}", method="DELETE")
    with urllib.request.urlopen(req, timeout=10) as r:
        body: dict[str, Any] = json.loads(r.read())
    return body


def nimble_delete(server: Server, sid: str) -> dict[str, Any]:
    salt = "4242"
    digest = base64.b64encode(hashlib.md5(f"{salt}/{NIMBLE}".encode()).digest()).decode()
    req = urllib.request.Request(f"{server.http}/manage/sessions/delete?salt={salt}&hash={urllib.parse.quote(digest)}",
                                 data=json.dumps({"data": [sid]}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body: dict[str, Any] = json.loads(r.read())
    return body


def ws_open(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the WebSocket handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def ws_until_closed(sock: socket.socket, timeout: float) -> tuple[int, bool]:
    """Read until the server closes; (bytes read, whether it closed in time)."""
    sock.settimeout(0.5)
    total = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return total, True
        if not chunk:
            return total, True
        total += len(chunk)
    return total, False


def player(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([FFMPEG or "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", url,
                             "-c", "copy", "-f", "null", "-"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Server, HookServer]]:
    with running_hookserver(tmp_path / "hooks") as hs:
        users = f"admin:{make_hash('pw', iterations=10_000)}"
        with running_server(tmp_path, f"api.secret={SECRET}", f"api.nimble_token={NIMBLE}", f"shell.users={users}",
                            "hook.enable=1", f"hook.on_flow_report={hs.url('/zlm/on_flow_report')}",
                            "general.flowThreshold=0", f"hook.outbox={tmp_path / 'outbox'}") as srv:
            yield srv, hs


def wait_sessions(server: Server, want: dict[str, int], timeout: float = 25) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    data: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        data = zlm(server, "getAllSession")["data"]
        got: dict[str, int] = {}
        for s in data:
            key = f"{s['protocol']}/{s['role']}"
            got[key] = got.get(key, 0) + 1
        if all(got.get(k, 0) >= n for k, n in want.items()):
            return data
        time.sleep(0.3)
    raise AssertionError(f"sessions {want} not all there: {data}")


def test_kick_on_every_protocol_from_every_surface(env: tuple[Server, HookServer]) -> None:
    server, hooks = env
    pub = start_publisher(f"{server.rtmp}/live/kick", size="320x240", bitrate="300k")
    procs = [pub]
    ws: socket.socket | None = None
    try:
        wait_sessions(server, {"rtmp/publisher": 1})
        rtmp_player = player(f"{server.rtmp}/live/kick")
        flv_player = player(f"{server.http}/live/kick.live.flv")
        procs += [rtmp_player, flv_player]
        ws = ws_open(server.http_port, "/live/kick.live.flv")
        sessions = wait_sessions(server, {"rtmp/publisher": 1, "rtmp/player": 1, "http-flv/player": 1,
                                          "ws-flv/player": 1})
        ids = {f"{s['protocol']}/{s['role']}": s["id"] for s in sessions}
        time.sleep(1.0)  # some media flows to every player first
        for p in procs:
            assert p.poll() is None, stop(p)

        # HTTP-FLV: ZLMediaKit kick_session
        assert zlm(server, "kick_session", id=ids["http-flv/player"])["code"] == 0
        flv_player.wait(20)
        # WS-FLV: SRS DELETE /api/v1/clients/{id}
        assert srs_delete(server, ids["ws-flv/player"])["code"] == 0
        got, closed = ws_until_closed(ws, 10)
        assert closed and got > 0, "the WebSocket reader received media, then was disconnected"
        # RTMP player: Nimble /manage/sessions/delete
        assert nimble_delete(server, ids["rtmp/player"]) == {"status": "ok", "deleted": 1, "not_found": []}
        rtmp_player.wait(20)
        # RTMP publisher: the shell
        shell = TelnetClient("127.0.0.1", server.shell_port)
        try:
            shell.login("admin", "pw")
            shell.expect("mediasrv> ")
            assert f"kicked {ids['rtmp/publisher']}" in shell.command(f"kick {ids['rtmp/publisher']}")
        finally:
            shell.close()
        pub.wait(20)

        remaining = {f"{s['protocol']}/{s['role']}" for s in zlm(server, "getAllSession")["data"]}
        assert not remaining & set(ids), remaining

        # each kicked session's end hook, exactly once
        for sid in ids.values():
            hooks.wait("/zlm/on_flow_report", id=sid, timeout=15)
        time.sleep(2)
        for key, sid in ids.items():
            reports = hooks.find("/zlm/on_flow_report", id=sid)
            assert len(reports) == 1, (key, reports)
            assert reports[0]["json"]["player"] is (key != "rtmp/publisher")
    finally:
        if ws is not None:
            ws.close()
        for p in procs:
            stop(p)


def test_kick_rtsp_tcp_udp_and_hls(env: tuple[Server, HookServer]) -> None:
    server, hooks = env
    pub = start_publisher(f"{server.rtmp}/live/kick2", size="320x240", bitrate="300k")
    procs = [pub]
    try:
        wait_sessions(server, {"rtmp/publisher": 1})
        tcp = subprocess.Popen([FFMPEG or "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-rtsp_transport", "tcp",
                                "-i", f"{server.rtsp}/live/kick2", "-c", "copy", "-f", "null", "-"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        udp = subprocess.Popen([FFMPEG or "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-rtsp_transport", "udp",
                                "-i", f"{server.rtsp}/live/kick2", "-c", "copy", "-f", "null", "-"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs += [tcp, udp]
        # an HLS viewer: a browser-like client keeping its cookie
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        playlist_url = f"{server.http}/live/kick2/hls.m3u8"
        deadline = time.monotonic() + 20
        while True:
            try:
                with opener.open(playlist_url, timeout=10) as r:
                    assert r.status == 200
                    break
            except urllib.error.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        sessions = wait_sessions(server, {"rtsp/player": 2, "hls/player": 1})
        rtsp_ids = [s["id"] for s in sessions if s["protocol"] == "rtsp"]
        hls_id = next(s["id"] for s in sessions if s["protocol"] == "hls")
        time.sleep(1.0)
        for p in procs:
            assert p.poll() is None, stop(p)

        assert zlm(server, "kick_sessions", peer_ip="127.0.0.1", local_port=str(server.rtsp_port))["count_hit"] == 2
        tcp.wait(20)
        udp.wait(20)
        assert zlm(server, "kick_session", id=hls_id)["code"] == 0
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(playlist_url, timeout=10)
        assert e.value.code == 403, "the kicked HLS viewer's cookie is revoked"
        for sid in [*rtsp_ids, hls_id]:
            hooks.wait("/zlm/on_flow_report", id=sid, timeout=15)
        time.sleep(2)
        for sid in [*rtsp_ids, hls_id]:
            assert len(hooks.find("/zlm/on_flow_report", id=sid)) == 1, sid
    finally:
        for p in procs:
            stop(p)
