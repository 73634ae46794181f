"""The protocol-neutral access request every gate decides on.

Protocols build one :class:`AccessRequest` per gated action; the hook layer's
dialects (ZLMediaKit, SRS, NMS, PingOS) encode it for their backends.  Until a
dialect is enabled, :class:`AllowAll` answers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet import defer


class Action(enum.Enum):
    PUBLISH = "publish"
    PLAY = "play"


@dataclass(frozen=True, slots=True)
class AccessRequest:
    action: Action
    schema: str  # rtmp, rtsp, hls, ... (ZLMediaKit's schema)
    protocol: str  # the transport: rtmp, rtmps, http, ws, ...
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


class Gate(Protocol):
    def authorize(self, request: AccessRequest) -> defer.Deferred[Decision]: ...


class AllowAll:
    """The gate with no hook configured: every request is allowed."""

    def authorize(self, request: AccessRequest) -> defer.Deferred[Decision]:
        return defer.succeed(Decision(True))
