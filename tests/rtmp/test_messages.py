"""Tests for mediasrv.rtmp.messages (RTMP spec 1.0 sections 5.4, 6.2, 7.1, 7.2)."""

from __future__ import annotations

import struct

import pytest

from mediasrv.codec.amf0 import AmfError, EcmaArray, encode
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import ChunkError, ChunkReader, RtmpMessage


def control_header(length: int, type_id: int) -> bytes:
    """Chunk header of a control message: fmt 0, csid 2, timestamp 0, then
    length / type / stream 0."""
    return b"\x02\x00\x00\x00" + length.to_bytes(3, "big") + bytes([type_id]) + bytes(4)


# -- constants --------------------------------------------------------------


def test_constants() -> None:
    assert (m.SET_CHUNK_SIZE, m.ABORT, m.ACK, m.USER_CONTROL) == (1, 2, 3, 4)
    assert (m.WINDOW_ACK_SIZE, m.SET_PEER_BANDWIDTH, m.AUDIO, m.VIDEO) == (5, 6, 8, 9)
    assert (m.DATA_AMF3, m.SHARED_OBJECT_AMF3, m.COMMAND_AMF3) == (15, 16, 17)
    assert (m.DATA_AMF0, m.SHARED_OBJECT_AMF0, m.COMMAND_AMF0) == (18, 19, 20)
    assert m.AGGREGATE == 22
    assert (m.STREAM_BEGIN, m.STREAM_EOF, m.STREAM_DRY, m.SET_BUFFER_LENGTH) == (
        0,
        1,
        2,
        3,
    )
    assert (m.STREAM_IS_RECORDED, m.PING_REQUEST, m.PING_RESPONSE) == (4, 6, 7)
    assert (m.CSID_CONTROL, m.CSID_COMMAND, m.CSID_AUDIO, m.CSID_DATA, m.CSID_VIDEO) == (
        2,
        3,
        4,
        5,
        6,
    )


# -- protocol control encoders (golden bytes) -------------------------------


def test_set_chunk_size_golden() -> None:
    assert m.set_chunk_size(4096) == control_header(4, 1) + b"\x00\x00\x10\x00"
    with pytest.raises(ValueError):
        m.set_chunk_size(0)
    with pytest.raises(ValueError):
        m.set_chunk_size(0x80000000)


def test_window_ack_size_golden() -> None:
    assert m.window_ack_size(2_500_000) == control_header(4, 5) + b"\x00\x26\x25\xa0"
    with pytest.raises(ValueError):
        m.window_ack_size(2**32)


def test_set_peer_bandwidth_golden() -> None:
    assert m.set_peer_bandwidth(2_500_000) == (control_header(5, 6) + b"\x00\x26\x25\xa0\x02")
    assert m.set_peer_bandwidth(5, 0)[-1] == 0
    with pytest.raises(ValueError):
        m.set_peer_bandwidth(5, 3)


def test_acknowledgement_golden_wraps() -> None:
    assert m.acknowledgement(1234) == control_header(4, 3) + b"\x00\x00\x04\xd2"
    assert m.acknowledgement(2**32 + 5) == control_header(4, 3) + b"\x00\x00\x00\x05"


def test_user_control_golden() -> None:
    assert m.stream_begin(1) == control_header(6, 4) + b"\x00\x00\x00\x00\x00\x01"
    assert m.stream_eof(1)[12:14] == b"\x00\x01"
    assert m.stream_dry(1)[12:14] == b"\x00\x02"
    assert m.stream_is_recorded(1)[12:14] == b"\x00\x04"
    assert m.ping_request(0x01020304) == (control_header(6, 4) + b"\x00\x06\x01\x02\x03\x04")
    assert m.ping_response(99) == control_header(6, 4) + b"\x00\x07\x00\x00\x00\x63"
    assert m.set_buffer_length(1, 3000) == (control_header(10, 4) + b"\x00\x03\x00\x00\x00\x01\x00\x00\x0b\xb8")
    assert m.user_control(0x1A) == control_header(2, 4) + b"\x00\x1a"
    with pytest.raises(ValueError):
        m.user_control(0x10000)
    with pytest.raises(ValueError):
        m.user_control(0, -1)


