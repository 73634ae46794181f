"""RTP / RTCP packets and the payload formats mediasrv carries (sans-IO).

References:

* RFC 3550 5.1 (RTP fixed header), 6.4.1 / 6.4.2 (RTCP SR / RR), 6.5 (SDES),
  6.6 (BYE), 4 (the 64-bit NTP timestamp format).
* RFC 6184 5.6 (single NAL unit), 5.7.1 (STAP-A), 5.8 (FU-A): H.264.
* RFC 7798 4.4.1 (single NAL unit), 4.4.2 (aggregation packets, type 48),
  4.4.3 (fragmentation units, type 49): H.265, without DONL
  (``sprop-max-don-diff`` 0, which is what every encoder we meet sends).
* RFC 3640 3.2 (AU header section) and 3.3.6 (``mode=AAC-hbr``): AAC as
  ``mpeg4-generic``.

Packetizers turn one access unit into RTP *payloads*; the caller adds the RTP
header (sequence numbers and SSRC are the sender's state, see
``mediasrv.rtsp.muxer``).  Depacketizers take parsed :class:`RtpPacket` objects
and return complete access units.  Nothing here imports Twisted.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from mediasrv.codec.bits import CodecError

__all__ = [
    "AacDepacketizer",
    "AccessUnit",
    "Bye",
    "H264Depacketizer",
    "H265Depacketizer",
    "ReceiverReport",
    "ReportBlock",
    "RtcpItem",
    "RtcpPacket",
    "RtpError",
    "RtpPacket",
    "SenderReport",
    "TimestampUnwrapper",
    "build_bye",
    "build_receiver_report",
    "build_rtp",
    "build_sdes_cname",
    "build_sender_report",
    "ntp_from_unix",
    "packetize_aac",
    "packetize_h264",
    "packetize_h265",
    "parse_rtcp",
    "unix_from_ntp",
]

RTP_VERSION = 2
DEFAULT_MTU = 1400  # RTP payload bytes per packet; fits a 1500-byte Ethernet frame with IP/UDP/RTP headers

# H.264 NAL unit types used by RFC 6184 for aggregation / fragmentation.
H264_STAP_A = 24
H264_STAP_B = 25
H264_MTAP16 = 26
H264_MTAP24 = 27
H264_FU_A = 28
H264_FU_B = 29
# H.265 (RFC 7798 4.4).
H265_AP = 48
H265_FU = 49
H265_PACI = 50

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

# Seconds between the NTP epoch (1900) and the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800

# An access unit larger than this is thrown away by the depacketizers: a
# publisher that never sets the marker bit must not grow memory without bound.
MAX_ACCESS_UNIT = 16 * 1024 * 1024

_RTP_HEADER = struct.Struct(">BBHII")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_SR = struct.Struct(">IIIIII")  # ssrc, ntp msw, ntp lsw, rtp ts, packet count, octet count
_REPORT_BLOCK = struct.Struct(">IIIIII")


class RtpError(CodecError):
    """A malformed RTP / RTCP packet or payload."""


# ---------------------------------------------------------------------------
# RTP packets
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 5.1).  ``extension`` is the header extension's
    body (without its 4-byte profile/length word), kept only to be re-emitted."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """:raises RtpError: not version 2, or truncated in any of its parts."""
        if len(data) < 12:
            raise RtpError(f"RTP packet of {len(data)} bytes is shorter than the 12-byte header")
        b0, b1, seq, ts, ssrc = _RTP_HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTP version is {b0 >> 6}, expected 2")
        pos = 12
        cc = b0 & 0x0F
        if len(data) < pos + 4 * cc:
            raise RtpError(f"RTP packet has truncated CSRC list ({cc} entries declared)")
        csrc = struct.unpack_from(f">{cc}I", data, pos) if cc else ()
        pos += 4 * cc
        profile: int | None = None
        ext = b""
        if b0 & 0x10:
            if len(data) < pos + 4:
                raise RtpError("RTP packet has a truncated header extension")
            profile, words = struct.unpack_from(">HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise RtpError(f"RTP header extension declares {words} words, {(len(data) - pos) // 4} remain")
            ext = bytes(data[pos : pos + 4 * words])
            pos += 4 * words
        end = len(data)
        if b0 & 0x20:
            pad = data[-1]
            if pad == 0 or pad > end - pos:
                raise RtpError(f"RTP padding of {pad} bytes is invalid for a {end - pos}-byte payload")
            end -= pad
        return cls(b1 & 0x7F, seq, ts, ssrc, bytes(data[pos:end]), bool(b1 & 0x80), tuple(csrc), profile, ext)

    def serialize(self) -> bytes:
        b0 = RTP_VERSION << 6 | len(self.csrc)
        parts = []
        if self.extension_profile is not None:
            b0 |= 0x10
        parts.append(_RTP_HEADER.pack(b0, (0x80 if self.marker else 0) | self.payload_type,
                                      self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc))
        for c in self.csrc:
            parts.append(_U32.pack(c))
        if self.extension_profile is not None:
            if len(self.extension) % 4:
                raise RtpError("RTP header extension must be a whole number of 32-bit words")
            parts.append(struct.pack(">HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        return b"".join(parts)


def build_rtp(payload_type: int, sequence: int, timestamp: int, ssrc: int, marker: bool, payload: bytes) -> bytes:
    """The common case of :meth:`RtpPacket.serialize`: no CSRC, no extension."""
    return _RTP_HEADER.pack(0x80, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF,
                            timestamp & 0xFFFFFFFF, ssrc) + payload


class TimestampUnwrapper:
    """Extends 32-bit RTP timestamps to a monotonic-ish integer timeline.

    A jump of more than half the range is taken as a wrap (forward) or as a
    slightly late packet (backward), as RFC 3550 A.1 does for sequence numbers.
    """

    __slots__ = ("_last", "_cycles")

    def __init__(self) -> None:
        self._last: int | None = None
        self._cycles = 0

    def unwrap(self, ts: int) -> int:
        last = self._last
        if last is None:
            self._last = ts
            return ts
        if ((ts - last) & 0xFFFFFFFF) < 0x80000000:  # forward (possibly across a wrap)
            if ts < last:
                self._cycles += 1
            self._last = ts
            return self._cycles * 0x1_0000_0000 + ts
        # a late packet: it belongs to the previous cycle when it lies before a wrap
        cycles = self._cycles - 1 if ts > last else self._cycles
        return cycles * 0x1_0000_0000 + ts


# ---------------------------------------------------------------------------
# RTCP
# ---------------------------------------------------------------------------


def ntp_from_unix(t: float) -> int:
    """Unix seconds → 64-bit NTP timestamp (32.32 fixed point, RFC 3550 4)."""
    return int(round((t + NTP_UNIX_OFFSET) * (1 << 32))) & 0xFFFF_FFFF_FFFF_FFFF


def unix_from_ntp(ntp: int) -> float:
    return ntp / (1 << 32) - NTP_UNIX_OFFSET


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    last_sr: int
    delay_since_last_sr: int


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """An RTCP packet we do not interpret (SDES, APP, feedback...)."""

    packet_type: int
    count: int
    body: bytes


RtcpItem: TypeAlias = SenderReport | ReceiverReport | Bye | RtcpPacket


def _report_blocks(body: bytes, pos: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for _ in range(count):
        if pos + 24 > len(body):
            raise RtpError(f"RTCP report block truncated ({count} declared)")
        ssrc, lost, seq, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(body, pos)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, seq, jitter, lsr, dlsr))
        pos += 24
    return tuple(blocks)


def parse_rtcp(data: bytes) -> list[RtcpItem]:
    """Parse a compound RTCP packet (RFC 3550 6.1).

    :raises RtpError: not version 2 or a length that overruns the datagram.
    """
    items: list[RtcpItem] = []
    pos = 0
    if len(data) < 4:
        raise RtpError(f"RTCP packet of {len(data)} bytes is shorter than its 4-byte header")
    while pos + 4 <= len(data):
        b0, pt, words = struct.unpack_from(">BBH", data, pos)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTCP version is {b0 >> 6}, expected 2")
        size = 4 * (words + 1)
        if pos + size > len(data):
            raise RtpError(f"RTCP packet type {pt} declares {size} bytes, {len(data) - pos} remain")
        body = bytes(data[pos + 4 : pos + size])
        if b0 & 0x20 and body:
            pad = body[-1]
            if pad > len(body):
                raise RtpError("RTCP padding overruns the packet")
            body = body[: len(body) - pad]
        count = b0 & 0x1F
        if pt == RTCP_SR:
            if len(body) < 24:
                raise RtpError("RTCP SR shorter than its sender info")
            ssrc, msw, lsw, rtp_ts, pcount, ocount = _SR.unpack_from(body)
            items.append(SenderReport(ssrc, msw << 32 | lsw, rtp_ts, pcount, ocount, _report_blocks(body, 24, count)))
        elif pt == RTCP_RR:
            if len(body) < 4:
                raise RtpError("RTCP RR shorter than its SSRC")
            (ssrc,) = _U32.unpack_from(body)
            items.append(ReceiverReport(ssrc, _report_blocks(body, 4, count)))
        elif pt == RTCP_BYE:
            if len(body) < 4 * count:
                raise RtpError("RTCP BYE shorter than its SSRC list")
            items.append(Bye(tuple(struct.unpack_from(f">{count}I", body))))
        else:
            items.append(RtcpPacket(pt, count, body))
        pos += size
    if pos != len(data):
        raise RtpError(f"{len(data) - pos} trailing bytes after the last RTCP packet")
    return items


def build_sender_report(ssrc: int, ntp: int, rtp_timestamp: int, packet_count: int, octet_count: int) -> bytes:
    """An RTCP SR with no report blocks (we only send)."""
    return struct.pack(">BBH", 0x80, RTCP_SR, 6) + _SR.pack(
        ssrc, (ntp >> 32) & 0xFFFFFFFF, ntp & 0xFFFFFFFF, rtp_timestamp & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF, octet_count & 0xFFFFFFFF)


def build_receiver_report(ssrc: int, blocks: Sequence[ReportBlock] = ()) -> bytes:
    body = [_U32.pack(ssrc)]
    for b in blocks:
        body.append(_REPORT_BLOCK.pack(b.ssrc, (b.fraction_lost & 0xFF) << 24 | (b.cumulative_lost & 0xFFFFFF),
                                       b.highest_sequence, b.jitter, b.last_sr, b.delay_since_last_sr))
    payload = b"".join(body)
    return struct.pack(">BBH", 0x80 | len(blocks), RTCP_RR, len(payload) // 4) + payload


def build_sdes_cname(ssrc: int, cname: str) -> bytes:
    """An SDES packet with one chunk carrying a CNAME (RFC 3550 6.5.1)."""
    text = cname.encode()[:255]
    chunk = _U32.pack(ssrc) + bytes((1, len(text))) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return struct.pack(">BBH", 0x81, RTCP_SDES, len(chunk) // 4) + chunk


def build_bye(ssrc: int) -> bytes:
    return struct.pack(">BBHI", 0x81, RTCP_BYE, 1, ssrc)


# ---------------------------------------------------------------------------
# Packetizers
# ---------------------------------------------------------------------------


def packetize_h264(nals: Sequence[bytes], mtu: int = DEFAULT_MTU) -> list[bytes]:
    """RTP payloads for one access unit: a single-NAL packet for each NAL unit
    that fits, FU-A fragments for the others (RFC 6184 5.6, 5.8).  The caller
    sets the marker bit on the last payload."""
    if mtu < 3:
        raise ValueError("mtu too small for FU-A")
    out: list[bytes] = []
    for nal in nals:
        if not nal:
            continue
        if len(nal) <= mtu:
            out.append(nal)
            continue
        indicator = (nal[0] & 0xE0) | H264_FU_A
        nal_type = nal[0] & 0x1F
        body = memoryview(nal)[1:]
        step = mtu - 2
        for start in range(0, len(body), step):
            header = nal_type
            if start == 0:
                header |= 0x80
            if start + step >= len(body):
                header |= 0x40
            out.append(bytes((indicator, header)) + body[start : start + step])
    return out


def packetize_h265(nals: Sequence[bytes], mtu: int = DEFAULT_MTU) -> list[bytes]:
    """RTP payloads for one H.265 access unit (RFC 7798 4.4.1 and 4.4.3)."""
    if mtu < 4:
        raise ValueError("mtu too small for H.265 FU")
    out: list[bytes] = []
    for nal in nals:
        if len(nal) < 2:
            continue
        if len(nal) <= mtu:
            out.append(nal)
            continue
        nal_type = (nal[0] >> 1) & 0x3F
        payload_header = bytes(((nal[0] & 0x81) | (H265_FU << 1), nal[1]))
        body = memoryview(nal)[2:]
        step = mtu - 3
        for start in range(0, len(body), step):
            header = nal_type
            if start == 0:
                header |= 0x80
            if start + step >= len(body):
                header |= 0x40
            out.append(payload_header + bytes((header,)) + body[start : start + step])
    return out


def packetize_aac(au: bytes, mtu: int = DEFAULT_MTU) -> list[bytes]:
    """RTP payloads for one AAC access unit, ``mode=AAC-hbr`` (sizelength 13,
    indexlength 3): one AU per packet, fragmented across packets when it does
    not fit (RFC 3640 3.2.3: every fragment repeats the whole AU's size)."""
    if len(au) >= 1 << 13:
        raise RtpError(f"AAC access unit of {len(au)} bytes does not fit a 13-bit AU-size")
    header = b"\x00\x10" + _U16.pack(len(au) << 3)
    step = mtu - 4
    if len(au) <= step:
        return [header + au]
    return [header + au[start : start + step] for start in range(0, len(au), step)]


# ---------------------------------------------------------------------------
# Depacketizers
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class AccessUnit:
    """One reassembled access unit: its RTP timestamp and its NAL units (video)
    or its raw AAC frame (audio, ``nals`` holds one element)."""

    timestamp: int
    nals: list[bytes] = field(default_factory=list)
    damaged: bool = False


class _VideoDepacketizer:
    """Shared access-unit assembly for H.264 / H.265.

    An access unit ends at a packet with the marker bit, or when a packet with
    another timestamp arrives (a sender that never sets the marker).  A lost
    packet (sequence gap) drops the fragmented NAL unit it was part of and
    marks the access unit ``damaged``.
    """

    def __init__(self) -> None:
        self._nals: list[bytes] = []
        self._size = 0
        self._timestamp: int | None = None
        self._damaged = False
        self._fragment: bytearray | None = None
        self._last_seq: int | None = None
        self.lost_packets = 0

    def feed(self, packet: RtpPacket) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        if self._timestamp is not None and packet.timestamp != self._timestamp and (self._nals or self._fragment):
            au = self._flush()
            if au is not None:
                out.append(au)
        if self._last_seq is not None:
            gap = (packet.sequence - self._last_seq - 1) & 0xFFFF
            if gap and gap < 0x8000:
                self.lost_packets += gap
                self._damaged = True
                self._fragment = None
            elif gap >= 0x8000:
                return out  # duplicate or reordered-late packet: ignore
        self._last_seq = packet.sequence
        self._timestamp = packet.timestamp
        if packet.payload:
            self._payload(packet.payload)
        if self._size > MAX_ACCESS_UNIT:
            self._reset()
            raise RtpError(f"access unit exceeds {MAX_ACCESS_UNIT} bytes without an end")
        if packet.marker:
            au = self._flush()
            if au is not None:
                out.append(au)
        return out

    def _payload(self, payload: bytes) -> None:
        raise NotImplementedError

    def _add(self, nal: bytes) -> None:
        if nal:
            self._nals.append(nal)
            self._size += len(nal)

    def _fragment_start(self, header: bytes, data: bytes) -> None:
        self._fragment = bytearray(header)
        self._fragment += data

    def _fragment_more(self, data: bytes, end: bool) -> None:
        frag = self._fragment
        if frag is None:
            self._damaged = True  # the start was lost
            return
        frag += data
        self._size += len(data)
        if end:
            self._fragment = None
            self._add(bytes(frag))

    def _flush(self) -> AccessUnit | None:
        if self._fragment is not None:
            self._damaged = True  # unfinished fragmented NAL unit: dropped
        au = None
        if self._nals and self._timestamp is not None:
            au = AccessUnit(self._timestamp, self._nals, self._damaged)
        self._reset()
        return au

    def _reset(self) -> None:
        self._nals = []
        self._size = 0
        self._damaged = False
        self._fragment = None


class H264Depacketizer(_VideoDepacketizer):
    """RFC 6184 non-interleaved mode: single NAL units, STAP-A and FU-A."""

    def _payload(self, payload: bytes) -> None:
        nal_type = payload[0] & 0x1F
        if 1 <= nal_type <= 23:
            self._add(payload)
        elif nal_type == H264_STAP_A:
            pos = 1
            while pos + 2 <= len(payload):
                (size,) = _U16.unpack_from(payload, pos)
                pos += 2
                if size == 0 or pos + size > len(payload):
                    raise RtpError(f"STAP-A NAL unit of {size} bytes overruns the {len(payload)}-byte packet")
                self._add(payload[pos : pos + size])
                pos += size
        elif nal_type == H264_FU_A:
            if len(payload) < 3:
                raise RtpError(f"FU-A packet of {len(payload)} bytes is too short")
            fu = payload[1]
            if fu & 0x80:
                if fu & 0x40:
                    raise RtpError("FU-A with both start and end bits set")
                self._fragment_start(bytes(((payload[0] & 0xE0) | (fu & 0x1F),)), payload[2:])
            else:
                self._fragment_more(payload[2:], bool(fu & 0x40))
        elif nal_type in (H264_STAP_B, H264_MTAP16, H264_MTAP24, H264_FU_B):
            raise RtpError(f"H.264 packet type {nal_type} needs interleaved mode, which is not supported")
        else:
            raise RtpError(f"H.264 RTP payload has reserved NAL unit type {nal_type}")


class H265Depacketizer(_VideoDepacketizer):
    """RFC 7798 without DONL: single NAL units, APs and FUs (PACI skipped)."""

    def _payload(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise RtpError(f"H.265 RTP payload of {len(payload)} bytes is shorter than its header")
        nal_type = (payload[0] >> 1) & 0x3F
        if nal_type < H265_AP:
            self._add(payload)
        elif nal_type == H265_AP:
            pos = 2
            while pos + 2 <= len(payload):
                (size,) = _U16.unpack_from(payload, pos)
                pos += 2
                if size < 2 or pos + size > len(payload):
                    raise RtpError(f"H.265 AP NAL unit of {size} bytes overruns the {len(payload)}-byte packet")
                self._add(payload[pos : pos + size])
                pos += size
        elif nal_type == H265_FU:
            if len(payload) < 4:
                raise RtpError(f"H.265 FU packet of {len(payload)} bytes is too short")
            fu = payload[2]
            if fu & 0x80:
                if fu & 0x40:
                    raise RtpError("H.265 FU with both start and end bits set")
                header = bytes(((payload[0] & 0x81) | ((fu & 0x3F) << 1), payload[1]))
                self._fragment_start(header, payload[3:])
            else:
                self._fragment_more(payload[3:], bool(fu & 0x40))
        elif nal_type == H265_PACI:
            pass
        else:
            raise RtpError(f"H.265 RTP payload has reserved NAL unit type {nal_type}")


class AacDepacketizer:
    """RFC 3640 ``mpeg4-generic`` AU-header parsing (AAC-hbr / AAC-lbr).

    Several AUs in one packet get timestamps ``ts + i * frame_samples``; an AU
    larger than its packet is reassembled from the following packets.
    """

    def __init__(self, size_length: int = 13, index_length: int = 3, index_delta_length: int = 3,
                 frame_samples: int = 1024) -> None:
        if size_length <= 0 or size_length > 16 or index_length > 8 or index_delta_length > 8:
            raise RtpError(f"unsupported AU-header layout sizelength={size_length} indexlength={index_length}")
        self.size_length = size_length
        self.index_length = index_length
        self.index_delta_length = index_delta_length
        self.frame_samples = frame_samples
        self._partial: bytearray | None = None
        self._partial_size = 0
        self._partial_ts = 0
        self._last_seq: int | None = None

    def feed(self, packet: RtpPacket) -> list[AccessUnit]:
        if self._last_seq is not None:
            gap = (packet.sequence - self._last_seq - 1) & 0xFFFF
            if gap >= 0x8000:
                return []
            if gap:
                self._partial = None
        self._last_seq = packet.sequence
        data = packet.payload
        if len(data) < 2:
            raise RtpError(f"mpeg4-generic payload of {len(data)} bytes has no AU-headers-length")
        (header_bits,) = _U16.unpack_from(data)
        header_bytes = (header_bits + 7) // 8
        if 2 + header_bytes > len(data):
            raise RtpError(f"AU header section of {header_bits} bits overruns the {len(data)}-byte packet")
        sizes = self._au_sizes(data[2 : 2 + header_bytes], header_bits)
        pos = 2 + header_bytes
        if self._partial is not None:
            # continuation of a fragmented AU: the header repeats its full size
            self._partial += data[pos:]
            if packet.marker or len(self._partial) >= self._partial_size:
                au = bytes(self._partial[: self._partial_size])
                ts = self._partial_ts
                self._partial = None
                return [AccessUnit(ts, [au])] if len(au) == self._partial_size else []
            return []
        out: list[AccessUnit] = []
        for i, size in enumerate(sizes):
            if pos + size > len(data):
                if len(sizes) == 1:
                    self._partial = bytearray(data[pos:])
                    self._partial_size = size
                    self._partial_ts = packet.timestamp
                    return out
                raise RtpError(f"AU {i} of {size} bytes overruns the {len(data)}-byte packet")
            out.append(AccessUnit((packet.timestamp + i * self.frame_samples) & 0xFFFFFFFF, [data[pos : pos + size]]))
            pos += size
        return out

    def _au_sizes(self, headers: bytes, bits: int) -> list[int]:
        value = int.from_bytes(headers, "big") if headers else 0
        total = len(headers) * 8
        pos = 0
        sizes: list[int] = []
        first = True
        while pos < bits:
            width = self.size_length + (self.index_length if first else self.index_delta_length)
            if pos + width > bits:
                raise RtpError(f"AU header section of {bits} bits ends inside an AU header")
            size = (value >> (total - pos - self.size_length)) & ((1 << self.size_length) - 1)
            sizes.append(size)
            pos += width
            first = False
        return sizes
