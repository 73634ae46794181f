"""A test-only RTMP chunk writer with header compression (RTMP spec 1.0, 5.3.1.2).

The server never compresses headers: it chunks every message with the
stateless :func:`mediasrv.rtmp.chunks.encode_message` (so one frame's chunks
serve every player).  Real publishers (ffmpeg, OBS, librtmp) do compress,
with type 1/2/3 headers, and this writer produces such streams so the tests
can check that :class:`~mediasrv.rtmp.chunks.ChunkReader` decodes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mediasrv.rtmp.chunks import MAX_CHUNK_SIZE, encode_message

_EXTENDED = 0xFFFFFF
_TS_LEN_TYPE = struct.Struct(">BHBHB")  # timestamp(3) length(3) type(1)
_TS_ONLY = struct.Struct(">BH")


def basic_header(fmt: int, csid: int) -> bytes:
    """Section 5.3.1.1: the shortest basic header form that fits ``csid``."""
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    n = csid - 64
    return bytes(((fmt << 6) | 1, n & 0xFF, n >> 8))


@dataclass
class _OutStream:
    stream_id: int
    type_id: int
    length: int
    timestamp: int
    delta: int
    fmt: int = 0


class CompressingChunkWriter:
    """Chunk outgoing messages with per-chunk-stream header compression.

    Uses type 1/2/3 headers (section 5.3.1.2) when the previous message on
    the same chunk stream allows it.  A type 3 header only starts a new
    message after a type 1/2 header, or after a type 0 header with timestamp
    0 (readers disagree about the delta a type 3 header implies after a type 0
    header: the spec says the type 0 timestamp, nginx-rtmp uses 0).  Any value
    that would need an extended timestamp gets a type 0 header.
    """

    def __init__(self, chunk_size: int = 128) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {chunk_size} outside 1..{MAX_CHUNK_SIZE}")
        self.chunk_size = chunk_size
        self._streams: dict[int, _OutStream] = {}

    def reset(self, csid: int | None = None) -> None:
        """Forget the state of ``csid`` (or of every chunk stream): its next message gets a type 0 header."""
        if csid is None:
            self._streams.clear()
        else:
            self._streams.pop(csid, None)

    def set_chunk_size(self, size: int) -> bytes:
        """A Set Chunk Size message (csid 2, stream 0) chunked at the *old* size; later messages use ``size``."""
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {size} outside 1..{MAX_CHUNK_SIZE}")
        data = self.encode(2, 1, 0, 0, struct.pack(">I", size))
        self.chunk_size = size
        return data

    def encode(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> bytes:
        """Chunk one message, compressing its header against the previous message on ``csid``."""
        length = len(payload)
        ts = timestamp & 0xFFFFFFFF
        st = self._streams.get(csid)
        delta = ts - st.timestamp if st is not None else -1
        if st is None or st.stream_id != stream_id or not 0 <= delta < _EXTENDED:
            data = encode_message(csid, type_id, stream_id, ts, payload, self.chunk_size)
            if ts >= _EXTENDED:
                self._streams.pop(csid, None)  # never compress against an extended-timestamp header
            else:
                self._streams[csid] = _OutStream(stream_id, type_id, length, ts, ts)
            return data
        continuation = basic_header(3, csid)
        if type_id == st.type_id and length == st.length:
            if delta == st.delta and (st.fmt != 0 or delta == 0):
                header = continuation
            else:
                header = basic_header(2, csid) + _TS_ONLY.pack(delta >> 16, delta & 0xFFFF)
                st.fmt = 2
        else:
            header = basic_header(1, csid) + _TS_LEN_TYPE.pack(
                delta >> 16, delta & 0xFFFF, length >> 16, length & 0xFFFF, type_id
            )
            st.fmt, st.type_id, st.length = 1, type_id, length
        st.timestamp, st.delta = ts, delta
        size = self.chunk_size
        parts = [header, payload[:size]]
        for off in range(size, length, size):
            parts += [continuation, payload[off : off + size]]
        return b"".join(parts)
