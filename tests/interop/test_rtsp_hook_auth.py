"""RTSP Digest auth end to end through ZLMediaKit's on_rtsp_realm/on_rtsp_auth
on a real hook server, with ffprobe as the client (CONTRACT §3, hooks.md §1.4)."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import FFPROBE, needs_ffmpeg, start_publisher, stop
from tests.support.hookserver import HookServer
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

REALM = "mediasrv-test"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    md5 = hashlib.md5(f"bob:{REALM}:hunter2".encode()).hexdigest()
    rules = [
        {"match": {"path": "/on_rtsp_realm", "field": {"stream": "open"}}, "body": {"code": 0, "realm": ""}},
        {"match": {"path": "/on_rtsp_realm"}, "body": {"code": 0, "realm": REALM}},
        {"match": {"path": "/on_rtsp_auth", "field": {"user_name": "alice"}},
         "body": {"code": 0, "encrypted": False, "passwd": "s3cret"}},
        {"match": {"path": "/on_rtsp_auth", "field": {"user_name": "bob"}},
         "body": {"code": 0, "encrypted": True, "passwd": md5}},
        {"match": {"path": "/on_rtsp_auth"}, "body": {"code": -1, "msg": "no such user"}},
    ]
    with HookServer(tmp_path_factory.mktemp("hooks"), rules=rules) as hs:
        yield hs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: HookServer) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("srv"), "hook.enable=1",
                        f"hook.on_rtsp_realm={backend.url('/on_rtsp_realm')}",
                        f"hook.on_rtsp_auth={backend.url('/on_rtsp_auth')}",
                        f"hook.on_play={backend.url('/on_play')}", "hook.timeoutSec=3") as srv:
        pubs = [start_publisher(f"{srv.rtmp}/live/{name}", size="320x240", bitrate="300k")
                for name in ("cam", "open")]
        time.sleep(3)
        yield srv
        for p in pubs:
            stop(p)


def probe(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FFPROBE or "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries",
                           "stream=codec_name", "-of", "csv=p=0", url], capture_output=True, text=True, timeout=40)


def test_plain_password_from_hook(server: Server, backend: HookServer) -> None:
    r = probe(f"rtsp://alice:s3cret@127.0.0.1:{server.rtsp_port}/live/cam")
    assert r.returncode == 0, r.stderr
    assert "h264" in r.stdout and "aac" in r.stdout
    auth = backend.wait("/on_rtsp_auth", user_name="alice")[0]["json"]
    assert auth["realm"] == REALM and auth["must_no_encrypt"] is False
    assert auth["app"] == "live" and auth["stream"] == "cam" and auth["schema"] == "rtsp"
    # ZLMediaKit skips on_play for a session that passed RTSP auth
    assert backend.find("/on_play", stream="cam") == []


def test_md5_password_from_hook(server: Server) -> None:
    r = probe(f"rtsp://bob:hunter2@127.0.0.1:{server.rtsp_port}/live/cam")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("userinfo", ["alice:wrong@", "mallory:x@", ""])
def test_wrong_or_missing_credentials_fail(server: Server, userinfo: str) -> None:
    r = probe(f"rtsp://{userinfo}127.0.0.1:{server.rtsp_port}/live/cam")
    assert r.returncode != 0
    assert "401" in r.stderr


def test_empty_realm_falls_back_to_on_play(server: Server, backend: HookServer) -> None:
    r = probe(f"rtsp://127.0.0.1:{server.rtsp_port}/live/open?token=t1")
    assert r.returncode == 0, r.stderr
    play = backend.wait("/on_play", stream="open")[0]["json"]
    assert play["schema"] == "rtsp" and play["params"] == "token=t1"


def test_realm_hook_down_denies(tmp_path: Path) -> None:
    with running_server(tmp_path, "hook.enable=1", "hook.on_rtsp_realm=http://127.0.0.1:9/realm",
                        "hook.retry=0", "hook.timeoutSec=2") as srv:
        pub = start_publisher(f"{srv.rtmp}/live/cam", size="320x240", bitrate="300k")
        try:
            time.sleep(2)
            r = probe(f"rtsp://alice:s3cret@127.0.0.1:{srv.rtsp_port}/live/cam")
        finally:
            stop(pub)
    assert r.returncode != 0
