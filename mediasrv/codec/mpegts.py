"""MPEG-2 transport stream muxer for HLS (sans-IO, ISO/IEC 13818-1).

One program (number 1) with at most one video elementary stream (H.264 or
H.265, Annex B) and one audio elementary stream (AAC in ADTS).  The muxer
turns :class:`~mediasrv.core.frames.MediaFrame` objects into 188-byte TS
packets:

* PAT (PID 0) and PMT (PID 0x1000) at the start of every segment
  (:meth:`TsMuxer.tables`), so each HLS segment decodes on its own
  (RFC 8216 3.5);
* one PES per video access unit: an access unit delimiter first, the
  parameter sets (VPS/SPS/PPS from the track's decoder configuration) before
  every keyframe, then the frame's NAL units with 4-byte start codes;
* audio PES carrying one or more ADTS frames (:meth:`TsMuxer.audio_frames`);
* the PCR on the video PID (audio PID when there is no video) in the first
  packet of every PES of that PID, ``random_access_indicator`` on keyframes,
  and per-PID continuity counters that run on across segments.

Timestamps: frames carry milliseconds; PTS/DTS are 90 kHz, shifted by
:data:`TS_OFFSET_MS` so they stay ahead of the PCR (which follows the decode
time), and wrap at 33 bits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mediasrv.codec import aac, h264, h265
from mediasrv.codec.bits import avcc_to_nals
from mediasrv.core.frames import Codec, MediaFrame, Track

__all__ = ["AUDIO_PID", "PMT_PID", "TS_OFFSET_MS", "TsMuxer", "VIDEO_PID", "crc32_mpeg", "TS_PACKET_SIZE"]

TS_PACKET_SIZE = 188
PAT_PID = 0x0000
PMT_PID = 0x1000
VIDEO_PID = 0x0100
AUDIO_PID = 0x0101
PROGRAM_NUMBER = 1

#: PTS/DTS lead over the PCR, in ms (the PCR is the decode time itself).
TS_OFFSET_MS = 100

STREAM_TYPE = {Codec.H264: 0x1B, Codec.H265: 0x24, Codec.AAC: 0x0F}
_STREAM_ID_VIDEO = 0xE0
_STREAM_ID_AUDIO = 0xC0
_MASK33 = (1 << 33) - 1

_AUD = {Codec.H264: b"\x00\x00\x00\x01\x09\xf0", Codec.H265: b"\x00\x00\x00\x01\x46\x01\x50"}
_START = b"\x00\x00\x00\x01"


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg(data: bytes) -> int:
    """CRC-32/MPEG-2 (poly 0x04C11DB7, init all ones, no reflection, no final xor), Annex A."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) ^ b) & 0xFF]
    return crc


