"""The HTTP listener's root: a table of routes, first match wins.

Each feature module contributes ``Route`` objects (``match(path) -> args |
None`` and ``render(request, *args)``); ``build_site`` assembles them.  What
no route matches is a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from mediasrv.core.context import Core
from mediasrv.http.flv import parse_flv_path, render_flv
from mediasrv.http.hls import HlsService, parse_playlist_path, parse_segment_path
from mediasrv.http.static import StaticFiles, match_any


@dataclass(frozen=True)
class Route:
    name: str
    match: Callable[[str], tuple[Any, ...] | None]
    render: Callable[..., Any]
    methods: tuple[bytes, ...] = (b"GET", b"HEAD")


def admin_routes(core: Core) -> list[Route]:
    """The APIs (ZLMediaKit, SRS, Nimble styles), /metrics and the console."""
    from mediasrv.http.api_nimble import nimble_routes
    from mediasrv.http.api_srs import srs_routes
    from mediasrv.http.api_zlm import zlm_routes
    from mediasrv.http.console import console_routes
    from mediasrv.http.metrics import metrics_routes

    return [*zlm_routes(core), *srs_routes(core), *nimble_routes(core), *metrics_routes(core),
            *console_routes(core)]


def flv_routes(core: Core) -> list[Route]:
    return [Route("flv", parse_flv_path, lambda request, app, stream: render_flv(core, request, app, stream))]


def hls_routes(core: Core) -> list[Route]:
    hls = HlsService.of(core)
    return [Route("hls", parse_playlist_path, lambda request, app, stream: hls.render(request, app, stream, None)),
            Route("hls-segment", parse_segment_path, hls.render)]


def static_routes(core: Core) -> list[Route]:
    """Files under http.rootPath: matches every path, so it must come last."""
    return [Route("static", match_any, StaticFiles(core).render)]


class RootResource(Resource):
    isLeaf = True

    def __init__(self, core: Core, routes: list[Route]) -> None:
        super().__init__()
        self.core = core
        self.routes = routes

    def cors(self, request: Request) -> None:
        if not self.core.config.http.allow_cross_domains:
            return
        origin = request.getHeader(b"origin")
        request.setHeader(b"access-control-allow-origin", origin or b"*")
        if origin:
            request.setHeader(b"access-control-allow-credentials", b"true")
            request.setHeader(b"vary", b"Origin")

    def render(self, request: Request) -> Any:
        self.cors(request)
        if request.method == b"OPTIONS":
            request.setHeader(b"access-control-allow-methods", b"GET, POST, DELETE, HEAD, OPTIONS")
            request.setHeader(b"access-control-allow-headers",
                              request.getHeader(b"access-control-request-headers") or b"*")
            request.setHeader(b"access-control-max-age", b"600")
            return b""
        path = request.path.decode("utf-8", "replace")
        for route in self.routes:
            args = route.match(path)
            if args is None:
                continue
            if request.method not in route.methods:
                request.setResponseCode(405)
                return b"method not allowed\n"
            return route.render(request, *args)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"not found\n"


def build_site(core: Core) -> Site:
    routes: list[Route] = []
    routes += admin_routes(core)
    routes += flv_routes(core)
    routes += hls_routes(core)
    routes += static_routes(core)  # matches every path: keep it last
    site = Site(RootResource(core, routes))
    site.displayTracebacks = False
    return site
