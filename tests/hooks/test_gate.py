"""The gate on task.Clock with a scripted client: deadlines, retries, failure
policy, parallel dialects, cancellation, and exact pairing of end events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from mediasrv import config
from mediasrv.core.context import Core
from mediasrv.core.sessions import Role
from mediasrv.hooks.client import HookResponse, HookTransportError
from mediasrv.hooks.model import AccessRequest, Action, Decision


@dataclass
class Sent:
    method: str
    url: str
    timeout: float
    body: bytes | None
    headers: dict[str, str]
    d: defer.Deferred[HookResponse] = field(default_factory=defer.Deferred)

    @property
    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def reply(self, status: int = 200, body: bytes = b'{"code":0}', headers: dict[str, str] | None = None) -> None:
        self.d.callback(HookResponse(status, headers or {}, body))


class ScriptedClient:
    """Records requests; the test answers each one (or lets it hang)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[Sent] = []

    def request(self, method: str, url: str, timeout: float, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> defer.Deferred[HookResponse]:
        s = Sent(method, url, timeout, body, headers or {})
        s.d.addTimeout(timeout, self.clock)

        def to_transport(f: Any) -> Any:
            if f.check(defer.TimeoutError):
                raise HookTransportError(f"no reply within {timeout:g} s")
            return f

        s.d.addErrback(to_transport)
        self.sent.append(s)
        return s.d


def make_core(clock: Clock, *sets: str) -> tuple[Core, ScriptedClient]:
    client = ScriptedClient(clock)
    core = Core.build(config.load(overrides=list(sets)), clock, client)  # type: ignore[arg-type]
    return core, client


def request_for(core: Core, action: Action = Action.PLAY, stream: str = "test") -> AccessRequest:
    s = core.sessions.open("rtmp", "10.0.0.7", 40000, 1935, core.clock.seconds())
    s.role = Role.PLAYER if action is Action.PLAY else Role.PUBLISHER
    s.app, s.stream, s.params = "live", stream, "token=abc"
    return AccessRequest(action, "rtmp", "rtmp", "__defaultVhost__", "live", stream, "token=abc", "10.0.0.7",
                         40000, s.id, tc_url="rtmp://example.com/live")


ZLM = ("hook.enable=1", "hook.on_play=http://h/on_play", "hook.on_publish=http://h/on_publish",
       "hook.retry=1", "hook.retry_delay=3", "hook.timeoutSec=10")


def results(d: defer.Deferred[Decision]) -> list[Decision]:
    out: list[Decision] = []
    d.addCallback(out.append)
    return out


def test_no_hooks_allows_synchronously(clock: Clock) -> None:
    core, client = make_core(clock)
    assert results(core.gate.authorize(request_for(core))) == [Decision(True)]
    assert client.sent == []


def test_zlm_on_play_fields_and_allow(clock: Clock) -> None:
    core, client = make_core(clock, *ZLM)
    got = results(core.gate.authorize(request_for(core)))
    assert not got, "nothing decided before the hook answered"
    (sent,) = client.sent
    body = sent.json
    assert sent.url == "http://h/on_play" and sent.method == "POST"
    assert {k: body[k] for k in ("schema", "protocol", "vhost", "app", "stream", "params", "ip", "port")} == {
        "schema": "rtmp", "protocol": "rtmp", "vhost": "__defaultVhost__", "app": "live", "stream": "test",
        "params": "token=abc", "ip": "10.0.0.7", "port": 40000}
    assert body["mediaServerId"] == "your_server_id" and isinstance(body["hook_index"], int)
    assert sent.headers["X-VHOST"] == "__defaultVhost__"
    sent.reply()
    assert got == [Decision(True)]


@pytest.mark.parametrize(("status", "body"), [(200, b'{"code":1,"msg":"no"}')])
def test_zlm_explicit_denial_is_not_retried(clock: Clock, status: int, body: bytes) -> None:
    core, client = make_core(clock, *ZLM)
    got = results(core.gate.authorize(request_for(core)))
    client.sent[0].reply(status, body)
    assert got == [Decision(False, "no")]
    clock.advance(10)
    assert len(client.sent) == 1


@pytest.mark.parametrize("body", [b'{"code":"0"}', b"0", b"not json", b"[0]"])
def test_zlm_non_conforming_reply_retried_then_denied(clock: Clock, body: bytes) -> None:
    core, client = make_core(clock, *ZLM)
    got = results(core.gate.authorize(request_for(core)))
    client.sent[0].reply(200, body)
    assert not got
    clock.advance(3)
    assert len(client.sent) == 2
    first, second = (s.json["hook_index"] for s in client.sent)
    assert second > first, "a retry gets a new hook_index"
    client.sent[1].reply(200, body)
    assert len(got) == 1 and not got[0].allowed


def test_zlm_http_201_is_a_failure(clock: Clock) -> None:
    core, client = make_core(clock, *ZLM, "hook.retry=0")
    got = results(core.gate.authorize(request_for(core)))
    client.sent[0].reply(201, b'{"code":0}')
    assert len(got) == 1 and not got[0].allowed


def test_deadline_runs_on_the_injected_clock(clock: Clock) -> None:
    core, client = make_core(clock, *ZLM)
    got = results(core.gate.authorize(request_for(core)))
    clock.advance(9.9)
    assert not got
    clock.advance(0.1)  # first attempt times out
    clock.advance(3)  # retry delay
    assert len(client.sent) == 2
    clock.advance(10)
    assert len(got) == 1 and not got[0].allowed and "no reply within 10 s" in got[0].reason


def test_on_failure_allow(clock: Clock) -> None:
    core, client = make_core(clock, *ZLM, "hook.on_failure=allow", "hook.retry=0")
    got = results(core.gate.authorize(request_for(core)))
    client.sent[0].d.errback(HookTransportError("connection refused"))
    assert got[0].allowed


def test_dialects_asked_in_parallel_and_all_must_allow(clock: Clock) -> None:
    core, client = make_core(clock, *ZLM, "http_hooks.enabled=1", "http_hooks.on_play=http://s/a http://s/b",
                             "notify.notify_url=http://n/notify", "oclp.oclp_play=http://o/play")
    got = results(core.gate.authorize(request_for(core)))
    urls = sorted(s.url.split("?")[0] for s in client.sent)
    # SRS's second URL waits for the first; the other dialects go at once
    assert urls == ["http://h/on_play", "http://n/notify", "http://o/play", "http://s/a"]
    by_url = {s.url.split("?")[0]: s for s in client.sent}
    srs = by_url["http://s/a"].json
    assert srs["action"] == "on_play" and srs["param"] == "?token=abc" and srs["stream_url"] == "/live/test"
    nms = by_url["http://n/notify"].json
    assert nms["action"] == "postPlay" and nms["query"] == {"token": ["abc"]} and nms["endtime"] == 0
    oclp = by_url["http://o/play"]
    assert oclp.method == "GET" and "call=play&act=start&domain=example.com&app=live&name=test" in oclp.url
    assert oclp.url.endswith("&token=abc")
    for s in list(client.sent):
        s.reply(200, b"0" if s.url == "http://s/a" else b'{"code":0}')
    assert not got, "SRS chain: second URL still to be asked"
    client.sent[-1].reply(200, b"<html>busy</html>")  # not an SRS answer: retried
    assert not got
    clock.advance(3)
    client.sent[-1].reply(200, b'{"code":0}')
    assert got == [Decision(True)]


def test_one_denial_denies(clock: Clock) -> None:
    core, client = make_core(clock, *ZLM, "notify.notify_url=http://n/notify")
    got = results(core.gate.authorize(request_for(core)))
    by_url = {s.url: s for s in client.sent}
    by_url["http://n/notify"].reply(403, b"")
    by_url["http://h/on_play"].reply()
    assert got == [Decision(False, "HTTP 403")]


def test_cancel_when_client_leaves(clock: Clock) -> None:
    core, client = make_core(clock, *ZLM)
    d = core.gate.authorize(request_for(core))
    failures: list[Any] = []
    d.addErrback(failures.append)
    d.cancel()
    assert failures and failures[0].check(defer.CancelledError)
    assert client.sent[0].d.called, "the HTTP call was cancelled too"
    assert not clock.getDelayedCalls()


def test_publish_reply_options(clock: Clock) -> None:
    core, client = make_core(clock, *ZLM)
    got = results(core.gate.authorize(request_for(core, Action.PUBLISH)))
    sent = client.sent[0]
    assert sent.json["originType"] == 1 and sent.json["originTypeStr"] == "rtmp_push"
    sent.reply(200, b'{"code":0,"enable_hls":false,"continue_push_ms":3000,"msg":"ok","x":null}')
    assert got[0].options == {"enable_hls": "0", "continue_push_ms": "3000"}


def test_end_events_pair_exactly_once(clock: Clock) -> None:
    core, client = make_core(clock, "hook.enable=1", "hook.on_flow_report=http://h/flow", "general.flowThreshold=0",
                             "http_hooks.enabled=1", "http_hooks.on_stop=http://s/stop",
                             "notify.notify_url=http://n/notify")
    req = request_for(core)
    got = results(core.gate.authorize(req))
    (nms,) = client.sent
    nms.reply(200, b"")
    assert got[0].allowed
    session = core.sessions.get(req.session_id)
    assert session is not None
    session.bytes_out = 5000
    clock.advance(7)
    core.sessions.close(session)
    core.sessions.close(session)  # a second close changes nothing
    ends = client.sent[1:]
    assert sorted(s.url for s in ends) == ["http://h/flow", "http://n/notify", "http://s/stop"]
    flow = next(s for s in ends if s.url == "http://h/flow").json
    assert flow["player"] is True and flow["totalBytes"] == 5000 and flow["duration"] == 7
    done = next(s for s in ends if s.url == "http://n/notify").json
    assert done["action"] == "donePlay" and done["endtime"] - done["createtime"] == 7000
    for s in ends:
        s.reply()


def test_denied_session_gets_no_end_event(clock: Clock) -> None:
    core, client = make_core(clock, *ZLM, "hook.on_flow_report=http://h/flow", "general.flowThreshold=0")
    req = request_for(core)
    got = results(core.gate.authorize(req))
    client.sent[0].reply(200, b'{"code":-1}')
    assert not got[0].allowed
    session = core.sessions.get(req.session_id)
    assert session is not None
    core.sessions.close(session)
    assert len(client.sent) == 1


def test_client_leaving_pending_gate_still_pairs_dialects_that_allowed(clock: Clock) -> None:
    core, client = make_core(clock, *ZLM, "notify.notify_url=http://n/notify")
    req = request_for(core)
    d = core.gate.authorize(req)
    d.addErrback(lambda f: f.trap(defer.CancelledError))
    by_url = {s.url: s for s in client.sent}
    by_url["http://n/notify"].reply(200, b"")  # NMS saw postPlay and allowed
    d.cancel()  # the player leaves while ZLMediaKit's on_play hangs
    session = core.sessions.get(req.session_id)
    assert session is not None
    core.sessions.close(session)
    ends = client.sent[2:]
    assert [s.json["action"] for s in ends] == ["donePlay"]
    for s in ends:
        s.reply()


def test_output_disabled_by_on_publish_is_not_played(clock: Clock) -> None:
    from mediasrv.core.context import start_play
    from mediasrv.core.frames import Codec, MediaFrame, Track
    from mediasrv.core.registry import StreamNotFound

    core, _ = make_core(clock)
    pub = core.sessions.open("rtmp", "10.0.0.1", 1, 1935, 0.0)
    stream = core.registry.publish(core.registry.key("", "live", "test"), pub)
    stream.options["enable_rtmp"] = "0"
    stream.set_track(Track(Codec.H264, b"cfg"))
    stream.write(MediaFrame(Codec.H264, 0, 0, True, b"\x00"))
    failures: list[Any] = []
    start_play(core, request_for(core)).addErrback(failures.append)
    assert failures and failures[0].check(StreamNotFound)
    rtsp = AccessRequest(Action.PLAY, "rtsp", "rtsp", "__defaultVhost__", "live", "test", "", "1.2.3.4", 5, "x")
    played: list[Any] = []
    start_play(core, rtsp).addCallback(played.append)
    assert played == [stream]
    core.registry.close_stream(stream.key, "done")
    for call in clock.getDelayedCalls():
        call.cancel()
