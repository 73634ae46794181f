"""RTSP server: a thin Twisted adapter over the sans-IO parser, muxer and ingest.

Requests dispatch by method name to ``rtsp_<METHOD>`` (``rtsp_unknown``
answers 501).  A handler returns a :class:`Reply` or a Deferred of one; while
a Deferred is pending (a hook, a stream that has not appeared yet) later
requests of the connection wait in order, as RTSP requires.

Play: DESCRIBE passes RTSP auth (``core.rtsp_realm`` / ``core.rtsp_auth``) or,
with no realm, the play gate (``start_play``), and waits for the stream; the
SDP is built from the stream's tracks.  SETUP binds a track to TCP
interleaved channels or to a UDP server port pair; PLAY answers with
``RTP-Info`` and attaches an :class:`RtspPlayer` that starts at the GOP
cache's keyframe.  RTP packets are built once per frame for all players
(:mod:`mediasrv.rtsp.muxer`); RTCP sender reports follow every 5 s.

Publish: ANNOUNCE passes the publish gate (``start_publish``), SETUP binds the
announced tracks, RECORD starts ingest (:mod:`mediasrv.rtsp.ingest`): RTP is
depacketized into MediaFrames written to the stream, so it plays over every
other protocol.

Refusals and bad input end in a 4xx reply or a closed connection, and one log
line naming the session.
"""

from __future__ import annotations

import random
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit
from weakref import WeakKeyDictionary

from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv import __version__
from mediasrv.codec import rtp
from mediasrv.codec.bits import CodecError
from mediasrv.codec.sdp import SdpError, parse_sdp
from mediasrv.core.adapter import SessionProtocol
from mediasrv.core.context import AccessDenied, Core, start_play, start_publish
from mediasrv.core.frames import MediaFrame, Track, TrackKind
from mediasrv.core.reader import StreamReader
from mediasrv.core.registry import StreamBusy, StreamNotFound
from mediasrv.core.sessions import Role
from mediasrv.core.stream import Stream
from mediasrv.hooks.model import AccessRequest, Action
from mediasrv.rtsp import digest, media
from mediasrv.rtsp.ingest import RtspIngest
from mediasrv.rtsp.muxer import StreamRtp, TrackMuxer
from mediasrv.rtsp.parser import (
    InterleavedFrame,
    RtspParseError,
    RtspParser,
    RtspRequest,
    TransportSpec,
    encode_interleaved,
    encode_response,
    format_transport,
    http_date,
    parse_transport,
)
from mediasrv.rtsp.udp import UdpPair, listen_pair

log = Logger()

SERVER = f"mediasrv/{__version__}"
PUBLIC = "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, PAUSE, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
SENDER_REPORT_INTERVAL = 5.0
MAX_QUEUED_REQUESTS = 16
MAX_AUTH_DELAY = 2.0  # seconds; a failed login waits uniformly 0..this before its 401 (MediaMTX's LogAndDelayError)
KEPT_NONCES = 4
MAX_ANNOUNCED_MEDIA = 8  # each SETUP of a UDP track binds two ports: bound what one publisher may ask for
_CONTROL_SEGMENT = re.compile(r"^(trackid|streamid|track)=?\d+$", re.IGNORECASE)
_TRAILING_CONTROL = re.compile(r"/(trackID=\d+)/?$", re.IGNORECASE)


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    after: Callable[[], None] | None = None
    close: bool = False


class RtspError(Exception):
    """A refusal: the reply to send, and why (for the log line)."""

    def __init__(self, status: int, why: str, headers: list[tuple[str, str]] | None = None, close: bool = False,
                 quiet: bool = False) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.headers = headers or []
        self.close = close
        self.quiet = quiet  # an expected step (the first 401 challenge): logged at debug level

    def reply(self) -> Reply:
        body = (self.why + "\n").encode("utf-8", "replace") if self.status >= 400 else b""
        headers = list(self.headers)
        if body:
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
        return Reply(self.status, headers, body, close=self.close)


@dataclass
class PlayTrack:
    """One SETUP'd track of a player."""

    kind: TrackKind
    url: str
    muxer: TrackMuxer
    channel: int | None = None  # TCP: RTP channel (RTCP on rtcp_channel)
    rtcp_channel: int | None = None
    udp: UdpPair | None = None
    packets: int = 0
    octets: int = 0


def _is_control_segment(segment: str) -> bool:
    return bool(_CONTROL_SEGMENT.match(segment)) or segment in media.CONTROL.values()


def _strip_url(uri: str) -> str:
    """Scheme, host and path without query or trailing slash, for comparisons."""
    u = urlsplit(uri)
    return f"{u.scheme.lower()}://{u.netloc.lower()}{u.path.rstrip('/')}"


