"""The protocol-neutral model every hook dialect encodes.

Protocols build one :class:`AccessRequest` per gated action; each dialect
(ZLMediaKit, SRS, NMS, PingOS) turns it into :class:`HookCall` objects for its
backend and decodes the replies into a :class:`Decision`.  Until a dialect is
enabled, :class:`AllowAll` answers.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from twisted.internet import defer

from mediasrv.hooks.client import HookResponse


class Action(enum.Enum):
    CONNECT = "connect"
    PUBLISH = "publish"
    PLAY = "play"


@dataclass(frozen=True, slots=True)
class AccessRequest:
    action: Action
    schema: str  # rtmp, rtsp, hls, ... (ZLMediaKit's schema)
    protocol: str  # the transport: rtmp, rtmps, http, ws, rtsp, ...
    vhost: str
    app: str
    stream: str
    params: str  # raw query string, without '?'
    ip: str
    port: int
    session_id: str
    tc_url: str = ""
    page_url: str = ""
    user: str = ""
    password: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""
    # per-stream protocol options from an on_publish reply (enable_hls, ...)
    options: dict[str, str] = field(default_factory=dict)


ALLOW = Decision(True)


class HookReplyError(Exception):
    """A reply that does not follow the dialect's contract (treated like a
    transport failure: retried, then the dialect's on_failure policy)."""


def _taken(response: HookResponse) -> Decision:
    if 200 <= response.status < 300:
        return ALLOW
    raise HookReplyError(f"HTTP {response.status}")


@dataclass(slots=True)
class HookCall:
    """One HTTP request to one hook URL, and how to read its reply."""

    dialect: str
    hook: str
    url: str
    payload: dict[str, Any]
    timeout: float
    on_failure: str = "deny"
    method: str = "POST"  # POST: JSON body; GET: payload in the query string
    decode: Callable[[HookResponse], Decision] = _taken
    headers: dict[str, str] = field(default_factory=dict)
    # adds per-attempt fields (ZLMediaKit's hook_index) just before sending
    stamp: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def encode(self) -> tuple[str, bytes | None, dict[str, str]]:
        payload = self.stamp(self.payload) if self.stamp else self.payload
        if self.method == "GET":
            sep = "&" if "?" in self.url else "?"
            query = urlencode([(k, v) for k, v in payload.items() if k != "_raw"])
            raw = payload.get("_raw", "")
            if raw:
                query = f"{query}&{raw}" if query else raw
            return self.url + sep + query, None, dict(self.headers)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return self.url, body, {"Content-Type": "application/json", **self.headers}


class Gate(Protocol):
    def authorize(self, request: AccessRequest) -> defer.Deferred[Decision]: ...


class AllowAll:
    """The gate with no hook configured: every request is allowed."""

    def authorize(self, request: AccessRequest) -> defer.Deferred[Decision]:
        return defer.succeed(ALLOW)
