"""HTTP-FLV relay client: play ``http(s)://host/app/stream.flv`` (any URL that streams FLV).

The HTTP side is Twisted's own client (``twisted.web.client.Agent`` with a
streaming body protocol), not hand-written HTTP.  The body goes through the
sans-IO :class:`mediasrv.codec.flv.FlvReader` (whose tag size limit bounds
memory) and :class:`~mediasrv.relay.flvbody.FlvBodyDemuxer` into the sink.
The FLV header's audio/video flags and ``onMetaData`` announce the tracks.

Answers: 200 plays; 404 is :class:`~mediasrv.relay.errors.StreamNotFound`,
401 :class:`~mediasrv.relay.errors.AuthFailed` (credentials in the URL's
userinfo are sent as Basic), any other status
:class:`~mediasrv.relay.errors.Refused`.  The end of the body is
:class:`~mediasrv.relay.errors.SourceEnded`.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from mediasrv.codec import flv
from mediasrv.codec.amf0 import AmfError
from mediasrv.core.frames import MediaFrame, Track, TrackKind
from mediasrv.relay.client import DEFAULT_TIMEOUT_SEC, PullDelivery, RelayClient
from mediasrv.relay.errors import (
    AuthFailed,
    ConnectFailed,
    PeerClosed,
    ProtocolViolation,
    Refused,
    RelayError,
    SourceEnded,
    StreamNotFound,
    UnsupportedUrl,
)
from mediasrv.relay.flvbody import SCRIPT, FlvBodyDemuxer, Metadata, Notice
from mediasrv.relay.interfaces import RelaySink
from mediasrv.relay.url import RelayUrl

__all__ = ["HttpFlvPullClient"]

log = Logger()

USER_AGENT = b"mediasrv-relay"


@implementer(IPolicyForHTTPS)
class _FixedTls:
    """An ``IPolicyForHTTPS`` that uses the TLS options it was given for every host."""

    def __init__(self, creator: IOpenSSLClientConnectionCreator) -> None:
        self.creator = creator

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return self.creator


class _Body(Protocol):
    def __init__(self, client: HttpFlvPullClient) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client._body_started(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.client._body_data(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.client._body_lost(reason)


class _Discard(Protocol):
    """Reads nothing of a refusal's body: it closes the connection at once."""

    def connectionMade(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]


class HttpFlvPullClient(RelayClient):
    """Play an HTTP-FLV stream into ``sink``.

    :param tls: client TLS options for https (default: verify against the system's CAs).
    :param agent: an ``IAgent`` to use instead of a fresh ``Agent`` (tests).
    """

    role = "pull"

    def __init__(self, url: str | RelayUrl, sink: RelaySink, reactor: Any, *,
                 timeout_sec: float = DEFAULT_TIMEOUT_SEC, tls: IOpenSSLClientConnectionCreator | None = None,
                 agent: IAgent | None = None, max_tag_size: int = flv.DEFAULT_MAX_TAG_SIZE) -> None:
        super().__init__(url, reactor, timeout_sec=timeout_sec)
        if self.url.scheme not in ("http", "https"):
            raise UnsupportedUrl(f"{self.url.masked()} is not an http:// or https:// URL")
        policy: IPolicyForHTTPS = _FixedTls(tls) if tls is not None else BrowserLikePolicyForHTTPS()
        self.agent: IAgent = agent or Agent(reactor, contextFactory=policy, connectTimeout=timeout_sec)
        self.delivery = PullDelivery(self, sink)
        self.reader = flv.FlvReader(max_tag_size=max_tag_size)
        self.demuxer = FlvBodyDemuxer()
        self.status = 0
        self._request: defer.Deferred[IResponse] | None = None
        self._body: Any = None  # the response body's transport (IPushProducer)
        self._header_seen = False

    # -- request ----------------------------------------------------------------------------------
    def _connect(self) -> None:
        headers = Headers({b"User-Agent": [USER_AGENT], b"Accept": [b"*/*"]})
        if self.url.has_credentials:
            token = base64.b64encode(f"{self.url.username}:{self.url.password}".encode()).decode()
            headers.addRawHeader(b"Authorization", f"Basic {token}".encode())
        self._request = d = self.agent.request(b"GET", self.url.without_credentials().encode(), headers)
        d.addCallbacks(self._response, self._request_failed)

    def _request_failed(self, failure: Failure) -> None:
        self._request = None
        if failure.check(defer.CancelledError) or self.closed:
            return
        self._fail(ConnectFailed(f"GET {self.url.masked()} failed: {_describe(failure)}"))

    def _response(self, response: IResponse) -> None:
        self._request = None
        self.status = response.code
        if self.closed or response.code != 200:
            response.deliverBody(_Discard())
        if self.closed:
            return
        what = f"GET {self.url.masked()} answered {response.code} {response.phrase.decode('latin-1', 'replace')}"
        if response.code == 404:
            self._fail(StreamNotFound(what))
        elif response.code == 401:
            self._fail(AuthFailed(what + (" (wrong user name or password)" if self.url.has_credentials
                                          else " and the URL carries no credentials")))
        elif response.code != 200:
            self._fail(Refused(what, str(response.code)))
        else:
            response.deliverBody(_Body(self))

    # -- body ------------------------------------------------------------------------------------
    def _body_started(self, transport: Any) -> None:
        self._body = transport
        if self.closed:
            self._stop_body()

    def _body_data(self, data: bytes) -> None:
        if self.closed:
            return
        self._touch(len(data))
        try:
            tags = self.reader.feed(data)
            if not self._header_seen and self.reader.has_video is not None:
                self._header_seen = True
                kinds = set()
                if self.reader.has_video:
                    kinds.add(TrackKind.VIDEO)
                if self.reader.has_audio:
                    kinds.add(TrackKind.AUDIO)
                self.delivery.assembler.expect(kinds)
            for tag in tags:
                if self.closed:
                    return
                item = (self.demuxer.script(tag.payload) if tag.tag_type == SCRIPT
                        else self.demuxer.media(tag.tag_type, tag.timestamp, tag.payload))
                self._item(item)
        except (flv.FlvError, AmfError) as e:
            self._fail(ProtocolViolation(f"HTTP-FLV from {self.url.netloc}: {e}"))

    def _item(self, item: object) -> None:
        assembler = self.delivery.assembler
        if isinstance(item, MediaFrame):
            assembler.frame(item)
        elif isinstance(item, Track):
            assembler.track(item)
        elif isinstance(item, Metadata):
            assembler.expect(item.kinds())
        elif isinstance(item, Notice):
            log.info("relay pull {url}: {text}", url=self.url.masked(), text=item.text)

    def _body_lost(self, reason: Failure) -> None:
        self._body = None
        if self.closed:
            return
        if reason.check(ResponseDone):
            self._fail(SourceEnded(f"{self.url.masked()} ended the stream (end of the HTTP body)"))
        else:
            self._fail(PeerClosed(f"{self.url.masked()} closed the connection ({_describe(reason)})"))

    # -- closing ----------------------------------------------------------------------------------
    def _teardown(self, reason: RelayError) -> None:
        request, self._request = self._request, None
        if request is not None:
            request.cancel()
        self._stop_body()

    def _stop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.stopProducing()

    def _deliver_close(self, reason: RelayError) -> None:
        self.delivery.closed(reason)

    def _start_stage(self) -> str:
        if self._request is not None:
            return " (no HTTP answer)"
        return " (no tracks)"


def _describe(failure: Failure) -> str:
    """Twisted's ResponseFailed wraps the real reasons; name them."""
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons if isinstance(r, Failure))
    return failure.getErrorMessage()
