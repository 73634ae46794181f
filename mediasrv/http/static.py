"""Files under ``http.rootPath``, guarded by on_http_access (CONTRACT §2, hooks.md §1.4).

Containment: the request path is percent-decoded exactly once; a NUL byte,
or a ``..`` segment anywhere (also ``%2e%2e``, ``%2E.``...), is refused before
the file system is touched; the remaining segments are joined under the root,
and the *real* path (symlinks resolved) must still be inside the root's real
path, so a symlink pointing out of the root is refused too.  ``//etc/passwd``
is ``<root>/etc/passwd``; nothing reaches outside.

Access: with an ``on_http_access`` URL (``[hook] enable=1``) every request
not covered by a cached decision asks the backend with ``ip, port, id, path,
file_path, is_dir, params`` and every request header as ``header.<Name>``.  A
reply's ``err`` (empty = allowed), ``path`` (the URL prefix the decision
covers; empty = the request's directory) and ``second`` (cache lifetime, 0 =
none) are honoured: the decision is cached in a ``ZLM_HTTP_COOKIE`` cookie
and under the whole query string (for clients without cookies); a cached
denial is replayed only while the query string is unchanged.  A hook that
fails denies this request only.  Without the hook, ``http.allow_ip_range``
decides.  Directory listings only with ``http.dirMenu=1``.
"""

from __future__ import annotations

import html
import ipaddress
import os
import secrets
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.static import File

from mediasrv.config import parse_ip_ranges
from mediasrv.core.context import Core
from mediasrv.hooks.client import HookResponse
from mediasrv.hooks.model import Decision
from mediasrv.hooks.zlm import _json_object
from mediasrv.http.hls import COOKIE_NAME, client_ip

log = Logger()

_EXTRA_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".flv": "video/x-flv",
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".mpd": "application/dash+xml",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
}


