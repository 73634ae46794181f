"""Node-Media-Server dialect (``[notify] notify_url``): JSON POST of
``postPublish``/``postPlay`` (gates: any status but 200 closes the client) and
``donePublish``/``donePlay`` (seed 000; shared/spec/hooks.md §3).  Unlike NMS,
the post* call gates before any media flows.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from mediasrv.config import Config
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.hooks.client import HookResponse
from mediasrv.hooks.model import AccessRequest, Action, Decision, HookCall


def decode_reply(response: HookResponse) -> Decision:
    return Decision(True) if response.status == 200 else Decision(False, f"HTTP {response.status}")


def query_object(params: str) -> dict[str, list[str]]:
    return parse_qs(params, keep_blank_values=True)


def _protocol(protocol: str) -> str:
    return {"http-flv": "flv", "ws-flv": "flv", "rtmps": "rtmp", "rtsps": "rtsp"}.get(protocol, protocol)


def _request_protocol(req: AccessRequest) -> str:
    """The protocol name of a gated request, as the session's (and NMS's): HTTP-FLV and WS-FLV
    players are ``flv`` (the request carries ZLMediaKit's schema ``rtmp`` + transport ``http``/``ws``)."""
    if req.schema == "rtmp" and req.protocol in ("http", "https", "ws", "wss"):
        return "flv"
    if req.schema.startswith("hls"):
        return "hls"
    return _protocol(req.protocol)


class NmsDialect:
    name = "nms"

    def __init__(self, config: Config) -> None:
        self.cfg = config.notify

    @property
    def url(self) -> str:
        return self.cfg.notify_url.strip()

    def _call(self, action: str, body: dict[str, Any]) -> HookCall:
        return HookCall("nms", action, self.url, body, self.cfg.timeoutSec, self.cfg.on_failure, decode=decode_reply)

    def gate(self, req: AccessRequest, created_ms: int) -> list[list[HookCall]]:
        if not self.url or req.action is Action.CONNECT:
            return []
        action = "postPublish" if req.action is Action.PUBLISH else "postPlay"
        body = {"id": req.session_id, "ip": req.ip, "app": req.app, "name": req.stream,
                "query": query_object(req.params), "action": action, "protocol": _request_protocol(req),
                "createtime": created_ms, "endtime": 0, "inbytes": 0, "outbytes": 0}
        return [[self._call(action, body)]]

    def session_ended(self, s: SessionInfo, started: set[Action], now: float) -> list[HookCall]:
        if not self.url or not started & {Action.PUBLISH, Action.PLAY}:
            return []
        action = "donePublish" if s.role is Role.PUBLISHER else "donePlay"
        body = {"id": s.id, "ip": s.peer_ip, "app": s.app, "name": s.stream, "query": query_object(s.params),
                "action": action, "protocol": _protocol(s.protocol), "createtime": int(s.started * 1000),
                "endtime": int(now * 1000), "inbytes": s.bytes_in, "outbytes": s.bytes_out}
        return [self._call(action, body)]
