"""The RTSP reply vocabulary and its one map from the core's refusals to status codes."""

from __future__ import annotations

import pytest
from twisted.python.failure import Failure

from mediasrv.core.context import AccessDenied
from mediasrv.core.registry import StreamBusy, StreamNotFound
from mediasrv.hooks.model import Action
from mediasrv.rtsp.reply import RtspError, refused


@pytest.mark.parametrize("error, action, status, why", [
    (AccessDenied("no token"), Action.PLAY, 403, "play denied: no token"),
    (AccessDenied("no token"), Action.PUBLISH, 403, "publish denied: no token"),
    (StreamNotFound("live/x"), Action.PLAY, 404, "no such stream: live/x"),
    (StreamBusy("live/x"), Action.PUBLISH, 406, "already publishing: live/x"),
])
def test_refusals_become_statuses(error: Exception, action: Action, status: int, why: str) -> None:
    with pytest.raises(RtspError) as caught:
        refused(Failure(error), action)
    assert (caught.value.status, caught.value.why) == (status, why)
    reply = caught.value.reply()
    assert reply.status == status and reply.body == why.encode() + b"\n"
    assert ("Content-Type", "text/plain; charset=utf-8") in reply.headers


def test_other_failures_pass_through() -> None:
    failure = Failure(RuntimeError("a bug"))
    assert refused(failure, Action.PLAY) is failure


def test_a_success_reply_has_no_body() -> None:
    reply = RtspError(301, "moved", headers=[("Location", "rtsp://elsewhere/")], close=True).reply()
    assert (reply.status, reply.headers, reply.body, reply.close) == (301, [("Location", "rtsp://elsewhere/")], b"",
                                                                       True)
