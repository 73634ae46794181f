"""The client side of an RTSP play session, as a sans-IO state machine.

OPTIONS → DESCRIBE → SETUP (one per track we can carry) → PLAY, then RTP
(interleaved on the RTSP connection, or on UDP port pairs the adapter binds)
through the same depacketizers and timeline as an RTSP publisher
(:class:`mediasrv.rtsp.ingest.RtspIngest`, tracks from the SDP by
:func:`mediasrv.rtsp.media.announced_media`), and TEARDOWN at the end.
Bytes in through :meth:`RtspClientSession.receive_data`, requests out
through :meth:`RtspClientSession.data_to_send`; no I/O, no clock (the caller
passes ``now``), no Twisted.

* **Auth**: a 401 is answered once per challenge with the URL's userinfo,
  Digest preferred over Basic (:func:`mediasrv.rtsp.digest.client_authorization`);
  every later request carries fresh credentials.  A second 401 (not
  ``stale``), or a 401 without credentials, is
  :class:`~mediasrv.relay.errors.AuthFailed`.
* **Control URLs**: absolute ones are used as they are; relative ones are
  joined to ``Content-Base`` (else ``Content-Location``, else the request
  URL) before its query string, as GStreamer's
  ``gst_rtsp_url_get_request_uri_with_control`` does, so a token in the
  query reaches every request.
* **Keep-alive**: :meth:`keepalive` sends GET_PARAMETER (OPTIONS when the
  server does not list GET_PARAMETER, or refuses it) with the session id;
  the adapter calls it every half session timeout (``Session: id;timeout=N``,
  60 s when absent, RFC 2326 12.37).
* **Bounds**: the parser bounds headers and bodies; the depacketizers bound
  access units; bad RTP over TCP cuts the connection (as for a publisher),
  over UDP it is counted and dropped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from mediasrv.codec import rtp
from mediasrv.codec.bits import CodecError
from mediasrv.codec.sdp import SdpError, parse_sdp
from mediasrv.core.frames import MediaFrame, Track, TrackKind
from mediasrv.relay.errors import (
    AuthFailed,
    ProtocolViolation,
    Refused,
    RelayError,
    StreamNotFound,
    UnsupportedMedia,
)
from mediasrv.relay.url import RelayUrl
from mediasrv.rtsp import digest
from mediasrv.rtsp.ingest import RtspIngest
from mediasrv.rtsp.media import AnnouncedMedia, announced_media
from mediasrv.rtsp.parser import (
    InterleavedFrame,
    RtspParseError,
    RtspParser,
    RtspRequest,
    RtspResponse,
    TransportSpec,
    encode_request,
    encode_response,
    format_transport,
    parse_transport,
)

__all__ = ["Described", "Ended", "Notice", "Playing", "RtspClientSession", "RtspEvent", "RtspTransport",
           "control_url"]

USER_AGENT = "mediasrv-relay"
DEFAULT_SESSION_TIMEOUT = 60.0


class RtspTransport(enum.Enum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class Described:
    """DESCRIBE answered: the media we will SETUP.  Call :meth:`RtspClientSession.setup` next."""

    media: list[AnnouncedMedia]


@dataclass(frozen=True, slots=True)
class Playing:
    """PLAY answered.  ``transports`` maps each media index to the server's Transport answer."""

    session_timeout: float
    transports: dict[int, TransportSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ended:
    """The server said goodbye (RTCP BYE on every track)."""

    description: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Worth one log line, not fatal."""

    text: str


RtspEvent = Described | Playing | Ended | Notice | Track | MediaFrame


def control_url(base: str, control: str | None) -> str:
    """The URL of a track (or of the aggregate, for ``*``/absent) from its ``a=control``."""
    if not control or control == "*":
        return base
    if "://" in control:
        return control
    parts = urlsplit(base)
    if control.startswith("/"):
        path = control
    else:
        path = parts.path.rstrip("/") + "/" + control
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


@dataclass(slots=True)
class _Pending:
    method: str
    uri: str
    headers: list[tuple[str, str]]
    authorized: bool


class RtspClientSession:
    """One RTSP play session.  See the module docstring for the exchange."""

    def __init__(self, url: RelayUrl, transport: RtspTransport = RtspTransport.TCP, *,
                 user_agent: str = USER_AGENT) -> None:
        self.url = url
        self.transport = transport
        self.user_agent = user_agent
        self.request_url = url.without_credentials()
        self.parser = RtspParser()
        self.state = "idle"
        self.session_id: str | None = None
        self.session_timeout = DEFAULT_SESSION_TIMEOUT
        self.base_url = self.request_url
        self.public: set[str] | None = None
        self.media: list[AnnouncedMedia] = []
        self.ingest: RtspIngest | None = None
        self.transports: dict[int, TransportSpec] = {}
        self.channels: dict[int, tuple[int, bool]] = {}  # interleaved channel → (media index, is RTCP)
        self.bad_datagrams = 0
        self._byes: set[int] = set()
        self._cseq = 0
        self._pending: dict[int, _Pending] = {}
        self._challenge: digest.Challenge | None = None
        self._nc = 0
        self._to_setup: list[AnnouncedMedia] = []
        self._client_ports: dict[int, tuple[int, int]] = {}
        self._keepalive_method = "GET_PARAMETER"
        self._out = bytearray()

    # -- requests --------------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def start(self) -> None:
        self.state = "options"
        self._request("OPTIONS", self.request_url)

    def _request(self, method: str, uri: str, headers: list[tuple[str, str]] | None = None) -> None:
        self._cseq += 1
        extra = list(headers or [])
        all_headers = [("CSeq", str(self._cseq)), ("User-Agent", self.user_agent)]
        if self.session_id is not None and method not in ("OPTIONS", "DESCRIBE"):
            all_headers.append(("Session", self.session_id))
        authorized = self._challenge is not None
        if authorized:
            all_headers.append(("Authorization", self._authorization(method, uri)))
        self._out += encode_request(method, uri, all_headers + extra)
        self._pending[self._cseq] = _Pending(method, uri, extra, authorized)

    def _authorization(self, method: str, uri: str) -> str:
        assert self._challenge is not None
        self._nc += 1
        try:
            return digest.client_authorization(self._challenge, method, uri, self.url.username, self.url.password,
                                               nc=self._nc)
        except digest.AuthError as e:
            raise AuthFailed(f"RTSP {self.url.masked()}: cannot answer the server's challenge: {e}") from None

    def setup(self, client_ports: dict[int, tuple[int, int]] | None = None) -> None:
        """SETUP the described media (UDP: ``client_ports`` per media index), then PLAY."""
        self._client_ports = dict(client_ports or {})
        self._to_setup = list(self.media)
        self.state = "setup"
        self._setup_next()

    def _setup_next(self) -> None:
        if not self._to_setup:
            self.state = "play"
            self._request("PLAY", self.base_url, [("Range", "npt=0.000-")])
            return
        media = self._to_setup[0]
        if self.transport is RtspTransport.TCP:
            n = 2 * len(self.transports)
            spec = TransportSpec("RTP/AVP/TCP", interleaved=(n, n + 1))
        else:
            ports = self._client_ports.get(media.index)
            if ports is None:
                raise ValueError(f"no client ports for media {media.index}")
            spec = TransportSpec("RTP/AVP", client_port=ports)
        self._request("SETUP", control_url(self.base_url, media.control), [("Transport", format_transport(spec))])

    def keepalive(self) -> None:
        """One keep-alive request (GET_PARAMETER, or OPTIONS where that is not supported)."""
        if self.state == "playing":
            self._request(self._keepalive_method, self.base_url)

    def teardown(self) -> None:
        if self.session_id is not None and self.state not in ("idle", "closed"):
            self._request("TEARDOWN", self.base_url)
        self.state = "closed"

    # -- input -----------------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> list[RtspEvent]:
        """:raises RelayError: a refusal (typed) or a protocol violation."""
        events: list[RtspEvent] = []
        try:
            for item in self.parser.feed(data):
                if isinstance(item, RtspResponse):
                    self._response(item, events)
                elif isinstance(item, InterleavedFrame):
                    self._interleaved(item, now, events)
                else:
                    self._server_request(item)
        except RelayError:
            raise
        except RtspParseError as e:
            raise ProtocolViolation(f"RTSP from {self.url.netloc}: {e}") from None
        return events

    def _server_request(self, req: RtspRequest) -> None:
        """A server may ask too (keep-alive OPTIONS, GET_PARAMETER, ANNOUNCE of a change)."""
        status = 200 if req.method in ("OPTIONS", "GET_PARAMETER", "SET_PARAMETER") else 501
        self._out += encode_response(status, [("CSeq", req.cseq or "0"), ("User-Agent", self.user_agent)])

    def _interleaved(self, frame: InterleavedFrame, now: float, events: list[RtspEvent]) -> None:
        entry = self.channels.get(frame.channel)
        if entry is None:
            if self.state == "closed":
                return
            raise ProtocolViolation(f"RTSP from {self.url.netloc}: data on channel {frame.channel}, "
                                    f"which no SETUP assigned")
        error = self._packet(entry[0], entry[1], frame.data, now, events)
        if error:
            raise ProtocolViolation(f"RTSP from {self.url.netloc}: {error}")

    def rtp(self, index: int, data: bytes, now: float) -> list[RtspEvent]:
        """An RTP datagram for media ``index`` (UDP); bad ones are counted and dropped."""
        return self._datagram(index, False, data, now)

    def rtcp(self, index: int, data: bytes, now: float) -> list[RtspEvent]:
        return self._datagram(index, True, data, now)

    def _datagram(self, index: int, is_rtcp: bool, data: bytes, now: float) -> list[RtspEvent]:
        events: list[RtspEvent] = []
        error = self._packet(index, is_rtcp, data, now, events)
        if error:
            self.bad_datagrams += 1
            if self.bad_datagrams == 1 or self.bad_datagrams % 1000 == 0:
                events.append(Notice(f"{error} (UDP; {self.bad_datagrams} bad datagrams so far, dropped)"))
        return events

    def _packet(self, index: int, is_rtcp: bool, data: bytes, now: float, events: list[RtspEvent]) -> str | None:
        ingest = self.ingest
        if ingest is None or self.state not in ("play", "playing"):
            return None
        try:
            if is_rtcp:
                for item in ingest.rtcp(index, data):
                    if isinstance(item, rtp.Bye):
                        self._byes.add(index)
                if self._byes and self._byes >= self.transports.keys():
                    events.append(Ended("RTCP BYE on every track"))
                return None
            events += ingest.rtp(index, data, now)
        except (rtp.RtpError, CodecError) as e:
            return f"bad {'RTCP' if is_rtcp else 'RTP'} on track {index}: {e}"
        return None

    # -- responses -----------------------------------------------------------------------------------
    def _response(self, resp: RtspResponse, events: list[RtspEvent]) -> None:
        cseq_text = (resp.headers.get("CSeq") or "").strip()
        pending = self._pending.pop(int(cseq_text), None) if cseq_text.isdigit() else None
        if pending is None:
            events.append(Notice(f"RTSP answer {resp.status} with unknown CSeq {cseq_text[:20]!r} ignored"))
            return
        method = pending.method
        if resp.status == 401:
            self._unauthorized(resp, pending)
            return
        if not 200 <= resp.status < 300:
            self._failed(resp, pending)
            return
        if method == "OPTIONS" and self.state == "options":
            public = resp.headers.get("Public")
            if public is not None:
                self.public = {p.strip().upper() for p in public.split(",") if p.strip()}
                if "GET_PARAMETER" not in self.public:
                    self._keepalive_method = "OPTIONS"
            self.state = "describe"
            self._request("DESCRIBE", self.request_url, [("Accept", "application/sdp")])
        elif method == "DESCRIBE" and self.state == "describe":
            self._described(resp, events)
        elif method == "SETUP" and self.state == "setup":
            self._setup_answered(resp)
        elif method == "PLAY" and self.state == "play":
            self._session(resp)
            self.state = "playing"
            events.append(Playing(self.session_timeout, dict(self.transports)))

    def _unauthorized(self, resp: RtspResponse, pending: _Pending) -> None:
        where = f"RTSP {pending.method} {self.url.masked()}"
        if not self.url.has_credentials:
            raise AuthFailed(f"{where}: 401 Unauthorized and the URL carries no credentials")
        challenges: list[digest.Challenge] = []
        for value in resp.headers.get_all("WWW-Authenticate"):
            try:
                challenges.append(digest.parse_challenge(value))
            except digest.AuthError:
                continue
        chosen = next((c for c in challenges if c.scheme == "digest"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None)
        if chosen is None:
            raise AuthFailed(f"{where}: 401 without a Digest or Basic challenge")
        if pending.authorized and not chosen.stale:
            raise AuthFailed(f"{where}: 401 Unauthorized: wrong user name or password")
        self._challenge = chosen
        self._nc = 0
        self._request(pending.method, pending.uri, pending.headers)

    def _failed(self, resp: RtspResponse, pending: _Pending) -> None:
        method = pending.method
        if method in ("GET_PARAMETER", "OPTIONS") and self.state == "playing":
            if method == "GET_PARAMETER":
                self._keepalive_method = "OPTIONS"  # a server without GET_PARAMETER
            return
        if method == "TEARDOWN":
            return
        what = f"RTSP {method} {self.url.masked()} answered {resp.status} {resp.reason}".rstrip()
        if resp.status == 404:
            raise StreamNotFound(what)
        if 300 <= resp.status < 400:
            location = resp.headers.get("Location") or ""
            raise Refused(f"{what} (redirects are not followed: {location[:120]})", str(resp.status))
        raise Refused(what, str(resp.status))

    def _described(self, resp: RtspResponse, events: list[RtspEvent]) -> None:
        base = resp.headers.get("Content-Base") or resp.headers.get("Content-Location")
        if base and "://" in base:
            self.base_url = base.strip()
        try:
            sd = parse_sdp(resp.body)
            announced = announced_media(sd)
        except SdpError as e:
            raise ProtocolViolation(f"RTSP DESCRIBE {self.url.masked()}: bad SDP: {e}") from None
        if sd.control and sd.control != "*":
            self.base_url = control_url(self.base_url, sd.control)
        self.media = [a for a in announced if a.supported]
        if not self.media:
            encodings = ", ".join(a.encoding or "?" for a in announced) or "none"
            raise UnsupportedMedia(f"RTSP {self.url.masked()} offers no H.264/H.265/AAC track (SDP: {encodings})")
        self.ingest = RtspIngest(announced)
        self.state = "described"
        events.append(Described(list(self.media)))

    def _setup_answered(self, resp: RtspResponse) -> None:
        media = self._to_setup.pop(0)
        self._session(resp)
        value = resp.headers.get("Transport") or ""
        try:
            spec = parse_transport(value)[0] if value else None
        except RtspParseError as e:
            raise ProtocolViolation(f"RTSP SETUP {self.url.masked()}: bad Transport {value[:80]!r}: {e}") from None
        if self.transport is RtspTransport.TCP:
            n = 2 * len(self.transports)
            channels = spec.interleaved if spec is not None and spec.interleaved is not None else (n, n + 1)
            if spec is not None and not spec.tcp:
                raise Refused(f"RTSP SETUP {self.url.masked()}: the server answered {value[:80]!r} to a TCP request")
            self.channels[channels[0]] = (media.index, False)
            self.channels[channels[1]] = (media.index, True)
            spec = spec or TransportSpec("RTP/AVP/TCP", interleaved=channels)
        elif spec is None or spec.tcp:
            raise Refused(f"RTSP SETUP {self.url.masked()}: the server answered {value[:80]!r} to a UDP request")
        self.transports[media.index] = spec
        self._setup_next()

    def _session(self, resp: RtspResponse) -> None:
        value = resp.headers.get("Session")
        if not value:
            if self.session_id is None:
                raise ProtocolViolation(f"RTSP {self.url.masked()}: {resp.status} without a Session header")
            return
        sid, _, params = value.partition(";")
        self.session_id = sid.strip()
        for param in params.split(";"):
            key, _, val = param.partition("=")
            if key.strip().lower() == "timeout":
                try:
                    self.session_timeout = max(1.0, float(val.strip()))
                except ValueError:
                    pass

    # -- what the adapter needs ------------------------------------------------------------------------
    def expected_kinds(self) -> set[TrackKind]:
        return {m.kind for m in self.media if m.kind is not None}

    def initial_tracks(self) -> list[Track]:
        return [m.track for m in self.media if m.track is not None]
