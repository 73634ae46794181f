"""The HTTP-FLV pull client against an in-memory web resource (treq's RequestTraversalAgent):
a streamed body split anywhere, refusals, garbage, limits, stop."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from mediasrv.codec import flv
from mediasrv.core import flvmux
from mediasrv.relay.errors import AuthFailed, ProtocolViolation, Refused, SourceEnded, Stopped, StreamNotFound
from mediasrv.relay.httpflv import HttpFlvPullClient
from tests.relay.support import AUDIO_TRACK, FRAMES, VIDEO_TRACK, Recorder


def flv_start() -> bytes:
    return b"".join([
        flv.flv_header(True, True),
        flv.encode_tag(flv.TAG_SCRIPT, 0, flv.script_tag_payload("onMetaData", {"width": 1280.0})),
        flv.encode_tag(flv.TAG_VIDEO, 0, flvmux.config_body(VIDEO_TRACK)),
        flv.encode_tag(flv.TAG_AUDIO, 0, flvmux.config_body(AUDIO_TRACK)),
    ])


def flv_frames(count: int) -> bytes:
    return b"".join(flvmux.frame_tag(f) for f in FRAMES[:count])


class FlvResource(Resource):
    isLeaf = True

    def __init__(self, status: int = 200, first: bytes = b"") -> None:
        super().__init__()
        self.status = status
        self.first = first
        self.requests: list[Request] = []

    def render_GET(self, request: Request) -> Any:
        self.requests.append(request)
        if self.status != 200:
            request.setResponseCode(self.status)
            return b"no"
        request.setHeader(b"content-type", b"video/x-flv")
        if self.first:
            request.write(self.first)
        return NOT_DONE_YET


class Rig:
    def __init__(self, resource: FlvResource, url: str = "http://127.0.0.1:8080/live/cam.live.flv",
                 **kw: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.agent = RequestTraversalAgent(resource)
        self.resource = resource
        self.sink = Recorder()
        self.client = HttpFlvPullClient(url, self.sink, self.reactor, agent=self.agent, timeout_sec=5, **kw)
        self.outcome: list[Any] = []
        self.client.start().addBoth(self.outcome.append)
        self.agent.flush()

    def write(self, data: bytes, step: int = 0) -> None:
        request = self.resource.requests[0]
        for i in range(0, len(data), step or len(data) or 1):
            request.write(data[i:i + (step or len(data))])
            self.agent.flush()


@pytest.mark.parametrize("step", [0, 7, 1])
def test_streamed_flv_becomes_tracks_and_frames(step: int) -> None:
    # the FLV header announces audio and video; metadata without codec ids does not change that
    rig = Rig(FlvResource())
    rig.write(flv_start() + flv_frames(40), step)
    assert rig.outcome == [None]
    assert rig.sink.tracks[0] == [VIDEO_TRACK, AUDIO_TRACK]
    assert [(f.codec, f.dts, f.pts, f.keyframe, f.payload) for f in rig.sink.frames] == [
        (f.codec, f.dts, f.pts, f.keyframe, f.payload) for f in FRAMES[:40]]
    rig.resource.requests[0].finish()
    rig.agent.flush()
    assert isinstance(rig.sink.reasons[0], SourceEnded) and rig.sink.calls.count("closed") == 1


def test_credentials_go_as_basic_and_are_masked() -> None:
    rig = Rig(FlvResource(first=flv_start()), url="http://u:s3cret@127.0.0.1:8080/live/cam.flv?token=t")
    request = rig.resource.requests[0]
    assert request.getHeader("authorization") == "Basic " + base64.b64encode(b"u:s3cret").decode()
    assert request.uri == b"/live/cam.flv?token=t"
    assert rig.client.masked_url() == "http://u:***@127.0.0.1:8080/live/cam.flv?token=t"


@pytest.mark.parametrize(("status", "error"), [(404, StreamNotFound), (401, AuthFailed), (403, Refused),
                                               (500, Refused)])
def test_refusals(status: int, error: type[Exception]) -> None:
    rig = Rig(FlvResource(status=status))
    assert rig.outcome[0].check(error) and f"answered {status}" in str(rig.outcome[0].value)
    assert rig.sink.calls == ["closed"]


def test_garbage_body_is_cut_off() -> None:
    rig = Rig(FlvResource(first=b"<html>not flv</html>"))
    assert rig.outcome[0].check(ProtocolViolation) and "not an FLV stream" in str(rig.outcome[0].value)


def test_a_huge_tag_is_refused_before_it_is_buffered() -> None:
    rig = Rig(FlvResource(first=flv.flv_header(True, True)), max_tag_size=1000)
    rig.write(flv.encode_tag(flv.TAG_VIDEO, 0, bytes(5000))[:20])
    assert rig.outcome[0].check(ProtocolViolation) and "exceeds the limit of 1000" in str(rig.outcome[0].value)


def test_stop_mid_stream() -> None:
    rig = Rig(FlvResource(first=flv_start()))
    rig.write(flv_frames(10))
    rig.client.stop()
    rig.agent.flush()
    rig.write(flv_frames(20)[-500:])
    assert rig.sink.calls[-1] == "closed" and isinstance(rig.sink.reasons[0], Stopped)
    assert len(rig.sink.frames) == 10


def test_start_timeout_without_an_answer() -> None:
    class Hang(FlvResource):
        def render_GET(self, request: Request) -> Any:
            return NOT_DONE_YET

    rig = Rig(Hang())
    rig.reactor.advance(5)
    assert "did not start within 5 s (no HTTP answer)" in str(rig.outcome[0].value)
