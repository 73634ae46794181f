"""RTSP framing (rtsp/parser.py): requests, interleaved frames, limits, Transport."""

from __future__ import annotations

import pytest

from mediasrv.rtsp.parser import (
    InterleavedFrame,
    RtspParseError,
    RtspParser,
    RtspRequest,
    RtspResponse,
    TransportSpec,
    encode_interleaved,
    encode_response,
    format_transport,
    parse_transport,
)

ANNOUNCE = (b"ANNOUNCE rtsp://127.0.0.1:8554/live/x RTSP/1.0\r\n"
            b"Content-Type: application/sdp\r\n"
            b"CSeq: 2\r\n"
            b"User-Agent: Lavf59.27.100\r\n"
            b"Content-Length: 10\r\n"
            b"\r\n"
            b"v=0\r\ns=x\r\n")
RTP = encode_interleaved(0, b"\x80\x60" + b"\x00" * 30)
RTCP = encode_interleaved(1, b"\x80\xc8\x00\x06" + b"\x01" * 24)
OPTIONS = b"OPTIONS rtsp://h/live/x RTSP/1.0\r\nCSeq: 3\r\n\r\n"
STREAM = ANNOUNCE + RTP + RTCP + b"\r\n" + OPTIONS + RTP


def _check(events: list[object]) -> None:
    assert [type(e).__name__ for e in events] == ["RtspRequest", "InterleavedFrame", "InterleavedFrame",
                                                  "RtspRequest", "InterleavedFrame"]
    ann = events[0]
    assert isinstance(ann, RtspRequest)
    assert (ann.method, ann.uri, ann.version, ann.cseq) == ("ANNOUNCE", "rtsp://127.0.0.1:8554/live/x", "RTSP/1.0", "2")
    assert ann.header("content-type") == "application/sdp" and ann.body == b"v=0\r\ns=x\r\n"
    assert events[1] == InterleavedFrame(0, RTP[4:]) and events[2] == InterleavedFrame(1, RTCP[4:])
    opt = events[3]
    assert isinstance(opt, RtspRequest) and opt.method == "OPTIONS" and opt.body == b""


def test_all_at_once() -> None:
    _check(RtspParser().feed(STREAM))  # type: ignore[arg-type]


def test_byte_at_a_time() -> None:
    p = RtspParser()
    events: list[object] = []
    for i in range(len(STREAM)):
        events += p.feed(STREAM[i : i + 1])
    _check(events)


def test_bare_lf_line_endings_and_folding() -> None:
    (req,) = RtspParser().feed(b"GET_PARAMETER rtsp://h/a/b RTSP/1.0\nCSeq: 9\nX-Long: a\n  b\n\n")
    assert isinstance(req, RtspRequest) and req.cseq == "9" and req.header("x-long") == "a b"


def test_responses_from_the_client_are_events_too() -> None:
    (resp,) = RtspParser().feed(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n")
    assert isinstance(resp, RtspResponse) and resp.status == 200 and resp.headers.get("cseq") == "1"


def test_header_block_is_bounded() -> None:
    p = RtspParser(max_header_bytes=1024)
    p.feed(b"OPTIONS rtsp://h/a/b RTSP/1.0\r\n")
    with pytest.raises(RtspParseError, match="exceeds 1024") as e:
        for _ in range(100):
            p.feed(b"X-Junk: " + b"a" * 20 + b"\r\n")
    assert e.value.status == 400


@pytest.mark.parametrize("data, status, message", [
    (b"HELLO\r\n\r\n", 400, "malformed request line"),
    (b"GET / HTTP/1.1\r\n\r\n", 400, "not an RTSP request"),
    (b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505, "unsupported version"),
    (b"OPTIONS * RTSP/1.0\r\nno colon here\r\n\r\n", 400, "malformed header line"),
    (b"OPTIONS * RTSP/1.0\r\nContent-Length: -1\r\n\r\n", 400, "bad Content-Length"),
    (b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 99999999\r\n\r\n", 413, "exceeds"),
    (b"OPTIONS * RTSP/1.0\r\n" + b"A: b\r\n" * 100 + b"\r\n", 400, "more than 64 header lines"),
])
def test_bad_requests(data: bytes, status: int, message: str) -> None:
    with pytest.raises(RtspParseError, match=message) as e:
        RtspParser().feed(data)
    assert e.value.status == status


def test_encode_response() -> None:
    data = encode_response(200, [("CSeq", "2"), ("Public", "OPTIONS")], b"body")
    assert data == b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nPublic: OPTIONS\r\nContent-Length: 4\r\n\r\nbody"
    assert encode_response(454, []).startswith(b"RTSP/1.0 454 Session Not Found\r\n")


# -- Transport ---------------------------------------------------------------------------------


def test_parse_transport_alternatives() -> None:
    specs = parse_transport("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record, RTP/AVP;unicast;client_port=5000-5001")
    assert specs[0].tcp and specs[0].interleaved == (0, 1) and specs[0].mode == "record"
    assert not specs[1].tcp and specs[1].client_port == (5000, 5001)


def test_parse_transport_odds_and_ends() -> None:
    (s,) = parse_transport('RTP/AVP/UDP;multicast;client_port=6000;ssrc=DEADbeef;destination="1.2.3.4";ttl=3')
    assert s.multicast and s.client_port == (6000, 6001) and s.ssrc == 0xDEADBEEF and s.destination == "1.2.3.4"
    assert s.other == ["ttl=3"] and not s.tcp
    (raw,) = parse_transport("RAW/RAW/UDP;unicast")
    assert raw.protocol == "RAW/RAW/UDP"


@pytest.mark.parametrize("value, message", [
    ("", "empty Transport"),
    ("RTP/AVP;client_port=a-b", "not a number pair"),
    ("RTP/AVP/TCP;interleaved=300-301", "out of range"),
    ("RTP/AVP;ssrc=xyz", "not hexadecimal"),
])
def test_bad_transport(value: str, message: str) -> None:
    with pytest.raises(RtspParseError, match=message) as e:
        parse_transport(value)
    assert e.value.status == 461


def test_format_transport() -> None:
    spec = TransportSpec("RTP/AVP", client_port=(5000, 5001), server_port=(6000, 6001), ssrc=0xAB)
    assert format_transport(spec) == "RTP/AVP;unicast;client_port=5000-5001;server_port=6000-6001;ssrc=000000AB"
    assert format_transport(TransportSpec("RTP/AVP/TCP", interleaved=(2, 3), mode="record")) == \
        "RTP/AVP/TCP;unicast;interleaved=2-3;mode=record"