def test_control_messages_respect_tiny_chunk_size() -> None:
    data = m.set_buffer_length(1, 3000, chunk_size=4)
    assert data == (control_header(10, 4) + b"\x00\x03\x00\x00" + b"\xc2\x00\x01\x00\x00" + b"\xc2\x0b\xb8")


# -- command / data encoders ------------------------------------------------


CREATE_STREAM = b"\x02\x00\x0ccreateStream\x00\x40\x00\x00\x00\x00\x00\x00\x00\x05"


def test_command_golden() -> None:
    data = m.command("createStream", 2.0, None, chunk_size=128)
    assert data == b"\x03\x00\x00\x00\x00\x00\x19\x14\x00\x00\x00\x00" + CREATE_STREAM


def test_command_golden_multi_chunk_and_stream() -> None:
    data = m.command("createStream", 2, None, stream_id=1, chunk_size=10, csid=m.CSID_DATA)
    assert data == (
        b"\x05\x00\x00\x00\x00\x00\x19\x14\x01\x00\x00\x00"
        + CREATE_STREAM[:10]
        + b"\xc5"
        + CREATE_STREAM[10:20]
        + b"\xc5"
        + CREATE_STREAM[20:]
    )


def test_command_requires_chunk_size() -> None:
    with pytest.raises(TypeError):
        m.command("x", 0, None)  # type: ignore[call-arg]


def test_data_golden() -> None:
    data = m.data("onMetaData", EcmaArray(width=1280.0), stream_id=1, chunk_size=128)
    body = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x01\x00\x05width\x00\x40\x94\x00\x00\x00\x00\x00\x00\x00\x00\x09"
    assert data == (b"\x05\x00\x00\x00" + len(body).to_bytes(3, "big") + b"\x12\x01\x00\x00\x00" + body)


# -- decoders ----------------------------------------------------------------


def test_parse_u32() -> None:
    assert m.parse_u32(b"\x00\x00\x10\x00") == 4096
    assert m.parse_u32(b"\x00\x26\x25\xa0\x02") == 2_500_000
    with pytest.raises(ChunkError, match="payload of 3 bytes"):
        m.parse_u32(b"\x00\x00\x01")
    with pytest.raises(ValueError):
        m.parse_u32(b"")


def test_parse_peer_bandwidth() -> None:
    assert m.parse_peer_bandwidth(b"\x00\x26\x25\xa0\x02") == (2_500_000, 2)
    with pytest.raises(ChunkError, match="payload of 4 bytes"):
        m.parse_peer_bandwidth(b"\x00\x26\x25\xa0")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x00\x00\x00\x00\x00\x01", (0, [1])),
        (b"\x00\x03\x00\x00\x00\x01\x00\x00\x0b\xb8", (3, [1, 3000])),
        (b"\x00\x07\xff\xff\xff\xff", (7, [0xFFFFFFFF])),
        (b"\x00\x1a", (0x1A, [])),  # SWF verification request: no values
        (b"\x00\x1b" + bytes(42), (0x1B, [0] * 10)),  # odd trailing bytes ignored
    ],
)
def test_parse_user_control(payload: bytes, expected: tuple[int, list[int]]) -> None:
    assert m.parse_user_control(payload) == expected


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x00", "payload of 1 bytes, expected at least 2"),
        (b"\x00\x00\x00\x00\x01", "event 0 payload of 5 bytes, expected at least 6"),
        (b"\x00\x03\x00\x00\x00\x01", "event 3 payload of 6 bytes, expected at least 10"),
    ],
)
def test_parse_user_control_errors(payload: bytes, match: str) -> None:
    with pytest.raises(ChunkError, match=match):
        m.parse_user_control(payload)


# The connect command ffmpeg sends when publishing (see tests/codec).
CONNECT_BODY = (
    b"\x02\x00\x07connect"
    b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
    b"\x03"
    b"\x00\x03app\x02\x00\x04live"
    b"\x00\x04type\x02\x00\x0anonprivate"
    b"\x00\x08flashVer\x02\x00\x24FMLE/3.0 (compatible; Lavf59.27.100)"
    b"\x00\x05tcUrl\x02\x00\x1artmp://127.0.0.1:1935/live"
    b"\x00\x00\x09"
)


def test_parse_command_connect_golden() -> None:
    cmd = m.parse_command(RtmpMessage(3, 20, 0, 0, CONNECT_BODY))
    assert cmd == m.Command(
        "connect",
        1.0,
        {
            "app": "live",
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; Lavf59.27.100)",
            "tcUrl": "rtmp://127.0.0.1:1935/live",
        },
        [],
    )


