"""The RTMP chunk stream (Adobe RTMP spec 1.0, section 5.3), sans-IO.

:class:`ChunkReader` turns the bytes that follow the handshake into complete
:class:`RtmpMessage` objects; :func:`encode_message` goes the other way.  Nothing here performs I/O, reads a clock or imports
Twisted: the protocol adapter forwards ``dataReceived`` to
:meth:`ChunkReader.feed` and writes what the encoders return.

Interoperability decisions (the spec is ambiguous or widely ignored here):

* Extended timestamp on type 3 chunks (section 5.3.1.3).  ffmpeg, librtmp and
  OBS repeat the 4-byte extended timestamp on every type 3 chunk of a message
  whose header used one; a few encoders do not.  On a type 3 chunk that
  *starts* a message we always read it (as SRS does); on a *continuation*
  chunk we consume the 4 bytes only if they equal the value from the
  message's header, and otherwise treat them as payload.  While fewer than 4
  bytes have arrived we decide as soon as they stop matching that value, so
  a short final chunk from such an encoder does not stall the message.  Our
  encoders always repeat it.
* A type 3 chunk that starts a new message re-uses the previous delta; after
  a type 0 header that delta is the type 0 timestamp itself (section
  5.3.1.2.4, and what ffmpeg and SRS implement).
* A type 0/1/2 header on a chunk stream whose message is incomplete is a
  protocol violation (only an Abort Message may discard it, section 5.4.2);
  we raise :class:`ChunkError` rather than guess.
* Protocol control messages that change framing (Set Chunk Size, Abort) are
  honoured by message type whatever chunk stream they arrive on.

Memory bounds (hostile peers, security audit finding 5): every partial
message is counted at its announced length against ``max_buffered_bytes``
for the whole connection, so a peer cannot hold one nearly complete message
on each of many chunk streams; the message size limit starts small
(``initial_max_message_size``) until the adapter calls
:meth:`ChunkReader.allow_large_messages` (once publishing is allowed: only a
publisher sends large messages); :meth:`ChunkReader.close` drops every
buffer at once, whoever still holds the reader.  Each refusal raises
:class:`ChunkLimitError` and is counted in :data:`mediasrv.core.limits.REFUSALS`.

Performance: :meth:`ChunkReader.feed` works directly on the buffer it is
given, walking an offset through it; body bytes are copied straight into the
owning message's buffer (or, for a message that arrives in one piece, sliced
out once).  Only an incomplete chunk *header* (at most 18 bytes) is kept
between calls, so there is no input buffer to compact and nothing is
quadratic in the feed size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from mediasrv.core.limits import (
    REFUSALS,
    RTMP_BUFFERED_BYTES,
    RTMP_CHUNK_STREAMS,
    RTMP_MESSAGE_SIZE,
    RTMP_MESSAGE_SIZE_BEFORE_PUBLISH,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "ChunkError",
    "ChunkLimitError",
    "ChunkReader",
    "RtmpMessage",
    "encode_message",
]

DEFAULT_CHUNK_SIZE: Final = 128
"""Both directions start at 128 bytes per chunk (section 5.4.1)."""

MAX_CHUNK_SIZE: Final = 0x7FFFFFFF
"""Set Chunk Size carries 31 bits; the high bit MUST be zero (section 5.4.1)."""

MIN_CSID: Final = 2
MAX_CSID: Final = 65599
"""Chunk stream ids 2..65599; 0 and 1 only select the 2/3-byte basic header
forms (section 5.3.1.1)."""

MAX_MESSAGE_LENGTH: Final = 0xFFFFFF
"""The message length field is 3 bytes (section 5.3.1.2.1)."""

_TS_MASK: Final = 0xFFFFFFFF
_EXTENDED: Final = 0xFFFFFF
_MSG_SET_CHUNK_SIZE: Final = 1
_MSG_ABORT: Final = 2

_U32 = struct.Struct(">I")
_LE32 = struct.Struct("<I")
# fmt 0 body without the little-endian stream id: ts(3) length(3) type(1).
_TS_LEN_TYPE = struct.Struct(">BHBHB")
_TS_ONLY = struct.Struct(">BH")


class ChunkError(ValueError):
    """The peer violated the RTMP chunk stream protocol (section 5.3/5.4).

    The message names the offending value and the limit or rule so that a
    packet capture can be matched against it.  After a ``ChunkError`` the
    reader's state is undefined; the connection must be dropped.
    """


class ChunkLimitError(ChunkError):
    """A resource limit refused the peer's input; ``limit`` names it (the
    configuration key, as counted in :data:`mediasrv.core.limits.REFUSALS`)."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(slots=True)
