"""ZLMediaKit dialect (``[hook]``): JSON POST, allow = HTTP 200 + integer ``code`` 0.

Field names and types follow ZLMediaKit's ``server/WebHook.cpp`` (see
shared/spec/hooks.md §1).  Every body carries ``mediaServerId`` and a strictly
increasing ``hook_index`` (a new one per attempt, as ZLMediaKit does).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mediasrv.config import Config
from mediasrv.core.frames import Codec, TrackKind
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.hooks.client import HookResponse
from mediasrv.hooks.model import AccessRequest, Action, Decision, HookCall, HookReplyError

if TYPE_CHECKING:
    from mediasrv.core.stream import Stream

ORIGIN_TYPES = {"rtmp": (1, "rtmp_push"), "rtmps": (1, "rtmp_push"), "rtsp": (2, "rtsp_push"),
                "rtsps": (2, "rtsp_push")}
_CODEC_ID = {Codec.H264: (0, "CodecH264"), Codec.H265: (1, "CodecH265"), Codec.AAC: (2, "CodecAAC")}


def _json_object(response: HookResponse) -> dict[str, Any]:
    if response.status != 200:
        raise HookReplyError(f"HTTP {response.status} (ZLMediaKit hooks need 200)")
    try:
        obj = json.loads(response.body)
    except ValueError:
        raise HookReplyError("reply is not JSON") from None
    if not isinstance(obj, dict):
        raise HookReplyError("reply is not a JSON object")
    code = obj.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise HookReplyError(f"reply 'code' is not an integer: {code!r}")
    return obj


def decode_reply(response: HookResponse) -> Decision:
    obj = _json_object(response)
    if obj["code"] != 0:
        return Decision(False, str(obj.get("msg") or f"code {obj['code']}"))
    return Decision(True)


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def decode_publish_reply(response: HookResponse) -> Decision:
    """on_publish: every member but code/msg is a [protocol] option, kept as
    text (read booleans with :func:`zlm_bool`).  Nulls, arrays and objects are
    skipped, as ZLMediaKit skips what jsoncpp cannot turn into a string."""
    obj = _json_object(response)
    if obj["code"] != 0:
        return Decision(False, str(obj.get("msg") or f"code {obj['code']}"))
    options = {k: _option_text(v) for k, v in obj.items()
               if k not in ("code", "msg") and _json_as_string(v) is not None and v is not None}
    return Decision(True, options=options)


def zlm_json_bool(value: object) -> bool | None:
    """A reply member read as ZLMediaKit reads ``close`` and ``encrypted``:
    jsoncpp's ``Value::asBool()``.  JSON true/false as they are; null (or a
    missing member) false; a number true unless zero; anything else -- a
    string such as ``"1"`` or ``"true"``, an array, an object -- is not
    convertible: None (jsoncpp throws, and ZLMediaKit then treats the whole
    reply as a failed hook)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, float):
        return value == value and value != 0.0  # NaN is false, as in jsoncpp
    return None


_LEADING_INT = re.compile(r"[ \t\n\r\f\v]*([+-]?[0-9]+)")


def _stream_bool(text: str) -> bool:
    """C++ ``stringstream >> bool`` as ZLToolKit's ``variant::as_default``
    uses it: skip white space, read an integer; 0 is false, 1 is true, any
    other value (or no integer at all) fails, which yields false."""
    m = _LEADING_INT.match(text)
    return m is not None and int(m.group(1)) == 1


