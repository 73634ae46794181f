"""RTP from an RTSP publisher → tracks and MediaFrames (pure).

Timestamps: RTP timestamps are per-track clocks with random origins, so they
are mapped onto one millisecond timeline shared by all tracks of the session:

* when the publisher sent an RTCP sender report for the track before its first
  access unit (ffmpeg, GStreamer and cameras do), through the SR's NTP ↔ RTP
  pair, which keeps audio and video in sync as the sender meant them;
* otherwise from the arrival time of the track's first access unit (MediaMTX
  does the same).

RTP carries presentation times; decode times for video are derived with a
reorder window (:class:`DtsGenerator`), which is exact for streams without
B-frames and, once the reordering depth is learned, for streams with them.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Generic, TypeVar

from mediasrv.codec import h264, h265, rtp
from mediasrv.codec.bits import CodecError, nals_to_avcc
from mediasrv.codec.rtp import RtcpItem
from mediasrv.core import flvmux
from mediasrv.core.frames import Codec, MediaFrame, Track, TrackKind
from mediasrv.rtsp.media import AnnouncedMedia

# Audio frames dropped while waiting for the video track's configuration before
# giving up on it and publishing audio alone.
MAX_AUDIO_WAIT_FRAMES = 250
MAX_REORDER_DEPTH = 16
# Assumed reordering depth of non-Baseline video until the stream shows its own.
DEFAULT_REORDER_DEPTH = 2

T = TypeVar("T")


class DtsGenerator(Generic[T]):
    """Decode timestamps from presentation timestamps in decode order.

    With a reordering depth ``d`` (the largest number of earlier pictures, in
    decode order, presented after a picture), the decode time of picture ``i``
    is the ``(i - d)``-th smallest presentation time: a min-heap of ``d + 1``
    values.  The first ``d`` pictures of a stream are held back until the heap
    is full; their decode times are then spread one frame apart below it.
    ``depth`` starts from a guess (2 fits x264's B-pyramid; 0 for Baseline)
    and grows when a stream reorders deeper, at the price of a short run of
    1 ms steps.  Decode times never go backwards and never below 0.
    """

    def __init__(self, depth: int = 0) -> None:
        self.depth = min(depth, MAX_REORDER_DEPTH)
        self._heap: list[int] = []
        self._recent: deque[int] = deque(maxlen=MAX_REORDER_DEPTH + 1)
        self._held: list[tuple[int, T]] = []
        self._last_dts: int | None = None

    def push(self, pts: int, item: T) -> list[tuple[int, T]]:
        """Add the next picture in decode order; returns ``(dts, item)`` pairs ready to go."""
        later = sum(1 for p in self._recent if p > pts)
        if later > self.depth:
            self.depth = min(later, MAX_REORDER_DEPTH)
        self._recent.append(pts)
        heapq.heappush(self._heap, pts)
        if self._last_dts is None:
            self._held.append((pts, item))
            if len(self._heap) <= self.depth:
                return []
            ordered = sorted(self._heap)
            step = (ordered[-1] - ordered[0]) // max(1, len(ordered) - 1)
            base = heapq.heappop(self._heap)
            held, self._held = self._held, []
            out = []
            last = -1
            for k, (_, held_item) in enumerate(held):
                dts = max(base - (len(held) - 1 - k) * step, last + 1, 0)
                out.append((dts, held_item))
                last = dts
            self._last_dts = last
            return out
        if len(self._heap) > self.depth:
            dts = heapq.heappop(self._heap)
        else:
            dts = self._last_dts + 1
        dts = max(dts, self._last_dts + 1)
        self._last_dts = dts
        return [(dts, item)]


class _Timeline:
    """The shared millisecond origin of one publishing session."""

    def __init__(self) -> None:
        self.base_wall: float | None = None
        self.base_ntp: float | None = None


class TrackIngest:
    def __init__(self, announced: AnnouncedMedia, timeline: _Timeline) -> None:
        self.media = announced
        self.codec = announced.codec
        self.kind = announced.kind
        self.clock_rate = announced.clock_rate or 90000
        self.track: Track | None = announced.track
        self.timeline = timeline
        self.unwrapper = rtp.TimestampUnwrapper()
        self.depacketizer: rtp.H264Depacketizer | rtp.H265Depacketizer | rtp.AacDepacketizer | None
        if self.codec is Codec.H264:
            self.depacketizer = rtp.H264Depacketizer()
        elif self.codec is Codec.H265:
            self.depacketizer = rtp.H265Depacketizer()
        elif self.codec is Codec.AAC:
            f = announced.fmtp

            def num(key: str, default: int) -> int:
                value = f.get(key, "")
                return int(value) if value.isdigit() else default

            self.depacketizer = rtp.AacDepacketizer(num("sizelength", 13), num("indexlength", 3),
                                                    num("indexdeltalength", 3))
        else:
            self.depacketizer = None
        self.dts: DtsGenerator[MediaFrame] | None = None
        self._sr: tuple[float, int] | None = None  # (unix seconds, unwrapped rtp ts) of the last SR
        self._ref: tuple[int, float] | None = None  # (unwrapped rtp ts, ms) anchoring this track
        self.packets = 0
        self.frames = 0

    @property
    def lost_packets(self) -> int:
        d = self.depacketizer
        return d.lost_packets if isinstance(d, (rtp.H264Depacketizer, rtp.H265Depacketizer)) else 0

    def sender_report(self, sr: rtp.SenderReport) -> None:
        self._sr = (rtp.unix_from_ntp(sr.ntp), self.unwrapper.unwrap(sr.rtp_timestamp))

    def to_ms(self, timestamp: int, now: float) -> int:
        ext = self.unwrapper.unwrap(timestamp)
        if self._ref is None:
            tl = self.timeline
            if self._sr is not None:
                sr_time, sr_ext = self._sr
                at = sr_time + (ext - sr_ext) / self.clock_rate
                if tl.base_ntp is None:
                    tl.base_ntp = at
                ms = (at - tl.base_ntp) * 1000.0
            else:
                if tl.base_wall is None:
                    tl.base_wall = now
                ms = (now - tl.base_wall) * 1000.0
            self._ref = (ext, ms)
        ref_ext, ref_ms = self._ref
        return max(0, int(round(ref_ms + (ext - ref_ext) * 1000.0 / self.clock_rate)))

    def feed(self, packet: rtp.RtpPacket, now: float) -> list[Track | MediaFrame]:
        if self.depacketizer is None:
            return []
        self.packets += 1
        out: list[Track | MediaFrame] = []
        for au in self.depacketizer.feed(packet):
            pts = self.to_ms(au.timestamp, now)
            if self.codec is Codec.AAC:
                if au.nals[0]:
                    out.append(MediaFrame(Codec.AAC, pts, pts, True, au.nals[0]))
            else:
                out += self._video(au, pts)
        self.frames += sum(1 for e in out if isinstance(e, MediaFrame))
        return out

    def _video(self, au: rtp.AccessUnit, pts: int) -> list[Track | MediaFrame]:
        out: list[Track | MediaFrame] = []
        keyframe = False
        nals: list[bytes] = []
        vps: list[bytes] = []
        sps: list[bytes] = []
        pps: list[bytes] = []
        h265_codec = self.codec is Codec.H265
        for nal in au.nals:
            if h265_codec:
                if len(nal) < 2:
                    continue
                t = (nal[0] >> 1) & 0x3F
                if t == h265.NAL_AUD:
                    continue
                if t == h265.NAL_VPS:
                    vps.append(nal)
                elif t == h265.NAL_SPS:
                    sps.append(nal)
                elif t == h265.NAL_PPS:
                    pps.append(nal)
                elif h265.is_irap(t):
                    keyframe = True
            else:
                t = nal[0] & 0x1F
                if t == h264.NAL_AUD:
                    continue
                if t == h264.NAL_SPS:
                    sps.append(nal)
                elif t == h264.NAL_PPS:
                    pps.append(nal)
                elif t == h264.NAL_IDR:
                    keyframe = True
            nals.append(nal)
        if sps and pps:
            try:
                if h265_codec:
                    config = h265.build_hevc_config(vps, sps, pps)
                else:
                    config = h264.build_avc_config(sps, pps)
            except CodecError:
                config = b""
            if config and (self.track is None or self.track.config != config):
                self.track = flvmux.track_from_config(self.codec or Codec.H264, config)
                out.append(self.track)
        if self.track is None or not nals:
            return out  # nothing decodable before the codec configuration is known
        if self.dts is None:
            baseline = self.codec is Codec.H264 and len(self.track.config) > 1 and self.track.config[1] == 66
            self.dts = DtsGenerator(0 if baseline else DEFAULT_REORDER_DEPTH)
        frame = MediaFrame(self.codec or Codec.H264, pts, pts, keyframe, nals_to_avcc(nals))
        for dts, ready in self.dts.push(pts, frame):
            ready.dts = dts
            out.append(ready)
        return out


class RtspIngest:
    """All tracks of one ANNOUNCEd session.

    :meth:`rtp` returns, in order, the new :class:`Track` configurations and
    the :class:`MediaFrame` objects to write to the stream.
    """

    def __init__(self, announced: list[AnnouncedMedia]) -> None:
        self.timeline = _Timeline()
        self.tracks = [TrackIngest(a, self.timeline) for a in announced]
        self.has_video = any(t.kind is TrackKind.VIDEO for t in self.tracks)
        self._audio_waited = 0

    def initial_tracks(self) -> list[Track]:
        return [t.track for t in self.tracks if t.track is not None]

    def _video_ready(self) -> bool:
        return any(t.kind is TrackKind.VIDEO and t.track is not None for t in self.tracks)

    def rtp(self, index: int, data: bytes, now: float) -> list[Track | MediaFrame]:
        """:raises rtp.RtpError: a packet that is not RTP or a payload we cannot read."""
        ti = self.tracks[index]
        events = ti.feed(rtp.RtpPacket.parse(data), now)
        if not events or ti.kind is not TrackKind.AUDIO or not self.has_video:
            return events
        if self._video_ready():
            return events
        # hold audio back until the video configuration is known, so the stream
        # is not announced audio-only; give up after a while (a broken video track)
        self._audio_waited += len(events)
        if self._audio_waited > MAX_AUDIO_WAIT_FRAMES:
            self.has_video = False
            return events
        return [e for e in events if isinstance(e, Track)]

    def rtcp(self, index: int, data: bytes) -> list[RtcpItem]:
        items = rtp.parse_rtcp(data)
        ti = self.tracks[index]
        for item in items:
            if isinstance(item, rtp.SenderReport):
                ti.sender_report(item)
        return items
