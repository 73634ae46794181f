"""RTP/RTCP packets and the H.264 / H.265 / AAC payload formats (codec/rtp.py)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasrv.codec import rtp
from mediasrv.codec.rtp import (
    AacDepacketizer,
    H264Depacketizer,
    H265Depacketizer,
    RtpError,
    RtpPacket,
)

# -- RTP header ----------------------------------------------------------------------------


def test_rtp_round_trip_minimal() -> None:
    p = RtpPacket(96, 65535, 0xFFFFFFFF, 0x12345678, b"\x65abc", marker=True)
    data = p.serialize()
    assert data[:2] == b"\x80\xe0"
    assert data == rtp.build_rtp(96, 65535, 0xFFFFFFFF, 0x12345678, True, b"\x65abc")
    assert RtpPacket.parse(data) == p


def test_rtp_csrc_extension_and_padding() -> None:
    p = RtpPacket(97, 1, 2, 3, b"payload", csrc=(10, 11), extension_profile=0xBEDE, extension=b"\x01\x02\x03\x04")
    data = p.serialize()
    assert RtpPacket.parse(data) == p
    padded = bytearray(data + b"\x00\x00\x03")
    padded[0] |= 0x20
    assert RtpPacket.parse(bytes(padded)).payload == b"payload"


@pytest.mark.parametrize("data, message", [
    (b"\x80\x60\x00", "shorter than the 12-byte header"),
    (b"\x40\x60" + b"\x00" * 10, "version is 1"),
    (b"\x82\x60" + b"\x00" * 10 + b"\x00" * 4, "truncated CSRC"),
    (b"\x90\x60" + b"\x00" * 10 + b"\x00\x00", "truncated header extension"),
    (b"\x90\x60" + b"\x00" * 10 + b"\x00\x00\x00\x05", "declares 5 words"),
    (b"\xa0\x60" + b"\x00" * 10 + b"ab\x09", "padding of 9 bytes"),
])
def test_rtp_garbage_is_rejected_precisely(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(data)


def test_timestamp_unwrapper_handles_wrap_and_late_packets() -> None:
    u = rtp.TimestampUnwrapper()
    assert u.unwrap(0xFFFFFF00) == 0xFFFFFF00
    assert u.unwrap(0x00000100) == 0x1_0000_0100  # wrapped forward
    assert u.unwrap(0xFFFFFFF0) == 0xFFFFFFF0  # a late packet from before the wrap
    assert u.unwrap(0x00000200) == 0x1_0000_0200
    assert u.unwrap(0x00000150) == 0x1_0000_0150  # late, same cycle


# -- RTCP ------------------------------------------------------------------------------------


def test_ntp_conversion() -> None:
    ntp = rtp.ntp_from_unix(1_700_000_000.25)
    assert ntp >> 32 == 1_700_000_000 + 2_208_988_800
    assert ntp & 0xFFFFFFFF == 1 << 30
    assert rtp.unix_from_ntp(ntp) == pytest.approx(1_700_000_000.25)


def test_sender_report_round_trip_in_a_compound_packet() -> None:
    sr = rtp.build_sender_report(0xCAFE, rtp.ntp_from_unix(1000.5), 90000, 10, 12000)
    sdes = rtp.build_sdes_cname(0xCAFE, "mediasrv")
    assert len(sr) == 28 and len(sdes) % 4 == 0
    items = rtp.parse_rtcp(sr + sdes + rtp.build_bye(0xCAFE))
    assert items[0] == rtp.SenderReport(0xCAFE, rtp.ntp_from_unix(1000.5), 90000, 10, 12000)
    assert isinstance(items[1], rtp.RtcpPacket) and items[1].packet_type == rtp.RTCP_SDES
    assert items[2] == rtp.Bye((0xCAFE,))


def test_receiver_report_round_trip() -> None:
    block = rtp.ReportBlock(0x1234, 12, -3, 70000, 17, 0xAABBCCDD, 65536)
    (rr,) = rtp.parse_rtcp(rtp.build_receiver_report(0x99, [block]))
    assert rr == rtp.ReceiverReport(0x99, (block,))


@pytest.mark.parametrize("data, message", [
    (b"\x80", "shorter than its 4-byte header"),
    (b"\x40\xc8\x00\x00", "version is 1"),
    (b"\x80\xc8\x00\x06" + b"\x00" * 8, "declares 28 bytes"),
    (b"\x80\xc8\x00\x01" + b"\x00" * 4, "SR shorter than its sender info"),
    (b"\x80\xc9\x00\x01" + b"\x00" * 4 + b"\x00\x00", "trailing bytes"),
    (b"\x80\xc9\x00\x00", "RR shorter than its SSRC"),
])
def test_rtcp_garbage_is_rejected(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        rtp.parse_rtcp(data)


# -- H.264 ---------------------------------------------------------------------------------


def _packets(payloads: list[bytes], ts: int = 1000, seq: int = 100) -> list[RtpPacket]:
    return [RtpPacket(96, (seq + i) & 0xFFFF, ts, 1, p, marker=i == len(payloads) - 1) for i, p in enumerate(payloads)]


def test_h264_small_nal_units_go_as_single_nal_packets() -> None:
    nals = [b"\x67" + b"s" * 10, b"\x68pp", b"\x65" + b"x" * 100]
    assert rtp.packetize_h264(nals, 1400) == nals


def test_h264_fu_a_layout() -> None:
    nal = b"\x65" + bytes(range(256)) * 10  # 2561 bytes
    payloads = rtp.packetize_h264([nal], 1000)
    assert [len(p) for p in payloads] == [1000, 1000, 2 + 2560 - 2 * 998]
    assert all(p[0] == (0x60 | 28) for p in payloads)  # NRI kept, type FU-A
    assert [p[1] for p in payloads] == [0x85, 0x05, 0x45]  # S, -, E; type 5
    assert b"".join(p[2:] for p in payloads) == nal[1:]


def test_h264_depacketizer_single_stap_a_and_fu_a() -> None:
    sps, pps = b"\x67\x42\x00\x1f", b"\x68\xce\x3c\x80"
    idr = b"\x65" + b"\xaa" * 3000
    stap = b"\x78" + struct.pack(">H", len(sps)) + sps + struct.pack(">H", len(pps)) + pps
    d = H264Depacketizer()
    out = []
    for p in _packets([stap, *rtp.packetize_h264([idr], 1200)]):
        out += d.feed(p)
    assert len(out) == 1 and out[0].nals == [sps, pps, idr] and not out[0].damaged
    assert out[0].timestamp == 1000


def test_h264_access_unit_ends_on_timestamp_change_without_marker() -> None:
    d = H264Depacketizer()
    assert d.feed(RtpPacket(96, 1, 10, 1, b"\x41one")) == []
    (au,) = d.feed(RtpPacket(96, 2, 20, 1, b"\x41two"))
    assert (au.timestamp, au.nals) == (10, [b"\x41one"])


def test_h264_lost_fragment_drops_the_nal_and_marks_damage() -> None:
    nal = b"\x65" + b"\x01" * 5000
    pkts = _packets([b"\x41first", *rtp.packetize_h264([nal], 1200)])
    del pkts[2]  # a middle FU-A fragment
    d = H264Depacketizer()
    out = [au for p in pkts for au in d.feed(p)]
    assert len(out) == 1 and out[0].nals == [b"\x41first"] and out[0].damaged
    assert d.lost_packets == 1


def test_h264_duplicate_packets_are_ignored() -> None:
    d = H264Depacketizer()
    p = RtpPacket(96, 5, 10, 1, b"\x41a")
    d.feed(p)
    assert d.feed(p) == []
    (au,) = d.feed(RtpPacket(96, 6, 10, 1, b"\x41b", marker=True))
    assert au.nals == [b"\x41a", b"\x41b"]


@pytest.mark.parametrize("payload, message", [
    (b"\x1d\x00", "needs interleaved mode"),
    (b"\x19\x00\x00", "needs interleaved mode"),
    (b"\x1e", "reserved NAL unit type 30"),
    (b"\x00", "reserved NAL unit type 0"),
    (b"\x78\x00\x09\x65", "STAP-A NAL unit of 9 bytes"),
    (b"\x7c\x85", "FU-A packet of 2 bytes"),
    (b"\x7c\xc5\x00", "both start and end"),
])
def test_h264_bad_payloads(payload: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        H264Depacketizer().feed(RtpPacket(96, 1, 1, 1, payload))


_nal_h264 = st.builds(lambda t, body: bytes((0x60 | t,)) + body, st.integers(1, 23),
                      st.binary(min_size=0, max_size=6000))


@settings(max_examples=150, deadline=None)
@given(nals=st.lists(_nal_h264, min_size=1, max_size=6), mtu=st.integers(3, 1500),
       seq=st.integers(0, 0xFFFF))
def test_h264_fu_a_round_trip(nals: list[bytes], mtu: int, seq: int) -> None:
    payloads = rtp.packetize_h264(nals, mtu)
    assert all(len(p) <= mtu for p in payloads)
    d = H264Depacketizer()
    out = [au for p in _packets(payloads, seq=seq) for au in d.feed(p)]
    assert len(out) == 1 and out[0].nals == nals and not out[0].damaged


# -- H.265 ---------------------------------------------------------------------------------


def _h265_nal(t: int, body: bytes) -> bytes:
    return bytes((t << 1, 1)) + body


def test_h265_fu_layout() -> None:
    nal = _h265_nal(19, b"\x55" * 3000)  # IDR_W_RADL
    payloads = rtp.packetize_h265([nal], 1400)
    assert payloads[0][:3] == bytes((49 << 1, 1, 0x80 | 19))
    assert payloads[-1][2] == 0x40 | 19
    assert b"".join(p[3:] for p in payloads) == nal[2:]


def test_h265_aggregation_packet() -> None:
    vps, sps, pps = _h265_nal(32, b"v"), _h265_nal(33, b"ss"), _h265_nal(34, b"p")
    ap = bytes((48 << 1, 1)) + b"".join(struct.pack(">H", len(n)) + n for n in (vps, sps, pps))
    d = H265Depacketizer()
    (au,) = d.feed(RtpPacket(96, 1, 5, 1, ap, marker=True))
    assert au.nals == [vps, sps, pps]


def test_h265_bad_payloads() -> None:
    with pytest.raises(RtpError, match="shorter than its header"):
        H265Depacketizer().feed(RtpPacket(96, 1, 1, 1, b"\x02"))
    with pytest.raises(RtpError, match="reserved NAL unit type 51"):
        H265Depacketizer().feed(RtpPacket(96, 1, 1, 1, bytes((51 << 1, 1, 0))))
    with pytest.raises(RtpError, match="AP NAL unit of 200 bytes"):
        H265Depacketizer().feed(RtpPacket(96, 1, 1, 1, bytes((48 << 1, 1, 0, 200, 1, 1))))


_nal_h265 = st.builds(_h265_nal, st.integers(0, 40), st.binary(min_size=0, max_size=6000))


@settings(max_examples=100, deadline=None)
@given(nals=st.lists(_nal_h265, min_size=1, max_size=5), mtu=st.integers(4, 1500))
def test_h265_fu_round_trip(nals: list[bytes], mtu: int) -> None:
    payloads = rtp.packetize_h265(nals, mtu)
    assert all(len(p) <= mtu for p in payloads)
    d = H265Depacketizer()
    out = [au for p in _packets(payloads) for au in d.feed(p)]
    assert len(out) == 1 and out[0].nals == nals


# -- AAC (RFC 3640) --------------------------------------------------------------------------


def test_aac_one_au_per_packet() -> None:
    au = bytes(range(200))
    (payload,) = rtp.packetize_aac(au)
    assert payload[:4] == b"\x00\x10" + struct.pack(">H", 200 << 3)
    (out,) = AacDepacketizer().feed(RtpPacket(97, 1, 4096, 1, payload, marker=True))
    assert (out.timestamp, out.nals) == (4096, [au])


def test_aac_several_aus_in_one_packet_get_consecutive_timestamps() -> None:
    aus = [b"a" * 10, b"b" * 300, b"c"]
    headers = b"".join(struct.pack(">H", len(a) << 3 | i) for i, a in enumerate(aus))
    payload = struct.pack(">H", 16 * len(aus)) + headers + b"".join(aus)
    out = AacDepacketizer().feed(RtpPacket(97, 1, 0xFFFFFC00, 1, payload, marker=True))
    assert [(o.timestamp, o.nals[0]) for o in out] == [(0xFFFFFC00, aus[0]), (0, aus[1]), (1024, aus[2])]


def test_aac_fragmented_au_is_reassembled() -> None:
    au = bytes(range(256)) * 12  # 3072 bytes
    payloads = rtp.packetize_aac(au, 1000)
    assert len(payloads) == 4 and all(p[:4] == payloads[0][:4] for p in payloads)
    d = AacDepacketizer()
    out = [a for p in _packets(payloads) for a in d.feed(p)]
    assert len(out) == 1 and out[0].nals == [au]


def test_aac_bad_payloads() -> None:
    with pytest.raises(RtpError, match="no AU-headers-length"):
        AacDepacketizer().feed(RtpPacket(97, 1, 1, 1, b"\x00"))
    with pytest.raises(RtpError, match="overruns"):
        AacDepacketizer().feed(RtpPacket(97, 1, 1, 1, b"\x00\x40\x00"))
    with pytest.raises(RtpError, match="ends inside an AU header"):
        AacDepacketizer().feed(RtpPacket(97, 1, 1, 1, b"\x00\x0a\x00\x00"))
    with pytest.raises(RtpError, match="does not fit a 13-bit"):
        rtp.packetize_aac(b"\x00" * 9000)


@settings(max_examples=100, deadline=None)
@given(au=st.binary(min_size=1, max_size=8000), mtu=st.integers(100, 1500))
def test_aac_round_trip(au: bytes, mtu: int) -> None:
    d = AacDepacketizer()
    out = [a for p in _packets(rtp.packetize_aac(au, mtu)) for a in d.feed(p)]
    assert [a.nals for a in out] == [[au]]
