"""Frames → RTP packets, once per frame, shared by every RTSP player (pure).

One :class:`StreamRtp` per stream holds one :class:`TrackMuxer` per track:
its SSRC, its sequence counter and its timestamp base are shared by all the
stream's RTSP players (ZLMediaKit's ``RtspMediaSource`` ring works the same
way), so the RTP packets of a frame are built the first time any player needs
them, cached in ``frame.muxed`` and sent as the same bytes to everyone.  For
TCP interleaving the ``$``/channel/length prefix depends on the player's
channel, so the interleaved form is cached per (frame, channel) too.

RTP timestamps are ``base + pts * clock_rate / 1000``; AAC timestamps are
snapped to whole frames (1024 samples) when the millisecond timestamps are
within rounding of that, so receivers see the exact cadence.  :class:`StreamRtp`
also keeps one wall-clock ↔ media-time mapping per stream, which gives the
NTP ↔ RTP pairs of the RTCP sender reports of every track (so players can
line audio up with video).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from mediasrv.codec import h264, h265, rtp
from mediasrv.codec.bits import CodecError, avcc_to_nals
from mediasrv.core.frames import Codec, MediaFrame, Track, TrackKind
from mediasrv.rtsp import media
from mediasrv.rtsp.parser import encode_interleaved

AAC_FRAME_SAMPLES = 1024
# How far (ms) the frames may run from the wall-clock mapping before it is re-anchored.
REANCHOR_MS = 3000


@dataclass(slots=True)
class FramePackets:
    """The RTP packets of one frame for one track muxer."""

    packets: list[bytes]
    first_sequence: int
    timestamp: int
    payload_bytes: int


class TrackMuxer:
    def __init__(self, track: Track, mtu: int = rtp.DEFAULT_MTU) -> None:
        self.codec = track.codec
        self.kind = track.kind
        self.payload_type = media.payload_type(track.kind)
        self.clock_rate = media.clock_rate(track)
        self.ssrc = secrets.randbits(32)
        self.sequence = secrets.randbits(15)  # RFC 3550 5.1: random start; low enough to be far from a wrap
        self.timestamp_base = secrets.randbits(31)
        self.mtu = mtu
        self.key = f"rtp:{self.ssrc:08x}"
        self._param_sets: tuple[bytes, list[bytes]] = (b"", [])
        self._last_audio: tuple[int, int] | None = None  # (pts ms, unwrapped rtp ts)

    def rtp_time(self, ms: float) -> int:
        return (self.timestamp_base + int(round(ms * self.clock_rate / 1000))) & 0xFFFFFFFF

    def _parameter_sets(self, track: Track | None) -> list[bytes]:
        if track is None or not track.config:
            return []
        cached_config, nals = self._param_sets
        if cached_config == track.config:
            return nals
        try:
            if track.codec is Codec.H264:
                cfg = h264.parse_avc_config(track.config)
                nals = list(cfg.sps) + list(cfg.pps)
            elif track.codec is Codec.H265:
                hcfg = h265.parse_hevc_config(track.config)
                nals = list(hcfg.vps) + list(hcfg.sps) + list(hcfg.pps)
            else:
                nals = []
        except CodecError:
            nals = []
        self._param_sets = (track.config, nals)
        return nals

    def _video_nals(self, frame: MediaFrame, track: Track | None) -> list[bytes]:
        nals = avcc_to_nals(frame.payload)
        if not frame.keyframe:
            return nals
        # Parameter sets ahead of every IDR/IRAP picture, unless the frame has them in band,
        # so a player that joins (or loses the SDP's copy) can always decode from here.
        if frame.codec is Codec.H264:
            has_sps = any(n and n[0] & 0x1F == h264.NAL_SPS for n in nals)
        else:
            has_sps = any(len(n) > 1 and (n[0] >> 1) & 0x3F == h265.NAL_SPS for n in nals)
        if has_sps:
            return nals
        return self._parameter_sets(track) + nals

    def _timestamp(self, frame: MediaFrame) -> int:
        ts = self.timestamp_base + int(round(frame.pts * self.clock_rate / 1000))
        if self.kind is TrackKind.AUDIO:
            last = self._last_audio
            if last is not None and frame.pts > last[0]:
                snapped = last[1] + AAC_FRAME_SAMPLES
                if abs(ts - snapped) <= self.clock_rate // 500:  # within 2 ms: keep the exact cadence
                    ts = snapped
            if last is None or frame.pts > last[0]:
                self._last_audio = (frame.pts, ts)
        return ts & 0xFFFFFFFF

    def packetize(self, frame: MediaFrame, track: Track | None) -> FramePackets:
        """The frame's packets, built on first use and cached on the frame."""
        cached: FramePackets | None = frame.muxed.get(self.key)
        if cached is not None:
            return cached
        if frame.kind is TrackKind.VIDEO:
            nals = self._video_nals(frame, track)
            if frame.codec is Codec.H265:
                payloads = rtp.packetize_h265(nals, self.mtu)
            else:
                payloads = rtp.packetize_h264(nals, self.mtu)
        else:
            try:
                payloads = rtp.packetize_aac(frame.payload, self.mtu)
            except rtp.RtpError:
                payloads = []
        ts = self._timestamp(frame)
        first = self.sequence
        packets = []
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            packets.append(rtp.build_rtp(self.payload_type, self.sequence, ts, self.ssrc, i == last, payload))
            self.sequence = (self.sequence + 1) & 0xFFFF
        result = FramePackets(packets, first, ts, sum(len(p) for p in payloads))
        frame.muxed[self.key] = result
        return result

    def interleaved(self, frame: MediaFrame, track: Track | None, channel: int) -> tuple[bytes, FramePackets]:
        """The frame as ``$``-framed packets on ``channel`` (cached per channel)."""
        fp = self.packetize(frame, track)
        key = f"{self.key}:{channel}"
        data: bytes | None = frame.muxed.get(key)
        if data is None:
            data = b"".join(encode_interleaved(channel, p) for p in fp.packets)
            frame.muxed[key] = data
        return data, fp


class StreamRtp:
    """The RTP muxers of one stream, plus its wall-clock ↔ media-time mapping.

    The mapping is fixed when the first frame is seen and kept while frames
    keep to it within :data:`REANCHOR_MS`: the NTP ↔ RTP pairs of successive
    sender reports then agree with each other, so receivers that switch to
    them (ffmpeg does at the first SR) see no jump.  A publisher that stalls
    or restarts its clock moves it.
    """

    def __init__(self) -> None:
        self.muxers: dict[TrackKind, TrackMuxer] = {}
        self._anchor: tuple[float, int] | None = None  # (wall seconds, pts ms)

    def muxer(self, track: Track) -> TrackMuxer:
        m = self.muxers.get(track.kind)
        if m is None or m.codec is not track.codec:
            m = TrackMuxer(track)
            self.muxers[track.kind] = m
        return m

    def saw_frame(self, frame: MediaFrame, now: float) -> None:
        """``frame`` has just arrived (it is being muxed for the first time)."""
        expected = self.media_time(now)
        if expected is None or abs(frame.pts - expected) > REANCHOR_MS:
            self._anchor = (now, frame.pts)

    def media_time(self, now: float) -> float | None:
        """The stream's pts (ms) that corresponds to wall time ``now``."""
        if self._anchor is None:
            return None
        wall, pts = self._anchor
        return pts + (now - wall) * 1000.0
