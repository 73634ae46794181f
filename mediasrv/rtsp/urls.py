"""RTSP request URLs: which stream a URL names, and the access request for it.

``rtsp://host[:port]/app/stream[?params][/trackID=N]``: the first path segment
is the app, the rest the stream (a trailing track control is not part of it);
``vhost=`` in the query overrides the host as the virtual host.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from mediasrv.core.registry import StreamRegistry
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.hooks.model import AccessRequest, Action
from mediasrv.rtsp import media
from mediasrv.rtsp.reply import RtspError

_CONTROL_SEGMENT = re.compile(r"^(trackid|streamid|track)=?\d+$", re.IGNORECASE)
_TRAILING_CONTROL = re.compile(r"/(trackID=\d+)/?$", re.IGNORECASE)


def is_control_segment(segment: str) -> bool:
    return bool(_CONTROL_SEGMENT.match(segment)) or segment in media.CONTROL.values()


def strip_url(uri: str) -> str:
    """Scheme, host and path without query or trailing slash, for comparisons."""
    u = urlsplit(uri)
    return f"{u.scheme.lower()}://{u.netloc.lower()}{u.path.rstrip('/')}"


def base_url(uri: str) -> str:
    """The ``Content-Base`` of a DESCRIBE: the URL without query, ending in ``/``."""
    u = urlsplit(uri)
    return f"{u.scheme}://{u.netloc}{u.path.rstrip('/')}/"


def track_control(uri: str) -> str:
    """The track a SETUP URL names: its last path segment -- or ``trackID=N``
    at the very end, for clients that ignore Content-Base and append the
    control to the URL they were given, query string included
    (``...?token=x/trackID=1``)."""
    m = _TRAILING_CONTROL.search(uri)
    if m:
        return m.group(1)
    return urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1]


def target(uri: str) -> tuple[str, str, str, str]:
    """``(host, app, stream, params)`` of a request URL."""
    u = urlsplit(uri)
    if u.scheme.lower() not in ("rtsp", "rtsps", "rtspu"):
        raise RtspError(400, f"not an rtsp:// URL: {uri[:80]!r}")
    segments = [unquote(p) for p in u.path.split("/") if p]
    if len(segments) > 2 and is_control_segment(segments[-1]):
        segments = segments[:-1]
    if len(segments) < 2:
        raise RtspError(404, f"URL {uri[:80]!r} does not name /app/stream")
    return u.hostname or "", segments[0], "/".join(segments[1:]), u.query


def access_request(action: Action, uri: str, session: SessionInfo, registry: StreamRegistry, scheme: str,
                   local_port: int) -> AccessRequest:
    """The gate's question for a DESCRIBE/SETUP (play) or ANNOUNCE (publish)
    of ``uri``; the session row learns what it plays or publishes."""
    host, app, stream, params = target(uri)
    vhost = host
    for pair in params.split("&"):
        k, _, v = pair.partition("=")
        if k == "vhost" and v:
            vhost = v
    s = session
    s.vhost = registry.key(vhost, app, stream).vhost
    s.app, s.stream, s.params = app, stream, params
    s.role = Role.PUBLISHER if action is Action.PUBLISH else Role.PLAYER
    tc_url = f"{scheme}://{host}:{local_port}/{app}" if host else ""
    return AccessRequest(action, "rtsp", s.protocol, s.vhost, app, stream, params, s.peer_ip, s.peer_port, s.id,
                         tc_url=tc_url)
