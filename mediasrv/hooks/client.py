"""The HTTP client every hook call goes through.

treq over persistent connection pools (keep-alive to the hook server), a
deadline on the injected clock, a bounded reply size, and TLS checked per
dialect: by default certificate chain and host name (Twisted's browser-like
policy, which uses service-identity) against the system's CAs;
``ssl_ca_file`` trusts a given CA instead, ``ssl_verify = 0`` trusts any
certificate (what ZLMediaKit does).  A TLS failure's message names the key to
change.  Each TLS policy has its own pool, so a connection opened without
checks is never reused for a dialect that checks.

The pools' connection factories are quiet (no "Starting factory" log lines per
hook call); :func:`hook_line` is the one line a hook call's outcome is logged
with.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import defer, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
    _HTTP11ClientFactory,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer

from mediasrv.config import Config, ConfigError
from mediasrv.hooks.settings import SECTIONS, dialect_settings, hook_urls

MAX_REPLY_BYTES = 64 * 1024
MAX_PERSISTENT_PER_HOST = 8

_SECRET_NAMES = re.compile(r"(secret|token|passw(or)?d|pass|pwd|sign(ature)?|key|hash|auth)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` fit for a log line: a password in the user part and the values
    of secret-looking query parameters (secret, token, sign, key, ...) masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':')[0]}:***@{host}" if ":" in user else netloc
    query = "&".join(f"{quote(k, safe='')}={'***' if _SECRET_NAMES.search(k) else quote(v, safe='')}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def hook_line(dialect: str, hook: str, url: str, outcome: str, seconds: float | None = None) -> str:
    """The one log line of a hook call: dialect, event, URL (secrets masked),
    outcome and latency, e.g. ``hook zlm on_play http://b/on_play?token=***:
    allowed (12 ms)``."""
    took = f" ({seconds * 1000:.0f} ms)" if seconds is not None else ""
    return f"hook {dialect} {hook} {mask_url(url)}: {outcome}{took}"


class HookTransportError(Exception):
    """The hook server could not be reached, timed out or sent an unusable reply."""


@dataclass(frozen=True, slots=True)
class HookResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class _BoundedBody(Protocol):
    def __init__(self, limit: int, done: defer.Deferred[bytes]) -> None:
        self.limit = limit
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.errback(HookTransportError(f"reply larger than {self.limit} bytes"))
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(HookTransportError(f"reply cut short: {reason.getErrorMessage()}"))


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    noisy = False  # no "Starting factory"/"Stopping factory" lines per connection


@dataclass(frozen=True, slots=True)
class TlsTrust:
    """How https:// hook servers of one dialect are checked."""

    verify: bool = True
    ca_file: str = ""  # PEM; empty: the system's CAs
    section: str = "[hook]"  # where the keys live, for messages

    def key(self) -> tuple[bool, str]:
        return (self.verify, self.ca_file if self.verify else "")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@implementer(IOpenSSLClientConnectionCreator)
class _Unchecked:
    """A TLS client connection that accepts any certificate (SNI still sent)."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname
        self._ctx = ssl.CertificateOptions(verify=False).getContext()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self._ctx, None)
        conn.set_app_data(tlsProtocol)
        if self._hostname and not _is_ip(self._hostname):
            conn.set_tlsext_host_name(self._hostname.encode("idna"))
        return conn


@implementer(IPolicyForHTTPS)
class _UncheckedPolicy:
    def creatorForNetloc(self, hostname: bytes, port: int) -> _Unchecked:
        return _Unchecked(hostname.decode("ascii"))


def _load_ca(path: str) -> Any:
    with open(path, "rb") as f:
        pem = f.read()
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL)
    if not blocks:
        raise ValueError(f"no PEM certificate in {path!r}")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in blocks])


def _policy(trust: TlsTrust) -> IPolicyForHTTPS:
    if not trust.verify:
        return _UncheckedPolicy()
    if trust.ca_file:
        return BrowserLikePolicyForHTTPS(trustRoot=_load_ca(trust.ca_file))
    return BrowserLikePolicyForHTTPS()


def _reasons(failure: Failure) -> list[Failure]:
    """The failures inside twisted.web's wrapper exceptions (ResponseNeverReceived, ...)."""
    inner = getattr(failure.value, "reasons", None)
    if not inner:
        return [failure]
    return [leaf for f in inner for leaf in _reasons(f)]


def _tls_problem(failure: Failure) -> str | None:
    for leaf in _reasons(failure):
        if leaf.check(SSL.Error):
            args = leaf.value.args[0] if leaf.value.args else []
            texts = [t[-1] for t in args if isinstance(t, tuple) and t] if isinstance(args, list) else []
            return ", ".join(texts) or leaf.getErrorMessage() or "TLS handshake failed"
        if type(leaf.value).__name__ in ("VerificationError", "CertificateError"):
            return f"host name not in the certificate ({leaf.getErrorMessage()})"
    return None


