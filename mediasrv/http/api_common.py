"""What every admin endpoint over HTTP shares: who is asking, may they, and JSON out.

Access to the APIs (ZLMediaKit, SRS, Nimble styles), ``/metrics`` and the
console is decided in two steps, as ZLMediaKit's ``CHECK_SECRET`` does: the
peer address must be inside ``http.allow_ip_range`` (an empty range means no
address restriction), then a credential must match.  ``api.secret`` empty
means the API is closed: no address is exempt.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from twisted.web.server import Request

from mediasrv.config import Config, parse_ip_ranges
from mediasrv.core.sessions import Role, SessionInfo

if TYPE_CHECKING:
    from mediasrv.core.context import Core
    from mediasrv.core.stream import Stream


def client_ip(request: Request, config: Config) -> str:
    """The peer address; behind a proxy, the first address of
    ``http.forwarded_ip_header`` when that key names a header."""
    header = config.http.forwarded_ip_header.strip()
    if header:
        value = request.getHeader(header)
        if value:
            first = value.split(",")[0].strip()
            if first:
                return first
    peer = request.getClientAddress()
    return str(getattr(peer, "host", ""))


def ip_allowed(ip: str, config: Config) -> bool:
    ranges_text = config.http.allow_ip_range
    if not ranges_text.strip():
        return True
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for lo, hi in parse_ip_ranges(ranges_text):
        if lo.version == addr.version and lo <= addr <= hi:  # type: ignore[operator]
            return True
    return False


def secret_matches(given: str, secret: str) -> bool:
    """Constant-time comparison; an empty configured secret matches nothing."""
    if not secret or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))


def header_secret(request: Request) -> str:
    """A credential carried in ``Authorization``: ``Bearer <secret>`` or the
    password of ``Basic`` (for Prometheus scrape configs and SRS-style clients)."""
    auth = (request.getHeader("authorization") or "").strip()
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


def query_args(request: Request) -> dict[str, str]:
    """Query-string arguments, first value per name."""
    query = request.uri.split(b"?", 1)[1] if b"?" in request.uri else b""
    out: dict[str, str] = {}
    for k, v in parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True):
        out.setdefault(k, v)
    return out


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def body_bytes(request: Request) -> bytes:
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read()
    content.seek(0)
    return data


def body_json(request: Request) -> Any:
    """The body parsed as JSON, or None when it is not JSON."""
    data = body_bytes(request)
    if not data.strip():
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def request_args(request: Request) -> dict[str, str]:
    """ZLMediaKit's argument rules: the query string, a form body, or a JSON
    body (values made strings); query arguments win over body arguments."""
    args: dict[str, str] = {}
    ctype = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
    data = body_bytes(request)
    if data.strip():
        if ctype == "application/json" or (not ctype and data.lstrip()[:1] == b"{"):
            try:
                obj = json.loads(data)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                args.update({str(k): _stringify(v) for k, v in obj.items()})
        elif ctype == "application/x-www-form-urlencoded":
            for k, v in parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True):
                args.setdefault(k, v)
    args.update(query_args(request))
    return args


def write_json(request: Request, obj: Any, status: int = 200, close: bool = False) -> bytes:
    """Serialize ``obj``; with ``close`` the connection is closed once the reply is out."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    if close:
        request.setHeader(b"connection", b"close")
        channel = request.channel

        def hang_up(_: object) -> None:
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.loseConnection()

        request.notifyFinish().addBoth(hang_up)
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def stream_players(core: Core, stream: Stream) -> list[SessionInfo]:
    """Every client playing ``stream``, whatever its protocol: readers with a
    session (RTMP, FLV, RTSP) and player sessions that are not readers (HLS
    viewers, served from the muxer).  Internal readers (the HLS muxer) have
    no session and are not counted."""
    found = {r.session.id: r.session for r in stream.readers if r.session is not None}
    for s in core.sessions:
        if s.role is Role.PLAYER and s.id not in found and s.stream \
                and core.registry.key(s.vhost, s.app, s.stream) == stream.key:
            found[s.id] = s
    return list(found.values())