class RtmpMessage:
    """One reassembled RTMP message (section 5.3.1 / 6.1)."""

    csid: int
    type_id: int
    stream_id: int
    timestamp: int
    """Absolute timestamp in ms, after applying deltas; wraps mod 2**32."""
    payload: bytes


class _InStream:
    """Per chunk stream receive state (the "previous header" of section 5.3.1.2)."""

    __slots__ = (
        "csid",
        "timestamp",
        "delta",
        "length",
        "type_id",
        "stream_id",
        "extended",
        "ext_value",
        "in_progress",
        "received",
        "buf",
    )

    def __init__(self, csid: int) -> None:
        self.csid = csid
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        # Whether the last type 0/1/2 header used the extended timestamp
        # field, and its value: type 3 chunks then carry it too.
        self.extended = False
        self.ext_value = 0
        self.in_progress = False
        self.received = 0
        self.buf = bytearray()


class ChunkReader:
    """Reassemble RTMP messages from the chunk stream (section 5.3).

    ``max_message_size`` bounds each message (a 3-byte length field allows
    16 MiB); until :meth:`allow_large_messages` is called the bound is
    ``initial_max_message_size`` (default: the same).  ``max_buffered_bytes``
    (default: twice ``max_message_size``) bounds the sum of the announced
    lengths of the messages in progress on all chunk streams together, and
    ``max_chunk_streams`` how many chunk streams a peer may open.  Together
    they cap the memory one connection can make us hold.
    """

    def __init__(
        self,
        max_message_size: int = 8 * 1024 * 1024,
        max_chunk_streams: int = 64,
        max_buffered_bytes: int | None = None,
        initial_max_message_size: int | None = None,
    ) -> None:
        if max_message_size < 0:
            raise ValueError(f"max_message_size must be >= 0, not {max_message_size}")
        if max_chunk_streams < 1:
            raise ValueError(f"max_chunk_streams must be >= 1, not {max_chunk_streams}")
        if max_buffered_bytes is None:
            max_buffered_bytes = 2 * max_message_size
        if max_buffered_bytes < 0:
            raise ValueError(f"max_buffered_bytes must be >= 0, not {max_buffered_bytes}")
        self._full_message_size = max_message_size
        self._limit_name = RTMP_MESSAGE_SIZE
        self.max_message_size = max_message_size
        """The largest message accepted now."""
        if initial_max_message_size is not None and initial_max_message_size < max_message_size:
            if initial_max_message_size < 0:
                raise ValueError(f"initial_max_message_size must be >= 0, not {initial_max_message_size}")
            self.max_message_size = initial_max_message_size
            self._limit_name = RTMP_MESSAGE_SIZE_BEFORE_PUBLISH
        self.max_buffered_bytes = max_buffered_bytes
        self.max_chunk_streams = max_chunk_streams
        self.in_progress_bytes = 0
        """Sum of the announced lengths of the messages in progress."""
        self.chunk_size: int = DEFAULT_CHUNK_SIZE
        """The peer's current chunk size, updated by Set Chunk Size."""
        self.bytes_received: int = 0
        """Total bytes passed to :meth:`feed`, for Acknowledgement (5.4.3).
        The handshake is not fed here; the adapter adds it if it counts it."""
        self._streams: dict[int, _InStream] = {}
        self._current: _InStream | None = None
        self._chunk_left = 0
        self._pending = b""
        self._error: ChunkError | None = None

    def allow_large_messages(self) -> None:
        """Raise the message size limit from ``initial_max_message_size`` to
        ``max_message_size`` (the adapter calls it once publishing is allowed)."""
        self.max_message_size = self._full_message_size
        self._limit_name = RTMP_MESSAGE_SIZE

    def close(self) -> None:
        """Drop every buffer now (the connection is gone); ``feed`` refuses
        any later input.  The adapter calls it in ``connectionLost``, so the
        memory is freed even while reference cycles keep the protocol alive
        until the next garbage collection."""
        self._streams.clear()
        self._current = None
        self._pending = b""
        self.in_progress_bytes = 0
        if self._error is None:
            self._error = ChunkError("the connection is closed")

    def _refuse(self, limit: str, message: str) -> ChunkLimitError:
        REFUSALS.count(limit)
        return ChunkLimitError(limit, message)

    def feed(self, data: bytes) -> list[RtmpMessage]:
        """Consume ``data`` and return the messages it completes, in order.

        Set Chunk Size and Abort Message take effect as soon as they are
        complete, before the next byte of the same ``data`` is parsed
        (section 5.4.1/5.4.2); they are returned to the caller as well.
        Raises :class:`ChunkError` on a protocol violation; every later call
        raises it again.
        """
        if self._error is not None:
            raise ChunkError(f"chunk reader failed earlier: {self._error}")
        self.bytes_received += len(data)
        if self._pending:
            data = self._pending + data
            self._pending = b""
        elif type(data) is not bytes:
            data = bytes(data)
        try:
            return self._parse(data)
        except ChunkError as e:
            self._error = e
            raise

    def _parse(self, data: bytes) -> list[RtmpMessage]:
        out: list[RtmpMessage] = []
        end = len(data)
        pos = 0
        view: memoryview | None = None
        while pos < end:
            cs = self._current
            if cs is None:
                new_pos = self._read_header(data, pos, end, out)
                if new_pos < 0:
                    self._pending = data[pos:]
                    break
                pos = new_pos
                continue
            # Chunk body.
            n = self._chunk_left
            if n > end - pos:
                n = end - pos
            stop = pos + n
            self._chunk_left -= n
            if self._chunk_left == 0:
                self._current = None
            if cs.received == 0 and n == cs.length:
                # Whole message in one piece: a single copy.
                pos = stop
                self._complete(cs, data[stop - n : stop], out)
                continue
            if view is None:
                view = memoryview(data)
            cs.buf += view[pos:stop]
            cs.received += n
            pos = stop
            if cs.received == cs.length:
                payload = bytes(cs.buf)
                cs.buf = bytearray()
                self._complete(cs, payload, out)
        return out

    def _read_header(self, data: bytes, pos: int, end: int, out: list[RtmpMessage]) -> int:
        """Parse one chunk header at ``pos``; return the offset after it, or
        -1 if ``data`` ends inside it (nothing is changed in that case)."""
        b0 = data[pos]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        pos += 1
        # Section 5.3.1.1: basic header, 1, 2 or 3 bytes.
        if csid == 0:
            if pos >= end:
                return -1
            csid = data[pos] + 64
            pos += 1
        elif csid == 1:
            if pos + 1 >= end:
                return -1
            csid = data[pos] + (data[pos + 1] << 8) + 64
            pos += 2

        cs = self._streams.get(csid)
        if cs is None:
            if fmt != 0:
                raise ChunkError(f"fmt {fmt} chunk on chunk stream {csid}, which has had no fmt 0 header")
            if len(self._streams) >= self.max_chunk_streams:
                raise self._refuse(
                    RTMP_CHUNK_STREAMS,
                    f"chunk stream {csid} would exceed the limit of {self.max_chunk_streams} chunk streams",
                )
        elif fmt != 3 and cs.in_progress:
            raise ChunkError(
                f"fmt {fmt} header on chunk stream {csid} interrupts a message"
                f" ({cs.received} of {cs.length} bytes received)"
            )

        # Section 5.3.1.2: message header, 11/7/3/0 bytes, then 5.3.1.3.
        if fmt == 3:
            assert cs is not None
            if cs.in_progress:
                if cs.extended:
                    avail = end - pos
                    if avail >= 4:
                        if _U32.unpack_from(data, pos)[0] == cs.ext_value:
                            pos += 4
                    elif data[pos:end] == _U32.pack(cs.ext_value)[:avail]:
                        return -1  # could still be the repeated field
                self._current = cs
                left = cs.length - cs.received
                self._chunk_left = left if left < self.chunk_size else self.chunk_size
                return pos
            delta = cs.delta
            if cs.extended:
                if end - pos < 4:
                    return -1
                delta = _U32.unpack_from(data, pos)[0]
                pos += 4
                cs.delta = cs.ext_value = delta
            cs.timestamp = (cs.timestamp + delta) & _TS_MASK
        else:
            if fmt == 0:
                if end - pos < 11:
                    return -1
                ts_hi, ts_lo, len_hi, len_lo, type_id = _TS_LEN_TYPE.unpack_from(data, pos)
                stream_id = _LE32.unpack_from(data, pos + 7)[0]
                pos += 11
            elif fmt == 1:
                if end - pos < 7:
                    return -1
                ts_hi, ts_lo, len_hi, len_lo, type_id = _TS_LEN_TYPE.unpack_from(data, pos)
                pos += 7
            else:
                if end - pos < 3:
                    return -1
                ts_hi, ts_lo = _TS_ONLY.unpack_from(data, pos)
                pos += 3
            ts = (ts_hi << 16) | ts_lo
            extended = ts == _EXTENDED
            if extended:
                if end - pos < 4:
                    return -1
                ts = _U32.unpack_from(data, pos)[0]
                pos += 4
            # The header is complete: commit it.
            if fmt <= 1:
                length = (len_hi << 16) | len_lo
                if length > self.max_message_size:
                    raise self._refuse(
                        self._limit_name,
                        f"message length {length} on chunk stream {csid} exceeds"
                        f" the limit of {self.max_message_size} bytes ({self._limit_name})",
                    )
            if cs is None:
                cs = self._streams[csid] = _InStream(csid)
            if fmt == 0:
                cs.timestamp = ts
                cs.stream_id = stream_id
            else:
                cs.timestamp = (cs.timestamp + ts) & _TS_MASK
            if fmt <= 1:
                cs.length = length
                cs.type_id = type_id
            cs.delta = ts
            cs.extended = extended
            cs.ext_value = ts if extended else 0

        # A new message starts.
        if cs.length == 0:
            self._complete(cs, b"", out)
            return pos
        if self.in_progress_bytes + cs.length > self.max_buffered_bytes:
            raise self._refuse(
                RTMP_BUFFERED_BYTES,
                f"a {cs.length}-byte message on chunk stream {csid} would make the messages in progress"
                f" exceed {self.max_buffered_bytes} bytes ({RTMP_BUFFERED_BYTES}; {self.in_progress_bytes}"
                f" announced on {sum(1 for s in self._streams.values() if s.in_progress)} chunk streams)",
            )
        self.in_progress_bytes += cs.length
        cs.in_progress = True
        cs.received = 0
        self._current = cs
        self._chunk_left = cs.length if cs.length < self.chunk_size else self.chunk_size
        return pos

    def _complete(self, cs: _InStream, payload: bytes, out: list[RtmpMessage]) -> None:
        if cs.in_progress:
            self.in_progress_bytes -= cs.length
        cs.in_progress = False
        cs.received = 0
        msg = RtmpMessage(cs.csid, cs.type_id, cs.stream_id, cs.timestamp, payload)
        out.append(msg)
        if cs.type_id == _MSG_SET_CHUNK_SIZE:
            self.chunk_size = _parse_chunk_size(payload)
        elif cs.type_id == _MSG_ABORT:
            if len(payload) < 4:
                raise ChunkError(f"Abort Message payload of {len(payload)} bytes, expected 4")
            target = self._streams.get(_U32.unpack_from(payload)[0])
            if target is not None and target.in_progress:
                self.in_progress_bytes -= target.length
                target.in_progress = False
                target.received = 0
                target.buf = bytearray()


