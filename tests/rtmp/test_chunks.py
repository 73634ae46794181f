"""Tests for mediasrv.rtmp.chunks (RTMP spec 1.0 section 5.3 / 5.4)."""

from __future__ import annotations

import itertools
import os
import random
import struct
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasrv.rtmp.chunks import (
    ChunkError,
    ChunkReader,
    RtmpMessage,
    encode_message,
)
from tests.support.rtmp_chunks import CompressingChunkWriter


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def scs(size: int, chunk_size: int = 128) -> bytes:
    """A Set Chunk Size message (type 1, csid 2, stream 0)."""
    return encode_message(2, 1, 0, 0, u32(size), chunk_size)


def feed_all(reader: ChunkReader, pieces: list[bytes]) -> list[RtmpMessage]:
    out: list[RtmpMessage] = []
    for piece in pieces:
        out += reader.feed(piece)
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def basic_len(csid: int) -> int:
    return 1 if csid < 64 else 2 if csid < 320 else 3


def split_chunks(msg: RtmpMessage, chunk_size: int) -> list[bytes]:
    """encode_message's output for ``msg``, cut at chunk boundaries."""
    data = encode_message(msg.csid, msg.type_id, msg.stream_id, msg.timestamp, msg.payload, chunk_size)
    ext = 4 if msg.timestamp >= 0xFFFFFF else 0
    first = basic_len(msg.csid) + 11 + ext
    cont = basic_len(msg.csid) + ext
    chunks = []
    pos, left, hdr = 0, len(msg.payload), first
    while True:
        n = hdr + min(chunk_size, left)
        chunks.append(data[pos : pos + n])
        pos += n
        left -= min(chunk_size, left)
        hdr = cont
        if left == 0:
            break
    assert pos == len(data)
    return chunks


# -- strategies -------------------------------------------------------------

