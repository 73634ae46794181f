"""Reply rules of the dialect decoders, pinned case by case against the originals.

SRS: ``SrsHttpHooks::do_post`` (ossrs/srs trunk/src/app/srs_app_http_hooks.cpp).
ZLMediaKit: ``server/WebHook.cpp`` -- ``close``/``encrypted`` through jsoncpp's
``Value::asBool()``, on_publish options through ``jsonToMini`` (``asString``)
and ZLToolKit's ``variant::as<bool>``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from mediasrv.hooks import srs, zlm
from mediasrv.hooks.client import HookResponse
from mediasrv.hooks.model import Decision, HookReplyError
from tests.hooks.test_gate import make_core, request_for, results

# -- SRS ------------------------------------------------------------------------------------------------------------
# (status, body, what SRS 6 does, what we do); None = not an answer (retry, then on_failure)
SRS_CASES: list[tuple[int, bytes, bool, bool | None]] = [
    (200, b"0", True, True),
    (201, b"0", True, True),
    (200, b'{"code":0}', True, True),
    (200, b'{"code":0,"data":{"x":1}}', True, True),
    (201, b'{"code":0}', True, True),
    (200, b"1", False, False),
    (200, b"-1", False, False),
    (200, b"403", False, False),
    (200, b"1\n", False, False),
    (200, b'{"code":1}', False, False),
    (200, b'{"code":403,"msg":"no"}', False, False),
    (200, b'{"code":"0"}', False, False),  # SRS: ensure_property_integer fails -> ERROR_RESPONSE_CODE
    (200, b'{"msg":"ok"}', False, False),
    (200, b'"0"', False, False),
    (200, b"0.0", False, False),
    (200, b"true", False, False),
    (200, b"[0]", False, False),
    (200, b"null", False, False),
    # departures (docs/design.md "SRS reply codes")
    (200, b"0\n", False, True),  # SRS compares the body with "0" byte for byte (ossrs/srs#3215)
    (200, b" 0", False, True),
    (200, b"0\r\n", False, True),
    (200, b"", False, None),  # SRS: ERROR_HTTP_DATA_INVALID; here a broken backend -> on_failure
    (200, b"OK", False, None),
    (200, b"<html>", False, None),
    # any other status refuses, as in SRS
    (500, b"0", False, False),
    (204, b"", False, False),
    (404, b'{"code":0}', False, False),
]


@pytest.mark.parametrize(("status", "body", "srs_does", "we_do"), SRS_CASES,
                         ids=[f"{s}-{b!r}" for s, b, _, _ in SRS_CASES])
def test_srs_reply_table(status: int, body: bytes, srs_does: bool, we_do: bool | None) -> None:
    response = HookResponse(status, {}, body)
    if we_do is None:
        with pytest.raises(HookReplyError):
            srs.decode_reply(response)
        return
    decision = srs.decode_reply(response)
    assert decision.allowed is we_do
    if not we_do:
        assert decision.reason


def test_srs_integer_refusal_names_the_code() -> None:
    assert srs.decode_reply(HookResponse(200, {}, b"7")) == Decision(False, "code 7")
    assert srs.decode_reply(HookResponse(200, {}, b'{"code":7}')) == Decision(False, "code 7")


SRS_PLAY = ("http_hooks.enabled=1", "http_hooks.on_play=http://h/srs/on_play", "http_hooks.on_failure=allow",
            "http_hooks.timeoutSec=2")


@pytest.mark.parametrize("body", [b"1", b'{"code":1}', b'{"code":"0"}', b"2\n"])
def test_srs_refusal_is_final_even_with_on_failure_allow(clock: Clock, body: bytes) -> None:
    """A refusing answer ends the gate at once: no retry (even with hook.retry), no on_failure."""
    core, client = make_core(clock, *SRS_PLAY, "hook.retry=2", "hook.retry_delay=1")
    got = results(core.gate.authorize(request_for(core)))
    client.sent[0].reply(200, body)
    assert len(got) == 1 and not got[0].allowed
    clock.advance(10)
    assert len(client.sent) == 1


def test_srs_broken_reply_falls_to_on_failure(clock: Clock) -> None:
    core, client = make_core(clock, *SRS_PLAY, "hook.retry=0")
    got = results(core.gate.authorize(request_for(core)))
    client.sent[0].reply(200, b"<html>oops</html>")
    assert len(got) == 1 and got[0].allowed


# -- ZLMediaKit booleans -------------------------------------------------------------------------------------------
# value -> (jsoncpp asBool, as used for close/encrypted; None = throws), (option, variant::as<bool>; None = skipped)
BOOLS: list[tuple[Any, bool | None, bool | None]] = [
    (True, True, True),
    (False, False, False),
    (1, True, True),
    (0, False, False),
    (2, True, False),  # asBool: nonzero; the option: "2" -> stringstream >> bool fails -> false
    (-1, True, False),
    (1.0, True, True),  # asString "1" (%.17g) -> true
    (1.5, True, True),  # "1.5": reads 1
    (0.5, True, False),  # "0.5": reads 0
    (0.0, False, False),
    (None, False, None),  # null: asBool false; an option: skipped (the default stays)
    ("1", None, True),
    ("0", None, False),
    ("true", None, True),
    ("false", None, False),
    ("TRUE", None, True),
    ("False", None, False),
    ("", None, None),  # empty: ZLMediaKit keeps the default
    ("yes", None, False),
    ("on", None, False),
    ("2", None, False),
    (" 1", None, True),  # stringstream skips white space
    ("1 ", None, True),
    (" true", None, False),  # not the word "true", and no integer
    ("01", None, True),
    ("-1", None, False),
    ([], None, None),
    ({}, None, None),
]


@pytest.mark.parametrize(("value", "as_bool", "option"), BOOLS, ids=[repr(v) for v, _, _ in BOOLS])
def test_zlm_boolean_table(value: Any, as_bool: bool | None, option: bool | None) -> None:
    assert zlm.zlm_json_bool(value) is as_bool
    assert zlm.zlm_bool(value) is option


@pytest.mark.parametrize("text", ["1", "0", "true", "false", "1.5", "0.5", "2", ""])
def test_zlm_bool_reads_the_stored_option_text_like_the_raw_value(text: str) -> None:
    """decode_publish_reply keeps options as text; reading that text gives what ZLMediaKit gives."""
    raw: Any = json.loads(text) if text else ""
    reply = HookResponse(200, {}, json.dumps({"code": 0, "enable_hls": raw}).encode())
    options = zlm.decode_publish_reply(reply).options
    assert zlm.zlm_bool(options.get("enable_hls")) is zlm.zlm_bool(raw)


def test_zlm_publish_reply_skips_what_zlmediakit_skips() -> None:
    body = {"code": 0, "msg": "ok", "enable_hls": True, "enable_mp4": None, "x": [1], "y": {"a": 1},
            "mp4_max_second": 60, "hls_save_path": "/data/hls"}
    options = zlm.decode_publish_reply(HookResponse(200, {}, json.dumps(body).encode())).options
    assert options == {"enable_hls": "1", "mp4_max_second": "60", "hls_save_path": "/data/hls"}


def _reply(**members: Any) -> HookResponse:
    return HookResponse(200, {}, json.dumps({"code": 0, **members}).encode())


@pytest.mark.parametrize(("value", "closes"), [(v, b) for v, b, _ in BOOLS if not isinstance(v, (list, dict))])
def test_zlm_close_member(value: Any, closes: bool | None) -> None:
    d = zlm.decode_close_reply(_reply(close=value))
    assert d.allowed is bool(closes)
    if not d.allowed:
        assert "stays" in d.reason


def test_zlm_close_missing_or_refused_keeps_the_stream() -> None:
    assert not zlm.decode_close_reply(_reply()).allowed
    refused = zlm.decode_close_reply(HookResponse(200, {}, b'{"code":1,"close":true}'))
    assert not refused.allowed and refused.reason == "code 1: the stream stays"


@pytest.mark.parametrize(("value", "encrypted"), [(v, b) for v, b, _ in BOOLS if not isinstance(v, (list, dict))])
def test_zlm_encrypted_member(value: Any, encrypted: bool | None) -> None:
    d = zlm.decode_auth_reply(_reply(encrypted=value, passwd="secret"))
    if encrypted is None:  # jsoncpp throws: ZLMediaKit fails the hook and refuses the user
        assert not d.allowed and "encrypted" in d.reason
    else:
        assert d.allowed and d.options == {"encrypted": "1" if encrypted else "0", "passwd": "secret"}


def test_zlm_passwd_as_jsoncpp_string() -> None:
    assert zlm.decode_auth_reply(_reply(passwd=1234)).options["passwd"] == "1234"
    assert zlm.decode_auth_reply(_reply()).options["passwd"] == ""
    assert not zlm.decode_auth_reply(_reply(passwd=["x"])).allowed
