"""The HTTP listener's root: routes FLV streams now, HLS/API/files later."""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from mediasrv.core.context import Core
from mediasrv.http.flv import parse_flv_path, render_flv


class RootResource(Resource):
    isLeaf = True

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core

    def _cors(self, request: Request) -> None:
        if not self.core.config.http.allow_cross_domains:
            return
        origin = request.getHeader(b"origin")
        request.setHeader(b"access-control-allow-origin", origin or b"*")
        if origin:
            request.setHeader(b"access-control-allow-credentials", b"true")
            request.setHeader(b"vary", b"Origin")

    def render_OPTIONS(self, request: Request) -> bytes:
        self._cors(request)
        request.setHeader(b"access-control-allow-methods", b"GET, POST, HEAD, OPTIONS")
        request.setHeader(b"access-control-allow-headers",
                          request.getHeader(b"access-control-request-headers") or b"*")
        request.setHeader(b"access-control-max-age", b"600")
        return b""

    def render_GET(self, request: Request) -> Any:
        self._cors(request)
        path = request.path.decode("utf-8", "replace")
        flv = parse_flv_path(path)
        if flv is not None:
            return render_flv(self.core, request, *flv)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"not found\n"


def build_site(core: Core) -> Site:
    site = Site(RootResource(core))
    site.displayTracebacks = False
    return site
