"""RTSP Digest/Basic auth against real ffprobe (``rtsp://user:pass@...``).

The RTSP listener runs in the test process on pytest-twisted's reactor, with
``core.rtsp_realm`` / ``core.rtsp_auth`` answered by the test (the two calls the
hook layer makes to ``on_rtsp_realm`` / ``on_rtsp_auth``), and a stream fed
from the fixture file; ffprobe runs as a child process through
``getProcessOutputAndValue`` so the reactor keeps serving while it works.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import LoopingCall
from twisted.internet.utils import getProcessOutputAndValue

from mediasrv import config
from mediasrv.core.context import Core
from mediasrv.core.frames import Codec
from mediasrv.hooks.model import AccessRequest
from mediasrv.rtsp.protocol import RtspFactory
from tests.rtsp.support import AUDIO_TRACK, FRAMES, VIDEO_TRACK, fresh
from tests.support.clients import FFPROBE, needs_ffmpeg

pytestmark = [pytest.mark.interop, needs_ffmpeg]


@dataclass
class Backend:
    """Plays the hook backend: realm, and the password per user (plain or md5(user:realm:pass))."""

    realm: str = "mediasrv"
    users: dict[str, tuple[bool, str]] = field(default_factory=dict)
    calls: list[tuple[str, str, bool]] = field(default_factory=list)

    def rtsp_realm(self, request: AccessRequest) -> defer.Deferred[str]:
        return defer.succeed(self.realm)

    def rtsp_auth(self, request: AccessRequest, user: str, realm: str, must_no_encrypt: bool
                  ) -> defer.Deferred[tuple[bool, str]]:
        self.calls.append((user, realm, must_no_encrypt))
        return defer.succeed(self.users.get(user, (False, "")))


@dataclass
class Rig:
    port: int
    backend: Backend
    core: Core


@pytest_twisted.async_yield_fixture(scope="module")
async def rig() -> AsyncIterator[Rig]:
    core = Core.build(config.load(None, ["general.maxStreamWaitMS=2000", "rtsp.authBasic=1"]), reactor)
    backend = Backend(users={"alice": (False, "s3cret"),
                             "bob": (True, hashlib.md5(b"bob:mediasrv:hunter2").hexdigest())})
    core.rtsp_realm = backend.rtsp_realm  # type: ignore[attr-defined]
    core.rtsp_auth = backend.rtsp_auth  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, RtspFactory(core, reactor), interface="127.0.0.1")  # type: ignore[attr-defined]
    pub = core.sessions.open("rtmp", "127.0.0.1", 1, 1935, reactor.seconds())  # type: ignore[attr-defined]
    stream = core.registry.publish(core.registry.key("", "live", "auth"), pub)
    stream.set_track(VIDEO_TRACK)
    stream.set_track(AUDIO_TRACK)
    frames = list(FRAMES)
    span = frames[-1].dts + 40
    state = {"i": 0}

    def feed() -> None:  # the fixture, looped, at about real time
        for _ in range(3):
            i = state["i"]
            state["i"] += 1
            f = frames[i % len(frames)]
            if f.codec is Codec.H264 or f.codec is Codec.AAC:
                stream.write(fresh(f, (i // len(frames)) * span))

    loop = LoopingCall(feed)
    loop.clock = reactor  # type: ignore[assignment]
    loop.start(0.04)
    yield Rig(port.getHost().port, backend, core)
    loop.stop()
    core.registry.close_all("test over")
    await port.stopListening()


async def ffprobe(url: str, *extra: str) -> tuple[int, str]:
    out, err, code = await getProcessOutputAndValue(
        FFPROBE or "ffprobe", ["-v", "error", "-rtsp_transport", "tcp", *extra, "-show_entries",
                               "stream=codec_name,width,height", "-of", "csv=p=0", url],
        env=dict(os.environ))
    return code, (out + err).decode(errors="replace")


def url(rig: Rig, userinfo: str = "") -> str:
    return f"rtsp://{userinfo + '@' if userinfo else ''}127.0.0.1:{rig.port}/live/auth"


@pytest_twisted.ensureDeferred
async def test_digest_with_plain_password(rig: Rig) -> None:
    code, out = await ffprobe(url(rig, "alice:s3cret"))
    assert code == 0, out
    assert "h264,1280,720" in out and "aac" in out
    assert ("alice", "mediasrv", False) in rig.backend.calls


@pytest_twisted.ensureDeferred
async def test_digest_with_encrypted_password(rig: Rig) -> None:
    code, out = await ffprobe(url(rig, "bob:hunter2"))
    assert code == 0, out


@pytest_twisted.ensureDeferred
async def test_wrong_password_fails(rig: Rig) -> None:
    code, out = await ffprobe(url(rig, "alice:wrong"))
    assert code != 0 and "401" in out, out


@pytest_twisted.ensureDeferred
async def test_no_credentials_fail(rig: Rig) -> None:
    code, out = await ffprobe(url(rig))
    assert code != 0 and "401" in out, out


@pytest_twisted.ensureDeferred
async def test_unknown_user_fails(rig: Rig) -> None:
    code, out = await ffprobe(url(rig, "mallory:s3cret"))
    assert code != 0 and "401" in out, out