_csids = st.sampled_from([2, 3, 4, 63, 64, 65, 319, 320, 321, 65599]) | st.integers(2, 65599)
_timestamps = st.sampled_from([0, 1, 0xFFFFFE, 0xFFFFFF, 0x1000000, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(
    0, 0xFFFFFFFF
)
_messages = st.builds(
    RtmpMessage,
    csid=_csids,
    # Types 1 and 2 change framing; they have their own tests.
    type_id=st.integers(3, 255),
    stream_id=st.sampled_from([0, 1, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF),
    timestamp=_timestamps,
    payload=st.binary(max_size=3000),
)


def _preamble(chunk_size: int) -> tuple[bytes, RtmpMessage]:
    return scs(chunk_size), RtmpMessage(2, 1, 0, 0, u32(chunk_size))


@settings(max_examples=60, deadline=None)
@given(
    msgs=st.lists(_messages, max_size=6),
    chunk_size=st.integers(1, 5000),
    data=st.data(),
)
def test_round_trip_all_at_once_bytewise_and_split(
    msgs: list[RtmpMessage], chunk_size: int, data: st.DataObject
) -> None:
    pre, pre_msg = _preamble(chunk_size)
    stream = pre + b"".join(
        encode_message(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload, chunk_size) for m in msgs
    )
    expected = [pre_msg, *msgs]

    reader = ChunkReader()
    assert reader.feed(stream) == expected
    assert reader.chunk_size == chunk_size
    assert reader.bytes_received == len(stream)

    if len(stream) <= 20000:
        assert feed_all(ChunkReader(), bytewise(stream)) == expected

    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts"))
    bounds = [0, *cuts, len(stream)]
    pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert feed_all(ChunkReader(), pieces) == expected


@settings(max_examples=60, deadline=None)
@given(
    msgs=st.lists(_messages, max_size=8),
    chunk_size=st.integers(1, 600),
    seed=st.integers(0, 2**32),
)
def test_round_trip_interleaved(msgs: list[RtmpMessage], chunk_size: int, seed: int) -> None:
    # Chunks of messages on different chunk streams may interleave freely;
    # on one chunk stream messages stay in order (section 5.3).
    queues: dict[int, list[bytes]] = defaultdict(list)
    for m in msgs:
        queues[m.csid] += split_chunks(m, chunk_size)
    rng = random.Random(seed)
    pieces = []
    while queues:
        csid = rng.choice(sorted(queues))
        pieces.append(queues[csid].pop(0))
        if not queues[csid]:
            del queues[csid]
    pre, pre_msg = _preamble(chunk_size)
    stream = pre + b"".join(pieces)
    out = ChunkReader().feed(stream)
    assert out[0] == pre_msg
    by_csid: dict[int, list[RtmpMessage]] = defaultdict(list)
    for m in out[1:]:
        by_csid[m.csid].append(m)
    expected: dict[int, list[RtmpMessage]] = defaultdict(list)
    for m in msgs:
        expected[m.csid].append(m)
    assert by_csid == expected


# -- compressed headers, as publishers send them (a test-only writer) ------

_writer_ops = st.lists(
    st.tuples(
        st.sampled_from([2, 3, 4, 320]),  # csid
        st.sampled_from([0, 1]),  # stream id
        st.sampled_from([8, 9, 20]),  # type
        st.sampled_from([0, 0, 20, 33, 0xFFFFFE, 0xFFFFFF, 0x1000000, -5]),  # delta
        st.sampled_from([0, 5, 5, 300]),  # payload length
        st.sampled_from([None, None, None, None, 1, 7, 128, 4096]),  # new chunk size
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(_writer_ops)
def test_writer_compressed_round_trip(ops: list[tuple[int, int, int, int, int, int | None]]) -> None:
    writer = CompressingChunkWriter()
    clock: dict[int, int] = defaultdict(int)
    stream = bytearray()
    expected: list[RtmpMessage] = []
    for csid, stream_id, type_id, delta, length, new_size in ops:
        if new_size is not None:
            stream += writer.set_chunk_size(new_size)
            expected.append(RtmpMessage(2, 1, 0, 0, u32(new_size)))
            # set_chunk_size goes through the csid 2 state at timestamp 0.
            clock[2] = 0
        ts = (clock[csid] + delta) & 0xFFFFFFFF
        clock[csid] = ts
        payload = os.urandom(length)
        stream += writer.encode(csid, type_id, stream_id, ts, payload)
        expected.append(RtmpMessage(csid, type_id, stream_id, ts, payload))
    data = bytes(stream)
    assert ChunkReader().feed(data) == expected
    assert feed_all(ChunkReader(), bytewise(data)) == expected


def test_writer_uses_compressed_headers() -> None:
    w = CompressingChunkWriter()
    p = b"x" * 10
    assert w.encode(3, 20, 0, 1000, p)[:1] == b"\x03"  # fmt 0
    assert w.encode(3, 20, 0, 1020, p) == b"\x83\x00\x00\x14" + p  # fmt 2
    assert w.encode(3, 20, 0, 1040, p) == b"\xc3" + p  # fmt 3
    assert w.encode(3, 9, 0, 1040, b"yy") == (
        b"\x43\x00\x00\x00\x00\x00\x02\x09yy"  # fmt 1
    )
    assert w.encode(3, 9, 1, 1040, b"yy")[:1] == b"\x03"  # new stream id: fmt 0
    assert w.encode(3, 9, 1, 1000, b"yy")[:1] == b"\x03"  # backwards: fmt 0
    # After a fmt 0 header with a non-zero timestamp no fmt 3 new message
    # (readers disagree on its delta); fmt 2 instead.
    assert w.encode(3, 9, 1, 2000, b"yy") == b"\x83\x00\x03\xe8yy"
    w.reset(3)
    assert w.encode(3, 9, 1, 2000, b"yy")[:1] == b"\x03"
    w.reset()
    assert w.encode(3, 9, 1, 2000, b"yy")[:1] == b"\x03"


def test_writer_set_chunk_size() -> None:
    w = CompressingChunkWriter()
    assert w.set_chunk_size(4096) == scs(4096)
    assert w.chunk_size == 4096
    with pytest.raises(ValueError):
        w.set_chunk_size(0)
    with pytest.raises(ValueError):
        CompressingChunkWriter(0)


# -- golden bytes: encode_message ------------------------------------------


def test_encode_message_golden_single_chunk() -> None:
    assert encode_message(3, 20, 0, 0, b"abc", 128) == (b"\x03\x00\x00\x00\x00\x00\x03\x14\x00\x00\x00\x00abc")


def test_encode_message_golden_multi_chunk() -> None:
    # Section 5.3.2.2: a 307-byte video message with chunk size 128.
    payload = bytes(range(256)) + bytes(51)
    data = encode_message(4, 9, 12346, 1000, payload, 128)
    assert data == (
        b"\x04\x00\x03\xe8\x00\x01\x33\x09\x3a\x30\x00\x00"
        + payload[:128]
        + b"\xc4"
        + payload[128:256]
        + b"\xc4"
        + payload[256:]
    )


def test_encode_message_golden_extended_timestamp() -> None:
    data = encode_message(6, 9, 1, 0x01020304, b"ab", 1)
    assert data == (b"\x06\xff\xff\xff\x00\x00\x02\x09\x01\x00\x00\x00\x01\x02\x03\x04a\xc6\x01\x02\x03\x04b")
    # 0xFFFFFF itself needs the extended field too.
    assert encode_message(6, 9, 1, 0xFFFFFF, b"", 128)[1:4] == b"\xff\xff\xff"
    assert encode_message(6, 9, 1, 0xFFFFFE, b"", 128)[1:4] == b"\xff\xff\xfe"
    # Timestamps are taken mod 2**32.
    assert encode_message(6, 9, 1, 2**32 + 5, b"", 128)[1:4] == b"\x00\x00\x05"


@pytest.mark.parametrize(
    ("csid", "basic"),
    [
        (2, b"\x02"),
        (63, b"\x3f"),
        (64, b"\x00\x00"),
        (319, b"\x00\xff"),
        (320, b"\x01\x00\x01"),
        (65599, b"\x01\xff\xff"),
    ],
)
def test_basic_header_forms(csid: int, basic: bytes) -> None:
    data = encode_message(csid, 8, 1, 0, b"x" * 3, 2)
    assert data.startswith(basic)
    assert data.endswith(bytes([0xC0 | basic[0]]) + basic[1:] + b"x")
    assert ChunkReader().feed(scs(2) + data)[1:] == [RtmpMessage(csid, 8, 1, 0, b"xxx")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"csid": 1},
        {"csid": 65600},
        {"type_id": 256},
        {"stream_id": -1},
        {"chunk_size": 0},
        {"payload": bytes(0x1000000)},
    ],
)
def test_encode_message_rejects(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "csid": 3,
        "type_id": 8,
        "stream_id": 0,
        "timestamp": 0,
        "payload": b"",
        "chunk_size": 128,
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        encode_message(**args)  # type: ignore[arg-type]


# -- golden bytes: a hand-compressed stream ---------------------------------


def test_golden_fmt0_fmt2_fmt3_fmt1() -> None:
    # Section 5.3.2.1: four 32-byte audio messages on csid 3, stream 12345,
    # timestamps 1000, 1020, 1040, 1060, then a fmt 1 and a fmt 3 new message.
    a, b, c, d = (bytes([i]) * 32 for i in range(4))
    stream = (
        b"\x03\x00\x03\xe8\x00\x00\x20\x08\x39\x30\x00\x00"
        + a  # fmt 0
        + b"\x83\x00\x00\x14"
        + b  # fmt 2, delta 20
        + b"\xc3"
        + c  # fmt 3: delta 20 again
        + b"\xc3"
        + d
        + b"\x43\x00\x00\x28\x00\x00\x03\x09"
        + b"vid"  # fmt 1: +40, 3 bytes, video
        + b"\xc3"
        + b"VID"  # fmt 3 new message: +40
    )
    expected = [
        RtmpMessage(3, 8, 12345, 1000, a),
        RtmpMessage(3, 8, 12345, 1020, b),
        RtmpMessage(3, 8, 12345, 1040, c),
        RtmpMessage(3, 8, 12345, 1060, d),
        RtmpMessage(3, 9, 12345, 1100, b"vid"),
        RtmpMessage(3, 9, 12345, 1140, b"VID"),
    ]
    assert ChunkReader().feed(stream) == expected
    assert feed_all(ChunkReader(), bytewise(stream)) == expected


def test_fmt3_new_message_after_fmt0_uses_its_timestamp_as_delta() -> None:
    # Section 5.3.1.2.4: after a type 0 chunk the delta is its timestamp.
    stream = b"\x04\x00\x00\x64\x00\x00\x01\x08\x01\x00\x00\x00A\xc4B"
    out = ChunkReader().feed(stream)
    assert [(m.timestamp, m.payload) for m in out] == [(100, b"A"), (200, b"B")]


def test_interleaved_audio_video_golden() -> None:
    video = bytes(200)
    stream = (
        b"\x06\x00\x00\x00\x00\x00\xc8\x09\x01\x00\x00\x00"
        + video[:128]
        + b"\x04\x00\x00\x00\x00\x00\x02\x08\x01\x00\x00\x00"
        + b"au"
        + b"\xc6"
        + video[128:]
    )
    assert ChunkReader().feed(stream) == [
        RtmpMessage(4, 8, 1, 0, b"au"),
        RtmpMessage(6, 9, 1, 0, video),
    ]


def test_extended_delta_in_fmt1_and_fmt2() -> None:
    stream = (
        b"\x05\x00\x00\x10\x00\x00\x01\x08\x00\x00\x00\x00"
        b"a" + b"\x45\xff\xff\xff\x00\x00\x01\x08\x01\x00\x00\x00"  # ts 16
        b"b"  # +0x1000000
         + b"\x85\xff\xff\xff\x00\x00\x00\x01"
        b"c"  # +1 (extended form)
         + b"\xc5\x00\x00\x00\x01"
        b"d"  # fmt 3 new message, ext delta repeated
    )
    out = ChunkReader().feed(stream)
    assert [m.timestamp for m in out] == [16, 0x1000010, 0x1000011, 0x1000012]


def test_timestamp_wraps_mod_2_32() -> None:
    stream = b"\x05\xff\xff\xff\x00\x00\x01\x08\x00\x00\x00\x00\xff\xff\xff\xf0a" + b"\x85\x00\x00\x20b"
    out = ChunkReader().feed(stream)
    assert [m.timestamp for m in out] == [0xFFFFFFF0, 0x10]


def test_continuation_without_repeated_extended_timestamp() -> None:
    # Some encoders omit the extended timestamp on type 3 continuation
    # chunks; the 4 bytes are then payload, which we detect by comparing.
    payload = b"0123456789"
    header = b"\x06\xff\xff\xff\x00\x00\x0a\x09\x01\x00\x00\x00\x01\x00\x00\x00"
    with_ext = header + payload[:4] + b"\xc6\x01\x00\x00\x00" + payload[4:8]
    with_ext += b"\xc6\x01\x00\x00\x00" + payload[8:]
    without = header + payload[:4] + b"\xc6" + payload[4:8] + b"\xc6" + payload[8:]
    expected = [RtmpMessage(6, 9, 1, 0x01000000, payload)]
    for stream in (with_ext, without):
        reader = ChunkReader()
        reader.feed(scs(4))
        assert reader.feed(stream) == expected
        reader = ChunkReader()
        reader.feed(scs(4))
        assert feed_all(reader, bytewise(stream)) == expected


def test_short_continuation_matching_extended_prefix_waits() -> None:
    # Without the repeated field, a final chunk whose bytes match a prefix of
    # the extended timestamp is ambiguous until more data arrives.
    header = b"\x06\xff\xff\xff\x00\x00\x06\x09\x01\x00\x00\x00\x01\x02\x03\x04"
    reader = ChunkReader()
    reader.feed(scs(4))
    assert reader.feed(header + b"abcd" + b"\xc6\x01\x02") == []
    # The next chunk's header resolves it: those two bytes were payload.
    out = reader.feed(encode_message(3, 20, 0, 0, b"z", 4))
    assert out == [
        RtmpMessage(6, 9, 1, 0x01020304, b"abcd\x01\x02"),
        RtmpMessage(3, 20, 0, 0, b"z"),
    ]


def test_zero_length_messages() -> None:
    stream = encode_message(3, 20, 0, 7, b"", 128) + b"\xc3"
    out = ChunkReader().feed(stream)
    assert out == [RtmpMessage(3, 20, 0, 7, b""), RtmpMessage(3, 20, 0, 14, b"")]


# -- protocol control applied by the reader ---------------------------------


def test_set_chunk_size_applies_within_the_same_feed() -> None:
    payload = os.urandom(3000)
    stream = scs(4096) + encode_message(6, 9, 1, 0, payload, 4096)
    reader = ChunkReader()
    out = reader.feed(stream)
    assert out == [
        RtmpMessage(2, 1, 0, 0, u32(4096)),
        RtmpMessage(6, 9, 1, 0, payload),
    ]
    assert reader.chunk_size == 4096


def test_set_chunk_size_affects_partial_message_on_another_csid() -> None:
    payload = bytes(range(200))
    first = encode_message(6, 9, 1, 0, payload, 128)[: 12 + 128]
    stream = first + scs(1000) + b"\xc6" + payload[128:]
    out = ChunkReader().feed(stream)
    assert out[-1] == RtmpMessage(6, 9, 1, 0, payload)


def test_set_chunk_size_max_value() -> None:
    reader = ChunkReader()
    reader.feed(scs(0x7FFFFFFF))
    assert reader.chunk_size == 0x7FFFFFFF


def test_abort_drops_partial_message() -> None:
    payload = bytes(300)
    partial = encode_message(4, 8, 1, 0, payload, 128)[: 12 + 128]
    abort = encode_message(2, 2, 0, 0, u32(4), 128)
    fresh = encode_message(4, 8, 1, 50, b"new", 128)
    reader = ChunkReader()
    out = reader.feed(partial + abort + fresh)
    assert out == [
        RtmpMessage(2, 2, 0, 0, u32(4)),
        RtmpMessage(4, 8, 1, 50, b"new"),
    ]
    # Abort of an unknown or idle chunk stream is harmless.
    assert reader.feed(encode_message(2, 2, 0, 0, u32(77), 128))[0].type_id == 2


# -- errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (u32(0), "invalid chunk size 0"),
        (u32(0x80000000), "invalid chunk size 2147483648"),
        (u32(0xFFFFFFFF), "invalid chunk size 4294967295"),
        (b"\x00\x01", "Set Chunk Size payload of 2 bytes"),
    ],
)
def test_bad_set_chunk_size(payload: bytes, match: str) -> None:
    with pytest.raises(ChunkError, match=match):
        ChunkReader().feed(encode_message(2, 1, 0, 0, payload, 128))


def test_short_abort() -> None:
    with pytest.raises(ChunkError, match="Abort Message payload of 1 bytes"):
        ChunkReader().feed(encode_message(2, 2, 0, 0, b"\x01", 128))


def test_message_length_above_limit() -> None:
    header = b"\x06\x00\x00\x00\xff\xff\xff\x09\x01\x00\x00\x00"
    with pytest.raises(
        ChunkError,
        match="message length 16777215 on chunk stream 6 exceeds the limit of 8388608",
    ):
        ChunkReader().feed(header)
    reader = ChunkReader(max_message_size=100)
    assert reader.feed(encode_message(6, 9, 1, 0, bytes(100), 128))
    with pytest.raises(ChunkError, match="message length 101"):
        reader.feed(encode_message(6, 9, 1, 0, bytes(101), 128))


def test_fmt1_length_above_limit() -> None:
    reader = ChunkReader(max_message_size=10)
    reader.feed(encode_message(6, 9, 1, 0, b"x", 128))
    with pytest.raises(ChunkError, match="message length 11"):
        reader.feed(b"\x46\x00\x00\x00\x00\x00\x0b\x09")


@pytest.mark.parametrize("first", [b"\xc3", b"\x83\x00\x00\x01", b"\x43" + bytes(7)])
def test_first_chunk_on_csid_must_be_fmt0(first: bytes) -> None:
    fmt = first[0] >> 6
    with pytest.raises(ChunkError, match=f"fmt {fmt} chunk on chunk stream 3, which has had no fmt 0"):
        ChunkReader().feed(first)


def test_too_many_chunk_streams() -> None:
    reader = ChunkReader(max_chunk_streams=3)
    for csid in (2, 3, 4):
        reader.feed(encode_message(csid, 8, 1, 0, b"x", 128))
    reader.feed(encode_message(3, 8, 1, 0, b"x", 128))  # known csid: fine
    with pytest.raises(ChunkError, match="chunk stream 5 would exceed the limit of 3"):
        reader.feed(encode_message(5, 8, 1, 0, b"x", 128))


def test_new_header_mid_message() -> None:
    partial = encode_message(4, 8, 1, 0, bytes(300), 128)[: 12 + 128]
    with pytest.raises(ChunkError, match=r"fmt 0 header on chunk stream 4 interrupts"):
        ChunkReader().feed(partial + encode_message(4, 8, 1, 0, b"x", 128))


def test_reader_stays_failed() -> None:
    reader = ChunkReader()
    with pytest.raises(ChunkError):
        reader.feed(b"\xc3")
    with pytest.raises(ChunkError, match="failed earlier"):
        reader.feed(encode_message(3, 8, 1, 0, b"x", 128))


@pytest.mark.parametrize("kwargs", [{"max_message_size": -1}, {"max_chunk_streams": 0}])
def test_reader_rejects_bad_limits(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ChunkReader(**kwargs)


# -- resource bounds --------------------------------------------------------


def test_only_a_partial_header_is_buffered() -> None:
    msgs = [
        RtmpMessage(65599, 9, 1, 0x12345678, os.urandom(700)),
        RtmpMessage(320, 8, 1, 5, os.urandom(10)),
    ]
    stream = b"".join(encode_message(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload, 64) for m in msgs)
    reader = ChunkReader()
    reader.feed(scs(64))
    out = []
    for piece in bytewise(stream):
        out += reader.feed(piece)
        assert len(reader._pending) <= 18
    assert out == msgs


def test_bytearray_and_memoryview_input() -> None:
    data = encode_message(3, 8, 1, 0, b"hello", 128)
    assert ChunkReader().feed(bytearray(data))[0].payload == b"hello"  # type: ignore[arg-type]
    assert ChunkReader().feed(memoryview(data))[0].payload == b"hello"  # type: ignore[arg-type]


def test_large_feed_is_linear() -> None:
    # 8 MB in one feed of 4096-byte chunks of 64 KiB messages.  A quadratic
    # reader (slicing the front off per chunk) would take minutes here.
    payload = os.urandom(65536)
    one = encode_message(6, 9, 1, 0, payload, 4096)
    stream = scs(4096) + one * 128
    out = ChunkReader().feed(stream)
    assert len(out) == 129
    assert all(m.payload == payload for m in out[1:])
