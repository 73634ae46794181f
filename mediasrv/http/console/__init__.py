"""The web console at ``/console/``: static files shipped in this package.

The page asks for ``api.secret`` and then drives the ZLMediaKit-style API
(``/index/api/*``) from the browser: live streams and sessions, a player per
stream (HTTP-FLV through mpegts.js, HLS through hls.js; both vendored under
``vendor/`` from their npm packages with their licences, no CDN) and kick /
close buttons.  The files themselves hold no secret; they are served to
addresses inside ``http.allow_ip_range`` like the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.web.server import Request

from mediasrv.core.context import Core
from mediasrv.http.api_common import client_ip, ip_allowed

if TYPE_CHECKING:
    from mediasrv.http.site import Route

ROOT = Path(__file__).resolve().parent
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".txt": "text/plain; charset=utf-8",
         ".LICENSE": "text/plain; charset=utf-8", ".svg": "image/svg+xml"}


def _files() -> dict[str, Path]:
    """URL path under /console/ → file, for the shipped files only (never anything else)."""
    out: dict[str, Path] = {}
    for p in ROOT.rglob("*"):
        if p.is_file() and p.suffix in TYPES and p.name != "__init__.py":
            out[p.relative_to(ROOT).as_posix()] = p
    return out


class ConsolePage:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.files = _files()

    def render(self, request: Request, rel: str) -> Any:
        cfg = self.core.config
        if not ip_allowed(client_ip(request, cfg), cfg):
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Your ip is not allowed to access the service.\n"
        if rel == "":
            # /console → /console/ so relative links resolve
            request.setResponseCode(301)
            request.setHeader(b"location", b"/console/")
            return b""
        path = self.files.get(rel.lstrip("/") or "index.html")
        if path is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        request.setHeader(b"content-type", TYPES[path.suffix].encode("ascii"))
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if path.name == "index.html":
            request.setHeader(b"content-security-policy",
                              b"default-src 'self'; media-src 'self' blob:; worker-src 'self' blob:; "
                              b"connect-src 'self' ws: wss:; style-src 'self'; img-src 'self' data:")
        data = path.read_bytes()
        if request.method == b"HEAD":
            request.setHeader(b"content-length", str(len(data)).encode("ascii"))
            return b""
        return data


def console_routes(core: Core) -> list[Route]:
    from mediasrv.http.site import Route

    page = ConsolePage(core)

    def match(path: str) -> tuple[str] | None:
        if path == "/console":
            return ("",)
        if path.startswith("/console/"):
            return (path[len("/console"):],)
        return None

    return [Route("console", match, page.render)]