class Refused(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


@dataclass(frozen=True)
class Target:
    url_path: str  # decoded, normalised URL path ("/a/b.txt", "/dir/")
    file_path: str  # real local path
    is_dir: bool
    exists: bool


def resolve(root: str, raw_path: bytes) -> Target:
    """Map a raw (percent-encoded) request path to a file under ``root``.

    :raises Refused: 400 for NUL, 403 for ``..`` segments or a real path
        outside the root.
    """
    if b"\x00" in raw_path:
        raise Refused(400, "bad path")
    decoded = unquote_to_bytes(raw_path)
    if b"\x00" in decoded:
        raise Refused(400, "bad path")
    segments = [s for s in decoded.split(b"/") if s not in (b"", b".")]
    if any(s == b".." for s in segments):
        raise Refused(403, "path outside the web root")
    names = [os.fsdecode(s) for s in segments]
    real_root = os.path.realpath(root)
    joined = os.path.join(real_root, *names)
    real = os.path.realpath(joined)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise Refused(403, "path outside the web root")
    exists = os.path.exists(real)
    is_dir = exists and os.path.isdir(real)
    url_path = "/" + "/".join(s.decode("utf-8", "replace") for s in segments)
    if is_dir and not url_path.endswith("/"):
        url_path += "/"
    return Target(url_path, real, is_dir, exists)


@dataclass
class _Grant:
    """One cached on_http_access decision."""

    token: str
    prefix: str
    err: str
    params: str
    expires: float


def decode_access_reply(response: HookResponse) -> Decision:
    """on_http_access: ``code`` 0 and empty ``err`` allows; ``path`` and
    ``second`` travel in ``options`` (also for a denial, which may be cached)."""
    obj = _json_object(response)
    second = obj.get("second", 0)
    try:
        seconds = max(0, int(float(second)))
    except (TypeError, ValueError):
        seconds = 0
    options = {"path": str(obj.get("path") or ""), "second": str(seconds)}
    if obj["code"] != 0:
        return Decision(False, str(obj.get("err") or obj.get("msg") or f"code {obj['code']}"))
    err = str(obj.get("err") or "")
    return Decision(not err, err, options)


class StaticFiles:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._grants: dict[str, _Grant] = {}
        self._by_uid: dict[str, _Grant] = {}
        self._ranges = parse_ip_ranges(core.config.http.allow_ip_range)
        self._conn_ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    # -- access ---------------------------------------------------------------------
    def hook_url(self) -> str:
        return self.core.hooks.zlm.url("on_http_access")

    def ip_allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(lo.version == addr.version and lo <= addr <= hi for lo, hi in self._ranges)  # type: ignore[operator]

    def _cached(self, request: Request, target: Target, query: str) -> _Grant | None:
        now = self.core.clock.seconds()
        candidates = []
        for header in request.requestHeaders.getRawHeaders(b"cookie", []):
            for part in header.split(b";"):
                name, eq, value = part.strip().partition(b"=")
                if eq and name == COOKIE_NAME:
                    grant = self._grants.get(value.strip().decode("ascii", "replace"))
                    if grant is not None:
                        candidates.append(grant)
        if not candidates and query:
            grant = self._by_uid.get(query)
            if grant is not None:
                candidates.append(grant)
        for grant in candidates:
            if grant.expires < now:
                self._forget(grant)
                continue
            if not target.url_path.startswith(grant.prefix):
                continue
            if grant.err and query and query != grant.params:
                continue  # a cached denial holds only while the params are unchanged
            return grant
        return None

    def _forget(self, grant: _Grant) -> None:
        self._grants.pop(grant.token, None)
        if self._by_uid.get(grant.params) is grant:
            del self._by_uid[grant.params]

    def _remember(self, request: Request, target: Target, query: str, decision: Decision) -> _Grant | None:
        seconds = int(decision.options.get("second", "0") or 0)
        if seconds <= 0:
            return None
        prefix = decision.options.get("path") or (
            target.url_path if target.is_dir else target.url_path[: target.url_path.rfind("/") + 1])
        now = self.core.clock.seconds()
        if len(self._grants) > 50000:
            for g in [g for g in self._grants.values() if g.expires < now]:
                self._forget(g)
        grant = _Grant(secrets.token_urlsafe(18), prefix, "" if decision.allowed else decision.reason or "denied",
                       query, now + seconds)
        self._grants[grant.token] = grant
        if query:
            self._by_uid[query] = grant
        return grant

    def _set_cookie(self, request: Request, grant: _Grant) -> None:
        remaining = max(1, int(grant.expires - self.core.clock.seconds()))
        request.addCookie(COOKIE_NAME, grant.token.encode(), path=quote(grant.prefix).encode(),
                          max_age=str(remaining).encode(), httpOnly=True)

    def _ask(self, request: Request, target: Target, query: str) -> defer.Deferred[Decision]:
        peer = request.getClientAddress()
        # one id per HTTP connection (ZLMediaKit sends its TCP session's id)
        conn_id = self._conn_ids.get(request.channel)
        if conn_id is None:
            conn_id = self._conn_ids[request.channel] = secrets.token_hex(4)
        payload: dict[str, Any] = {
            "ip": client_ip(request, self.core), "port": getattr(peer, "port", 0), "id": conn_id,
            "path": target.url_path, "file_path": target.file_path, "is_dir": target.is_dir, "params": query,
        }
        for name, values in request.requestHeaders.getAllRawHeaders():
            payload["header." + name.decode("latin-1")] = ", ".join(v.decode("latin-1") for v in values)
        call = self.core.hooks.zlm.call("on_http_access", payload, decode_access_reply)
        if call is None:
            return defer.succeed(Decision(True))
        return self.core.hooks.call(call)

    # -- HTTP -----------------------------------------------------------------------
    def render(self, request: Request, *_: Any) -> Any:
        root = self.core.config.http.rootPath
        try:
            target = resolve(root, request.path)
        except Refused as e:
            log.info("http {ip}: {path!r} refused: {why}", ip=client_ip(request, self.core), path=request.path,
                     why=str(e))
            return _text(request, e.code, str(e))
        uri = request.uri
        query = (uri.split(b"?", 1)[1] if b"?" in uri else b"").decode("utf-8", "replace")
        if not self.hook_url():
            if not self.ip_allowed(client_ip(request, self.core)):
                return _text(request, 403, "your address is not allowed to access this service")
            return self._serve(request, target)
        grant = self._cached(request, target, query)
        if grant is not None:
            if grant.err:
                self._set_cookie(request, grant)
                return _text(request, 401, grant.err)
            return self._serve(request, target)
        d = self._ask(request, target, query)
        finished = request.notifyFinish()
        finished.addErrback(lambda _: d.cancel())

        def decided(decision: Decision) -> None:
            if request.finished or getattr(request, "_disconnected", False):
                return
            grant = self._remember(request, target, query, decision)
            if grant is not None:
                self._set_cookie(request, grant)
            if not decision.allowed:
                _finish(request, 401, decision.reason or "access denied")
                return
            result = self._serve(request, target)
            if result is not NOT_DONE_YET:
                if request.method != b"HEAD":
                    request.write(result)
                request.finish()

        def failed(f: Failure) -> None:
            if f.check(defer.CancelledError):
                return
            log.failure("on_http_access", f)
            _finish(request, 500, "internal error")

        d.addCallbacks(decided, failed)
        return NOT_DONE_YET

    def _serve(self, request: Request, target: Target) -> Any:
        if not target.exists:
            return _text(request, 404, "not found")
        if target.is_dir:
            index = os.path.join(target.file_path, "index.html")
            if os.path.isfile(index):
                return self._file(request, index)
            if not self.core.config.http.dirMenu:
                return _text(request, 404, "not found")
            if not request.path.endswith(b"/"):
                request.setResponseCode(302)
                request.setHeader(b"location", request.path + b"/")
                return b""
            return self._listing(request, target)
        return self._file(request, target.file_path)

    def _file(self, request: Request, path: str) -> Any:
        f = File(path, defaultType="application/octet-stream")
        f.contentTypes = {**File.contentTypes, **_EXTRA_TYPES}
        f.contentEncodings = {}
        return f.render(request)

    def _listing(self, request: Request, target: Target) -> bytes:
        try:
            entries = sorted(os.scandir(target.file_path), key=lambda e: e.name)
        except OSError:
            return _text(request, 403, "cannot list this directory")
        rows = []
        if target.url_path != "/":
            rows.append('<li><a href="../">../</a></li>')
        for e in entries:
            name = e.name + ("/" if e.is_dir() else "")
            rows.append(f'<li><a href="{html.escape(quote(name))}">{html.escape(name)}</a></li>')
        title = html.escape(target.url_path)
        body = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>"
                f"<body><h1>{title}</h1><ul>{''.join(rows)}</ul></body></html>")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return body.encode("utf-8", "replace")


def match_any(path: str) -> tuple[()] | None:
    """The static route takes every path (it must be the last route)."""
    return ()


def _text(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode("utf-8", "replace") + b"\n"


def _finish(request: Request, code: int, text: str) -> None:
    body = _text(request, code, text)
    request.setHeader(b"content-length", str(len(body)).encode())
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


__all__ = ["Refused", "StaticFiles", "Target", "decode_access_reply", "match_any", "resolve"]
