"""PingOS dialect: the ``oclp_*`` value syntax and the pull/push relay replies."""

from __future__ import annotations

import pytest

from mediasrv import config
from mediasrv.hooks.client import HookResponse
from mediasrv.hooks.model import AccessRequest, Action, HookReplyError
from mediasrv.hooks.oclp import OclpDialect, decode_gate, decode_relay, parse_hook


def test_parse_hook_defaults_and_options() -> None:
    assert parse_hook("", 3, 60) is None
    h = parse_hook("http://b/play", 3, 60)
    assert h is not None and h.stages == {"start"} and h.timeout == 3 and h.update == 60
    h = parse_hook("http://b/play stage=update,done timeout=500ms update=1m args=k=v", 3, 60)
    assert h is not None
    assert h.stages == {"start", "update", "done"} and h.timeout == 0.5 and h.update == 60 and h.args == "k=v"


@pytest.mark.parametrize("value", ["ftp://x", "http://b stage=later", "http://b timeout=soon", "http://b what=1",
                                   "http://b lonely"])
def test_parse_hook_errors(value: str) -> None:
    with pytest.raises(ValueError):
        parse_hook(value, 3, 60)


def test_bad_oclp_value_is_a_config_error() -> None:
    cfg = config.load(overrides=["oclp.oclp_play=http://b stage=never"])
    with pytest.raises(config.ConfigError, match=r"\[oclp\] oclp_play: unknown stage"):
        OclpDialect(cfg)


def r(status: int, location: str | None = None) -> HookResponse:
    return HookResponse(status, {"location": location} if location else {}, b"")


def test_relay_replies() -> None:
    assert decode_relay(r(200)).allowed and decode_relay(r(200)).options == {}
    moved = decode_relay(r(301, "rtmp://origin/live/cam?k=v"))
    assert moved.allowed and moved.options["relay"] == "rtmp://origin/live/cam?k=v"
    assert decode_relay(r(302, "http://origin/live/cam.flv")).options["relay"].endswith(".flv")
    assert not decode_relay(r(404)).allowed
    with pytest.raises(HookReplyError):
        decode_relay(r(301))  # no Location
    with pytest.raises(HookReplyError):
        decode_relay(r(502))


def test_gate_replies() -> None:
    assert decode_gate(r(200)).allowed and decode_gate(r(204)).allowed and decode_gate(r(300)).allowed
    assert not decode_gate(r(403)).allowed
    with pytest.raises(HookReplyError):
        decode_gate(r(500))


def test_pull_request_url() -> None:
    d = OclpDialect(config.load(overrides=["oclp.oclp_pull=http://b/pull?x=1"]))
    req = AccessRequest(Action.PLAY, "rtmp", "rtmp", "__defaultVhost__", "live", "cam", "token=abc", "1.2.3.4", 5,
                        "sid", tc_url="rtmp://edge.example:1935/live")
    call = d.relay_call("pull", req)
    assert call is not None
    url, body, _ = call.encode()
    assert body is None and call.method == "GET"
    assert url == ("http://b/pull?x=1&call=pull&act=start&domain=edge.example&app=live&name=cam&clientid=sid"
                   "&token=abc")