def _parse_chunk_size(payload: bytes) -> int:
    """Validate a Set Chunk Size payload (section 5.4.1)."""
    if len(payload) < 4:
        raise ChunkError(f"Set Chunk Size payload of {len(payload)} bytes, expected 4")
    size: int = _U32.unpack_from(payload)[0]
    if size == 0 or size > MAX_CHUNK_SIZE:
        raise ChunkError(f"invalid chunk size {size}")
    return size


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def _basic_header(fmt: int, csid: int) -> bytes:
    """Section 5.3.1.1: the shortest basic header form that fits ``csid``."""
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    n = csid - 64
    return bytes(((fmt << 6) | 1, n & 0xFF, n >> 8))


def _check_message(csid: int, type_id: int, stream_id: int, length: int, chunk_size: int) -> None:
    if not MIN_CSID <= csid <= MAX_CSID:
        raise ValueError(f"chunk stream id {csid} outside {MIN_CSID}..{MAX_CSID}")
    if not 0 <= type_id <= 0xFF:
        raise ValueError(f"message type id {type_id} outside 0..255")
    if not 0 <= stream_id <= 0xFFFFFFFF:
        raise ValueError(f"message stream id {stream_id} outside 0..2**32-1")
    if length > MAX_MESSAGE_LENGTH:
        raise ValueError(f"payload of {length} bytes exceeds the RTMP maximum of {MAX_MESSAGE_LENGTH}")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size {chunk_size} outside 1..{MAX_CHUNK_SIZE}")


