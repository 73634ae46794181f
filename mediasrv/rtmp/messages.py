"""Typed helpers for RTMP control, user-control, command and data messages.

Encoders return complete chunk bytes (via the stateless
:func:`~mediasrv.rtmp.chunks.encode_message`), ready to write to the
transport; decoders take reassembled :class:`~mediasrv.rtmp.chunks.RtmpMessage`
payloads.  Sans-IO like the rest of ``mediasrv.rtmp``'s codecs.

References are to Adobe RTMP spec 1.0: section 5.4 (protocol control
messages), 6.2 / 7.1.7 (user control messages), 7.1 (message types), 7.2
(commands).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Final

from mediasrv.codec import amf0
from mediasrv.codec.amf0 import AmfError, AmfExpansionError
from mediasrv.core.limits import AMF_EXPANSION, REFUSALS
from mediasrv.rtmp.chunks import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    ChunkError,
    RtmpMessage,
    encode_message,
)

__all__ = [
    "Command",
    "acknowledgement",
    "command",
    "data",
    "parse_command",
    "parse_data",
    "parse_peer_bandwidth",
    "parse_u32",
    "parse_user_control",
    "ping_request",
    "ping_response",
    "set_buffer_length",
    "set_chunk_size",
    "set_peer_bandwidth",
    "split_aggregate",
    "stream_begin",
    "stream_dry",
    "stream_eof",
    "stream_is_recorded",
    "user_control",
    "window_ack_size",
]

# Message type ids (section 5.4, 6.2, 7.1).
SET_CHUNK_SIZE: Final = 1
ABORT: Final = 2
ACK: Final = 3
USER_CONTROL: Final = 4
WINDOW_ACK_SIZE: Final = 5
SET_PEER_BANDWIDTH: Final = 6
AUDIO: Final = 8
VIDEO: Final = 9
DATA_AMF3: Final = 15
SHARED_OBJECT_AMF3: Final = 16
COMMAND_AMF3: Final = 17
DATA_AMF0: Final = 18
SHARED_OBJECT_AMF0: Final = 19
COMMAND_AMF0: Final = 20
AGGREGATE: Final = 22

# User control event types (section 7.1.7).
STREAM_BEGIN: Final = 0
STREAM_EOF: Final = 1
STREAM_DRY: Final = 2
SET_BUFFER_LENGTH: Final = 3
STREAM_IS_RECORDED: Final = 4
PING_REQUEST: Final = 6
PING_RESPONSE: Final = 7

# Set Peer Bandwidth limit types (section 5.4.5).
LIMIT_HARD: Final = 0
LIMIT_SOFT: Final = 1
LIMIT_DYNAMIC: Final = 2

# The chunk stream ids this server sends on.  Section 5.4 requires protocol
# control (and 6.2 user control) messages on chunk stream 2; the rest is
# convention, matching what ffmpeg and SRS use, so captures look familiar:
CSID_CONTROL: Final = 2
"""Protocol control and user control messages (message stream 0)."""
CSID_COMMAND: Final = 3
"""NetConnection commands and their replies (connect, createStream, _result)."""
CSID_AUDIO: Final = 4
"""Audio messages."""
CSID_DATA: Final = 5
"""NetStream commands and data messages (onStatus, onMetaData)."""
CSID_VIDEO: Final = 6
"""Video messages.  Separate from audio so that a long video frame's chunks
can interleave with audio without fmt 0 header churn."""

# Minimum number of u32 values each known user control event carries.
_USER_CONTROL_ARGS: Final = {
    STREAM_BEGIN: 1,
    STREAM_EOF: 1,
    STREAM_DRY: 1,
    SET_BUFFER_LENGTH: 2,
    STREAM_IS_RECORDED: 1,
    PING_REQUEST: 1,
    PING_RESPONSE: 1,
}

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U32_MAX: Final = 0xFFFFFFFF


def _u32(name: str, value: int) -> bytes:
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"{name} {value} outside 0..2**32-1")
    return _U32.pack(value)


def _control(type_id: int, payload: bytes, chunk_size: int) -> bytes:
    return encode_message(CSID_CONTROL, type_id, 0, 0, payload, chunk_size)


# ---------------------------------------------------------------------------
# Protocol control messages (section 5.4).  ``chunk_size`` is our current
# outgoing chunk size; with payloads of at most 10 bytes it only matters if
# it was set below that.
# ---------------------------------------------------------------------------


def set_chunk_size(n: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """Set Chunk Size (type 1, section 5.4.1).  Change our outgoing chunk
    size to ``n`` only *after* writing this (it is chunked at the old one)."""
    if not 1 <= n <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size {n} outside 1..{MAX_CHUNK_SIZE}")
    return _control(SET_CHUNK_SIZE, _U32.pack(n), chunk_size)


def window_ack_size(n: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """Window Acknowledgement Size (type 5, section 5.4.4)."""
    return _control(WINDOW_ACK_SIZE, _u32("window size", n), chunk_size)


def set_peer_bandwidth(n: int, limit_type: int = LIMIT_DYNAMIC, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """Set Peer Bandwidth (type 6, section 5.4.5); ``limit_type`` 0 hard,
    1 soft, 2 dynamic."""
    if limit_type not in (LIMIT_HARD, LIMIT_SOFT, LIMIT_DYNAMIC):
        raise ValueError(f"peer bandwidth limit type {limit_type} is not 0, 1 or 2")
    payload = _u32("peer bandwidth", n) + bytes((limit_type,))
    return _control(SET_PEER_BANDWIDTH, payload, chunk_size)


def acknowledgement(seq: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """Acknowledgement (type 3, section 5.4.3).  ``seq`` is the byte count
    received so far; it is sent mod 2**32 because the field wraps on long
    sessions."""
    return _control(ACK, _U32.pack(seq & _U32_MAX), chunk_size)


def user_control(event: int, *values: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """User Control Message (type 4, section 6.2 / 7.1.7): a 16-bit event
    type followed by its 32-bit values, on chunk stream 2, message stream 0."""
    if not 0 <= event <= 0xFFFF:
        raise ValueError(f"user control event type {event} outside 0..65535")
    payload = _U16.pack(event) + b"".join(_u32("user control value", v) for v in values)
    return _control(USER_CONTROL, payload, chunk_size)


def stream_begin(stream_id: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """StreamBegin (event 0): the stream is ready for playback/publishing."""
    return user_control(STREAM_BEGIN, stream_id, chunk_size=chunk_size)


def stream_eof(stream_id: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """StreamEOF (event 1): playback of the stream is over."""
    return user_control(STREAM_EOF, stream_id, chunk_size=chunk_size)


def stream_dry(stream_id: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """StreamDry (event 2): no more data for now on the stream."""
    return user_control(STREAM_DRY, stream_id, chunk_size=chunk_size)


def set_buffer_length(stream_id: int, milliseconds: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """SetBufferLength (event 3): normally client to server."""
    return user_control(SET_BUFFER_LENGTH, stream_id, milliseconds, chunk_size=chunk_size)


def stream_is_recorded(stream_id: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """StreamIsRecorded (event 4)."""
    return user_control(STREAM_IS_RECORDED, stream_id, chunk_size=chunk_size)


def ping_request(timestamp: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """PingRequest (event 6): the peer must echo ``timestamp`` (mod 2**32)."""
    return user_control(PING_REQUEST, timestamp & _U32_MAX, chunk_size=chunk_size)


def ping_response(timestamp: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """PingResponse (event 7): echo of a PingRequest's timestamp."""
    return user_control(PING_RESPONSE, timestamp & _U32_MAX, chunk_size=chunk_size)


