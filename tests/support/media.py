"""Media fixtures as the core sees them: tracks and MediaFrames read from FLV,
plus a tiny MPEG-TS demuxer used to check the muxer by parsing its output back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mediasrv.codec import flv
from mediasrv.core import flvmux
from mediasrv.core.frames import Codec, MediaFrame, Track, TrackKind
from mediasrv.core.sessions import Role
from tests.conftest import FIXTURES

if TYPE_CHECKING:
    from twisted.internet.task import Clock

    from mediasrv.core.context import Core
    from mediasrv.core.stream import Stream


def load_flv(path: Path = FIXTURES / "h264_aac_720p.flv") -> tuple[dict[TrackKind, Track], list[MediaFrame]]:
    """Tracks and frames of an FLV file (video payloads length-prefixed, audio raw AUs)."""
    tracks: dict[TrackKind, Track] = {}
    frames: list[MediaFrame] = []
    for tag in flv.FlvReader().feed(path.read_bytes()):
        if tag.tag_type == flv.TAG_VIDEO:
            p = flv.parse_video(tag.payload)
            if p.kind == "config" and p.codec is not None:
                tracks[TrackKind.VIDEO] = flvmux.track_from_config(p.codec, p.data)
            elif p.kind == "frame" and p.codec is not None:
                frames.append(MediaFrame(p.codec, tag.timestamp, tag.timestamp + p.cts, p.keyframe, p.data))
        elif tag.tag_type == flv.TAG_AUDIO:
            a = flv.parse_audio(tag.payload)
            if a.config:
                tracks[TrackKind.AUDIO] = flvmux.track_from_config(Codec.AAC, a.data)
            else:
                frames.append(MediaFrame(Codec.AAC, tag.timestamp, tag.timestamp, True, a.data))
    return tracks, frames


def looped(frames: list[MediaFrame], seconds: float, period_ms: int | None = None,
           start_ms: int = 0) -> list[MediaFrame]:
    """Repeat ``frames`` (shifting timestamps by ``period_ms`` per loop, dropping
    frames at or past ``period_ms``) to cover ``seconds``, from ``start_ms``."""
    if period_ms is None:
        last = max(f.dts for f in frames)
        period_ms = last + 40
    frames = [f for f in frames if f.dts < period_ms]
    out: list[MediaFrame] = []
    loop = 0
    while True:
        base = loop * period_ms + start_ms
        for f in frames:
            if base + f.dts >= seconds * 1000 + start_ms:
                return out
            out.append(MediaFrame(f.codec, f.dts + base, f.pts + base, f.keyframe, f.payload))
        loop += 1


@dataclass
class Pes:
    pid: int
    stream_id: int
    pts: int | None
    dts: int | None
    data: bytes
    random_access: bool = False
    pcr: int | None = None


@dataclass
class TsParse:
    """What :func:`parse_ts` found."""

    pmt_pid: int | None = None
    pcr_pid: int | None = None
    streams: dict[int, int] = field(default_factory=dict)  # pid -> stream_type
    pes: list[Pes] = field(default_factory=list)
    cc_errors: list[str] = field(default_factory=list)
    crc_ok: bool = True
    packets: int = 0


def _ts(b: bytes) -> int:
    return ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def parse_ts(data: bytes, check_cc_from: dict[int, int] | None = None) -> TsParse:
    """Demux a transport stream: PAT/PMT, PES with PTS/DTS, PCR, continuity counters."""
    from mediasrv.codec.mpegts import crc32_mpeg

    assert len(data) % 188 == 0, f"{len(data)} bytes is not a whole number of TS packets"
    out = TsParse()
    last_cc: dict[int, int] = dict(check_cc_from or {})
    building: dict[int, tuple[bytearray, bool, int | None]] = {}

    def finish(pid: int) -> None:
        buf, rai, pcr = building.pop(pid)
        b = bytes(buf)
        assert b[:3] == b"\x00\x00\x01", f"PES on PID {pid:#x} has no start code"
        stream_id = b[3]
        plen = int.from_bytes(b[4:6], "big")
        flags = b[7]
        hlen = b[8]
        pts = dts = None
        if flags & 0x80:
            pts = _ts(b[9:14])
        if flags & 0x40:
            dts = _ts(b[14:19])
        payload = b[9 + hlen:]
        if plen:
            assert plen == len(b) - 6, f"PES_packet_length {plen} but {len(b) - 6} bytes"
        out.pes.append(Pes(pid, stream_id, pts, dts, payload, rai, pcr))

    for off in range(0, len(data), 188):
        pkt = data[off:off + 188]
        out.packets += 1
        assert pkt[0] == 0x47, f"lost sync at {off}"
        pusi = bool(pkt[1] & 0x40)
        pid = (pkt[1] & 0x1F) << 8 | pkt[2]
        afc = (pkt[3] >> 4) & 3
        cc = pkt[3] & 0x0F
        pos = 4
        rai = False
        pcr = None
        if afc & 2:
            alen = pkt[4]
            if alen:
                aflags = pkt[5]
                rai = bool(aflags & 0x40)
                if aflags & 0x10:
                    p = pkt[6:12]
                    pcr = (p[0] << 25) | (p[1] << 17) | (p[2] << 9) | (p[3] << 1) | (p[4] >> 7)
                assert all(x == 0xFF for x in pkt[5 + 1 + (6 if aflags & 0x10 else 0):5 + alen]), "bad stuffing"
            pos = 5 + alen
            assert pos <= 188
        if afc & 1:
            if pid in last_cc and (last_cc[pid] + 1) & 0x0F != cc:
                out.cc_errors.append(f"PID {pid:#x}: cc {cc} after {last_cc[pid]}")
            last_cc[pid] = cc
        payload = pkt[pos:] if afc & 1 else b""
        if pid == 0 and pusi:
            sec = payload[1 + payload[0]:]
            slen = ((sec[1] & 0x0F) << 8) | sec[2]
            out.crc_ok &= crc32_mpeg(sec[:3 + slen - 4]) == int.from_bytes(sec[3 + slen - 4:3 + slen], "big")
            out.pmt_pid = ((sec[10] & 0x1F) << 8) | sec[11]
            continue
        if pid == out.pmt_pid and pusi:
            sec = payload[1 + payload[0]:]
            slen = ((sec[1] & 0x0F) << 8) | sec[2]
            out.crc_ok &= crc32_mpeg(sec[:3 + slen - 4]) == int.from_bytes(sec[3 + slen - 4:3 + slen], "big")
            out.pcr_pid = ((sec[8] & 0x1F) << 8) | sec[9]
            info = ((sec[10] & 0x0F) << 8) | sec[11]
            p = 12 + info
            end = 3 + slen - 4
            while p < end:
                st = sec[p]
                epid = ((sec[p + 1] & 0x1F) << 8) | sec[p + 2]
                elen = ((sec[p + 3] & 0x0F) << 8) | sec[p + 4]
                out.streams[epid] = st
                p += 5 + elen
            continue
        if pid in out.streams:
            if pusi:
                if pid in building:
                    finish(pid)
                building[pid] = (bytearray(payload), rai, pcr)
            elif pid in building:
                building[pid][0].extend(payload)
    for pid in list(building):
        finish(pid)
    return out


def load_annexb_hevc(path: Path = FIXTURES / "h265_720p.hevc", frame_ms: int = 40) -> tuple[Track, list[MediaFrame]]:
    """An H.265 Annex B elementary stream as a Track (hvcC) and frames (one per
    picture, decode order, ``frame_ms`` apart, dts == pts)."""
    from mediasrv.codec import h265
    from mediasrv.codec.bits import nals_to_avcc, split_annexb

    nals = split_annexb(path.read_bytes())
    vps = [n for n in nals if h265.nal_type(n) == h265.NAL_VPS][:1]
    sps = [n for n in nals if h265.nal_type(n) == h265.NAL_SPS][:1]
    pps = [n for n in nals if h265.nal_type(n) == h265.NAL_PPS][:1]
    track = flvmux.track_from_config(Codec.H265, h265.build_hevc_config(vps, sps, pps))
    pictures: list[list[bytes]] = []
    for n in nals:
        t = h265.nal_type(n)
        if t < 32 and n[2] & 0x80:  # VCL with first_slice_segment_in_pic_flag: a new picture
            pictures.append([n])
        elif t < 32 and pictures:
            pictures[-1].append(n)
    frames = []
    for i, pic in enumerate(pictures):
        key = h265.is_irap(h265.nal_type(pic[0]))
        frames.append(MediaFrame(Codec.H265, i * frame_ms, i * frame_ms, key, nals_to_avcc(pic)))
    return track, frames


class Publisher:
    """A stream fed with the fixture's frames (one keyframe per second), the clock following the media."""

    def __init__(self, core: Core, clock: Clock, name: str = "test", options: dict[str, str] | None = None) -> None:
        self.core, self.clock = core, clock
        self.session = core.sessions.open("rtmp", "10.0.0.1", 50000, 1935, clock.seconds())
        self.session.role = Role.PUBLISHER
        self.session.app, self.session.stream = "live", name
        self.stream: Stream = core.registry.publish(core.registry.key("", "live", name), self.session)
        self.stream.options.update(options or {})
        tracks, _ = load_flv()
        for kind in (TrackKind.VIDEO, TrackKind.AUDIO):
            self.stream.set_track(tracks[kind])
        self.ms = 0
        self._source = self._frames()
        self._next: MediaFrame | None = None

    @staticmethod
    def _frames() -> Iterator[MediaFrame]:
        _, frames = load_flv()
        base = 0
        while True:
            for f in looped(frames, 1, period_ms=1000, start_ms=base):
                # one keyframe a second (the fixture's other IDR pictures count as plain frames)
                key = f.keyframe and (f.kind is TrackKind.AUDIO or f.dts % 1000 == 0)
                yield MediaFrame(f.codec, f.dts, f.pts, key, f.payload)
            base += 1000

    def feed(self, seconds: float) -> None:
        """Media up to ``seconds`` more (the stream time continues from the last feed)."""
        end = self.ms + int(seconds * 1000)
        last = self.ms
        while True:
            f = self._next or next(self._source)
            if f.dts >= end:
                self._next = f
                break
            self._next = None
            if f.dts > last:
                self.clock.advance((f.dts - last) / 1000)
                last = f.dts
            self.stream.write(f)
        if end > last:
            self.clock.advance((end - last) / 1000)
        self.ms = end

    def stop(self) -> None:
        self.core.registry.unpublish(self.stream, self.session, abrupt=False)
        self.core.sessions.close(self.session)
