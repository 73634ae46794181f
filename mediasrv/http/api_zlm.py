"""ZLMediaKit's HTTP API (``/index/api/<name>``), read from the session table
and the stream registry (shared/spec/hooks.md §1.5).

* GET or POST; arguments from the query string and from a form or JSON body
  (JSON values become strings); query arguments win.
* Always HTTP 200 with ``{"code", "msg", ...}``; codes 0 success, -1 other
  failure, -100 auth, -300 invalid args, -400 exception, -500 not found.
  After an error reply (ZLMediaKit's ``ApiRetException``) the connection is
  closed.
* ``CHECK_SECRET``: the peer must be inside ``http.allow_ip_range`` and
  ``secret`` must equal ``api.secret``, from every address; an empty
  ``api.secret`` closes the API.  (The cookie login of recent ZLMediaKit is
  not offered.)

Endpoints are methods named ``api_<name>`` taking the argument dict; a new
endpoint (the relay issue's ``addStreamProxy`` …) is one more method.  A
method may return a Deferred.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from mediasrv.config import ConfigError
from mediasrv.core.context import Core
from mediasrv.core.sessions import SessionInfo
from mediasrv.core.stream import Stream
from mediasrv.hooks.zlm import _option_text, media_source_json, session_schema
from mediasrv.http.api_common import client_ip, ip_allowed, request_args, stream_players, write_json
from mediasrv.shell.liveconfig import apply_changes

if TYPE_CHECKING:
    from mediasrv.http.site import Route

log = Logger()

SUCCESS, OTHER_FAILED, AUTH_FAILED, INVALID_ARGS, EXCEPTION, NOT_FOUND = 0, -1, -100, -300, -400, -500
PREFIX = "/index/api/"

# ZLMediaKit's demangled class names, as getAllSession reports them in ``typeid``
TYPEIDS = {"rtmp": "mediakit::RtmpSession", "rtmps": "mediakit::RtmpSession", "rtsp": "mediakit::RtspSession",
           "rtsps": "mediakit::RtspSession", "http-flv": "mediakit::HttpSession",
           "ws-flv": "mediakit::WebSocketSession<mediakit::HttpSession>", "hls": "mediakit::HttpSession",
           "shell": "mediakit::ShellSession"}


class ApiError(Exception):
    """A refusal with its ZLMediaKit code; the connection closes after it."""

    def __init__(self, code: int, msg: str, **extra: Any) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.extra = extra


def require(args: dict[str, str], *keys: str) -> None:
    """ZLMediaKit's CHECK_ARGS: every key present and non-empty."""
    if not all(args.get(k) for k in keys):
        listed = ",".join(f'"{k}"' for k in keys)
        raise ApiError(INVALID_ARGS, f"Required parameter missed: {listed}")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def session_json(s: SessionInfo, now: float) -> dict[str, Any]:
    """One getAllSession item, plus what mediasrv knows about the session."""
    return {
        "id": s.id, "identifier": s.id, "type": "udp" if "udp" in s.protocol else "tcp",
        "typeid": TYPEIDS.get(s.protocol, f"mediasrv::{s.protocol}"),
        "peer_ip": s.peer_ip, "peer_port": s.peer_port, "local_ip": "", "local_port": s.local_port,
        # mediasrv's own fields (ZLMediaKit clients ignore what they do not know)
        "protocol": s.protocol, "role": s.role.value, "vhost": s.vhost, "app": s.app, "stream": s.stream,
        "params": s.params, "alive_seconds": round(now - s.started, 1), "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out, "dropped_frames": s.dropped_frames,
    }