# ---------------------------------------------------------------------------
# Commands and data (section 7.1.1, 7.1.2, 7.2)
# ---------------------------------------------------------------------------


def command(
    name: str,
    transaction_id: float,
    command_object: Any,
    *args: Any,
    stream_id: int = 0,
    chunk_size: int,
    csid: int = CSID_COMMAND,
    timestamp: int = 0,
) -> bytes:
    """An AMF0 command message (type 20): name, transaction id, command
    object (``None`` encodes as null), then the optional arguments.

    ``chunk_size`` is required because it must match what we last told the
    peer; stream-level replies (``onStatus``) should pass the stream's
    ``stream_id`` and usually ``csid=CSID_DATA``.
    """
    payload = amf0.encode(name, transaction_id, command_object, *args)
    return encode_message(csid, COMMAND_AMF0, stream_id, timestamp, payload, chunk_size)


def data(
    name: str,
    *args: Any,
    stream_id: int,
    chunk_size: int,
    csid: int = CSID_DATA,
    timestamp: int = 0,
) -> bytes:
    """An AMF0 data message (type 18), e.g. ``data("onMetaData",
    EcmaArray(...), stream_id=1, chunk_size=4096)``."""
    payload = amf0.encode(name, *args)
    return encode_message(csid, DATA_AMF0, stream_id, timestamp, payload, chunk_size)


