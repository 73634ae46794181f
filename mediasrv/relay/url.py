"""Relay URLs: parse, validate, mask (pure).

Only ``rtmp``, ``rtmps``, ``rtsp``, ``rtsps``, ``http`` and ``https`` are
accepted: relay URLs come from the API or from the operator's backend, but
a ``file:`` or ``data:`` URL must never reach a client, and no scheme ever
starts a subprocess.  Credentials ride in the userinfo
(``rtsp://user:password@camera/...``); :func:`masked_url` replaces the
password with ``***`` for logs, API replies and session rows.

RTMP URLs are split as FFmpeg's ``rtmpproto.c`` splits them, which is what
servers expect from clients: the application is the first path segment (the
first two when the path has more than two), the rest is the stream name, and
the query string rides with the stream name (``play``/``publish``) while
``tcUrl`` is ``rtmp://host:port/app``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from mediasrv.relay.errors import UnsupportedUrl

__all__ = ["DEFAULT_PORTS", "RelayUrl", "masked_url"]

DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443, "rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
MAX_URL_LENGTH = 4096
MASK = "***"


def masked_url(url: str) -> str:
    """``url`` with any password in its userinfo replaced by ``***``.

    Never raises: an unparsable URL comes back with everything between
    ``://`` and the last ``@`` before the path masked, so nothing secret
    leaks into a log line even for garbage input.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    masked = f"{user}:{MASK}" if colon else user
    return f"{scheme}://{masked}@{hostport}{slash}{tail}"


@dataclass(frozen=True, slots=True)
class RelayUrl:
    """A parsed, validated relay URL."""

    scheme: str
    host: str
    port: int
    path: str
    """The path, percent-encoded as given, always starting with ``/``."""
    query: str
    username: str = ""
    password: str = ""

    @classmethod
    def parse(cls, url: str) -> RelayUrl:
        """:raises UnsupportedUrl: another scheme, no host, a bad port, or control characters."""
        if len(url) > MAX_URL_LENGTH:
            raise UnsupportedUrl(f"relay URL of {len(url)} characters is longer than {MAX_URL_LENGTH}")
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
            raise UnsupportedUrl(f"relay URL {masked_url(url)[:120]!r} contains spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise UnsupportedUrl(f"relay URL {masked_url(url)[:120]!r}: {e}") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise UnsupportedUrl(
                f"relay URL scheme {scheme or '(none)'!r} is not one of {', '.join(DEFAULT_PORTS)}"
            )
        host = parts.hostname or ""
        if not host:
            raise UnsupportedUrl(f"relay URL {masked_url(url)[:120]!r} has no host")
        if port == 0:
            raise UnsupportedUrl(f"relay URL {masked_url(url)[:120]!r} has port 0")
        return cls(
            scheme=scheme,
            host=host,
            port=port or DEFAULT_PORTS[scheme],
            path=parts.path or "/",
            query=parts.query,
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
        )

    # -- forms ---------------------------------------------------------------------
    @property
    def secure(self) -> bool:
        """TLS: rtmps, rtsps, https."""
        return self.scheme in ("rtmps", "rtsps", "https")

    @property
    def has_credentials(self) -> bool:
        return bool(self.username or self.password)

    @property
    def netloc(self) -> str:
        """``host:port`` (IPv6 literals bracketed), without credentials."""
        host = self.host
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        return f"{host}:{self.port}"

    def without_credentials(self) -> str:
        """The URL as sent on the wire (RTSP request URIs, HTTP requests): no userinfo."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.netloc}{self.path}{query}"

    def masked(self) -> str:
        """The URL for logs and session rows: the password, if any, as ``***``."""
        if not self.has_credentials:
            return self.without_credentials()
        user = quote(self.username, safe="")
        userinfo = f"{user}:{MASK}" if self.password else user
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{userinfo}@{self.netloc}{self.path}{query}"

    def __str__(self) -> str:
        return self.masked()

    # -- RTMP ----------------------------------------------------------------------
    def rtmp_target(self) -> tuple[str, str, str]:
        """``(app, stream name with query, tcUrl)`` as FFmpeg derives them.

        :raises UnsupportedUrl: not an RTMP URL, or no app or stream name in the path.
        """
        if self.scheme not in ("rtmp", "rtmps"):
            raise UnsupportedUrl(f"{self.masked()} is not an rtmp:// or rtmps:// URL")
        path = unquote(self.path.lstrip("/"))
        first, slash, rest = path.partition("/")
        instance, slash2, tail = rest.partition("/")
        if slash and slash2 and ":" not in instance:
            # /app/instance/stream: the application keeps its instance (but
            # /app/mp4:folder/file is a play path with a folder)
            first, rest = f"{first}/{instance}", tail
        app, stream = first, rest
        if not app or not stream:
            raise UnsupportedUrl(f"RTMP URL {self.masked()} does not name /app/stream")
        if self.query:
            stream = f"{stream}?{self.query}"
        return app, stream, f"{self.scheme}://{self.netloc}/{app}"
