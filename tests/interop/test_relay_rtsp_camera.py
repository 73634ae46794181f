"""An RTSP "camera" that wants Digest credentials: a real mediasrv whose RTSP auth goes through
ZLMediaKit's on_rtsp_realm/on_rtsp_auth to a real hook server (as in test_rtsp_hook_auth), pulled by
the relay client with the credentials in the URL's userinfo."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from mediasrv.relay.errors import AuthFailed, Stopped
from mediasrv.relay.factory import pull_client
from tests.relay.support import Recorder, check_pulled, until, video_span_ms
from tests.support.clients import needs_ffmpeg, start_publisher, stop
from tests.support.hookserver import HookServer
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

CLOCK: Any = reactor
REALM = "camera-realm"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    md5 = hashlib.md5(f"bob:{REALM}:hunter2".encode()).hexdigest()
    rules = [
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
def camera(tmp_path_factory: pytest.TempPathFactory, backend: HookServer) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("camera"), "hook.enable=1",
                        f"hook.on_rtsp_realm={backend.url('/on_rtsp_realm')}",
                        f"hook.on_rtsp_auth={backend.url('/on_rtsp_auth')}", "hook.timeoutSec=3") as srv:
        pub = start_publisher(f"{srv.rtmp}/live/cam", size="320x240", bitrate="300k")
        yield srv
        stop(pub)


@pytest.mark.parametrize(("userinfo", "rtp_type"), [("bob:hunter2", 0), ("alice:s3cret", 1)],
                         ids=["md5-from-hook-tcp", "plain-from-hook-udp"])
@pytest_twisted.ensureDeferred
async def test_pull_with_digest_credentials_in_the_url(camera: Server, backend: HookServer, userinfo: str,
                                                       rtp_type: int) -> None:
    sink = Recorder()
    client = pull_client(f"rtsp://{userinfo}@127.0.0.1:{camera.rtsp_port}/live/cam", sink, CLOCK,
                         rtp_type=rtp_type)
    await client.start()
    await until(lambda: video_span_ms(sink) >= 2000, 15, "2 s of video")
    check_pulled(sink, width=320, height=240, fps=25, sample_rate=44100, channels=1, min_span_ms=2000)
    user = userinfo.split(":")[0]
    auth = backend.wait("/on_rtsp_auth", user_name=user)[0]["json"]
    assert auth["realm"] == REALM and auth["stream"] == "cam"
    assert client.masked_url() == f"rtsp://{user}:***@127.0.0.1:{camera.rtsp_port}/live/cam"
    client.stop()
    assert isinstance(await client.when_closed(), Stopped)


@pytest.mark.parametrize(("userinfo", "message"), [
    ("bob:badpass@", "401 Unauthorized: wrong user name or password"),
    ("mallory:x@", "401 Unauthorized: wrong user name or password"),
    ("", "401 Unauthorized and the URL carries no credentials"),
])
@pytest_twisted.ensureDeferred
async def test_wrong_or_missing_credentials_fail_clearly(camera: Server, userinfo: str, message: str) -> None:
    sink = Recorder()
    client = pull_client(f"rtsp://{userinfo}127.0.0.1:{camera.rtsp_port}/live/cam", sink, CLOCK, timeout_sec=10)
    began = CLOCK.seconds()
    with pytest.raises(AuthFailed) as e:
        await client.start()
    assert message in str(e.value)
    assert CLOCK.seconds() - began < 5, "an auth failure must not wait for the start deadline"
    password = userinfo.partition(":")[2].rstrip("@")
    assert not password or password not in str(e.value)
    assert sink.calls == ["closed"] and isinstance(sink.reasons[0], AuthFailed)