@dataclass(slots=True)
class Command:
    """A decoded command message (section 7.2)."""

    name: str
    transaction_id: float
    command_object: Any
    """Usually a ``dict`` (``connect``'s properties) or ``None`` (null)."""
    args: list[Any]


def parse_u32(payload: bytes) -> int:
    """The leading big-endian u32 of a Set Chunk Size, Abort,
    Acknowledgement, Window Acknowledgement Size or Set Peer Bandwidth
    payload (section 5.4).  Trailing bytes are ignored."""
    if len(payload) < 4:
        raise ChunkError(f"control message payload of {len(payload)} bytes, expected at least 4")
    value: int = _U32.unpack_from(payload)[0]
    return value


def parse_peer_bandwidth(payload: bytes) -> tuple[int, int]:
    """Set Peer Bandwidth (section 5.4.5): ``(window size, limit type)``."""
    if len(payload) < 5:
        raise ChunkError(f"Set Peer Bandwidth payload of {len(payload)} bytes, expected 5")
    return _U32.unpack_from(payload)[0], payload[4]


def parse_user_control(payload: bytes) -> tuple[int, list[int]]:
    """User Control Message (section 7.1.7): ``(event type, u32 values)``.

    Every complete u32 after the event type is returned.  Known events must
    carry their values (StreamBegin 1, SetBufferLength 2, ...); unknown
    events and trailing odd bytes are tolerated, because clients send
    vendor events (e.g. SWF verification) a server can simply ignore.
    """
    if len(payload) < 2:
        raise ChunkError(f"user control payload of {len(payload)} bytes, expected at least 2")
    event: int = _U16.unpack_from(payload)[0]
    count = (len(payload) - 2) // 4
    needed = _USER_CONTROL_ARGS.get(event, 0)
    if count < needed:
        raise ChunkError(
            f"user control event {event} payload of {len(payload)} bytes, expected at least {2 + 4 * needed}"
        )
    values = list(struct.unpack_from(f">{count}I", payload, 2))
    return event, values


def _amf_body(msg: RtmpMessage) -> bytes:
    """Section 7.1.1/7.1.2: AMF3-flavoured command and data messages (17, 15)
    start with a 0x00 format byte and then carry AMF0 (switching to AMF3 per
    value with marker 0x11).  We drop that byte when present; a payload
    starting directly with a value is accepted too, since 0x00 would be an
    AMF0 number and no command or data message starts with one."""
    payload = msg.payload
    if msg.type_id in (COMMAND_AMF3, DATA_AMF3) and payload[:1] == b"\x00":
        return payload[1:]
    return payload


def _decode_body(msg: RtmpMessage) -> list[Any]:
    """The AMF values of a command or data message; a reference bomb
    (:class:`AmfExpansionError`) is counted as a refusal and re-raised."""
    try:
        return amf0.decode_all(_amf_body(msg))
    except AmfExpansionError:
        REFUSALS.count(AMF_EXPANSION)
        raise


