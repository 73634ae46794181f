"""Real twisted.web requests without sockets: a Site driven over StringTransport,
and a hook client that answers at once (for unit tests of HTTP features)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.server import Site

from mediasrv.hooks.client import HookResponse


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def cookie(self, name: str = "ZLM_HTTP_COOKIE") -> tuple[str, dict[str, str]] | None:
        """(value, attributes) of the Set-Cookie for ``name``."""
        for raw in self.headers.get("set-cookie", []):
            parts = [p.strip() for p in raw.split(";")]
            k, _, v = parts[0].partition("=")
            if k == name:
                attrs = {}
                for p in parts[1:]:
                    a, _, b = p.partition("=")
                    attrs[a.lower()] = b
                return v, attrs
        return None


def parse_response(data: bytes, head_request: bool = False) -> Response | None:
    """One complete HTTP/1.1 response from ``data``, or None if incomplete."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    if head_request:
        return Response(status, headers, rest)
    if "content-length" in headers:
        n = int(headers["content-length"][0])
        if len(rest) < n:
            return None
        return Response(status, headers, rest[:n])
    if headers.get("transfer-encoding", [""])[0].lower() == "chunked":
        body = bytearray()
        pos = 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(rest[pos:eol].split(b";")[0], 16)
            if size == 0:
                return Response(status, headers, bytes(body))
            if len(rest) < eol + 2 + size + 2:
                return None
            body += rest[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
    return Response(status, headers, rest)


@dataclass
class Exchange:
    transport: StringTransport
    protocol: Any
    method: str = "GET"

    def response(self) -> Response | None:
        # twisted.web.static.File is a pull producer, which HTTPChannel drives
        # through the global task cooperator: run its ticks here, as the reactor would
        from twisted.internet import task

        cooperator = task._theCooperator
        for _ in range(100000):
            if not cooperator._tasks:
                break
            cooperator._tick()
        return parse_response(self.transport.value(), self.method == "HEAD")

    def done(self) -> Response:
        r = self.response()
        assert r is not None, f"no complete response yet: {self.transport.value()[:300]!r}"
        return r

    def close(self) -> None:
        """The client goes away."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionDone()))


class HttpHarness:
    """Send requests to ``site`` over in-memory transports."""

    def __init__(self, site: Site) -> None:
        self.site = site
        site.timeOut = None  # no idle timer on the global reactor

    def request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None,
                peer: tuple[str, int] = ("10.0.0.7", 40000), raw: bytes | None = None) -> Exchange:
        addr = IPv4Address("TCP", *peer)
        proto = self.site.buildProtocol(addr)
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080), peerAddress=addr)
        proto.makeConnection(transport)
        if raw is None:
            hdrs = {"Host": "example.test", "Connection": "close", **(headers or {})}
            raw = (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
                   + "\r\n").encode("latin-1")
        proto.dataReceived(raw)
        return Exchange(transport, proto, method)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request(path, **kw).done()


@dataclass
class Hook:
    url: str
    body: dict[str, Any]
    method: str


@dataclass
class AutoClient:
    """A hook client answering every request at once by ``reply(url, body)``
    (default: 200 ``{"code":0}``); ``hold`` URLs wait for :meth:`release`."""

    reply: Callable[[str, dict[str, Any]], tuple[int, Any] | None] = lambda url, body: (200, {"code": 0})
    sent: list[Hook] = field(default_factory=list)
    held: list[defer.Deferred[HookResponse]] = field(default_factory=list)

    def request(self, method: str, url: str, timeout: float, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> defer.Deferred[HookResponse]:
        parsed = json.loads(body) if body else {}
        self.sent.append(Hook(url, parsed, method))
        answer = self.reply(url, parsed)
        if answer is None:  # the test answers later (or never)
            d: defer.Deferred[HookResponse] = defer.Deferred()
            self.held.append(d)
            return d
        status, content = answer
        payload = content if isinstance(content, bytes) else json.dumps(content).encode()
        return defer.succeed(HookResponse(status, {}, payload))

    def to(self, suffix: str) -> list[dict[str, Any]]:
        return [h.body for h in self.sent if h.url.endswith(suffix)]