def test_parse_command_publish_with_args() -> None:
    body = encode("publish", 5.0, None, "stream?token=x", "live")
    cmd = m.parse_command(RtmpMessage(8, 20, 1, 0, body))
    assert cmd == m.Command("publish", 5.0, None, ["stream?token=x", "live"])


def test_parse_command_amf3_flavour() -> None:
    # Type 17: a 0x00 format byte, then AMF0 with per-value AMF3 switches.
    body = b"\x00" + encode("play", 0.0, None) + b"\x11\x06\x0bhello"
    cmd = m.parse_command(RtmpMessage(8, 17, 1, 0, body))
    assert cmd == m.Command("play", 0.0, None, ["hello"])
    # AMF3 integer transaction id is accepted and made a float.
    body = b"\x00\x02\x00\x04play\x11\x04\x07\x05"
    cmd = m.parse_command(RtmpMessage(8, 17, 1, 0, body))
    assert cmd.transaction_id == 7.0 and isinstance(cmd.transaction_id, float)
    # Without the format byte it is accepted too.
    cmd = m.parse_command(RtmpMessage(8, 17, 1, 0, encode("play", 0.0, None)))
    assert cmd.name == "play"


def test_parse_command_defaults_missing_fields() -> None:
    assert m.parse_command(RtmpMessage(3, 20, 0, 0, encode("onBWDone"))) == m.Command("onBWDone", 0.0, None, [])
    assert m.parse_command(RtmpMessage(3, 20, 0, 0, encode("x", 3))) == m.Command("x", 3.0, None, [])


