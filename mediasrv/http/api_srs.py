"""SRS-style HTTP API (shared/spec/hooks.md §2.4).

* ``GET /api/v1/clients[/]?start=&count=`` and ``GET /api/v1/clients/{id}``;
  ``DELETE /api/v1/clients/{id}`` disconnects (any protocol).
* ``GET /api/v1/streams[/]?start=&count=`` and ``GET /api/v1/streams/{id}``.

Shapes as SRS 5/6: ``{"code":0,"server","service","pid","clients":[…]}``;
``count`` defaults to 10 and is floored at 10 (SRS's ``max(10, count)``).
Errors are HTTP 200 with an SRS code (2049 client not found, 2048 stream not
found); other methods on a client get HTTP 405.  Unlike SRS (whose
``http_api.auth`` is off by default) the API is never open: the peer must
be in ``http.allow_ip_range`` and present ``api.secret`` as ``?secret=`` or as
the password of HTTP Basic auth (or ``Authorization: Bearer``); otherwise
HTTP 401.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from twisted.web.server import Request

from mediasrv.core.context import Core
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.core.stream import Stream
from mediasrv.http.api_common import (
    client_ip,
    header_secret,
    ip_allowed,
    query_args,
    secret_matches,
    stream_players,
    write_json,
)

if TYPE_CHECKING:
    from mediasrv.http.site import Route

ERROR_RTMP_STREAM_NOT_FOUND = 2048
ERROR_RTMP_CLIENT_NOT_FOUND = 2049

# SRS's client ``type`` strings (SrsRtmpConnType names); RTSP has none in SRS
_PLAY_TYPES = {"rtmp": "rtmp-play", "rtmps": "rtmp-play", "http-flv": "flv-play", "ws-flv": "flv-play",
               "hls": "hls-play", "rtsp": "rtsp-play", "rtsps": "rtsp-play"}
_PUBLISH_TYPES = {"rtmp": "fmle-publish", "rtmps": "fmle-publish", "rtsp": "rtsp-publish", "rtsps": "rtsp-publish"}


def vhost_id(vhost: str) -> str:
    return "vid-" + hashlib.md5(vhost.encode("utf-8")).hexdigest()[:7]


def client_type(s: SessionInfo) -> str:
    if s.role is Role.PUBLISHER:
        return _PUBLISH_TYPES.get(s.protocol, f"{s.protocol}-publish")
    if s.role is Role.PLAYER:
        return _PLAY_TYPES.get(s.protocol, f"{s.protocol}-play")
    return "unknown"


def _kbps(n_bytes: int, seconds: float) -> int:
    return int(n_bytes * 8 / 1000 / seconds) if seconds > 0 else 0


class SrsApi:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.pid = str(os.getpid())

    # -- plumbing --------------------------------------------------------------------------
    def _envelope(self, **body: Any) -> dict[str, Any]:
        return {"code": 0, "server": vhost_id(self.core.config.general.mediaServerId),
                "service": self.core.hooks.srs.service_id, "pid": self.pid, **body}

    def _authorized(self, request: Request) -> bytes | None:
        """None when the caller may proceed, else the refusal body."""
        cfg = self.core.config
        if not ip_allowed(client_ip(request, cfg), cfg):
            return write_json(request, {"code": 401, "msg": "Your ip is not allowed to access the service."},
                              status=401, close=True)
        given = query_args(request).get("secret") or header_secret(request)
        if secret_matches(given, cfg.api.secret):
            return None
        request.setHeader(b"www-authenticate", b'Basic realm="mediasrv"')
        msg = "the API is closed: api.secret is not set" if not cfg.api.secret else "authentication required"
        return write_json(request, {"code": 401, "msg": msg}, status=401, close=True)

    @staticmethod
    def _page(request: Request) -> tuple[int, int]:
        args = query_args(request)
        try:
            start = max(0, int(args.get("start", "0") or 0))
        except ValueError:
            start = 0
        try:
            count = int(args.get("count", "10") or 10)
        except ValueError:
            count = 10
        return start, max(10, count)

    def render(self, request: Request, kind: str, ident: str) -> Any:
        refused = self._authorized(request)
        if refused is not None:
            return refused
        method = request.method
        if kind == "clients":
            if ident and method == b"DELETE":
                return self.delete_client(request, ident)
            if method not in (b"GET", b"HEAD") or (not ident and method == b"DELETE"):
                request.setResponseCode(405)
                return write_json(request, {"code": 405, "msg": "method not allowed"}, status=405)
            return self.get_client(request, ident) if ident else self.list_clients(request)
        if method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            return write_json(request, {"code": 405, "msg": "method not allowed"}, status=405)
        return self.get_stream(request, ident) if ident else self.list_streams(request)

    def _tc_url(self, s: SessionInfo | None) -> str:
        """The tcUrl an RTMP client connected with (kept by the hook service), else ""."""
        if s is None:
            return ""
        state = getattr(self.core.hooks, "_sessions", {}).get(s.id)
        return str(getattr(state, "tc_url", "") or "")

    # -- clients ------------------------------------------------------------------------------
    def client_json(self, s: SessionInfo, now: float) -> dict[str, Any]:
        stream = self.core.registry.find(self.core.registry.key(s.vhost, s.app, s.stream)) if s.stream else None
        tc_url = self._tc_url(s)
        alive = max(0.0, now - s.started)
        url = f"/{s.app}/{s.stream}" if s.stream else ""
        return {
            "id": s.id, "vhost": vhost_id(s.vhost), "stream": stream.id if stream else "",
            "ip": s.peer_ip, "pageUrl": "", "swfUrl": "", "tcUrl": tc_url, "url": url, "name": s.stream,
            "type": client_type(s), "publish": s.role is Role.PUBLISHER, "alive": round(alive, 3),
            "send_bytes": s.bytes_out, "recv_bytes": s.bytes_in,
            "kbps": {"recv_30s": _kbps(s.bytes_in, alive), "send_30s": _kbps(s.bytes_out, alive)},
        }

    def _clients(self) -> list[SessionInfo]:
        return sorted((s for s in self.core.sessions if s.protocol != "shell"), key=lambda s: s.started)

    def list_clients(self, request: Request) -> bytes:
        start, count = self._page(request)
        now = self.core.clock.seconds()
        page = self._clients()[start:start + count]
        return write_json(request, self._envelope(clients=[self.client_json(s, now) for s in page]))

    def get_client(self, request: Request, ident: str) -> bytes:
        s = self.core.sessions.get(ident)
        if s is None or s.protocol == "shell":
            return write_json(request, {"code": ERROR_RTMP_CLIENT_NOT_FOUND})
        return write_json(request, self._envelope(client=self.client_json(s, self.core.clock.seconds())))

    def delete_client(self, request: Request, ident: str) -> bytes:
        s = self.core.sessions.get(ident)
        if s is None or s.protocol == "shell":
            return write_json(request, {"code": ERROR_RTMP_CLIENT_NOT_FOUND})
        if s.closer is None:
            return write_json(request, {"code": 400})
        self.core.sessions.kick(ident, "kicked by API (DELETE /api/v1/clients)")
        return write_json(request, self._envelope())

    # -- streams ---------------------------------------------------------------------------------
    def stream_json(self, stream: Stream, now: float) -> dict[str, Any]:
        key = stream.key
        players = stream_players(self.core, stream)
        send = sum(s.bytes_out for s in players)
        pub = stream.publisher
        alive = max(0.0, now - stream.created)
        v, a = stream.video, stream.audio
        return {
            "id": stream.id, "name": key.stream, "vhost": vhost_id(key.vhost), "app": key.app,
            "tcUrl": self._tc_url(pub), "url": f"/{key.app}/{key.stream}",
            "live_ms": int(now * 1000), "clients": len(players) + (1 if pub else 0),
            "frames": stream.frames_in, "send_bytes": send, "recv_bytes": stream.bytes_in,
            "kbps": {"recv_30s": _kbps(stream.bytes_in, alive), "send_30s": _kbps(send, alive)},
            "publish": {"active": pub is not None, "cid": pub.id if pub else ""},
            "video": None if v is None else {"codec": v.codec.value, "profile": "", "level": "",
                                             "width": v.width, "height": v.height},
            "audio": None if a is None else {"codec": a.codec.value, "sample_rate": a.sample_rate,
                                             "channel": a.channels, "profile": ""},
        }

    def _streams(self) -> list[Stream]:
        return sorted((s for s in self.core.registry if s.ready and not s.closed), key=lambda s: s.created)

    def list_streams(self, request: Request) -> bytes:
        start, count = self._page(request)
        now = self.core.clock.seconds()
        page = self._streams()[start:start + count]
        return write_json(request, self._envelope(streams=[self.stream_json(s, now) for s in page]))

    def get_stream(self, request: Request, ident: str) -> bytes:
        for s in self._streams():
            if s.id == ident:
                return write_json(request, self._envelope(stream=self.stream_json(s, self.core.clock.seconds())))
        return write_json(request, {"code": ERROR_RTMP_STREAM_NOT_FOUND})


def srs_routes(core: Core) -> list[Route]:
    from mediasrv.http.site import Route

    api = SrsApi(core)

    def match(path: str) -> tuple[str, str] | None:
        parts = path.split("/")
        # "", "api", "v1", kind[, ident][, ""]
        if len(parts) < 4 or parts[1:3] != ["api", "v1"] or parts[3] not in ("clients", "streams"):
            return None
        rest = [p for p in parts[4:] if p]
        if len(rest) > 1:
            return None
        return parts[3], rest[0] if rest else ""

    return [Route("api-srs", match, api.render, methods=(b"GET", b"HEAD", b"DELETE", b"POST", b"PUT"))]
