"""RTSP server: a thin Twisted adapter over the sans-IO parser, and the
request pipeline of one connection.

Requests dispatch by method name to ``rtsp_<METHOD>`` (``rtsp_unknown``
answers 501).  A handler returns a :class:`~mediasrv.rtsp.reply.Reply` or a
Deferred of one; while a Deferred is pending (a hook, a stream that has not
appeared yet) later requests of the connection wait in order, as RTSP
requires.  Every reply carries ``CSeq``, ``Server``, ``Date`` and, once SETUP
made one, ``Session``.

The connection is MediaMTX's conn; the session state lives in one of two
objects: :class:`~mediasrv.rtsp.play.PlaySession` (DESCRIBE, SETUP, PLAY,
PAUSE) or :class:`~mediasrv.rtsp.record.RecordSession` (ANNOUNCE, SETUP,
RECORD), with :mod:`~mediasrv.rtsp.auth` for RTSP auth and
:mod:`~mediasrv.rtsp.transports` for channels and UDP ports.  Capacity, byte
counters, the idle clock and closing come from
:class:`~mediasrv.core.adapter.SessionProtocol`.

Refusals and bad input end in a 4xx reply or a closed connection, and one log
line naming the session.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv import __version__
from mediasrv.core.adapter import SessionProtocol
from mediasrv.core.context import Core, start_publish
from mediasrv.core.stream import Stream
from mediasrv.hooks.model import AccessRequest, Action
from mediasrv.rtsp.auth import RtspAuthenticator
from mediasrv.rtsp.muxer import StreamRtp
from mediasrv.rtsp.parser import (
    InterleavedFrame,
    RtspParseError,
    RtspParser,
    RtspRequest,
    encode_response,
    http_date,
    parse_transport,
)
from mediasrv.rtsp.play import PlaySession, authorize_play, check_offered
from mediasrv.rtsp.record import RecordSession, parse_announce
from mediasrv.rtsp.reply import Reply, RtspError, refused
from mediasrv.rtsp.transports import Transports
from mediasrv.rtsp.urls import access_request

log = Logger()

SERVER = f"mediasrv/{__version__}"
PUBLIC = "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, PAUSE, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
MAX_QUEUED_REQUESTS = 16

Handler = Callable[[RtspRequest], Reply | defer.Deferred[Reply]]


class RtspServerProtocol(SessionProtocol):
    """One RTSP connection: the request pipeline, and the play or record
    session it carries."""

    name = "rtsp"

    def __init__(self, factory: RtspFactory) -> None:
        super().__init__(factory.core, factory.secure)
        self.factory = factory
        self.parser = RtspParser()
        self.auth = RtspAuthenticator(factory.core)
        self.transports = Transports(factory.reactor)
        self.rtsp_session_id: str | None = None
        self.play: PlaySession | None = None
        self.record: RecordSession | None = None
        self._queue: deque[RtspRequest] = deque()
        self._torn_down = False

    # -- the session skeleton --------------------------------------------------------------
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
        if self.record is not None and self.record.stream is not None:
            return cfg.keepAliveSecond, "rtsp.keepAliveSecond"
        play = self.play
        if play is not None and play.player is not None:
            if play.tcp:
                return None  # TCP players are kept alive by the connection itself (as ZLMediaKit)
            return cfg.keepAliveSecond, "rtsp.keepAliveSecond"
        if (play is not None and play.tracks) or self.rtsp_session_id:
            return cfg.keepAliveSecond, "rtsp.keepAliveSecond"
        return cfg.handshakeSecond, "rtsp.handshakeSecond"

    def stop_playing(self, connected: bool = True) -> None:
        if self.play is not None:
            self.play.stop(connected)

    def stop_publishing(self, abrupt: bool) -> None:
        if self.record is not None:
            self.record.stop(abrupt)

    def release(self) -> None:
        self._queue.clear()
        self.transports.clear()

    # -- for the sessions ----------------------------------------------------------------------
    def local_host(self) -> str:
        """The address the client connected to (UDP ports are bound there, the SDP names it)."""
        host = self.transport.getHost() if self.transport is not None else None
        return str(getattr(host, "host", ""))

    def ensure_session(self) -> None:
        """The RTSP session id, made by the first successful SETUP."""
        if self.rtsp_session_id is None:
            self.rtsp_session_id = secrets.token_hex(8).upper()

    def _access_request(self, action: Action, uri: str) -> AccessRequest:
        port = getattr(self.transport.getHost(), "port", 0) if self.transport is not None else 0
        return access_request(action, uri, self.session, self.core.registry, "rtsps" if self.secure else "rtsp",
                              port)

    # -- the request pipeline --------------------------------------------------------------------
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
        handler: Handler | None = None
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
        if isinstance(failure.value, RtspError):
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

    # -- media in ----------------------------------------------------------------------------------
    def _interleaved(self, frame: InterleavedFrame) -> None:
        if self.record is not None:
            error = self.record.interleaved(frame.channel, frame.data)
            if error:
                self.fail(error)
            return
        if self.play is not None and self.play.owns_channel(frame.channel):
            return  # receiver reports from the player; the activity already counts as keep-alive
        if self._torn_down and (self.play is None or not self.play.tracks):
            return  # RTCP still in flight after TEARDOWN
        self.fail(f"interleaved data on channel {frame.channel}, which no SETUP assigned")

    # -- methods -------------------------------------------------------------------------------------
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
        if self.record is not None or (self.play is not None and self.play.player is not None):
            raise RtspError(455, "DESCRIBE on a session that already publishes or plays")
        d = authorize_play(self.core, self.auth, req, self._access_request(Action.PLAY, req.uri))
        return d.addCallback(self._described, req)

    def _described(self, stream: Stream, req: RtspRequest) -> Reply:
        return self._play_session(stream).describe(req, self.local_host() or "127.0.0.1")

    def _play_session(self, stream: Stream) -> PlaySession:
        check_offered(self.core, stream)
        if self.play is None:
            self.play = PlaySession(self, stream)
        else:
            self.play.stream = stream
        return self.play

    def rtsp_SETUP(self, req: RtspRequest) -> Reply | defer.Deferred[Reply]:
        value = req.header("Transport")
        if not value:
            raise RtspError(461, "SETUP without a Transport header")
        specs = parse_transport(value)
        if self.record is not None:
            return self.record.setup(req, specs)
        if self.play is None:
            # SETUP without DESCRIBE (a client that kept the SDP): gate it the same way
            d = authorize_play(self.core, self.auth, req, self._access_request(Action.PLAY, req.uri))
            return d.addCallback(lambda stream: self._play_session(stream).setup(req, specs))
        return self.play.setup(req, specs)

    def rtsp_PLAY(self, req: RtspRequest) -> Reply:
        if self.record is not None:
            raise RtspError(455, "PLAY on a publishing session")
        if self.play is None:
            raise RtspError(455, "PLAY before SETUP")
        return self.play.play(req)

    def rtsp_PAUSE(self, req: RtspRequest) -> Reply:
        if self.play is None:
            raise RtspError(455, "PAUSE before SETUP")
        return self.play.pause()

    def rtsp_ANNOUNCE(self, req: RtspRequest) -> defer.Deferred[Reply]:
        if self.record is not None or self.play is not None:
            raise RtspError(455, "ANNOUNCE on a session that already publishes or plays")
        announced = parse_announce(req)
        d = start_publish(self.core, self._access_request(Action.PUBLISH, req.uri), self.session)

        def announced_ok(stream: Stream) -> Reply:
            if self.closing:
                self.core.registry.unpublish(stream, self.session, abrupt=False)
            else:
                self.record = RecordSession(self, stream, announced, req.uri)
            return Reply(200)

        return d.addCallback(announced_ok).addErrback(refused, Action.PUBLISH)

    def rtsp_RECORD(self, req: RtspRequest) -> Reply:
        if self.record is None:
            raise RtspError(455, "RECORD before ANNOUNCE")
        return self.record.record()

    def rtsp_TEARDOWN(self, req: RtspRequest) -> Reply:
        """End the RTSP session; the connection stays for the client to close (or
        to start over), as live555 and MediaMTX do: closing it under the client
        races with the RTCP it may still be sending."""
        self.stop_playing()
        self.stop_publishing(abrupt=False)
        self.transports.clear()
        self.play = None
        self.record = None
        self._torn_down = True
        self.touch()
        reply = Reply(200)
        if self.rtsp_session_id is not None:
            reply.headers.append(("Session", self.rtsp_session_id))
        self.rtsp_session_id = None
        return reply


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
        return RtspServerProtocol(self)