def _json_as_string(value: object) -> str | None:
    """jsoncpp ``Value::asString()``; None where it throws (arrays, objects)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.17g}"
    if isinstance(value, str):
        return value
    return None


def zlm_bool(value: object) -> bool | None:
    """A ZLMediaKit boolean option (``enable_hls``, ``enable_audio``,
    ``mp4_as_player``, the ``*_demand`` flags, ``auto_close``, ...): what
    ZLMediaKit makes of it, whether ``value`` is the raw JSON member of an
    on_publish reply or the text kept in a stream's options.

    ZLMediaKit turns each reply member into a string (jsoncpp ``asString``)
    and reads it with ZLToolKit's ``variant::as<bool>``: ``true``/``false``
    in any case; else the leading integer, where only 1 is true (``"2"``,
    ``"-1"``, ``"yes"`` are false); ``1.5`` is true, ``0.5`` false.  None
    means "not given": null, ``""`` (ZLMediaKit skips empty values and keeps
    the default) and arrays/objects (not convertible to a string: logged and
    skipped there).  Note ``close``/``encrypted`` are read differently
    (:func:`zlm_json_bool`): there ``2`` is true and ``"1"`` an error.
    """
    if value is None:
        return None
    text = _json_as_string(value)
    if not text:
        return None
    if text[0].isdigit():
        return _stream_bool(text)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return _stream_bool(text)


def decode_close_reply(response: HookResponse) -> Decision:
    """on_stream_none_reader / on_stream_not_found: ``allowed`` carries ``close``
    (jsoncpp ``asBool``; a ``close`` that is not convertible fails the hook in
    ZLMediaKit, so the stream stays, without a retry)."""
    obj = _json_object(response)
    if obj["code"] != 0:
        return Decision(False, f"code {obj['code']}: the stream stays")
    close = zlm_json_bool(obj.get("close"))
    if close is None:
        return Decision(False, f"close={obj.get('close')!r} is not a JSON boolean or number: the stream stays")
    return Decision(close, "close" if close else "close=false: the stream stays")


UNAUTHED_REALM = "unAuthedRealm"


def decode_realm_reply(response: HookResponse) -> Decision:
    """on_rtsp_realm: ``options["realm"]`` (empty: no RTSP auth)."""
    obj = _json_object(response)
    if obj["code"] != 0:
        return Decision(False, str(obj.get("msg") or f"code {obj['code']}"))
    return Decision(True, options={"realm": str(obj.get("realm") or "")})


def decode_auth_reply(response: HookResponse) -> Decision:
    """on_rtsp_auth: ``options`` carry ``encrypted`` ("1"/"0") and ``passwd``.
    ``encrypted`` is read with jsoncpp ``asBool`` (:func:`zlm_json_bool`); one
    that is not convertible (a string such as ``"1"``) fails the hook in
    ZLMediaKit, which then refuses the user: so here."""
    obj = _json_object(response)
    if obj["code"] != 0:
        return Decision(False, str(obj.get("msg") or f"code {obj['code']}"))
    encrypted = zlm_json_bool(obj.get("encrypted"))
    if encrypted is None:
        return Decision(False, f"encrypted={obj.get('encrypted')!r} is not a JSON boolean or number")
    passwd = _json_as_string(obj.get("passwd"))
    if passwd is None:
        return Decision(False, "passwd is not convertible to a string")
    return Decision(True, options={"encrypted": "1" if encrypted else "0", "passwd": passwd})


def media_info(req: AccessRequest) -> dict[str, Any]:
    return {"schema": req.schema, "protocol": req.protocol, "vhost": req.vhost, "app": req.app,
            "stream": req.stream, "params": req.params, "ip": req.ip, "port": req.port, "id": req.session_id}


def session_media_info(s: SessionInfo, schema: str) -> dict[str, Any]:
    transport = {"http-flv": "http", "ws-flv": "ws", "hls": "http"}.get(s.protocol, s.protocol)
    return {"schema": schema, "protocol": transport, "vhost": s.vhost, "app": s.app, "stream": s.stream,
            "params": s.params, "ip": s.peer_ip, "port": s.peer_port, "id": s.id}


def session_schema(s: SessionInfo) -> str:
    return {"http-flv": "rtmp", "ws-flv": "rtmp", "rtmps": "rtmp", "rtsps": "rtsp"}.get(s.protocol, s.protocol)


def tracks_json(stream: Stream) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind in (TrackKind.VIDEO, TrackKind.AUDIO):
        t = stream.tracks.get(kind)
        if t is None:
            continue
        cid, cname = _CODEC_ID[t.codec]
        item: dict[str, Any] = {"codec_id": cid, "codec_id_name": cname,
                                "codec_type": 0 if kind is TrackKind.VIDEO else 1, "ready": True,
                                "frames": stream.frames_in, "duration": 0}
        if kind is TrackKind.VIDEO:
            item.update(width=t.width, height=t.height, fps=t.fps or 0)
        else:
            item.update(sample_rate=t.sample_rate, channels=t.channels, sample_bit=16)
        out.append(item)
    return out


def media_source_json(stream: Stream, schema: str, now: float) -> dict[str, Any]:
    """One ``getMediaList`` item (also the on_stream_changed register body)."""
    pub = stream.publisher
    origin = ORIGIN_TYPES.get(pub.protocol if pub else "", (0, "unknown"))
    readers = [r for r in stream.readers if r.schema == schema]
    return {
        "schema": schema, "vhost": stream.key.vhost, "app": stream.key.app, "stream": stream.key.stream,
        "params": stream.params, "createStamp": int(stream.created),
        "aliveSecond": int(now - stream.created), "bytesSpeed": 0, "totalBytes": stream.bytes_in,
        "readerCount": sum(r.viewer_count() for r in readers), "totalReaderCount": stream.viewer_count,
        "originType": origin[0], "originTypeStr": origin[1], "originUrl": "",
        "isRecordingMP4": any(getattr(r, "schema", "") == "mp4" for r in stream.readers),
        "isRecordingHLS": any(getattr(r, "schema", "") == "hls" for r in stream.readers),
        "originSock": None if pub is None else {"identifier": pub.id, "local_ip": "", "local_port": pub.local_port,
                                                "peer_ip": pub.peer_ip, "peer_port": pub.peer_port},
        "tracks": tracks_json(stream),
    }


class ZlmDialect:
    name = "zlm"

    def __init__(self, config: Config, start_index: int = 0) -> None:
        self.config = config
        self.cfg = config.hook
        self._index: Iterator[int] = itertools.count(start_index)

    @property
    def enabled(self) -> bool:
        return self.cfg.enable

    def url(self, hook: str) -> str:
        return str(getattr(self.cfg, hook, "")).strip() if self.enabled else ""

    def stamp(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "mediaServerId": self.config.general.mediaServerId, "hook_index": next(self._index)}

    def call(self, hook: str, payload: dict[str, Any], decode: Any = decode_reply) -> HookCall | None:
        url = self.url(hook)
        if not url:
            return None
        headers = {"X-VHOST": str(payload["vhost"])} if payload.get("vhost") else {}
        return HookCall("zlm", hook, url, payload, self.cfg.timeoutSec, self.cfg.on_failure, decode=decode,
                        headers=headers, stamp=self.stamp)

    # -- gates --------------------------------------------------------------
    def gate(self, req: AccessRequest) -> list[list[HookCall]]:
        if req.action is Action.PUBLISH:
            origin = ORIGIN_TYPES.get(req.protocol, (0, "unknown"))
            call = self.call("on_publish", {**media_info(req), "originType": origin[0],
                                            "originTypeStr": origin[1]}, decode_publish_reply)
        elif req.action is Action.PLAY:
            # RTSP players that passed on_rtsp_realm/on_rtsp_auth skip on_play,
            # as in ZLMediaKit (hooks.md §1.4)
            rtsp_authed = req.schema == "rtsp" and bool(req.user)
            call = None if rtsp_authed else self.call("on_play", media_info(req))
        else:
            call = None
        return [[call]] if call else []

    def rtsp_realm(self, req: AccessRequest) -> HookCall | None:
        return self.call("on_rtsp_realm", media_info(req), decode_realm_reply)

    def rtsp_auth(self, req: AccessRequest, user: str, realm: str, must_no_encrypt: bool) -> HookCall | None:
        return self.call("on_rtsp_auth", {**media_info(req), "user_name": user, "must_no_encrypt": must_no_encrypt,
                                          "realm": realm}, decode_auth_reply)

    def stream_not_found(self, req: AccessRequest) -> HookCall | None:
        return self.call("on_stream_not_found", media_info(req), decode_close_reply)

    def stream_none_reader(self, stream: Stream, schema: str) -> HookCall | None:
        return self.call("on_stream_none_reader", {"schema": schema, "vhost": stream.key.vhost,
                                                   "app": stream.key.app, "stream": stream.key.stream,
                                                   "params": stream.params}, decode_close_reply)

    # -- notifications ---------------------------------------------------------
    def session_ended(self, s: SessionInfo, started: set[Action], now: float) -> list[HookCall]:
        if not started & {Action.PUBLISH, Action.PLAY}:
            return []
        total = s.bytes_in + s.bytes_out
        if total < self.config.general.flowThreshold * 1024:
            return []
        call = self.call("on_flow_report", {**session_media_info(s, session_schema(s)), "totalBytes": total,
                                            "duration": int(now - s.started), "player": s.role is Role.PLAYER})
        return [call] if call else []

    def schemas(self, available: list[str]) -> list[str]:
        wanted = [x for x in self.cfg.stream_changed_schemas.split("/") if x]
        return [s for s in available if not wanted or s in wanted]

    def stream_changed(self, stream: Stream, registered: bool, schemas: list[str], now: float) -> list[HookCall]:
        calls = []
        for schema in self.schemas(schemas):
            if registered:
                body = {**media_source_json(stream, schema, now), "regist": True}
            else:
                body = {"schema": schema, "vhost": stream.key.vhost, "app": stream.key.app,
                        "stream": stream.key.stream, "params": stream.params, "regist": False}
            call = self.call("on_stream_changed", body)
            if call:
                calls.append(call)
        return calls

    def server_started(self) -> HookCall | None:
        flat = {k: _option_text(v) for k, v in self.config.as_flat_dict().items()}
        return self.call("on_server_started", flat)

    def server_keepalive(self, counts: dict[str, int]) -> HookCall | None:
        return self.call("on_server_keepalive", {"data": counts})

    def server_exited(self) -> HookCall | None:
        return self.call("on_server_exited", {})
