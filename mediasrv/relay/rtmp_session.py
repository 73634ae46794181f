"""The client side of an RTMP connection, play or publish, as a sans-IO state machine.

Built from the same pieces as the server (``rtmp.handshake.ClientHandshake``,
``rtmp.chunks``, ``rtmp.messages``, ``rtmp.flvdemux``): bytes in through
:meth:`RtmpClientSession.receive_data`, which returns events, bytes out
through :meth:`RtmpClientSession.data_to_send`.  No I/O, no clock, no Twisted.

The command sequence is FFmpeg's (``libavformat/rtmpproto.c``), which every
server is tested against:

* play: ``connect`` → ``createStream`` → ``play(name, -2000)`` and
  SetBufferLength; the stream is started on ``NetStream.Play.Start``;
* publish: ``connect`` → ``releaseStream`` + ``FCPublish`` → ``createStream``
  → ``publish(name, "live")``; started on ``NetStream.Publish.Start``, then
  ``@setDataFrame onMetaData`` and the sequence headers go out before any
  frame.

Along the way it answers what the server asks of a client: Acknowledgement
every window (Window Acknowledgement Size), PingResponse to PingRequest, and
it follows the server's Set Chunk Size (the chunk reader does).  Status
errors become typed exceptions: ``NetStream.Play.StreamNotFound`` →
:class:`~mediasrv.relay.errors.StreamNotFound`, any other ``error`` level
status or ``_error`` reply → :class:`~mediasrv.relay.errors.Refused` with the
status code; bad input → :class:`~mediasrv.relay.errors.ProtocolViolation`,
bounded by the chunk reader's message and chunk stream limits.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mediasrv.codec.amf0 import AmfError, EcmaArray
from mediasrv.codec.bits import CodecError
from mediasrv.core import flvmux
from mediasrv.core.frames import MediaFrame, Track, TrackKind
from mediasrv.relay.errors import ProtocolViolation, Refused, RelayError, StreamNotFound
from mediasrv.relay.flvbody import FlvBodyDemuxer, Metadata, Notice, metadata_from_script
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import ChunkError, ChunkReader, RtmpMessage, encode_message
from mediasrv.rtmp.handshake import ClientHandshake, HandshakeError

if TYPE_CHECKING:
    from mediasrv.core.stream import Stream

__all__ = ["Ended", "Metadata", "Mode", "Notice", "RtmpClientSession", "RtmpEvent", "Started"]

CHUNK_SIZE = 4096
"""Our outgoing chunk size, announced right after the handshake (as FFmpeg does)."""
WINDOW_ACK_SIZE = 2_500_000
BUFFER_MS = 3000
PLAY_FLASH_VER = "LNX 9,0,124,2"
PUBLISH_FLASH_VER = "FMLE/3.0 (compatible; FMSc/1.0)"
MAX_MESSAGE_SIZE = 8 * 1024 * 1024
_END_CODES = frozenset({"NetStream.Play.Stop", "NetStream.Play.UnpublishNotify", "NetStream.Play.Complete"})
_BAD_INPUT = (HandshakeError, ChunkError, AmfError, CodecError, ValueError)


class Mode(enum.Enum):
    PLAY = "play"
    PUBLISH = "publish"


@dataclass(frozen=True, slots=True)
class Started:
    """``NetStream.Play.Start`` / ``NetStream.Publish.Start``: media may flow."""

    description: str


@dataclass(frozen=True, slots=True)
class Ended:
    """The server ended the stream (unpublished, stopped, complete)."""

    code: str
    description: str


RtmpEvent = Started | Metadata | Ended | Notice | Track | MediaFrame


class _TracksView:
    """What :func:`flvmux.metadata_for` reads of a stream, for a list of tracks."""

    def __init__(self, tracks: Sequence[Track]) -> None:
        self.metadata: dict[str, Any] = {}
        self.video = next((t for t in tracks if t.kind is TrackKind.VIDEO), None)
        self.audio = next((t for t in tracks if t.kind is TrackKind.AUDIO), None)


class RtmpClientSession:
    """One RTMP client connection.  Feed the server's bytes, write what :meth:`data_to_send` returns.

    :param stream: the play/publish name, query string included (``cam?token=x``).
    """

    def __init__(self, app: str, stream: str, tc_url: str, mode: Mode, *,
                 random_bytes: Callable[[int], bytes] = os.urandom, digest_handshake: bool = False,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.app = app
        self.stream = stream
        self.tc_url = tc_url
        self.mode = mode
        self.handshake = ClientHandshake(random_bytes, digest=digest_handshake)
        self.reader = ChunkReader(max_message_size=max_message_size)
        self.stream_id = 0
        self.started = False
        self.ended = False
        self.bytes_received = 0
        self.peer_window = 0
        self._last_ack = 0
        self._out = bytearray()
        self._txn = 0
        self._pending: dict[float, str] = {}
        self._ts_base: int | None = None
        self._demuxer = FlvBodyDemuxer()
        self._out += self.handshake.initial_bytes()

    # -- output ----------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Bytes to write now; each is returned once."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _command(self, name: str, obj: Any, *args: Any, stream_id: int = 0, track: bool = True) -> None:
        txn = 0.0
        if track:
            self._txn += 1
            txn = float(self._txn)
            self._pending[txn] = name
        csid = m.CSID_DATA if stream_id else m.CSID_COMMAND
        self._out += m.command(name, txn, obj, *args, stream_id=stream_id, chunk_size=CHUNK_SIZE, csid=csid)

    # -- input -----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[RtmpEvent]:
        """Events completed by ``data``, in order.

        :raises RelayError: the server refused (typed), or broke the protocol
            (:class:`ProtocolViolation`); the connection must then be closed.
        """
        self.bytes_received += len(data)
        try:
            if not self.handshake.complete:
                self.handshake.receive_data(data)
                self._out += self.handshake.data_to_send()
                if not self.handshake.complete:
                    return []
                data = self.handshake.leftover
                self._handshake_done()
            events: list[RtmpEvent] = []
            for msg in self.reader.feed(data):
                self._dispatch(msg, events)
        except RelayError:
            raise
        except _BAD_INPUT as e:
            raise ProtocolViolation(f"RTMP: {type(e).__name__}: {e}") from None
        if self.peer_window and self.bytes_received - self._last_ack >= self.peer_window:
            self._last_ack = self.bytes_received
            self._out += m.acknowledgement(self.bytes_received)
        return events

    def _handshake_done(self) -> None:
        self._out += m.set_chunk_size(CHUNK_SIZE)
        props: dict[str, Any] = {"app": self.app, "type": "nonprivate"}
        if self.mode is Mode.PUBLISH:
            props.update(flashVer=PUBLISH_FLASH_VER, tcUrl=self.tc_url)
        else:
            props.update(flashVer=PLAY_FLASH_VER, tcUrl=self.tc_url, fpad=False, capabilities=15.0,
                         audioCodecs=4071.0, videoCodecs=252.0, videoFunction=1.0,
                         fourCcList=["hvc1", "avc1"])
        self._command("connect", props)

    def _dispatch(self, msg: RtmpMessage, events: list[RtmpEvent]) -> None:
        t = msg.type_id
        if t == m.VIDEO or t == m.AUDIO:
            if self.mode is Mode.PLAY and self.stream_id:
                self._media(msg, events)
        elif t == m.COMMAND_AMF0 or t == m.COMMAND_AMF3:
            self._on_command(m.parse_command(msg), events)
        elif t == m.DATA_AMF0 or t == m.DATA_AMF3:
            self._on_data(msg, events)
        elif t == m.AGGREGATE:
            for sub in m.split_aggregate(msg):
                self._dispatch(sub, events)
        elif t == m.WINDOW_ACK_SIZE:
            self.peer_window = m.parse_u32(msg.payload)
        elif t == m.USER_CONTROL:
            event, values = m.parse_user_control(msg.payload)
            if event == m.PING_REQUEST and values:
                self._out += m.ping_response(values[0])
            elif (event == m.STREAM_EOF and values and values[0] == self.stream_id and self.started
                  and self.mode is Mode.PLAY and not self.ended):
                # nginx-rtmp's only word when the publisher leaves (publish_notify is off by default)
                self.ended = True
                events.append(Ended("StreamEOF", f"stream {self.stream_id} ended"))
        # Set Chunk Size / Abort are applied by the chunk reader; Ack, Set Peer
        # Bandwidth and shared objects need nothing from a client

    def _media(self, msg: RtmpMessage, events: list[RtmpEvent]) -> None:
        item = self._demuxer.media(msg.type_id, msg.timestamp, msg.payload)
        if item is not None:
            events.append(item)

    def _on_data(self, msg: RtmpMessage, events: list[RtmpEvent]) -> None:
        name, args = m.parse_data(msg)
        metadata = metadata_from_script(name, args)
        if metadata is not None:
            events.append(metadata)
        elif name == "onStatus" and args and isinstance(args[0], dict):
            self._on_status(args[0], events)  # some servers send statuses as data messages

    def _on_command(self, cmd: m.Command, events: list[RtmpEvent]) -> None:
        if cmd.name == "onStatus":
            info = cmd.args[0] if cmd.args and isinstance(cmd.args[0], dict) else {}
            self._on_status(info, events)
            return
        if cmd.name not in ("_result", "_error"):
            return  # onBWDone, onFCPublish, _checkbw...: nothing to answer
        request = self._pending.pop(cmd.transaction_id, "")
        info = next((a for a in cmd.args if isinstance(a, dict)), {})
        if cmd.name == "_error":
            if request in ("releaseStream", "FCPublish"):
                return  # optional commands some servers do not implement
            code = str(info.get("code", "") or "")
            desc = str(info.get("description", "") or "")
            raise Refused(f"RTMP {request or 'command'} refused: {code or '_error'}: {desc}".rstrip(": "), code)
        if request == "connect":
            code = str(info.get("code", "") or "")
            if code and code != "NetConnection.Connect.Success":
                raise Refused(f"RTMP connect to {self.app!r} answered {code}: {info.get('description', '')}", code)
            if self.mode is Mode.PUBLISH:
                self._command("releaseStream", None, self.stream)
                self._command("FCPublish", None, self.stream)
            else:
                self._out += m.window_ack_size(WINDOW_ACK_SIZE)
            self._command("createStream", None)
        elif request == "createStream":
            sid = cmd.args[0] if cmd.args else None
            if isinstance(sid, bool) or not isinstance(sid, (int, float)) or not 0 < sid < 2**32:
                raise ProtocolViolation(f"RTMP createStream answered with stream id {sid!r}")
            self.stream_id = int(sid)
            if self.mode is Mode.PUBLISH:
                self._command("publish", None, self.stream, "live", stream_id=self.stream_id, track=False)
            else:
                self._command("play", None, self.stream, -2000.0, stream_id=self.stream_id, track=False)
                self._out += m.set_buffer_length(self.stream_id, BUFFER_MS)

    def _on_status(self, info: dict[str, Any], events: list[RtmpEvent]) -> None:
        code = str(info.get("code", "") or "")
        level = str(info.get("level", "") or "")
        desc = str(info.get("description", "") or "")
        if code == "NetStream.Play.StreamNotFound":
            raise StreamNotFound(f"RTMP play {self.app}/{self.stream}: {code}: {desc}".rstrip(": "))
        if level == "error":
            raise Refused(f"RTMP {self.mode.value} {self.app}/{self.stream} refused: {code}: {desc}".rstrip(": "),
                          code)
        start = "NetStream.Play.Start" if self.mode is Mode.PLAY else "NetStream.Publish.Start"
        if code == start and not self.started:
            self.started = True
            events.append(Started(desc))
        elif self.mode is Mode.PLAY and code in _END_CODES and not self.ended:
            self.ended = True
            events.append(Ended(code, desc))

    # -- publishing ------------------------------------------------------------------------
    def send_tracks(self, tracks: Sequence[Track]) -> None:
        """Metadata and sequence headers (again, when a track changed)."""
        self._check_publishing()
        md = flvmux.metadata_for(cast("Stream", _TracksView(tracks)))
        self._out += m.data("@setDataFrame", "onMetaData", EcmaArray(md), stream_id=self.stream_id,
                            chunk_size=CHUNK_SIZE)
        for track in tracks:
            video = track.kind is TrackKind.VIDEO
            self._out += encode_message(m.CSID_VIDEO if video else m.CSID_AUDIO, m.VIDEO if video else m.AUDIO,
                                        self.stream_id, 0, flvmux.config_body(track), CHUNK_SIZE)

    def send_frame(self, frame: MediaFrame) -> None:
        """One frame; timestamps start at 0 with the first frame sent."""
        self._check_publishing()
        if self._ts_base is None:
            self._ts_base = frame.dts
        ts = max(0, frame.dts - self._ts_base)
        video = frame.kind is TrackKind.VIDEO
        self._out += encode_message(m.CSID_VIDEO if video else m.CSID_AUDIO, m.VIDEO if video else m.AUDIO,
                                    self.stream_id, ts, flvmux.frame_body(frame), CHUNK_SIZE)

    def _check_publishing(self) -> None:
        if self.mode is not Mode.PUBLISH or not self.started:
            raise RuntimeError("RTMP media can only be sent once NetStream.Publish.Start arrived")

    def close(self) -> None:
        """Leave politely (FCUnpublish and deleteStream, as FFmpeg does); then close the connection."""
        if not self.stream_id:
            return
        if self.mode is Mode.PUBLISH:
            self._command("FCUnpublish", None, self.stream, track=False)
        self._command("deleteStream", None, float(self.stream_id), track=False)
        self.stream_id = 0
