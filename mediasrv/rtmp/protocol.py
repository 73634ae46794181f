"""RTMP server: a thin Twisted adapter over the sans-IO handshake and chunk layers.

Commands dispatch by name to ``rtmp_<command>`` (``rtmp_unknown`` otherwise).
Publish and play pass the access gate before anything is announced: no
``NetStream.Publish.Start``/``NetStream.Play.Start`` and no media before the
gate allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.codec import flv
from mediasrv.codec.amf0 import UNDEFINED, AmfError
from mediasrv.codec.flv import VideoKind
from mediasrv.core import flvmux
from mediasrv.core.adapter import SessionProtocol
from mediasrv.core.context import AccessDenied, Core, start_play, start_publish
from mediasrv.core.frames import Codec, MediaFrame, TrackKind
from mediasrv.core.reader import StreamReader
from mediasrv.core.registry import StreamBusy, StreamNotFound
from mediasrv.core.sessions import Role
from mediasrv.core.stream import Stream
from mediasrv.hooks.model import AccessRequest, Action, Decision
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import ChunkError, ChunkReader, RtmpMessage, encode_message
from mediasrv.rtmp.handshake import HandshakeError, ServerHandshake

log = Logger()

OUT_CHUNK_SIZE = 4096
WINDOW_ACK_SIZE = 2_500_000
_BAD_INPUT = (HandshakeError, ChunkError, AmfError, flv.FlvError, ValueError)


def refusal_status(failure: Failure, prefix: str, stream: str) -> tuple[str, str] | None:
    """The ``onStatus`` code and description that tell a client why its
    ``publish`` or ``play`` (``prefix``: ``Publish``/``Play``) was refused, as
    ZLMediaKit/SRS clients expect; None for a failure that is a bug of ours."""
    if failure.check(AccessDenied):
        return f"NetStream.{prefix}.BadAuth", str(failure.value)
    if failure.check(StreamBusy):
        return "NetStream.Publish.BadName", "Stream already publishing"
    if failure.check(StreamNotFound):
        return "NetStream.Play.StreamNotFound", f"No such stream: {stream}"
    return None


def split_name(name: str) -> tuple[str, str]:
    """``"stream?token=abc"`` → ``("stream", "token=abc")``."""
    base, _, query = name.partition("?")
    return base, query


def _is_our_video_body(codec: Codec, payload: bytes) -> bool:
    """Whether a publisher's video body is in the form :func:`flvmux.frame_body`
    would build (legacy FLV for H.264, enhanced RTMP -- ``IsExHeader``, the top
    bit -- for H.265), so it can be passed through to players as is."""
    enhanced = bool(payload[0] & 0x80)
    return (codec is Codec.H264 and not enhanced) or (codec is Codec.H265 and enhanced)


class RtmpPlayer(StreamReader):
    """Writes a stream to one RTMP player.  Frame chunks are built once per
    (frame, message stream id) and shared by every RTMP player."""

    schema = "rtmp"

    def __init__(self, proto: RtmpServerProtocol, msid: int, max_queue_bytes: int) -> None:
        super().__init__(max_queue_bytes, proto.session)
        self.proto = proto
        self.msid = msid
        self.mux_key = f"rtmp:{msid}"  # the key of this player's chunks in MediaFrame.muxed

    def send_headers(self, stream: Stream) -> None:
        proto = self.proto
        out = [proto.encode(m.DATA_AMF0, flvmux.metadata_body(stream), csid=m.CSID_DATA, stream_id=self.msid)]
        for track in (stream.video, stream.audio):
            if track is not None:
                type_id = m.VIDEO if track.kind is TrackKind.VIDEO else m.AUDIO
                csid = m.CSID_VIDEO if track.kind is TrackKind.VIDEO else m.CSID_AUDIO
                out.append(proto.encode(type_id, flvmux.config_body(track), csid=csid, stream_id=self.msid))
        proto.write(b"".join(out))

    def send_frame(self, frame: MediaFrame) -> None:
        data: bytes | None = frame.muxed.get(self.mux_key)
        if data is None:
            if frame.kind is TrackKind.VIDEO:
                type_id, csid = m.VIDEO, m.CSID_VIDEO
            else:
                type_id, csid = m.AUDIO, m.CSID_AUDIO
            data = encode_message(csid, type_id, self.msid, frame.dts & 0xFFFFFFFF, flvmux.frame_body(frame),
                                  OUT_CHUNK_SIZE)
            frame.muxed[self.mux_key] = data
        self.proto.write(data)

    def stream_ended(self, reason: str) -> None:
        self.proto.play_ended(self, reason)


class RtmpServerProtocol(SessionProtocol):
    """One RTMP connection: NetConnection and NetStream commands over the
    chunk stream, dispatched by name to ``rtmp_<command>``."""

    name = "rtmp"
    bad_input = _BAD_INPUT

    def __init__(self, core: Core, secure: bool = False) -> None:
        super().__init__(core, secure)
        cfg = core.config.rtmp
        self.handshake = ServerHandshake(server_time=0)
        self.reader = ChunkReader(max_message_size=cfg.maxMessageSize, max_buffered_bytes=cfg.maxBufferedBytes,
                                  initial_max_message_size=cfg.maxMessageSizeBeforePublish)
        self.app = ""
        self.app_params = ""
        self.tc_url = ""
        self.page_url = ""
        self.vhost = ""
        self.peer_window = 0
        self.last_ack = 0
        self.next_stream_id = 1
        self.app_connected = False
        self.publishing: Stream | None = None
        self.publish_msid = 0
        self.player: RtmpPlayer | None = None
        self._warned_types: set[int] = set()

    # -- the session skeleton ------------------------------------------------------
    def session_started(self) -> None:
        self.arm_idle_check(self.core.config.rtmp.handshakeSecond)

    def bytes_received(self, data: bytes) -> None:
        if not self.handshake.complete:
            self.handshake.receive_data(data)
            out = self.handshake.data_to_send()
            if out:
                self.write(out)
            if not self.handshake.complete:
                return
            data = self.handshake.leftover
            self.arm_idle_check(self.core.config.rtmp.keepAliveSecond)
        for msg in self.reader.feed(data):
            self.dispatch(msg)
            if self.closing:
                return
        if self.peer_window and self.reader.bytes_received - self.last_ack >= self.peer_window:
            self.last_ack = self.reader.bytes_received
            self.write(m.acknowledgement(self.last_ack & 0xFFFFFFFF))

    def idle_expired(self, idle: float) -> str | None:
        cfg = self.core.config.rtmp
        if not self.handshake.complete:
            return f"handshake not finished within {cfg.handshakeSecond:g} s"
        # Players legitimately stay silent (they only acknowledge); publishers
        # and connections that never started must keep talking.
        if self.player is None and self.pending is None and idle >= cfg.keepAliveSecond:
            return f"no data for {idle:.0f} s (rtmp.keepAliveSecond)"
        return None

    def idle_check_interval(self) -> float:
        return self.core.config.rtmp.keepAliveSecond

    def release(self) -> None:
        self.reader.close()  # the partial messages go now, not at the next cyclic GC

    # -- output helpers ----------------------------------------------------------
    def encode(self, type_id: int, payload: bytes, csid: int, stream_id: int = 0, timestamp: int = 0) -> bytes:
        return encode_message(csid, type_id, stream_id, timestamp, payload, OUT_CHUNK_SIZE)

    def send_command(self, name: str, txn: float, obj: Any, *args: Any, stream_id: int = 0) -> None:
        self.write(m.command(name, txn, obj, *args, stream_id=stream_id, chunk_size=OUT_CHUNK_SIZE))

    def on_status(self, code: str, description: str, level: str = "status", stream_id: int = 1,
                  **extra: Any) -> None:
        info = {"level": level, "code": code, "description": description, **extra}
        self.send_command("onStatus", 0, None, info, stream_id=stream_id)

    # -- message dispatch --------------------------------------------------------
    def dispatch(self, msg: RtmpMessage) -> None:
        t = msg.type_id
        if t == m.VIDEO or t == m.AUDIO:
            self.on_media(msg)
        elif t == m.COMMAND_AMF0 or t == m.COMMAND_AMF3:
            cmd = m.parse_command(msg)
            name = cmd.name
            handler: Callable[[m.Command, RtmpMessage], None] | None = None
            if name.isidentifier():
                handler = getattr(self, "rtmp_" + name, None)
            if not callable(handler):
                handler = self.rtmp_unknown
            handler(cmd, msg)
        elif t == m.DATA_AMF0 or t == m.DATA_AMF3:
            self.on_data(msg)
        elif t == m.AGGREGATE:
            for sub in m.split_aggregate(msg):
                self.dispatch(sub)
        elif t == m.WINDOW_ACK_SIZE:
            self.peer_window = m.parse_u32(msg.payload)
        elif t == m.USER_CONTROL:
            event, values = m.parse_user_control(msg.payload)
            if event == m.PING_REQUEST and values:
                self.write(m.user_control(m.PING_RESPONSE, values[0]))
        elif t in (m.SET_CHUNK_SIZE, m.ABORT, m.ACK, m.SET_PEER_BANDWIDTH):
            pass  # chunk-layer messages are applied by ChunkReader; acks need no reply
        elif t in (m.SHARED_OBJECT_AMF0, m.SHARED_OBJECT_AMF3):
            if t not in self._warned_types:
                self._warned_types.add(t)
                log.info("rtmp session {sid}: shared objects are not supported; ignored", sid=self.session.id)
        else:
            raise ValueError(f"unknown RTMP message type {t}")

    # -- NetConnection commands --------------------------------------------------
    def rtmp_connect(self, cmd: m.Command, msg: RtmpMessage) -> None:
        if self.app_connected or self.pending is not None:
            raise ValueError("connect sent twice on one connection")
        obj = cmd.command_object if isinstance(cmd.command_object, dict) else {}
        app_raw = str(obj.get("app", "") or "")
        self.tc_url = str(obj.get("tcUrl", "") or "")
        self.page_url = str(obj.get("pageUrl", "") or "")
        self.app, self.app_params = split_name(app_raw)
        self.app = self.app.strip("/")
        if not self.app_params and "?" in self.tc_url:
            self.app_params = self.tc_url.partition("?")[2]
        self.vhost = urlsplit(self.tc_url).hostname or "" if self.tc_url else ""
        # The connect gate (SRS on_connect); other dialects do not gate it.
        request = self._access_request(Action.CONNECT, "", self.app_params)
        self.pending = d = self.core.gate.authorize(request)
        d.addCallbacks(self._connect_decided, self._connect_failed, callbackArgs=(cmd, obj))

    def _connect_decided(self, decision: Decision, cmd: m.Command, obj: dict[str, Any]) -> None:
        self.pending = None
        if self.closing:
            return
        if not decision.allowed:
            self.send_command("_error", cmd.transaction_id, None,
                              {"level": "error", "code": "NetConnection.Connect.Rejected",
                               "description": decision.reason or "connect refused"})
            self.refuse(f"connect to {self.app!r} refused: {decision.reason}")
            return
        self.app_connected = True
        self.write(b"".join((m.window_ack_size(WINDOW_ACK_SIZE), m.set_peer_bandwidth(WINDOW_ACK_SIZE, 2),
                             m.set_chunk_size(OUT_CHUNK_SIZE))))
        props = {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31.0, "mode": 1.0}
        encoding = obj.get("objectEncoding", 0)  # any AMF value may arrive here
        info: dict[str, Any] = {"level": "status", "code": "NetConnection.Connect.Success",
                                "description": "Connection succeeded.",
                                "objectEncoding": float(encoding) if isinstance(encoding, (int, float)) else 0.0}
        self.send_command("_result", cmd.transaction_id, props, info)

    def _connect_failed(self, failure: Failure) -> None:
        self.pending = None
        if failure.check(defer.CancelledError) or self.closing:
            return
        log.failure("rtmp session {sid}: connect check failed", failure, sid=self.session.id)
        self.refuse("connect check failed")

    def rtmp_createStream(self, cmd: m.Command, msg: RtmpMessage) -> None:
        sid = self.next_stream_id
        self.next_stream_id += 1
        self.send_command("_result", cmd.transaction_id, None, float(sid))

    def _result_null(self, cmd: m.Command) -> None:
        if cmd.transaction_id:
            self.send_command("_result", cmd.transaction_id, None, UNDEFINED)

    def rtmp_releaseStream(self, cmd: m.Command, msg: RtmpMessage) -> None:
        self._result_null(cmd)

    def rtmp_FCPublish(self, cmd: m.Command, msg: RtmpMessage) -> None:
        name = str(cmd.args[0]) if cmd.args else ""
        self.send_command("onFCPublish", 0, None, {"code": "NetStream.Publish.Start", "description": name})
        self._result_null(cmd)

    def rtmp_FCUnpublish(self, cmd: m.Command, msg: RtmpMessage) -> None:
        name = str(cmd.args[0]) if cmd.args else ""
        self.send_command("onFCUnpublish", 0, None, {"code": "NetStream.Unpublish.Success", "description": name})
        self._result_null(cmd)
        self.stop_publishing(abrupt=False)

    def rtmp_FCSubscribe(self, cmd: m.Command, msg: RtmpMessage) -> None:
        self._result_null(cmd)

    def rtmp_getStreamLength(self, cmd: m.Command, msg: RtmpMessage) -> None:
        self.send_command("_result", cmd.transaction_id, None, 0.0)

    def rtmp_deleteStream(self, cmd: m.Command, msg: RtmpMessage) -> None:
        self.stop_publishing(abrupt=False)
        self.stop_playing()

    def rtmp_closeStream(self, cmd: m.Command, msg: RtmpMessage) -> None:
        self.rtmp_deleteStream(cmd, msg)

    def rtmp_unknown(self, cmd: m.Command, msg: RtmpMessage) -> None:
        log.debug("rtmp session {sid}: unsupported command {name!r}", sid=self.session.id, name=cmd.name)
        if cmd.transaction_id:
            self.send_command("_error", cmd.transaction_id, None,
                              {"level": "error", "code": "NetConnection.Call.Failed",
                               "description": f"Method not found ({cmd.name})."})

    # -- access gate ---------------------------------------------------------------
    def _stream_args(self, cmd: m.Command) -> tuple[str, str]:
        raw = str(cmd.args[0]) if cmd.args and isinstance(cmd.args[0], str) else ""
        stream, params = split_name(raw)
        if not params:
            params = self.app_params
        if not stream or not self.app:
            raise ValueError(f"{cmd.name} without an app or a stream name ({self.app!r}, {raw!r})")
        return stream, params

    def _request(self, action: Action, cmd: m.Command) -> AccessRequest:
        if self.publishing is not None or self.player is not None or self.pending is not None:
            raise ValueError(f"{cmd.name} on a connection that already publishes or plays")
        stream, params = self._stream_args(cmd)
        self.session.role = Role.PUBLISHER if action is Action.PUBLISH else Role.PLAYER
        return self._access_request(action, stream, params)

    def _access_request(self, action: Action, stream: str, params: str) -> AccessRequest:
        """The gate's question for a connect, publish or play of ``stream`` in
        the connected app; the session row learns vhost, app, stream and params."""
        s = self.session
        s.vhost = self.core.registry.key(self._vhost_for(params), self.app, stream).vhost
        s.app, s.stream, s.params = self.app, stream, params
        return AccessRequest(action, "rtmp", s.protocol, s.vhost, self.app, stream, params, s.peer_ip,
                             s.peer_port, s.id, tc_url=self.tc_url, page_url=self.page_url)

    def _vhost_for(self, params: str) -> str:
        for pair in params.split("&"):
            k, _, v = pair.partition("=")
            if k == "vhost" and v:
                return v
        return self.vhost

    def _rejected(self, failure: Failure, msid: int, prefix: str) -> None:
        """Tell the client why, the way ZLMediaKit/SRS clients expect, then close."""
        self.pending = None
        if failure.check(defer.CancelledError) or self.closing:
            return
        s = self.session
        status = refusal_status(failure, prefix, s.stream)
        if status is None:
            log.failure("rtmp session {sid}: {prefix} failed", failure, sid=s.id, prefix=prefix.lower())
            status = f"NetStream.{prefix}.Failed", "internal error"
        code, desc = status
        self.on_status(code, desc, "error", stream_id=msid)
        self.refuse(f"{prefix.lower()} {s.app}/{s.stream} refused: {code}: {failure.getErrorMessage()}")

    # -- publishing ----------------------------------------------------------------
    def rtmp_publish(self, cmd: m.Command, msg: RtmpMessage) -> None:
        request = self._request(Action.PUBLISH, cmd)
        msid = msg.stream_id or 1
        self.pending = d = start_publish(self.core, request, self.session)
        d.addCallbacks(self._publish_started, self._rejected, callbackArgs=(msid,), errbackArgs=(msid, "Publish"))

    def _publish_started(self, stream: Stream, msid: int) -> None:
        self.pending = None
        if self.closing:
            self.core.registry.unpublish(stream, self.session, abrupt=False)
            return
        self.publishing = stream
        self.reader.allow_large_messages()
        self.write(m.user_control(m.STREAM_BEGIN, msid))
        self.on_status("NetStream.Publish.Start", f"{self.session.stream} is now published.", stream_id=msid)
        log.info("rtmp session {sid} publishes {key}", sid=self.session.id, key=str(stream.key))

    def stop_publishing(self, abrupt: bool) -> None:
        stream, self.publishing = self.publishing, None
        if stream is not None:
            self.core.registry.unpublish(stream, self.session, abrupt=abrupt)

    def on_media(self, msg: RtmpMessage) -> None:
        stream = self.publishing
        if stream is None or not msg.payload:
            return
        payload = msg.payload
        if msg.type_id == m.VIDEO:
            pkt = flv.parse_video(payload)
            codec = pkt.codec
            if codec is None:  # an enhanced command frame: nothing to carry
                return
            if pkt.kind is VideoKind.CONFIG:
                stream.set_track(flvmux.track_from_config(codec, pkt.data))
                return
            if pkt.kind is not VideoKind.FRAME or stream.video is None:
                return
            frame = MediaFrame(codec, msg.timestamp, msg.timestamp + pkt.cts, pkt.keyframe, pkt.data)
            if _is_our_video_body(codec, payload):
                frame.muxed[flvmux.FLV_BODY] = payload
        else:
            apkt = flv.parse_audio(payload)
            if apkt.config:
                stream.set_track(flvmux.track_from_config(Codec.AAC, apkt.data))
                return
            if stream.audio is None:
                return
            frame = MediaFrame(Codec.AAC, msg.timestamp, msg.timestamp, True, apkt.data)
            frame.muxed[flvmux.FLV_BODY] = payload
        stream.write(frame)

    def on_data(self, msg: RtmpMessage) -> None:
        name, args = m.parse_data(msg)
        if name == "@setDataFrame" and args:
            name, args = str(args[0]), list(args[1:])
        if name == "onMetaData" and self.publishing is not None and args and isinstance(args[0], dict):
            self.publishing.set_metadata({str(k): v for k, v in args[0].items()})

    # -- playing -------------------------------------------------------------------
    def rtmp_play(self, cmd: m.Command, msg: RtmpMessage) -> None:
        request = self._request(Action.PLAY, cmd)
        reset = bool(cmd.args[3]) if len(cmd.args) > 3 and isinstance(cmd.args[3], bool) else True
        msid = msg.stream_id or 1
        self.pending = d = start_play(self.core, request)
        d.addCallbacks(self._start_play, self._rejected, callbackArgs=(msid, reset), errbackArgs=(msid, "Play"))

    def _start_play(self, stream: Stream, msid: int, reset: bool) -> None:
        self.pending = None
        if self.closing:
            return
        s = self.session
        self.write(m.user_control(m.STREAM_BEGIN, msid))
        if reset:
            self.on_status("NetStream.Play.Reset", f"Playing and resetting {s.stream}.", stream_id=msid,
                           details=s.stream)
        self.on_status("NetStream.Play.Start", f"Started playing {s.stream}.", stream_id=msid, details=s.stream)
        self.write(m.data("|RtmpSampleAccess", True, True, stream_id=msid, chunk_size=OUT_CHUNK_SIZE))
        player = RtmpPlayer(self, msid, self.core.config.general.maxPlayerQueueBytes)
        self.player = player
        self.attach_producer(player)
        stream.add_reader(player)
        log.info("rtmp session {sid} plays {key}", sid=s.id, key=str(stream.key))

    def play_ended(self, player: RtmpPlayer, reason: str) -> None:
        """The stream went away under a player: tell it, then close."""
        if player is not self.player or self.closing:
            return
        self.write(m.user_control(m.STREAM_EOF, player.msid))
        self.on_status("NetStream.Play.UnpublishNotify", f"{self.session.stream} is now unpublished.",
                       stream_id=player.msid)
        self.on_status("NetStream.Play.Stop", f"Stopped playing {self.session.stream}.", stream_id=player.msid)
        self.stop_playing()
        self.refuse(f"stream ended: {reason}")

    def stop_playing(self, connected: bool = True) -> None:
        player, self.player = self.player, None
        if player is not None:
            player.detach()
            self.detach_producer(player, connected)


class RtmpFactory(Factory):
    def __init__(self, core: Core, secure: bool = False) -> None:
        self.core = core
        self.secure = secure

    def buildProtocol(self, addr: Any) -> RtmpServerProtocol:
        return RtmpServerProtocol(self.core, self.secure)

