"""Nimble Streamer-style session API (shared/spec/hooks.md §5; seed 003).

* ``GET /manage/sessions``: every media session.
* ``POST /manage/sessions/delete`` with body ``{"data": ["<id>", …]}``:
  disconnect those sessions (any protocol).

Authorization is Nimble's salt/hash scheme: query parameters ``salt`` (any
string, Nimble's sample uses a random integer) and
``hash = base64(md5(salt + "/" + api.nimble_token))`` (the raw 16-byte digest,
standard base64).  Without ``api.nimble_token`` the API is closed (Nimble
would be open; a server that hands out session ids and disconnects viewers
is not left open here).  The peer must also be inside ``http.allow_ip_range``.

The JSON shapes of Nimble's replies are not public; the ones here are
provisional: ``{"status": "ok", "sessions": [{id, app, stream, ip, port,
protocol, type, bytes_sent, bytes_received, start_time, duration}]}`` and
``{"status": "ok", "deleted": n, "not_found": [ids]}``; errors are
``{"status": "error", "message": …}`` with HTTP 400/403/404.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from twisted.web.server import Request

from mediasrv.core.context import Core
from mediasrv.core.sessions import Role
from mediasrv.http.api_common import body_json, client_ip, ip_allowed, query_args, write_json

if TYPE_CHECKING:
    from mediasrv.http.site import Route


def nimble_hash(salt: str, token: str) -> str:
    return base64.b64encode(hashlib.md5(f"{salt}/{token}".encode()).digest()).decode("ascii")


class NimbleApi:
    def __init__(self, core: Core) -> None:
        self.core = core

    def _error(self, request: Request, status: int, message: str) -> bytes:
        return write_json(request, {"status": "error", "message": message}, status=status)

    def _authorized(self, request: Request) -> bytes | None:
        cfg = self.core.config
        if not ip_allowed(client_ip(request, cfg), cfg):
            return self._error(request, 403, "Your ip is not allowed to access the service.")
        token = cfg.api.nimble_token
        if not token:
            return self._error(request, 403, "the API is closed: api.nimble_token is not set")
        args = query_args(request)
        salt, given = args.get("salt", ""), args.get("hash", "")
        if not salt or not given:
            return self._error(request, 403, "salt and hash are required")
        if not hmac.compare_digest(given.encode("ascii", "replace"), nimble_hash(salt, token).encode("ascii")):
            return self._error(request, 403, "wrong hash")
        return None

    def render(self, request: Request, action: str) -> Any:
        refused = self._authorized(request)
        if refused is not None:
            return refused
        if action == "sessions":
            if request.method not in (b"GET", b"HEAD"):
                return self._error(request, 405, "use GET")
            return self.sessions(request)
        if request.method != b"POST":
            return self._error(request, 405, "use POST")
        return self.delete(request)

    def sessions(self, request: Request) -> bytes:
        now = self.core.clock.seconds()
        out = []
        for s in sorted(self.core.sessions, key=lambda s: s.started):
            if s.protocol == "shell":
                continue
            out.append({"id": s.id, "app": s.app, "stream": s.stream, "ip": s.peer_ip, "port": s.peer_port,
                        "protocol": s.protocol.upper(),
                        "type": {Role.PUBLISHER: "publish", Role.PLAYER: "play"}.get(s.role, "none"),
                        "bytes_sent": s.bytes_out, "bytes_received": s.bytes_in, "start_time": int(s.started),
                        "duration": int(now - s.started)})
        return write_json(request, {"status": "ok", "sessions": out})

    def delete(self, request: Request) -> bytes:
        body = body_json(request)
        ids = body.get("data") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids):
            return self._error(request, 400, 'expected a JSON body {"data": ["<session id>", ...]}')
        deleted, missing = 0, []
        for sid in (str(i) for i in ids):
            s = self.core.sessions.get(sid)
            if s is not None and s.protocol != "shell" and \
                    self.core.sessions.kick(sid, "kicked by API (/manage/sessions/delete)"):
                deleted += 1
            else:
                missing.append(sid)
        return write_json(request, {"status": "ok", "deleted": deleted, "not_found": missing})


def nimble_routes(core: Core) -> list[Route]:
    from mediasrv.http.site import Route

    api = NimbleApi(core)

    def match(path: str) -> tuple[str] | None:
        p = path.rstrip("/")
        if p == "/manage/sessions":
            return ("sessions",)
        if p == "/manage/sessions/delete":
            return ("delete",)
        return None

    return [Route("api-nimble", match, api.render, methods=(b"GET", b"HEAD", b"POST"))]
