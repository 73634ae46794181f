"""HTTP-FLV and WS-FLV players.

``GET /{app}/{stream}.live.flv`` (or ``.flv``) streams FLV over a chunked HTTP
response; the same URL with a WebSocket upgrade streams it as binary
WebSocket messages (flv.js / mpegts.js).  Both pass the access gate and wait
for the stream before anything is sent, so a refusal is a plain HTTP status
(401 denied, 404 no such stream).

Tags are built once per frame (``flvmux.frame_tag``) and shared by every
FLV player; a player whose socket stalls pauses its reader through Twisted's
producer API (see :class:`~mediasrv.core.reader.StreamReader`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.websocket import WebSocketResource, WebSocketTransport

from mediasrv.core import flvmux
from mediasrv.core.context import AccessDenied, Core, start_play
from mediasrv.core.frames import MediaFrame
from mediasrv.core.reader import StreamReader
from mediasrv.core.registry import StreamNotFound
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.core.stream import Stream
from mediasrv.hooks.model import AccessRequest, Action

log = Logger()


class FlvPlayer(StreamReader):
    schema = "rtmp"  # ZLMediaKit serves FLV from its rtmp source
    """Writes FLV to one player through ``write``; ``finish`` ends the response."""

    def __init__(self, session: SessionInfo, max_queue_bytes: int, write: Callable[[bytes], None],
                 finish: Callable[[str], None]) -> None:
        super().__init__(max_queue_bytes, session)
        self._write = write
        self._finish = finish
        self._started = False

    def write(self, data: bytes) -> None:
        if self.session is not None:
            self.session.bytes_out += len(data)
        self._write(data)

    def send_headers(self, stream: Stream) -> None:
        if not self._started:
            self._started = True
            self.write(flvmux.header_tags(stream))
        else:
            # mid-stream codec change: new script data and configs, no new file header
            self.write(flvmux.header_tags(stream)[13:])

    def send_frame(self, frame: MediaFrame) -> None:
        self.write(flvmux.frame_tag(frame))

    def stream_ended(self, reason: str) -> None:
        self._finish(reason)


def parse_flv_path(path: str) -> tuple[str, str] | None:
    """``/live/test.live.flv`` → ``("live", "test")``; None when not an FLV URL."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2:
        return None
    name = parts[-1]
    for suffix in (".live.flv", ".flv"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return "/".join(parts[:-1]), name[: -len(suffix)]
    return None


class _WsFlvProtocol:
    """The WebSocket side of one WS-FLV player (twisted.web.websocket)."""

    def __init__(self, play: FlvPlay) -> None:
        self.play = play
        self.transport: WebSocketTransport | None = None

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        self.play.ws_ready(self)

    def pongReceived(self, payload: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        pass

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.play.connection_lost()


class FlvPlay:
    """One HTTP-FLV or WS-FLV request from gate to disconnect."""

    def __init__(self, core: Core, request: Request, app: str, stream: str, websocket: bool) -> None:
        self.core = core
        self.request = request
        self.websocket = websocket
        self.player: FlvPlayer | None = None
        self.ws: _WsFlvProtocol | None = None
        self.done = False
        self.stream: Stream | None = None
        peer = request.getClientAddress()
        host = request.getHost()
        params = (request.uri.split(b"?", 1)[1] if b"?" in request.uri else b"").decode("utf-8", "replace")
        s = core.sessions.open("ws-flv" if websocket else "http-flv", getattr(peer, "host", ""),
                               getattr(peer, "port", 0), getattr(host, "port", 0), core.clock.seconds())
        self.session = s
        s.closer = self.kick
        s.role = Role.PLAYER
        s.app, s.stream, s.params = app, stream, params
        s.vhost = core.registry.key(request.getRequestHostname().decode("ascii", "replace"), app, stream).vhost
        self.pending: defer.Deferred[Stream] | None = None
        request.notifyFinish().addBoth(lambda _: self.connection_lost())

    def start(self) -> None:
        s = self.session
        req = AccessRequest(Action.PLAY, "rtmp", "ws" if self.websocket else "http", s.vhost, s.app, s.stream,
                            s.params, s.peer_ip, s.peer_port, s.id)
        self.pending = d = start_play(self.core, req)
        d.addCallbacks(self._allowed, self._refused)

    def _refused(self, failure: Failure) -> None:
        self.pending = None
        if failure.check(defer.CancelledError) or self.done:
            return
        if failure.check(AccessDenied):
            code = 401
        elif failure.check(StreamNotFound):
            code = 404
        else:
            log.failure("flv session {sid}: play failed", failure, sid=self.session.id)
            code = 500
        log.info("flv session {sid} {app}/{stream}: {code} {why}", sid=self.session.id, app=self.session.app,
                 stream=self.session.stream, code=code, why=failure.getErrorMessage())
        self.request.setResponseCode(code)
        self.request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.request.write(failure.getErrorMessage().encode("utf-8", "replace") + b"\n")
        self.request.finish()

    def _allowed(self, stream: Stream) -> None:
        self.pending = None
        if self.done:
            return
        self.stream = stream
        request = self.request
        request.channel.setTimeout(None)  # a live stream has no idle timeout
        max_q = self.core.config.general.maxPlayerQueueBytes
        if self.websocket:
            # twisted.web.websocket hands the socket over from the HTTPChannel
            # but leaves the channel registered as the socket's producer, so
            # attachProducer() would fail; the channel is done with the socket.
            tcp = request.channel.transport
            if tcp is not None and getattr(tcp, "producer", None) is request.channel:
                tcp.unregisterProducer()  # type: ignore[attr-defined]
            WebSocketResource(_WsFactory(self)).render_GET(request)
            if tcp is not None:
                tcp.resumeProducing()  # type: ignore[attr-defined]  # read close frames
            return
        request.setHeader(b"content-type", b"video/x-flv")
        request.setHeader(b"cache-control", b"no-cache")
        self.player = FlvPlayer(self.session, max_q, request.write, self._finish_http)
        request.registerProducer(self.player, True)
        stream.add_reader(self.player)

    def ws_ready(self, ws: _WsFlvProtocol) -> None:
        self.ws = ws
        if self.done or self.stream is None or ws.transport is None:
            return
        transport = ws.transport
        self.player = FlvPlayer(self.session, self.core.config.general.maxPlayerQueueBytes,
                                transport.sendBytesMessage, self._finish_ws)
        transport.attachProducer(self.player)
        self.stream.add_reader(self.player)

    def _finish_http(self, reason: str) -> None:
        self._detach()
        if not self.done:
            self.request.unregisterProducer()
            self.request.finish()

    def _finish_ws(self, reason: str) -> None:
        self._detach()
        if self.ws is not None and self.ws.transport is not None:
            self.ws.transport.loseConnection(1000)

    def kick(self, reason: str) -> None:
        log.info("flv session {sid} kicked: {reason}", sid=self.session.id, reason=reason)
        transport = self.request.channel.transport if self.request.channel else None
        self.connection_lost()
        if transport is not None:
            transport.abortConnection()  # type: ignore[attr-defined]

    def _detach(self) -> None:
        player, self.player = self.player, None
        if player is not None:
            player.detach()

    def connection_lost(self) -> None:
        if self.done:
            return
        self.done = True
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.cancel()
        self._detach()
        self.core.sessions.close(self.session)


class _WsFactory:
    def __init__(self, play: FlvPlay) -> None:
        self.play = play

    def buildProtocol(self, request: Request) -> _WsFlvProtocol:
        return _WsFlvProtocol(self.play)


def render_flv(core: Core, request: Request, app: str, stream: str) -> Any:
    upgrade = (request.getHeader(b"upgrade") or b"").lower() == b"websocket"
    if core.at_capacity():
        request.setResponseCode(503)
        return b"too many connections\n"
    FlvPlay(core, request, app, stream, websocket=upgrade).start()
    return NOT_DONE_YET