class HookClient:
    def __init__(self, reactor: Any, clock: IReactorTime | None = None, max_reply: int = MAX_REPLY_BYTES,
                 user_agent: str = "mediasrv", tls: Mapping[str, TlsTrust] | None = None,
                 urls: Mapping[str, str] | None = None) -> None:
        """``tls``: dialect -> TlsTrust (a dialect not named: checked against
        the system's CAs); ``urls``: configured hook URL -> dialect, for
        requests that do not name their dialect."""
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.reactor = reactor
        self.max_reply = max_reply
        self.user_agent = user_agent
        self.tls: dict[str, TlsTrust] = dict(tls or {})
        self.urls: dict[str, str] = dict(urls or {})
        self._clients: dict[tuple[bool, str], HTTPClient] = {}
        self.pools: list[HTTPConnectionPool] = []
        for trust in [TlsTrust(), *self.tls.values()]:
            self._client_for(trust)

    @classmethod
    def from_config(cls, reactor: Any, cfg: Config, user_agent: str = "mediasrv",
                    clock: IReactorTime | None = None) -> HookClient:
        """The client with every dialect's TLS keys; a CA file that cannot be
        used is a ConfigError naming its key."""
        tls = {}
        for dialect in SECTIONS:
            ds = dialect_settings(cfg, dialect)
            tls[dialect] = TlsTrust(ds.ssl_verify, ds.ssl_ca_file, ds.section)
        try:
            return cls(reactor, clock, user_agent=user_agent, tls=tls, urls=hook_urls(cfg))
        except (OSError, ValueError, SSL.Error) as e:
            bad = next(t for t in tls.values() if t.ca_file and t.verify)
            raise ConfigError(cfg.source, f"{bad.section} ssl_ca_file", f"cannot use {bad.ca_file!r}: {e}") from None

    @property
    def pool(self) -> HTTPConnectionPool:
        """The pool of the default policy (checked against the system's CAs)."""
        return self.pools[0]

    def _client_for(self, trust: TlsTrust) -> HTTPClient:
        key = trust.key()
        client = self._clients.get(key)
        if client is None:
            pool = HTTPConnectionPool(self.reactor, persistent=True)
            pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
            pool.cachedConnectionTimeout = 60
            pool._factory = _QuietHTTP11ClientFactory  # type: ignore[misc]
            self.pools.append(pool)
            client = HTTPClient(Agent(self.reactor, contextFactory=_policy(trust), pool=pool))
            self._clients[key] = client
        return client

    def trust_for(self, url: str, dialect: str = "") -> TlsTrust:
        name = dialect or self.urls.get(url.split("?")[0], "")
        return self.tls.get(name) or TlsTrust(section=f"[{SECTIONS.get(name, 'hook')}]")

    def request(self, method: str, url: str, timeout: float, body: bytes | None = None,
                headers: dict[str, str] | None = None, dialect: str = "") -> defer.Deferred[HookResponse]:
        """One HTTP exchange; fails with HookTransportError on any transport
        problem, including the deadline (``timeout`` seconds on our clock).
        ``dialect`` picks the TLS settings (else the URL's configured dialect)."""
        trust = self.trust_for(url, dialect)
        hdrs: dict[bytes | str, bytes | str] = {"User-Agent": self.user_agent}
        hdrs.update(headers or {})
        http = self._client_for(trust)
        inner: defer.Deferred[Any] = http.request(method, url, data=body, headers=hdrs, allow_redirects=False)
        inner.addCallback(self._read)
        # Our own deadline and cancellation flags: cancelling a request in
        # flight makes twisted.web fail it with ResponseNeverReceived (not
        # CancelledError), which must not look like a transport failure to a
        # caller that retries (an @inlineCallbacks caller resumes with that
        # error after being cancelled).  So a cancel from outside fails the
        # returned Deferred with CancelledError, the deadline with
        # HookTransportError, whatever twisted.web reports.
        state: dict[str, bool] = {}

        def cancel(_: defer.Deferred[HookResponse]) -> None:
            state["cancelled"] = True
            inner.cancel()

        outer: defer.Deferred[HookResponse] = defer.Deferred(cancel)

        def deadline() -> None:
            state["timed_out"] = True
            inner.cancel()

        timer = self.clock.callLater(timeout, deadline)

        def settle(result: Any) -> None:
            if timer.active():
                timer.cancel()
            if outer.called or state.get("cancelled"):
                return  # Deferred.cancel fails ``outer`` with CancelledError
            if state.get("timed_out"):
                outer.errback(HookTransportError(f"no reply within {timeout:g} s"))
            elif isinstance(result, Failure):
                outer.errback(self._transport_error(result, timeout, url, trust))
            else:
                outer.callback(result)

        inner.addBoth(settle)
        return outer

    def _read(self, response: IResponse) -> defer.Deferred[HookResponse]:
        done: defer.Deferred[bytes] = defer.Deferred()
        length = response.length
        if isinstance(length, int) and length > self.max_reply:
            response.deliverBody(_BoundedBody(0, done))
        else:
            response.deliverBody(_BoundedBody(self.max_reply, done))
        headers = {k.decode("latin-1").lower(): v[-1].decode("latin-1")
                   for k, v in response.headers.getAllRawHeaders()}
        return done.addCallback(lambda body: HookResponse(response.code, headers, body))

    @staticmethod
    def _transport_error(failure: Failure, timeout: float, url: str = "",
                         trust: TlsTrust | None = None) -> Failure:
        if failure.check(HookTransportError, defer.CancelledError):
            return failure
        if failure.check(defer.TimeoutError):
            return Failure(HookTransportError(f"no reply within {timeout:g} s"))
        problem = _tls_problem(failure) if url.startswith("https:") else None
        if problem is not None:
            sec = (trust or TlsTrust()).section
            host = urlsplit(url).netloc
            return Failure(HookTransportError(
                f"TLS: certificate of {host} not accepted ({problem}); to trust it set {sec} ssl_ca_file "
                f"to its CA certificate (PEM), or {sec} ssl_verify = 0 to accept any certificate"))
        return Failure(HookTransportError(failure.getErrorMessage() or failure.type.__name__))

    def close(self) -> defer.Deferred[None]:
        return defer.DeferredList([p.closeCachedConnections() for p in self.pools]).addCallback(lambda _: None)


__all__ = ["HookClient", "HookResponse", "HookTransportError", "TlsTrust", "hook_line", "mask_url"]
