"""ZLMediaKit's static edge mode: ``[cluster] origin_url``, ``timeout_sec``, ``retry_count``.

As ZLMediaKit (``server/WebHook.cpp`` ``getPullUrl``/``pullStreamFromOrigin``): each template
is formatted with ``snprintf(fmt, app, stream)``, then ``edge=1``, ``vhost=`` and the player's
parameters are appended (``?`` or ``&``); origins are tried one after another, each once,
starting at an index that advances by one for every not-found stream (round robin), each
attempt given ``timeout_sec / len(origin_url)``.  ``$app``, ``$stream`` and ``$vhost`` are
accepted too (mediasrv).  Unlike ZLMediaKit no trailing ``&`` is left when the player sent no
parameters.  The templates were checked by ``config.parse_origin_urls``.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

EDGE_PARAM = "edge=1"
_PRINTF = re.compile(r"%%|%s")


def expand(template: str, vhost: str, app: str, stream: str, params: str = "") -> str:
    """The pull URL of one origin template for ``vhost/app/stream`` and the player's query."""
    values = iter((app, stream))

    def printf(m: re.Match[str]) -> str:
        return "%" if m.group(0) == "%%" else next(values, "")

    url = _PRINTF.sub(printf, template)
    url = url.replace("$vhost", vhost).replace("$app", app).replace("$stream", stream)
    url += ("&" if "?" in url else "?") + EDGE_PARAM + "&vhost=" + vhost
    if params:
        url += "&" + params.lstrip("?&")
    return url


def is_edge_request(params: str) -> bool:
    """A pull from an edge (ZLMediaKit: the query starts with ``edge=1``): an origin that lacks
    the stream answers not-found at once instead of waiting ``maxStreamWaitMS``."""
    return urllib.parse.parse_qs(params.lstrip("?")).get("edge") == ["1"]


@dataclass(frozen=True)
class OriginAttempt:
    url: str
    timeout_sec: float


class OriginRotation:
    """Which origins a not-found stream is pulled from, in which order."""

    def __init__(self, templates: list[str], timeout_sec: float) -> None:
        self.templates = list(templates)
        self.timeout_sec = timeout_sec
        self._index = 0

    def __bool__(self) -> bool:
        return bool(self.templates)

    def plan(self, vhost: str, app: str, stream: str, params: str = "") -> list[OriginAttempt]:
        if not self.templates:
            return []
        n = len(self.templates)
        start = self._index % n
        self._index += 1
        per_attempt = self.timeout_sec / n
        return [OriginAttempt(expand(self.templates[(start + i) % n], vhost, app, stream, params), per_attempt)
                for i in range(n)]