class RtspPlayer(StreamReader):
    """Sends a stream to one RTSP player over its SETUP'd tracks."""

    schema = "rtsp"

    def __init__(self, proto: RtspServerProtocol, stream_rtp: StreamRtp, tracks: dict[TrackKind, PlayTrack],
                 max_queue_bytes: int) -> None:
        super().__init__(max_queue_bytes, proto.session)
        self.proto = proto
        self.stream_rtp = stream_rtp
        self.tracks = tracks

    def send_headers(self, stream: Stream) -> None:
        # The SDP cannot change mid-session; a new codec configuration reaches
        # the player in band (parameter sets ahead of every keyframe).
        pass

    def send_frame(self, frame: MediaFrame) -> None:
        pt = self.tracks.get(frame.kind)
        if pt is None:
            return
        stream = self.stream
        track = stream.tracks.get(frame.kind) if stream is not None else None
        if pt.muxer.key not in frame.muxed:
            self.stream_rtp.saw_frame(frame, self.proto.core.clock.seconds())
        if pt.channel is not None:
            data, fp = pt.muxer.interleaved(frame, track, pt.channel)
            self.proto.write(data)
        else:
            fp = pt.muxer.packetize(frame, track)
            if pt.udp is not None:
                for packet in fp.packets:
                    pt.udp.send_rtp(packet)
                if self.session is not None:
                    self.session.bytes_out += sum(len(p) for p in fp.packets)
        pt.packets += len(fp.packets)
        pt.octets += fp.payload_bytes

    def stream_ended(self, reason: str) -> None:
        self.proto.play_ended(self, reason)