def parse_command(msg: RtmpMessage) -> Command:
    """Decode a command message, type 20 (AMF0) or 17 (AMF3 flavour).

    Missing trailing fields are defaulted (transaction id 0.0, command object
    ``None``), since some clients omit them on notifications; fields of the
    wrong type raise :class:`AmfError`.
    """
    if msg.type_id not in (COMMAND_AMF0, COMMAND_AMF3):
        raise ChunkError(f"message type {msg.type_id} is not a command message (20 or 17)")
    values = _decode_body(msg)
    if not values:
        raise AmfError(f"empty RTMP command message (type {msg.type_id})")
    name = values[0]
    if not isinstance(name, str):
        raise AmfError(f"RTMP command name is {type(name).__name__}, not a string")
    transaction_id = 0.0
    if len(values) > 1:
        tid = values[1]
        if isinstance(tid, bool) or not isinstance(tid, (int, float)) or not math.isfinite(tid):
            raise AmfError(f"RTMP command {name!r} transaction id is {tid!r}, not a number")
        transaction_id = float(tid)
    command_object = values[2] if len(values) > 2 else None
    return Command(name, transaction_id, command_object, values[3:])


def parse_data(msg: RtmpMessage) -> tuple[str, list[Any]]:
    """Decode a data message, type 18 (AMF0) or 15 (AMF3 flavour), into
    ``(name, args)`` exactly as sent.

    A publisher's metadata arrives as ``("@setDataFrame", ["onMetaData",
    {...}])``; unwrapping ``@setDataFrame`` (and storing the metadata for
    players, who receive plain ``onMetaData``) is the caller's policy, not
    the codec's.
    """
    if msg.type_id not in (DATA_AMF0, DATA_AMF3):
        raise ChunkError(f"message type {msg.type_id} is not a data message (18 or 15)")
    values = _decode_body(msg)
    if not values:
        raise AmfError(f"empty RTMP data message (type {msg.type_id})")
    name = values[0]
    if not isinstance(name, str):
        raise AmfError(f"RTMP data message name is {type(name).__name__}, not a string")
    return name, values[1:]


_AGGREGATE_HEADER = struct.Struct(">BBHBHB")  # type, size(3), ts(3), ts_ext


def split_aggregate(msg: RtmpMessage) -> list[RtmpMessage]:
    """Split an Aggregate Message (type 22, section 7.1.6) into sub-messages.

    Each sub-message is an 11-byte header (type, 3-byte size, timestamp,
    3-byte stream id) + body + a 4-byte back pointer.  The timestamp is laid
    out as in an FLV tag (lower 24 bits, then the upper 8), which is what
    FMS, nginx-rtmp and ffmpeg use although section 6.1.1 draws a plain
    32-bit field.  Sub-messages take the aggregate's chunk stream and
    message stream ids, and their timestamps are shifted by (aggregate
    timestamp - first sub-message timestamp), as section 7.1.6 requires.
    Back pointers are not validated, and a missing final one is tolerated
    (ffmpeg does the same); nested aggregates are refused.
    """
    if msg.type_id != AGGREGATE:
        raise ChunkError(f"message type {msg.type_id} is not an aggregate (22)")
    payload = msg.payload
    end = len(payload)
    pos = 0
    offset: int | None = None
    out: list[RtmpMessage] = []
    while pos < end:
        if end - pos < 11:
            raise ChunkError(f"aggregate sub-message header truncated at offset {pos} ({end - pos} of 11 bytes)")
        type_id, size_hi, size_lo, ts_hi, ts_lo, ts_ext = _AGGREGATE_HEADER.unpack_from(payload, pos)
        size = (size_hi << 16) | size_lo
        body = pos + 11
        stop = body + size
        if stop > end:
            raise ChunkError(f"aggregate sub-message at offset {pos} claims {size} bytes, only {end - body} remain")
        if type_id == AGGREGATE:
            raise ChunkError(f"nested aggregate message at offset {pos}")
        ts = (ts_ext << 24) | (ts_hi << 16) | ts_lo
        if offset is None:
            offset = msg.timestamp - ts
        out.append(
            RtmpMessage(
                msg.csid,
                type_id,
                msg.stream_id,
                (ts + offset) & _U32_MAX,
                payload[body:stop],
            )
        )
        pos = stop + 4
        if pos > end:
            if stop == end:  # final back pointer omitted
                break
            raise ChunkError(f"aggregate back pointer truncated at offset {stop}")
    return out