def _chunk_payload(header: bytes, continuation: bytes, payload: bytes, chunk_size: int) -> bytes:
    length = len(payload)
    if length <= chunk_size:
        return header + payload
    view = memoryview(payload)
    parts: list[bytes | memoryview] = [header, view[:chunk_size]]
    for off in range(chunk_size, length, chunk_size):
        parts.append(continuation)
        parts.append(view[off : off + chunk_size])
    return b"".join(parts)


def encode_message(
    csid: int,
    type_id: int,
    stream_id: int,
    timestamp: int,
    payload: bytes,
    chunk_size: int,
) -> bytes:
    """Chunk one message with a type 0 header and type 3 continuations.

    The output depends only on the arguments (no per-connection compression
    state), which lets the server chunk a media frame once and write the same
    bytes to every player.  ``timestamp`` is taken mod 2**32 (RTMP timestamps
    wrap, section 6.1.1); at or above 0xFFFFFF it goes in the extended
    timestamp field, repeated on every continuation chunk (section 5.3.1.3,
    as ffmpeg/librtmp expect).
    """
    length = len(payload)
    _check_message(csid, type_id, stream_id, length, chunk_size)
    ts = timestamp & _TS_MASK
    if ts >= _EXTENDED:
        ext = _U32.pack(ts)
        header = b"".join(
            (
                _basic_header(0, csid),
                _TS_LEN_TYPE.pack(0xFF, 0xFFFF, length >> 16, length & 0xFFFF, type_id),
                _LE32.pack(stream_id),
                ext,
            )
        )
        continuation = _basic_header(3, csid) + ext
    else:
        header = b"".join(
            (
                _basic_header(0, csid),
                _TS_LEN_TYPE.pack(ts >> 16, ts & 0xFFFF, length >> 16, length & 0xFFFF, type_id),
                _LE32.pack(stream_id),
            )
        )
        continuation = _basic_header(3, csid)
    return _chunk_payload(header, continuation, payload, chunk_size)