@pytest.mark.parametrize(
    ("msg", "exc", "match"),
    [
        (RtmpMessage(3, 18, 0, 0, CONNECT_BODY), ChunkError, "type 18 is not a command"),
        (RtmpMessage(3, 20, 0, 0, b""), AmfError, "empty RTMP command message"),
        (RtmpMessage(3, 17, 0, 0, b"\x00"), AmfError, "empty RTMP command message"),
        (RtmpMessage(3, 20, 0, 0, encode(1.0, 1.0)), AmfError, "name is float"),
        (RtmpMessage(3, 20, 0, 0, encode("x", "1")), AmfError, "transaction id is '1'"),
        (RtmpMessage(3, 20, 0, 0, encode("x", True)), AmfError, "transaction id is True"),
        (RtmpMessage(3, 20, 0, 0, encode("x", float("inf"))), AmfError, "not a number"),
        (RtmpMessage(3, 20, 0, 0, CONNECT_BODY[:-1]), AmfError, "truncated"),
    ],
)
def test_parse_command_errors(msg: RtmpMessage, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        m.parse_command(msg)


SET_DATA_FRAME = (
    b"\x02\x00\x0d@setDataFrame"
    b"\x02\x00\x0aonMetaData"
    b"\x08\x00\x00\x00\x02"
    b"\x00\x08duration\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\x05width\x00\x40\x94\x00\x00\x00\x00\x00\x00"
    b"\x00\x00\x09"
)


def test_parse_data_set_data_frame_golden() -> None:
    name, args = m.parse_data(RtmpMessage(4, 18, 1, 0, SET_DATA_FRAME))
    assert name == "@setDataFrame"
    assert args == ["onMetaData", {"duration": 0.0, "width": 1280.0}]
    assert isinstance(args[1], EcmaArray)


def test_parse_data_amf3_flavour() -> None:
    assert m.parse_data(RtmpMessage(4, 15, 1, 0, b"\x00" + SET_DATA_FRAME))[0] == ("@setDataFrame")


@pytest.mark.parametrize(
    ("msg", "exc", "match"),
    [
        (RtmpMessage(4, 20, 1, 0, SET_DATA_FRAME), ChunkError, "type 20 is not a data"),
        (RtmpMessage(4, 18, 1, 0, b""), AmfError, "empty RTMP data message"),
        (RtmpMessage(4, 18, 1, 0, b"\x05"), AmfError, "name is NoneType"),
    ],
)
def test_parse_data_errors(msg: RtmpMessage, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        m.parse_data(msg)


# -- aggregate messages -----------------------------------------------------


def sub(type_id: int, ts: int, body: bytes, stream_id: int = 1) -> bytes:
    """An aggregate sub-message: FLV-tag style header, body, back pointer."""
    header = (
        bytes([type_id])
        + len(body).to_bytes(3, "big")
        + (ts & 0xFFFFFF).to_bytes(3, "big")
        + bytes([ts >> 24])
        + stream_id.to_bytes(3, "big")
    )
    return header + body + struct.pack(">I", 11 + len(body))


def test_split_aggregate_golden() -> None:
    payload = (
        b"\x08\x00\x00\x02\x00\x03\xe8\x00\x00\x00\x01"
        b"au"
        b"\x00\x00\x00\x0d"
        b"\x09\x00\x00\x03\x00\x04\x10\x00\x00\x00\x01"
        b"vid"
        b"\x00\x00\x00\x0e"
    )
    assert payload == sub(8, 1000, b"au") + sub(9, 1040, b"vid")
    agg = RtmpMessage(4, 22, 7, 5000, payload)
    assert m.split_aggregate(agg) == [
        RtmpMessage(4, 8, 7, 5000, b"au"),
        RtmpMessage(4, 9, 7, 5040, b"vid"),
    ]


def test_split_aggregate_extended_and_wrapping_timestamps() -> None:
    payload = sub(9, 0x01000005, b"a") + sub(9, 0x01000010, b"b")
    out = m.split_aggregate(RtmpMessage(6, 22, 1, 0xFFFFFFFF, payload))
    assert [x.timestamp for x in out] == [0xFFFFFFFF, 0x0A]


def test_split_aggregate_tolerates_missing_final_back_pointer() -> None:
    payload = sub(8, 0, b"a") + sub(8, 10, b"b")[:-4]
    out = m.split_aggregate(RtmpMessage(4, 22, 1, 100, payload))
    assert [(x.timestamp, x.payload) for x in out] == [(100, b"a"), (110, b"b")]


def test_split_empty_aggregate() -> None:
    assert m.split_aggregate(RtmpMessage(4, 22, 1, 0, b"")) == []


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (sub(8, 0, b"a")[:10], "header truncated at offset 0"),
        (sub(8, 0, b"abc")[:13], "claims 3 bytes, only 2 remain"),
        (sub(8, 0, b"a") + sub(8, 0, b"b")[:-2], "back pointer truncated at offset 28"),
        (sub(22, 0, b"a"), "nested aggregate"),
    ],
)
def test_split_aggregate_errors(payload: bytes, match: str) -> None:
    with pytest.raises(ChunkError, match=match):
        m.split_aggregate(RtmpMessage(4, 22, 1, 0, payload))


def test_split_aggregate_wrong_type() -> None:
    with pytest.raises(ChunkError, match="type 9 is not an aggregate"):
        m.split_aggregate(RtmpMessage(4, 9, 1, 0, b""))


# -- encoders and decoders agree through the chunk reader --------------------


def test_encoders_round_trip_through_reader() -> None:
    stream = b"".join(
        [
            m.window_ack_size(5_000_000),
            m.set_peer_bandwidth(5_000_000, m.LIMIT_DYNAMIC),
            m.set_chunk_size(60),
            m.command(
                "_result",
                1,
                {"fmsVer": "FMS/3,0,1,123", "capabilities": 31},
                {"level": "status", "code": "NetConnection.Connect.Success"},
                chunk_size=60,
            ),
            m.stream_begin(1, chunk_size=60),
            m.data("onMetaData", EcmaArray(width=640), stream_id=1, chunk_size=60),
        ]
    )
    out = ChunkReader().feed(stream)
    assert [x.type_id for x in out] == [5, 6, 1, 20, 4, 18]
    assert m.parse_u32(out[0].payload) == 5_000_000
    assert m.parse_peer_bandwidth(out[1].payload) == (5_000_000, 2)
    cmd = m.parse_command(out[3])
    assert cmd.name == "_result" and cmd.transaction_id == 1.0
    assert cmd.command_object == {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
    assert cmd.args == [{"level": "status", "code": "NetConnection.Connect.Success"}]
    assert m.parse_user_control(out[4].payload) == (m.STREAM_BEGIN, [1])
    assert m.parse_data(out[5]) == ("onMetaData", [{"width": 640.0}])