def _timestamp(prefix: int, ts: int) -> bytes:
    """A 5-byte PTS or DTS field (2.4.3.7)."""
    ts &= _MASK33
    return bytes((
        (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
        (ts >> 22) & 0xFF,
        ((ts >> 14) & 0xFE) | 1,
        (ts >> 7) & 0xFF,
        ((ts << 1) & 0xFE) | 1,
    ))


def _pcr(base: int) -> bytes:
    """program_clock_reference: 33-bit base (90 kHz), 6 reserved bits, 9-bit extension 0."""
    base &= _MASK33
    return bytes((
        (base >> 25) & 0xFF,
        (base >> 17) & 0xFF,
        (base >> 9) & 0xFF,
        (base >> 1) & 0xFF,
        ((base & 1) << 7) | 0x7E,
        0,
    ))


@dataclass
class _Pid:
    pid: int
    cc: int = 0


@dataclass
class TsMuxer:
    """Muxes the frames of one stream; keep one per stream so continuity
    counters stay continuous.  ``video`` / ``audio`` are the stream's tracks
    (either may be None)."""

    video: Track | None
    audio: Track | None
    _pids: dict[int, _Pid] = field(default_factory=dict, init=False)
    _param_sets: bytes = field(default=b"", init=False)
    _length_size: int = field(default=4, init=False)
    _adts: aac.AacConfig | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.video is not None:
            self._param_sets, self._length_size = _video_config(self.video)
        if self.audio is not None:
            try:
                self._adts = aac.parse_asc(self.audio.config)
            except ValueError:
                self._adts = None

    @property
    def pcr_pid(self) -> int:
        return VIDEO_PID if self.video is not None else AUDIO_PID

    # -- PSI ----------------------------------------------------------------
    def tables(self) -> bytes:
        """PAT and PMT, one TS packet each."""
        return self._psi(PAT_PID, self._pat()) + self._psi(PMT_PID, self._pmt())

    def _pat(self) -> bytes:
        body = PROGRAM_NUMBER.to_bytes(2, "big") + (0xE000 | PMT_PID).to_bytes(2, "big")
        return _section(0x00, 1, body)

    def _pmt(self) -> bytes:
        body = bytearray((0xE000 | self.pcr_pid).to_bytes(2, "big"))
        body += b"\xf0\x00"  # program_info_length 0
        for track, pid in ((self.video, VIDEO_PID), (self.audio, AUDIO_PID)):
            if track is not None:
                body.append(STREAM_TYPE[track.codec])
                body += (0xE000 | pid).to_bytes(2, "big") + b"\xf0\x00"
        return _section(0x02, PROGRAM_NUMBER, bytes(body))

    def _psi(self, pid: int, section: bytes) -> bytes:
        payload = b"\x00" + section  # pointer_field
        return self._packet(pid, True, b"", payload.ljust(184, b"\xff"))

    # -- PES ----------------------------------------------------------------
    def video_frame(self, frame: MediaFrame) -> bytes:
        """One video access unit as TS packets (with PCR, and RAI on keyframes)."""
        es = self.annexb(frame)
        pts = (frame.pts + TS_OFFSET_MS) * 90
        dts = (frame.dts + TS_OFFSET_MS) * 90
        if pts != dts:
            header = b"\xc0\x0a" + _timestamp(3, pts) + _timestamp(1, dts)
        else:
            header = b"\x80\x05" + _timestamp(2, pts)
        pes = _pes(_STREAM_ID_VIDEO, header, es)
        pcr = frame.dts * 90 if self.pcr_pid == VIDEO_PID else None
        return self._packetize(VIDEO_PID, pes, pcr, frame.keyframe)

    def audio_frames(self, frames: Iterable[MediaFrame]) -> bytes:
        """Consecutive AAC frames as one PES of ADTS frames (PTS of the first)."""
        frames = list(frames)
        if not frames:
            return b""
        es = b"".join(self.adts(f) for f in frames)
        pts = (frames[0].pts + TS_OFFSET_MS) * 90
        pes = _pes(_STREAM_ID_AUDIO, b"\x80\x05" + _timestamp(2, pts), es)
        pcr = frames[0].dts * 90 if self.pcr_pid == AUDIO_PID else None
        return self._packetize(AUDIO_PID, pes, pcr, self.video is None)

    def frame(self, frame: MediaFrame) -> bytes:
        return self.audio_frames([frame]) if frame.codec is Codec.AAC else self.video_frame(frame)

    def annexb(self, frame: MediaFrame) -> bytes:
        """The access unit in Annex B: AUD, parameter sets on keyframes, NAL units."""
        codec = frame.codec
        nals = avcc_to_nals(frame.payload, self._length_size)
        params: tuple[int, ...]
        if codec is Codec.H264:
            types = [n[0] & 0x1F for n in nals]
            aud, params = h264.NAL_AUD, (h264.NAL_SPS, h264.NAL_PPS)
        else:
            types = [(n[0] >> 1) & 0x3F for n in nals]
            aud, params = h265.NAL_AUD, (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS)
        parts = [_AUD[codec]]
        if frame.keyframe and self._param_sets and not any(t in params for t in types):
            parts.append(self._param_sets)
        for nal, t in zip(nals, types, strict=True):
            if t != aud:
                parts.append(_START)
                parts.append(nal)
        return b"".join(parts)

    def adts(self, frame: MediaFrame) -> bytes:
        if self._adts is None:
            raise ValueError("the audio track has no usable AudioSpecificConfig for ADTS")
        return aac.adts_header(self._adts, len(frame.payload)) + frame.payload

    # -- packets ------------------------------------------------------------
    def _cc(self, pid: int) -> int:
        p = self._pids.get(pid)
        if p is None:
            p = self._pids[pid] = _Pid(pid)
        cc = p.cc
        p.cc = (cc + 1) & 0x0F
        return cc

    def _packet(self, pid: int, start: bool, adaptation: bytes, payload: bytes) -> bytes:
        """One packet; ``adaptation`` is the whole adaptation field (length byte included)."""
        afc = 0x30 if adaptation else 0x10
        head = bytes((0x47, (0x40 if start else 0) | (pid >> 8), pid & 0xFF, afc | self._cc(pid)))
        return head + adaptation + payload

    def _packetize(self, pid: int, pes: bytes, pcr: int | None, random_access: bool) -> bytes:
        out: list[bytes] = []
        view = memoryview(pes)
        pos, total = 0, len(pes)
        first = True
        while pos < total:
            flags = 0
            extra = b""
            if first:
                if random_access:
                    flags |= 0x40
                if pcr is not None:
                    flags |= 0x10
                    extra = _pcr(pcr)
            # adaptation field without stuffing: length byte + flags byte + fields
            af_len = 2 + len(extra) if flags else 0
            room = 184 - af_len
            remaining = total - pos
            if remaining < room:
                # stuff the adaptation field so the payload ends the packet exactly
                stuffing = room - remaining
                if af_len:
                    af_len += stuffing
                elif stuffing == 1:
                    af_len = 1
                else:
                    af_len = stuffing
                room = remaining
            if af_len == 0:
                adaptation = b""
            elif af_len == 1:
                adaptation = b"\x00"
            else:
                fill = af_len - 2 - len(extra)
                adaptation = bytes((af_len - 1, flags)) + extra + b"\xff" * fill
            out.append(self._packet(pid, first, adaptation, bytes(view[pos:pos + room])))
            pos += room
            first = False
        return b"".join(out)


def _section(table_id: int, table_ext: int, body: bytes) -> bytes:
    """A long-form PSI section with version 0, current, section 0 of 0, and its CRC."""
    length = 5 + len(body) + 4
    head = bytes((table_id, 0xB0 | (length >> 8), length & 0xFF)) + table_ext.to_bytes(2, "big") + b"\xc1\x00\x00"
    section = head + body
    return section + crc32_mpeg(section).to_bytes(4, "big")


def _pes(stream_id: int, header: bytes, es: bytes) -> bytes:
    """PES packet: start code, stream id, length (0 = unbounded video), '10' flags byte 0x84
    (data_alignment_indicator), then ``header`` (flags + header length + timestamps)."""
    length = 1 + len(header) + len(es)
    if length > 0xFFFF:
        if stream_id != _STREAM_ID_VIDEO:
            raise ValueError(f"audio PES of {length} bytes exceeds PES_packet_length")
        length = 0
    return b"\x00\x00\x01" + bytes((stream_id,)) + length.to_bytes(2, "big") + b"\x84" + header + es


def _video_config(track: Track) -> tuple[bytes, int]:
    """(parameter sets in Annex B, NAL length size) from an avcC / hvcC record."""
    try:
        if track.codec is Codec.H264:
            avc = h264.parse_avc_config(track.config)
            sets = [*avc.sps, *avc.pps]
            size = avc.nal_length_size
        else:
            hevc = h265.parse_hevc_config(track.config)
            sets = [*hevc.vps, *hevc.sps, *hevc.pps]
            size = hevc.nal_length_size
    except ValueError:
        return b"", 4
    return b"".join(_START + s for s in sets), size