class RtspServerProtocol(SessionProtocol):
    name = "rtsp"

    def __init__(self, factory: RtspFactory) -> None:
        super().__init__(factory.core, factory.secure)
        self.factory = factory
        self.reactor: Any = factory.reactor
        self.parser = RtspParser()
        self.rtsp_session_id: str | None = None
        self._queue: deque[RtspRequest] = deque()
        self._sr_timer: IDelayedCall | None = None
        self._random = random.SystemRandom()
        # auth
        self._nonces: deque[str] = deque(maxlen=KEPT_NONCES)
        self._authed: tuple[str, str] | None = None  # (realm, user) once verified
        self.auth_failures = 0
        # play
        self.play_stream: Stream | None = None
        self.play_tracks: dict[TrackKind, PlayTrack] = {}
        self.player: RtspPlayer | None = None
        # publish
        self.publishing: Stream | None = None
        self.ingest: RtspIngest | None = None
        self.announced: list[media.AnnouncedMedia] = []
        self.announce_base = ""
        self.record_setup: dict[int, TransportSpec] = {}
        self.recording = False
        self._channels: dict[int, tuple[int, bool]] = {}  # interleaved channel → (track index, is RTCP)
        self._udp: list[UdpPair] = []
        self._udp_errors = 0
        self._torn_down = False

    # -- the session skeleton ----------------------------------------------------------
    def session_started(self) -> None:
        self.arm_idle_check(self.idle_check_interval())

    def bytes_received(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except RtspParseError as e:
            self.write(encode_response(e.status, [("Server", SERVER)]))
            self.fail(f"bad request: {e}", abort=False)
            return
        for event in events:
            if self.closing:
                return
            if isinstance(event, InterleavedFrame):
                self._interleaved(event)
            elif isinstance(event, RtspRequest):
                self._request_received(event)
            else:
                log.debug("rtsp session {sid}: ignoring a response from the client", sid=self.session.id)

    def release(self) -> None:
        self._queue.clear()
        self._close_udp()

    def idle_check_interval(self) -> float:
        cfg = self.core.config.rtsp
        return max(1.0, min(cfg.handshakeSecond, cfg.keepAliveSecond) / 3.0)

    def idle_expired(self, idle: float) -> str | None:
        limit = self._idle_limit()
        if limit is not None and idle >= limit[0]:
            return f"session timed out: no request or RTCP for {idle:.0f} s ({limit[1]})"
        return None

    def _idle_limit(self) -> tuple[float, str] | None:
        cfg = self.core.config.rtsp
        if self.pending is not None:
            return None  # waiting for a hook or for the stream: the gate has its own deadline
        if self.publishing is not None:
            return cfg.keepAliveSecond, "rtsp.keepAliveSecond"
        if self.player is not None:
            if any(pt.channel is not None for pt in self.play_tracks.values()):
                return None  # TCP players are kept alive by the connection itself (as ZLMediaKit)
            return cfg.keepAliveSecond, "rtsp.keepAliveSecond"
        if self.play_tracks or self.rtsp_session_id:
            return cfg.keepAliveSecond, "rtsp.keepAliveSecond"
        return cfg.handshakeSecond, "rtsp.handshakeSecond"

    # -- requests -------------------------------------------------------------------
    def _request_received(self, req: RtspRequest) -> None:
        if self.pending is not None:
            if len(self._queue) >= MAX_QUEUED_REQUESTS:
                self.fail(f"more than {MAX_QUEUED_REQUESTS} pipelined requests")
                return
            self._queue.append(req)
            return
        self._process(req)

    def _process(self, req: RtspRequest) -> None:
        if req.cseq is None:
            self.write(encode_response(400, [("Server", SERVER)], b"request without CSeq\n"))
            self.fail(f"{req.method} request without CSeq", abort=False)
            return
        handler: Callable[[RtspRequest], Reply | defer.Deferred[Reply]] | None = None
        if req.method.isupper() and req.method.replace("_", "").isalpha():
            handler = getattr(self, "rtsp_" + req.method, None)
        try:
            self._check_request(req)
            result = (handler or self.rtsp_unknown)(req)
        except RtspError as e:
            result = self._refused(e, req)
        except RtspParseError as e:
            result = self._refused(RtspError(e.status, str(e)), req)
        except Exception:
            log.failure("rtsp session {sid}: {method} failed", sid=self.session.id, method=req.method)
            result = Reply(500)
        if isinstance(result, defer.Deferred):
            self.pending = result
            result.addErrback(self._handler_failed, req)
            result.addCallback(self._deferred_reply, req)
            return
        self._reply(req, result)

    def _handler_failed(self, failure: Failure, req: RtspRequest) -> Reply | None:
        if failure.check(defer.CancelledError) or self.closing:
            return None
        if failure.check(RtspError):
            return self._refused(failure.value, req)
        log.failure("rtsp session {sid}: {method} failed", failure, sid=self.session.id, method=req.method)
        return Reply(500)

    def _deferred_reply(self, reply: Reply | None, req: RtspRequest) -> None:
        self.pending = None
        if self.closing or reply is None:
            return
        self._reply(req, reply)
        while self._queue and self.pending is None and not self.closing:
            self._process(self._queue.popleft())

    def _refused(self, e: RtspError, req: RtspRequest) -> Reply:
        s = self.session
        if e.quiet:
            log.debug("rtsp session {sid}: {method} {status}: {why}", sid=s.id, method=req.method, status=e.status,
                      why=e.why)
        else:
            log.info("rtsp session {sid} from {ip}: {method} {uri} refused with {status}: {why}", sid=s.id,
                     ip=s.peer_ip, method=req.method, uri=req.uri, status=e.status, why=e.why)
        return e.reply()

    def _reply(self, req: RtspRequest, reply: Reply) -> None:
        if self.closing:
            return
        headers = [("CSeq", req.cseq or "0"), ("Server", SERVER), ("Date", http_date(self.core.clock.seconds()))]
        if self.rtsp_session_id is not None:
            headers.append(("Session", f"{self.rtsp_session_id};timeout={int(self.core.config.rtsp.keepAliveSecond)}"))
        headers += reply.headers
        self.write(encode_response(reply.status, headers, reply.body))
        if reply.after is not None:
            reply.after()
        if reply.close:
            self.close(abort=False)

    def _check_request(self, req: RtspRequest) -> None:
        require = req.header("Require")
        if require:
            raise RtspError(551, f"option not supported: {require}", headers=[("Unsupported", require)])
        sid = req.header("Session")
        if sid is not None:
            sid = sid.split(";", 1)[0].strip()
            if self.rtsp_session_id is None or sid != self.rtsp_session_id:
                if req.method in ("OPTIONS", "GET_PARAMETER", "SET_PARAMETER") and self.rtsp_session_id is None:
                    return  # a keep-alive on a fresh connection: harmless
                raise RtspError(454, f"unknown session {sid[:40]!r}")

    def _ensure_session(self) -> None:
        if self.rtsp_session_id is None:
            self.rtsp_session_id = secrets.token_hex(8).upper()

    # -- URLs and access requests ------------------------------------------------------
    def _target(self, uri: str) -> tuple[str, str, str, str]:
        """``(host, app, stream, params)`` of a request URL."""
        u = urlsplit(uri)
        if u.scheme.lower() not in ("rtsp", "rtsps", "rtspu"):
            raise RtspError(400, f"not an rtsp:// URL: {uri[:80]!r}")
        segments = [unquote(p) for p in u.path.split("/") if p]
        if len(segments) > 2 and _is_control_segment(segments[-1]):
            segments = segments[:-1]
        if len(segments) < 2:
            raise RtspError(404, f"URL {uri[:80]!r} does not name /app/stream")
        return u.hostname or "", segments[0], "/".join(segments[1:]), u.query

    def _access_request(self, action: Action, uri: str) -> AccessRequest:
        host, app, stream, params = self._target(uri)
        vhost = host
        for pair in params.split("&"):
            k, _, v = pair.partition("=")
            if k == "vhost" and v:
                vhost = v
        s = self.session
        s.vhost = self.core.registry.key(vhost, app, stream).vhost
        s.app, s.stream, s.params = app, stream, params
        s.role = Role.PUBLISHER if action is Action.PUBLISH else Role.PLAYER
        scheme = "rtsps" if self.secure else "rtsp"
        port = getattr(self.transport.getHost(), "port", 0) if self.transport is not None else 0  # type: ignore[union-attr]
        tc_url = f"{scheme}://{host}:{port}/{app}" if host else ""
        return AccessRequest(action, "rtsp", s.protocol, s.vhost, app, stream, params, s.peer_ip, s.peer_port,
                             s.id, tc_url=tc_url)

    @staticmethod
    def _base_url(uri: str) -> str:
        u = urlsplit(uri)
        return f"{u.scheme}://{u.netloc}{u.path.rstrip('/')}/"

    # -- authentication -----------------------------------------------------------------
    def _realm(self, request: AccessRequest) -> defer.Deferred[str]:
        realm_of = getattr(self.core, "rtsp_realm", None)
        if realm_of is None:
            return defer.succeed("")
        d: defer.Deferred[str] = defer.maybeDeferred(realm_of, request)

        def failed(f: Failure) -> Failure:
            if f.check(defer.CancelledError):
                return f
            raise RtspError(403, f"on_rtsp_realm failed: {f.getErrorMessage()}")

        d.addErrback(failed)
        return d

    def _challenge(self, realm: str, why: str, quiet: bool = False) -> RtspError:
        nonce = digest.new_nonce()
        self._nonces.append(nonce)
        values = digest.challenge(realm, nonce, basic=self.core.config.rtsp.authBasic)
        return RtspError(401, why, headers=[("WWW-Authenticate", v) for v in values], quiet=quiet)

    def _auth_failed(self, realm: str, why: str) -> defer.Deferred[str]:
        """A wrong or unusable credential: 401 with a fresh nonce after a random delay."""
        self.auth_failures += 1
        delay = self._random.uniform(0, MAX_AUTH_DELAY)
        d: defer.Deferred[None] = task.deferLater(self.core.clock, delay, lambda: None)

        def challenge(_: None) -> str:
            raise self._challenge(realm, why)

        return d.addCallback(challenge)

    def _authenticate(self, req: RtspRequest, request: AccessRequest, realm: str) -> str | defer.Deferred[str]:
        """Fires with the verified user name, or "" when the realm is empty (no RTSP auth)."""
        if not realm:
            return ""
        if self._authed is not None and self._authed[0] == realm:
            return self._authed[1]
        header = req.header("Authorization")
        if header is None:
            raise self._challenge(realm, "authentication required", quiet=True)
        try:
            creds = digest.parse_authorization(header)
        except digest.AuthError as e:
            return self._auth_failed(realm, f"unreadable Authorization: {e}")
        basic = isinstance(creds, digest.BasicCredentials)
        if basic and not self.core.config.rtsp.authBasic:
            return self._auth_failed(realm, "Basic auth offered but rtsp.authBasic=0")
        if isinstance(creds, digest.DigestCredentials):
            if creds.realm != realm:
                return self._auth_failed(realm, f"Digest for realm {creds.realm!r}, expected {realm!r}")
            if creds.nonce not in self._nonces:
                return self._auth_failed(realm, "stale or foreign nonce")
        check = getattr(self.core, "rtsp_auth", None)
        if check is None:
            return self._auth_failed(realm, "a realm is set but nothing can check passwords (no rtsp_auth)")
        d: defer.Deferred[tuple[bool, str]] = defer.maybeDeferred(check, request, creds.username, realm, basic)

        def verify(answer: tuple[bool, str]) -> str | defer.Deferred[str]:
            encrypted, passwd = answer
            if isinstance(creds, digest.BasicCredentials):
                ok = digest.verify_basic(creds, passwd)
            elif encrypted:
                ok = digest.verify_digest(creds, req.method, ha1_hex=passwd)
            else:
                ok = digest.verify_digest(creds, req.method, password=passwd)
            if not ok:
                return self._auth_failed(realm, f"wrong credentials for user {creds.username!r}")
            self._authed = (realm, creds.username)
            log.info("rtsp session {sid}: user {user!r} authenticated in realm {realm!r}", sid=self.session.id,
                     user=creds.username, realm=realm)
            return creds.username

        def hook_failed(f: Failure) -> Failure | defer.Deferred[str]:
            if f.check(defer.CancelledError):
                return f
            return self._auth_failed(realm, f"on_rtsp_auth failed: {f.getErrorMessage()}")

        d.addCallbacks(verify, hook_failed)
        return d  # type: ignore[return-value]

    def _authorize_play(self, req: RtspRequest, request: AccessRequest) -> defer.Deferred[Stream]:
        """Realm auth (or, with no realm, the play gate), then wait for the stream."""
        d = self._realm(request)
        d.addCallback(lambda realm: self._authenticate(req, request, realm))

        def play(user: str) -> defer.Deferred[Stream]:
            # A verified RTSP user travels in the request: the hook layer skips
            # ZLMediaKit's on_play for it, as ZLMediaKit does after on_rtsp_auth.
            return start_play(self.core, replace(request, user=user) if user else request)

        def refused(f: Failure) -> Failure:
            if f.check(AccessDenied):
                raise RtspError(403, f"play denied: {f.getErrorMessage()}")
            if f.check(StreamNotFound):
                raise RtspError(404, f"no such stream: {f.getErrorMessage()}")
            return f

        return d.addCallback(play).addErrback(refused)  # type: ignore[arg-type]

    # -- methods ----------------------------------------------------------------------------
    def rtsp_OPTIONS(self, req: RtspRequest) -> Reply:
        self.touch()
        return Reply(200, [("Public", PUBLIC)])

    def rtsp_GET_PARAMETER(self, req: RtspRequest) -> Reply:
        self.touch()  # the usual keep-alive
        return Reply(200, [("Content-Type", "text/parameters")] if req.body else [])

    def rtsp_SET_PARAMETER(self, req: RtspRequest) -> Reply:
        self.touch()
        return Reply(200)

    def rtsp_unknown(self, req: RtspRequest) -> Reply:
        raise RtspError(501, f"method {req.method[:40]!r} not implemented", headers=[("Public", PUBLIC)])

    def rtsp_DESCRIBE(self, req: RtspRequest) -> defer.Deferred[Reply]:
        if self.ingest is not None or self.player is not None:
            raise RtspError(455, "DESCRIBE on a session that already publishes or plays")
        request = self._access_request(Action.PLAY, req.uri)
        d = self._authorize_play(req, request)
        return d.addCallback(self._described, req)

    def _rtsp_enabled(self, stream: Stream) -> None:
        """``enable_rtsp`` from the on_publish reply (or ``[protocol]``) may keep a stream off RTSP."""
        value = stream.options.get("enable_rtsp")
        enabled = self.core.config.protocol.enable_rtsp if value is None else str(value) not in ("0", "false")
        if not enabled:
            raise RtspError(404, f"{stream.key} is not offered over RTSP (enable_rtsp=0)")

    def _described(self, stream: Stream, req: RtspRequest) -> Reply:
        self._rtsp_enabled(stream)
        self.play_stream = stream
        content_base = self._base_url(req.uri)
        host = self.transport.getHost() if self.transport is not None else None  # type: ignore[union-attr]
        sdp = media.describe(stream.tracks, getattr(host, "host", "127.0.0.1"), int(stream.created * 1000))
        return Reply(200, [("Content-Base", content_base), ("Content-Type", "application/sdp")], sdp.encode())

    def rtsp_SETUP(self, req: RtspRequest) -> Reply | defer.Deferred[Reply]:
        value = req.header("Transport")
        if not value:
            raise RtspError(461, "SETUP without a Transport header")
        specs = parse_transport(value)
        if self.ingest is not None:
            return self._setup_record(req, specs)
        if self.play_stream is None:
            # SETUP without DESCRIBE (a client that kept the SDP): gate it the same way
            request = self._access_request(Action.PLAY, req.uri)
            d = self._authorize_play(req, request)

            def described(stream: Stream) -> Reply:
                self._rtsp_enabled(stream)
                self.play_stream = stream
                return self._setup_play(req, specs)

            return d.addCallback(described)
        return self._setup_play(req, specs)

    def _choose_transport(self, specs: list[TransportSpec]) -> TransportSpec:
        for spec in specs:
            if not spec.protocol.upper().startswith("RTP/AVP") or spec.multicast:
                continue
            if spec.tcp or spec.client_port is not None:
                return spec
        raise RtspError(461, "no supported transport (RTP/AVP unicast over UDP with client_port, or TCP)")

    def _free_channels(self) -> tuple[int, int]:
        used = set(self._channels)
        for pt in self.play_tracks.values():
            used.update(c for c in (pt.channel, pt.rtcp_channel) if c is not None)
        ch = 0
        while ch in used or ch + 1 in used:
            ch += 2
        return ch, ch + 1

    def _check_mixed(self, tcp: bool) -> None:
        kinds = {pt.channel is not None for pt in self.play_tracks.values()}
        kinds |= {spec.tcp for spec in self.record_setup.values()}
        if kinds and kinds != {tcp}:
            raise RtspError(461, "mixing TCP and UDP transports in one session is not supported")

    def _udp_pair(self, on_rtp: Callable[[bytes, tuple[str, int]], None],
                  on_rtcp: Callable[[bytes, tuple[str, int]], None], client_port: tuple[int, int]) -> UdpPair:
        host = self.transport.getHost() if self.transport is not None else None  # type: ignore[union-attr]
        try:
            pair = listen_pair(self.reactor, getattr(host, "host", ""), on_rtp, on_rtcp)
        except CannotListenError as e:
            raise RtspError(453, f"no UDP port pair available: {e}") from None
        pair.client = (self.session.peer_ip, client_port[0], client_port[1])
        self._udp.append(pair)
        return pair

    def _setup_play(self, req: RtspRequest, specs: list[TransportSpec]) -> Reply:
        stream = self.play_stream
        assert stream is not None
        if stream.closed:
            raise RtspError(404, "the stream has ended")
        if self.player is not None:
            raise RtspError(455, "SETUP while playing")
        # the control usually ends the path; clients that ignore Content-Base append it to the
        # URL they were given, query string included ("...?token=x/trackID=1")
        last = urlsplit(req.uri).path.rstrip("/").rsplit("/", 1)[-1]
        m = _TRAILING_CONTROL.search(req.uri)
        if m:
            last = m.group(1)
        kind = next((k for k, c in media.CONTROL.items() if c.lower() == last.lower()), None)
        if kind is None:
            if len(stream.tracks) == 1:
                kind = next(iter(stream.tracks))
            else:
                raise RtspError(404, f"no track {last[:40]!r} in this stream")
        track = stream.tracks.get(kind)
        if track is None:
            raise RtspError(404, f"the stream has no {kind.value} track")
        spec = self._choose_transport(specs)
        self._check_mixed(spec.tcp)
        old = self.play_tracks.pop(kind, None)
        if old is not None and old.udp is not None:
            old.udp.close()
        muxer = self.factory.stream_rtp(stream).muxer(track)
        if spec.tcp:
            channels = spec.interleaved or self._free_channels()
            if channels[0] in self._channels or any(
                    channels[0] in (pt.channel, pt.rtcp_channel) for pt in self.play_tracks.values()):
                raise RtspError(461, f"interleaved channel {channels[0]} is already in use")
            pt = PlayTrack(kind, req.uri, muxer, channel=channels[0], rtcp_channel=channels[1])
            answer = TransportSpec("RTP/AVP/TCP", interleaved=channels, ssrc=muxer.ssrc)
        else:
            assert spec.client_port is not None
            pair = self._udp_pair(self._player_datagram, self._player_datagram, spec.client_port)
            pt = PlayTrack(kind, req.uri, muxer, udp=pair)
            answer = TransportSpec("RTP/AVP", client_port=spec.client_port, server_port=pair.ports, ssrc=muxer.ssrc)
        self.play_tracks[kind] = pt
        self._ensure_session()
        self.touch()
        return Reply(200, [("Transport", format_transport(answer))])

    def _player_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] == self.session.peer_ip:
            self.touch()  # receiver reports (and NAT keep-alives) keep a UDP session alive

    def rtsp_PLAY(self, req: RtspRequest) -> Reply:
        if self.ingest is not None:
            raise RtspError(455, "PLAY on a publishing session")
        stream = self.play_stream
        if stream is None or not self.play_tracks:
            raise RtspError(455, "PLAY before SETUP")
        if stream.closed:
            raise RtspError(404, "the stream has ended")
        self.touch()
        requested = (req.header("Range") or "").strip()
        range_value = requested if requested.startswith("npt=") else "npt=0.000-"
        if self.player is not None:
            return Reply(200, [("Range", range_value)])
        player = RtspPlayer(self, self.factory.stream_rtp(stream), dict(self.play_tracks),
                            self.core.config.general.maxPlayerQueueBytes)
        headers = [("Range", range_value)]
        rtp_info = self._rtp_info(stream, player)
        if rtp_info:
            headers.append(("RTP-Info", rtp_info))
        return Reply(200, headers, after=lambda: self._start_player(stream, player))

    def _rtp_info(self, stream: Stream, player: RtspPlayer) -> str:
        """Build the packets of the GOP the player starts with, so ``RTP-Info``
        names the exact first packet of each track."""
        now = self.core.clock.seconds()
        first: dict[TrackKind, tuple[int, int]] = {}
        started = TrackKind.VIDEO not in stream.tracks
        gop = stream.gop.frames
        if gop and not all(pt.muxer.key in gop[-1].muxed for pt in self.play_tracks.values()):
            player.stream_rtp.saw_frame(gop[-1], now)  # the newest frame arrived about now
        for frame in gop:
            if not started:
                if frame.kind is not TrackKind.VIDEO or not frame.keyframe:
                    continue
                started = True
            pt = self.play_tracks.get(frame.kind)
            if pt is None:
                continue
            fp = pt.muxer.packetize(frame, stream.tracks.get(frame.kind))
            if frame.kind not in first and fp.packets:
                first[frame.kind] = (fp.first_sequence, fp.timestamp)
        parts = []
        media_now = player.stream_rtp.media_time(now)
        for kind, pt in self.play_tracks.items():
            if kind in first:
                seq, ts = first[kind]
                parts.append(f"url={pt.url};seq={seq};rtptime={ts}")
            elif media_now is not None:
                parts.append(f"url={pt.url};seq={pt.muxer.sequence};rtptime={pt.muxer.rtp_time(media_now)}")
            else:
                parts.append(f"url={pt.url};seq={pt.muxer.sequence}")
        return ",".join(parts)

    def _start_player(self, stream: Stream, player: RtspPlayer) -> None:
        if self.closing or stream.closed:
            return
        self.player = player
        if any(pt.channel is not None for pt in player.tracks.values()):
            self.attach_producer(player)
        # A sender report for every track before the first RTP packet (as ffmpeg's sender does):
        # receivers then time the very first packets with it instead of re-timing them later.
        self._send_reports()
        stream.add_reader(player)
        transport = "tcp" if any(pt.channel is not None for pt in player.tracks.values()) else "udp"
        log.info("rtsp session {sid} plays {key} over {transport} ({tracks})", sid=self.session.id,
                 key=str(stream.key), transport=transport, tracks=", ".join(k.value for k in player.tracks))

    def _send_reports(self) -> None:
        self._sr_timer = None
        player = self.player
        if player is None or self.closing:
            return
        now = self.core.clock.seconds()
        media_now = player.stream_rtp.media_time(now)
        if media_now is not None:
            ntp = rtp.ntp_from_unix(now)
            for pt in player.tracks.values():
                report = (rtp.build_sender_report(pt.muxer.ssrc, ntp, pt.muxer.rtp_time(media_now), pt.packets,
                                                  pt.octets)
                          + rtp.build_sdes_cname(pt.muxer.ssrc, "mediasrv"))
                self._send_rtcp(pt, report)
        self._sr_timer = self.core.clock.callLater(SENDER_REPORT_INTERVAL, self._send_reports)

    def _send_rtcp(self, pt: PlayTrack, data: bytes) -> None:
        if pt.rtcp_channel is not None:
            self.write(encode_interleaved(pt.rtcp_channel, data))
        elif pt.udp is not None:
            pt.udp.send_rtcp(data)

    def rtsp_PAUSE(self, req: RtspRequest) -> Reply:
        if self.play_stream is None or not self.play_tracks:
            raise RtspError(455, "PAUSE before SETUP")
        self.touch()
        self.stop_playing()
        return Reply(200)

    def rtsp_TEARDOWN(self, req: RtspRequest) -> Reply:
        """End the RTSP session; the connection stays for the client to close (or
        to start over), as live555 and MediaMTX do: closing it under the client
        races with the RTCP it may still be sending."""
        self.stop_playing()
        self.stop_publishing(abrupt=False)
        self._close_udp()
        self.play_stream = None
        self.play_tracks = {}
        self.ingest = None
        self.announced = []
        self.record_setup = {}
        self._channels = {}
        self._torn_down = True
        self.touch()
        reply = Reply(200)
        if self.rtsp_session_id is not None:
            reply.headers.append(("Session", self.rtsp_session_id))
        self.rtsp_session_id = None
        return reply

    def play_ended(self, player: RtspPlayer, reason: str) -> None:
        """The stream went away under a player: RTCP BYE, then close."""
        if player is not self.player or self.closing:
            return
        for pt in player.tracks.values():
            self._send_rtcp(pt, rtp.build_bye(pt.muxer.ssrc))
        self.stop_playing()
        self.refuse(f"stream ended ({reason}); closing")

    def stop_playing(self, connected: bool = True) -> None:
        if self._sr_timer is not None and self._sr_timer.active():
            self._sr_timer.cancel()
        self._sr_timer = None
        player, self.player = self.player, None
        if player is not None:
            player.detach()
            self.detach_producer(player, connected)

    def _close_udp(self) -> None:
        pairs, self._udp = self._udp, []
        for pair in pairs:
            pair.close()

    # -- publishing ----------------------------------------------------------------------------
    def rtsp_ANNOUNCE(self, req: RtspRequest) -> defer.Deferred[Reply]:
        if self.ingest is not None or self.play_stream is not None or self.pending is not None:
            raise RtspError(455, "ANNOUNCE on a session that already publishes or plays")
        content_type = (req.header("Content-Type") or "").lower()
        if "application/sdp" not in content_type:
            raise RtspError(415, f"ANNOUNCE body must be application/sdp, not {content_type[:40]!r}")
        try:
            announced = media.announced_media(parse_sdp(req.body))
        except (SdpError, CodecError) as e:
            raise RtspError(400, f"unusable SDP: {e}") from None
        if len(announced) > MAX_ANNOUNCED_MEDIA:
            raise RtspError(400, f"SDP with {len(announced)} media sections (at most {MAX_ANNOUNCED_MEDIA})")
        if not any(a.supported for a in announced):
            raise RtspError(415, "no supported track in the SDP (H.264, H.265, AAC mpeg4-generic)")
        request = self._access_request(Action.PUBLISH, req.uri)
        d = start_publish(self.core, request, self.session)

        def refused(f: Failure) -> Failure:
            if f.check(AccessDenied):
                raise RtspError(403, f"publish denied: {f.getErrorMessage()}")
            if f.check(StreamBusy):
                raise RtspError(406, f"already publishing: {f.getErrorMessage()}")
            return f

        return d.addCallback(self._announced, req, announced).addErrback(refused)  # type: ignore[arg-type]

    def _announced(self, stream: Stream, req: RtspRequest, announced: list[media.AnnouncedMedia]) -> Reply:
        if self.closing:
            self.core.registry.unpublish(stream, self.session, abrupt=False)
            return Reply(200)
        self.publishing = stream
        self.announced = announced
        self.announce_base = req.uri.split("?", 1)[0]
        self.ingest = RtspIngest(announced)
        for track in self.ingest.initial_tracks():
            stream.set_track(track)
        for a in announced:
            if not a.supported:
                log.info("rtsp session {sid}: track {i} ({enc}) is not ingested (only H.264, H.265, AAC)",
                         sid=self.session.id, i=a.index, enc=a.encoding or a.payload_type)
        return Reply(200)

    def _announced_index(self, uri: str) -> int:
        target = _strip_url(uri)
        base = self.announce_base.rstrip("/") + "/"
        for a in self.announced:
            control = a.control
            url = control if "://" in control else base + control
            if _strip_url(url) == target:
                return a.index
        path = urlsplit(uri).path.rstrip("/")
        for a in self.announced:
            if path.endswith("/" + a.control.rsplit("/", 1)[-1]):
                return a.index
        if len(self.announced) == 1:
            return 0
        raise RtspError(404, f"SETUP URL {uri[:80]!r} matches no announced track")

    def _setup_record(self, req: RtspRequest, specs: list[TransportSpec]) -> Reply:
        if self.recording:
            raise RtspError(455, "SETUP after RECORD")
        index = self._announced_index(req.uri)
        spec = self._choose_transport(specs)
        self._check_mixed(spec.tcp)
        if index in self.record_setup:
            raise RtspError(455, f"track {index} is already set up")
        if spec.tcp:
            channels = spec.interleaved or self._free_channels()
            if channels[0] in self._channels or channels[1] in self._channels:
                raise RtspError(461, f"interleaved channel {channels[0]} is already in use")
            self._channels[channels[0]] = (index, False)
            self._channels[channels[1]] = (index, True)
            answer = TransportSpec("RTP/AVP/TCP", interleaved=channels, mode="record")
        else:
            assert spec.client_port is not None
            pair = self._udp_pair(lambda d, a: self._udp_ingest(index, False, d, a),
                                  lambda d, a: self._udp_ingest(index, True, d, a), spec.client_port)
            answer = TransportSpec("RTP/AVP/UDP", client_port=spec.client_port, server_port=pair.ports,
                                   mode="record")
        self.record_setup[index] = spec
        self._ensure_session()
        self.touch()
        return Reply(200, [("Transport", format_transport(answer))])

    def rtsp_RECORD(self, req: RtspRequest) -> Reply:
        if self.ingest is None or self.publishing is None:
            raise RtspError(455, "RECORD before ANNOUNCE")
        if not self.record_setup:
            raise RtspError(455, "RECORD before SETUP")
        self.touch()
        if not self.recording:
            self.recording = True
            transport = "tcp" if any(s.tcp for s in self.record_setup.values()) else "udp"
            log.info("rtsp session {sid} publishes {key} over {transport}", sid=self.session.id,
                     key=str(self.publishing.key), transport=transport)
        return Reply(200)

    def stop_publishing(self, abrupt: bool) -> None:
        stream, self.publishing = self.publishing, None
        self.recording = False
        if stream is not None:
            self.core.registry.unpublish(stream, self.session, abrupt=abrupt)

    # -- media in ------------------------------------------------------------------------------
    def _interleaved(self, frame: InterleavedFrame) -> None:
        if self.ingest is not None:
            entry = self._channels.get(frame.channel)
            if entry is None:
                self.fail(f"interleaved data on channel {frame.channel}, which no SETUP assigned")
                return
            index, is_rtcp = entry
            error = self._ingest(index, is_rtcp, frame.data)
            if error:
                self.fail(error)
            return
        if any(frame.channel in (pt.channel, pt.rtcp_channel) for pt in self.play_tracks.values()):
            return  # receiver reports from the player; the activity already counts as keep-alive
        if self._torn_down and not self.play_tracks:
            return  # RTCP still in flight after TEARDOWN
        self.fail(f"interleaved data on channel {frame.channel}, which no SETUP assigned")

    def _udp_ingest(self, index: int, is_rtcp: bool, data: bytes, addr: tuple[str, int]) -> None:
        if self.closing or addr[0] != self.session.peer_ip:
            return
        self.touch()
        self.session.bytes_in += len(data)
        error = self._ingest(index, is_rtcp, data)
        if error:
            self._udp_errors += 1
            if self._udp_errors == 1 or self._udp_errors % 1000 == 0:
                log.warn("rtsp session {sid}: {error} (UDP; {n} bad datagrams so far, dropped)",
                         sid=self.session.id, error=error, n=self._udp_errors)

    def _ingest(self, index: int, is_rtcp: bool, data: bytes) -> str | None:
        """Feed one RTP/RTCP packet; returns an error description for bad input."""
        ingest, stream = self.ingest, self.publishing
        if ingest is None or stream is None:
            return None
        try:
            if is_rtcp:
                ingest.rtcp(index, data)
                return None
            if not self.recording:
                return None  # media before RECORD is dropped
            events = ingest.rtp(index, data, self.core.clock.seconds())
        except (rtp.RtpError, CodecError) as e:
            kind = "RTCP" if is_rtcp else "RTP"
            return f"bad {kind} on track {index}: {e}"
        for event in events:
            if isinstance(event, Track):
                stream.set_track(event)
            else:
                stream.write(event)
        return None


class RtspFactory(Factory):
    """Builds one :class:`RtspServerProtocol` per connection.

    ``reactor`` binds the UDP port pairs (``IReactorUDP``); it defaults to
    ``core.clock``, which is the reactor in production.  The per-stream RTP
    muxers live here, so all players of this listener share their packets.
    """

    def __init__(self, core: Core, reactor: Any = None, secure: bool = False) -> None:
        self.core = core
        self.reactor = reactor if reactor is not None else core.clock
        self.secure = secure
        self._stream_rtp: WeakKeyDictionary[Stream, StreamRtp] = WeakKeyDictionary()
        schemas = getattr(core, "schemas", None)
        if isinstance(schemas, list) and "rtsp" not in schemas:
            schemas.append("rtsp")  # streams are offered over RTSP now (on_stream_changed's schemas)

    def stream_rtp(self, stream: Stream) -> StreamRtp:
        state = self._stream_rtp.get(stream)
        if state is None:
            state = self._stream_rtp[stream] = StreamRtp()
        return state

    def buildProtocol(self, addr: Any) -> RtspServerProtocol:
        proto = RtspServerProtocol(self)
        return proto