class ZlmApi:
    def __init__(self, core: Core) -> None:
        self.core = core

    # -- plumbing ------------------------------------------------------------------
    def render(self, request: Request, name: str) -> Any:
        cfg = self.core.config
        ip = client_ip(request, cfg)
        try:
            if not ip_allowed(ip, cfg):
                raise ApiError(AUTH_FAILED, "Your ip is not allowed to access the service.")
            args = request_args(request)
            self._check_secret(args)
            handler: Callable[[dict[str, str]], Any] | None = getattr(self, "api_" + name, None) \
                if name.isidentifier() else None
            if handler is None:
                request.setResponseCode(404)
                raise ApiError(NOT_FOUND, f"no such API: {name}")
            result = handler(args)
        except ApiError as e:
            return self._error(request, e)
        except Exception as e:  # a bug of ours: the caller gets -400, the log the traceback
            log.failure("API {name} failed", Failure(), name=name)
            return self._error(request, ApiError(EXCEPTION, f"{type(e).__name__}: {e}"))
        if isinstance(result, defer.Deferred):
            result.addCallback(lambda r: self._finish(request, r))
            result.addErrback(self._async_failed, request, name)
            return NOT_DONE_YET
        return self._reply(request, result)

    def _check_secret(self, args: dict[str, str]) -> None:
        secret = self.core.config.api.secret
        if not secret:
            raise ApiError(AUTH_FAILED, "the API is closed: api.secret is not set")
        given = args.get("secret", "")
        if not given:
            raise ApiError(AUTH_FAILED, "Please login first")
        if not hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8")):
            raise ApiError(AUTH_FAILED, "Incorrect secret")

    @staticmethod
    def _reply(request: Request, result: dict[str, Any]) -> bytes:
        body = {"code": SUCCESS, **result}
        body.setdefault("msg", "success")
        return write_json(request, body)

    def _finish(self, request: Request, result: dict[str, Any]) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.write(self._reply(request, result))
        request.finish()

    def _async_failed(self, failure: Failure, request: Request, name: str) -> None:
        if failure.check(ApiError):
            data = self._error(request, failure.value)
        else:
            log.failure("API {name} failed", failure, name=name)
            data = self._error(request, ApiError(EXCEPTION, failure.getErrorMessage()))
        if not request.finished and not getattr(request, "_disconnected", False):
            request.write(data)
            request.finish()

    @staticmethod
    def _error(request: Request, e: ApiError) -> bytes:
        return write_json(request, {"code": e.code, "msg": e.msg, **e.extra}, status=request.code, close=True)

    # -- helpers -------------------------------------------------------------------------
    def _live_streams(self) -> list[Stream]:
        return [s for s in self.core.registry if s.ready and not s.closed]

    def _matching(self, args: dict[str, str]) -> list[tuple[Stream, str]]:
        """(stream, schema) pairs matching the optional schema/vhost/app/stream filters."""
        vhost = args.get("vhost", "")
        if vhost:
            vhost = self.core.registry.key(vhost, "", "").vhost
        out = []
        for stream in self._live_streams():
            key = stream.key
            if (vhost and key.vhost != vhost) or (args.get("app") and key.app != args["app"]) \
                    or (args.get("stream") and key.stream != args["stream"]):
                continue
            for schema in self.core.hooks.schemas_for(stream):
                if not args.get("schema") or schema == args["schema"]:
                    out.append((stream, schema))
        return out

    def _one(self, args: dict[str, str]) -> tuple[Stream, str] | None:
        require(args, "schema", "vhost", "app", "stream")
        found = self._matching(args)
        return found[0] if found else None

    def _media_json(self, stream: Stream, schema: str) -> dict[str, Any]:
        return media_source_json(stream, schema, self.core.clock.seconds())

    # -- endpoints --------------------------------------------------------------------------
    def api_getApiList(self, args: dict[str, str]) -> dict[str, Any]:
        names = sorted(n[4:] for n in dir(self) if n.startswith("api_"))
        return {"data": [PREFIX + n for n in names]}

    def api_getMediaList(self, args: dict[str, str]) -> dict[str, Any]:
        return {"data": [self._media_json(s, schema) for s, schema in self._matching(args)]}

    def api_isMediaOnline(self, args: dict[str, str]) -> dict[str, Any]:
        return {"online": self._one(args) is not None}

    def api_getMediaInfo(self, args: dict[str, str]) -> dict[str, Any]:
        found = self._one(args)
        if found is None:
            raise ApiError(NOT_FOUND, "can not find the stream", online=False)
        return {"online": True, **self._media_json(*found)}

    def api_getMediaPlayerList(self, args: dict[str, str]) -> dict[str, Any]:
        found = self._one(args)
        if found is None:
            raise ApiError(NOT_FOUND, "can not find the stream")
        stream, schema = found
        players = [s for s in stream_players(self.core, stream) if session_schema(s) == schema]
        return {"data": [{"peer_ip": s.peer_ip, "peer_port": s.peer_port, "local_ip": "",
                          "local_port": s.local_port, "identifier": s.id,
                          "typeid": TYPEIDS.get(s.protocol, s.protocol)} for s in players]}

    def _sessions(self, args: dict[str, str]) -> list[SessionInfo]:
        local_port = args.get("local_port", "")
        peer_ip = args.get("peer_ip", "")
        if local_port and not local_port.isdigit():
            raise ApiError(INVALID_ARGS, f"local_port is not a port number: {local_port!r}")
        return [s for s in self.core.sessions
                if (not local_port or s.local_port == int(local_port)) and (not peer_ip or s.peer_ip == peer_ip)]

    def api_getAllSession(self, args: dict[str, str]) -> dict[str, Any]:
        now = self.core.clock.seconds()
        return {"data": [session_json(s, now) for s in self._sessions(args)]}

    def api_kick_session(self, args: dict[str, str]) -> dict[str, Any]:
        require(args, "id")
        if not self.core.sessions.kick(args["id"], "kicked by API (kick_session)"):
            raise ApiError(OTHER_FAILED, "can not find the target")
        return {}

    def api_kick_sessions(self, args: dict[str, str]) -> dict[str, Any]:
        hit = 0
        for s in self._sessions(args):
            if self.core.sessions.kick(s.id, "kicked by API (kick_sessions)"):
                hit += 1
        return {"count_hit": hit}

    def _close(self, stream: Stream, force: bool) -> bool:
        """ZLMediaKit's ``MediaSource::close(force)``: without force, a source
        that has viewers refuses."""
        if stream.closed:
            return True
        if not force and stream_players(self.core, stream):
            return False
        return self.core.registry.close_stream(stream.key, "closed by API")

    def api_close_stream(self, args: dict[str, str]) -> dict[str, Any]:
        found = self._one(args)
        if found is None:
            raise ApiError(NOT_FOUND, "can not find the stream")
        ok = self._close(found[0], _truthy(args.get("force")))
        return {"code": SUCCESS if ok else OTHER_FAILED, "result": 0 if ok else -1,
                "msg": "success" if ok else "close failed"}

    def api_close_streams(self, args: dict[str, str]) -> dict[str, Any]:
        pairs = self._matching(args)
        force = _truthy(args.get("force"))
        closed_ok: dict[int, bool] = {}
        for stream, _ in pairs:
            if id(stream) not in closed_ok:
                closed_ok[id(stream)] = self._close(stream, force)
        return {"count_hit": len(pairs), "count_closed": sum(1 for s, _ in pairs if closed_ok[id(s)])}

    def api_getServerConfig(self, args: dict[str, str]) -> dict[str, Any]:
        flat = {k: _option_text(v) for k, v in self.core.config.as_flat_dict().items()}
        return {"data": [flat]}

    def api_setServerConfig(self, args: dict[str, str]) -> dict[str, Any]:
        known = set(self.core.config.as_flat_dict())
        wanted = {k: v for k, v in args.items() if k in known}
        try:
            changes = apply_changes(self.core, wanted)
        except ConfigError as e:
            raise ApiError(INVALID_ARGS, f"{e.key}: {e.problem}") from None
        return {"changed": len(changes), "restart_needed": [c.key for c in changes if c.restart]}


def zlm_routes(core: Core) -> list[Route]:
    from mediasrv.http.site import Route

    api = ZlmApi(core)

    def match(path: str) -> tuple[str] | None:
        if path.startswith(PREFIX) and len(path) > len(PREFIX) and "/" not in path[len(PREFIX):]:
            return (path[len(PREFIX):],)
        return None

    return [Route("api-zlm", match, api.render, methods=(b"GET", b"POST", b"HEAD"))]


__all__ = ["ZlmApi", "zlm_routes", "ApiError", "session_json"]
