"""MP4 (ISO/IEC 14496-12 / -14 / -15) writer for recordings, moov before mdat.

While recording, :class:`Mp4Writer` appends sample data to a plain data file
(the future ``mdat`` payload) in chunks of about half a second per track,
interleaved, and keeps the sample tables in memory.  :meth:`Mp4Writer.header`
then builds ``ftyp`` + ``moov`` + the ``mdat`` box header with chunk offsets
that point past the header, so the final file is ``header + data`` with the
index first ("faststart": a player can start while downloading).  Joining the
two is a plain file copy (:func:`assemble`), done off the reactor thread.

Samples: video is stored as given (length-prefixed NAL units, avcC/hvcC in
the sample entry: ``avc1`` / ``hvc1``); AAC raw access units (``mp4a`` +
``esds``).  Video uses a 90 kHz timescale with composition offsets (``ctts``,
version 1 when an offset is negative) for B-frames and a sync sample table;
audio uses the sample rate, 1024 samples per frame unless the timestamps show
a gap.  Tracks that start after the first sample of the file get an empty
edit (``elst``) so audio and video stay in sync.
"""

from __future__ import annotations

import os
import struct
from array import array
from dataclasses import dataclass, field
from typing import BinaryIO

from mediasrv.codec import aac
from mediasrv.core.frames import Codec, MediaFrame, Track, TrackKind

__all__ = ["Mp4Writer", "assemble", "box"]

MOVIE_TIMESCALE = 1000
VIDEO_TIMESCALE = 90000
AAC_FRAME = 1024
_CHUNK_MS = 500
_CHUNK_BYTES = 1 << 20
_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


def box(kind: bytes, *parts: bytes) -> bytes:
    size = 8 + sum(len(p) for p in parts)
    return struct.pack(">I4s", size, kind) + b"".join(parts)


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _descriptor(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = bytes((0x80 | (n >> 21) & 0x7F, 0x80 | (n >> 14) & 0x7F, 0x80 | (n >> 7) & 0x7F, n & 0x7F))
    return bytes((tag,)) + length + body


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Run-length encode: [(count, value), ...]."""
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][1] == v:
            out[-1] = (out[-1][0] + 1, v)
        else:
            out.append((1, v))
    return out


@dataclass
class _TrackState:
    track: Track
    track_id: int
    timescale: int
    sizes: array = field(default_factory=lambda: array("I"))
    dts: array = field(default_factory=lambda: array("q"))  # ms
    cts: array = field(default_factory=lambda: array("i"))  # ms
    sync: array = field(default_factory=lambda: array("I"))  # 1-based sample numbers
    chunk_offsets: array = field(default_factory=lambda: array("Q"))
    chunk_samples: array = field(default_factory=lambda: array("I"))
    pending: list[MediaFrame] = field(default_factory=list)
    pending_bytes: int = 0
    last_dts: int | None = None

    @property
    def is_video(self) -> bool:
        return self.track.kind is TrackKind.VIDEO

    # -- per-sample tables in the track's timescale ---------------------------------
    def durations(self, last_video_ms: int) -> list[int]:
        dts = self.dts
        n = len(dts)
        if n == 0:
            return []
        out: list[int] = []
        if self.is_video:
            for i in range(n - 1):
                out.append(max(1, (dts[i + 1] - dts[i]) * 90))
            out.append(max(1, last_video_ms * 90))
            return out
        rate = self.timescale
        for i in range(n - 1):
            d = round((dts[i + 1] - dts[i]) * rate / 1000)
            out.append(AAC_FRAME if abs(d - AAC_FRAME) <= AAC_FRAME // 2 else max(1, d))
        out.append(AAC_FRAME)
        return out


class Mp4Writer:
    """Builds one MP4 file from frames; the caller owns ``data`` (the mdat payload file)."""

    def __init__(self, data: BinaryIO, video: Track | None, audio: Track | None) -> None:
        self.data = data
        self.data_size = 0
        self.tracks: list[_TrackState] = []
        if video is not None:
            self.tracks.append(_TrackState(video, len(self.tracks) + 1, VIDEO_TIMESCALE))
        if audio is not None:
            rate = audio.sample_rate
            if not rate:
                try:
                    rate = aac.parse_asc(audio.config).sample_rate
                except ValueError:
                    rate = 44100
            self.tracks.append(_TrackState(audio, len(self.tracks) + 1, rate))
        self._by_kind = {t.track.kind: t for t in self.tracks}
        self.first_dts: int | None = None
        self.last_dts: int | None = None

    def add(self, frame: MediaFrame) -> None:
        state = self._by_kind.get(frame.kind)
        if state is None or frame.codec is not state.track.codec:
            return
        if state.last_dts is not None and frame.dts < state.last_dts:
            return  # decode order must not go backwards inside one track
        state.last_dts = frame.dts
        if self.first_dts is None:
            self.first_dts = frame.dts
        self.last_dts = frame.dts if self.last_dts is None else max(self.last_dts, frame.dts)
        state.pending.append(frame)
        state.pending_bytes += len(frame.payload)
        span = max((t.pending[-1].dts - t.pending[0].dts for t in self.tracks if t.pending), default=0)
        if span >= _CHUNK_MS or sum(t.pending_bytes for t in self.tracks) >= _CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the pending samples: one chunk per track, video first."""
        for state in self.tracks:
            if not state.pending:
                continue
            state.chunk_offsets.append(self.data_size)
            state.chunk_samples.append(len(state.pending))
            parts = []
            for f in state.pending:
                state.sizes.append(len(f.payload))
                state.dts.append(f.dts)
                state.cts.append(f.pts - f.dts)
                if state.is_video and f.keyframe:
                    state.sync.append(len(state.sizes))
                parts.append(f.payload)
            blob = b"".join(parts)
            self.data.write(blob)
            self.data_size += len(blob)
            state.pending = []
            state.pending_bytes = 0

    @property
    def duration_ms(self) -> int:
        """Media time covered, first sample to the end of the last one."""
        self.flush()
        if self.first_dts is None:
            return 0
        ends = []
        for state in self.tracks:
            if not state.dts:
                continue
            durs = state.durations(self._last_video_ms())
            ends.append(state.dts[0] + round(sum(durs) * 1000 / state.timescale))
        return max(ends) - self.first_dts if ends else 0

    def _last_video_ms(self) -> int:
        state = self._by_kind.get(TrackKind.VIDEO)
        if state is None or len(state.dts) < 2:
            fps = state.track.fps if state is not None else 0
            return round(1000 / fps) if fps else 40
        return max(1, min(1000, state.dts[-1] - state.dts[-2]))

    # -- the index ------------------------------------------------------------------------------
    def header(self) -> bytes:
        """``ftyp`` + ``moov`` + the ``mdat`` header; the data file follows it."""
        self.flush()
        large = self.data_size + 8 > 0xFFFFFFFF
        mdat_header = struct.pack(">I4sQ", 1, b"mdat", self.data_size + 16) if large else \
            struct.pack(">I4s", self.data_size + 8, b"mdat")
        ftyp = self._ftyp()
        use_co64 = False
        moov_size = len(self._moov(0, use_co64))
        base = len(ftyp) + moov_size + len(mdat_header)
        if not use_co64 and base + self.data_size > 0xFFFFFFFF:
            use_co64 = True
            moov_size = len(self._moov(0, use_co64))
            base = len(ftyp) + moov_size + len(mdat_header)
        moov = self._moov(base, use_co64)
        assert len(moov) == moov_size
        return ftyp + moov + mdat_header

    def _ftyp(self) -> bytes:
        brands = [b"isom", b"iso2", b"mp41"]
        video = self._by_kind.get(TrackKind.VIDEO)
        if video is not None and video.track.codec is Codec.H264:
            brands.append(b"avc1")
        return box(b"ftyp", b"isom", struct.pack(">I", 0x200), *brands)

    def _moov(self, base: int, co64: bool) -> bytes:
        # the file's presentation starts with the earliest first sample of any track
        starts = [s.dts[0] + s.cts[0] for s in self.tracks if s.sizes]
        first = min(starts) if starts else 0
        last_video = self._last_video_ms()
        traks = []
        movie_duration = 0
        for state in self.tracks:
            if not state.sizes:
                continue
            durs = state.durations(last_video)
            media_duration = sum(durs)
            delay_ms = state.dts[0] + state.cts[0] - first
            track_ms = delay_ms + round(media_duration * MOVIE_TIMESCALE / state.timescale)
            movie_duration = max(movie_duration, track_ms)
            traks.append(self._trak(state, durs, media_duration, delay_ms, track_ms, base, co64))
        next_id = len(self.tracks) + 1
        v1 = movie_duration > 0xFFFFFFFF
        times = struct.pack(">QQIQ", 0, 0, MOVIE_TIMESCALE, movie_duration) if v1 else \
            struct.pack(">IIII", 0, 0, MOVIE_TIMESCALE, movie_duration)
        mvhd = full_box(b"mvhd", int(v1), 0, times, struct.pack(">IH10x", 0x00010000, 0x0100), _MATRIX,
                        bytes(24), struct.pack(">I", next_id))
        return box(b"moov", mvhd, *traks)

    def _trak(self, state: _TrackState, durs: list[int], media_duration: int, delay_ms: int, track_ms: int,
              base: int, co64: bool) -> bytes:
        t = state.track
        video = state.is_video
        v1 = track_ms > 0xFFFFFFFF or media_duration > 0xFFFFFFFF
        width, height = (t.width, t.height) if video else (0, 0)
        if v1:
            head = struct.pack(">QQI4xQ", 0, 0, state.track_id, track_ms)
        else:
            head = struct.pack(">III4xI", 0, 0, state.track_id, track_ms)
        tkhd = full_box(b"tkhd", int(v1), 3, head, bytes(8), struct.pack(">hhH2x", 0, 0, 0 if video else 0x0100),
                        _MATRIX, struct.pack(">II", width << 16, height << 16))
        # an empty edit for a track that starts late, then the media from its
        # first presented sample (skipping a B-frame stream's initial offset)
        edits = []
        if delay_ms > 0:
            edits.append(struct.pack(">Iihh", delay_ms, -1, 1, 0))
        media_time = state.cts[0] * state.timescale // 1000
        edits.append(struct.pack(">Iihh", track_ms - max(delay_ms, 0), media_time, 1, 0))
        edts = box(b"edts", full_box(b"elst", 0, 0, struct.pack(">I", len(edits)), *edits))
        mdhd_times = struct.pack(">QQIQ", 0, 0, state.timescale, media_duration) if v1 else \
            struct.pack(">IIII", 0, 0, state.timescale, media_duration)
        mdhd = full_box(b"mdhd", int(v1), 0, mdhd_times, struct.pack(">HH", 0x55C4, 0))
        handler, name = (b"vide", b"VideoHandler\x00") if video else (b"soun", b"SoundHandler\x00")
        hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, handler), name)
        xmhd = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
        dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
        minf = box(b"minf", xmhd, dinf, self._stbl(state, durs, base, co64))
        return box(b"trak", tkhd, edts, box(b"mdia", mdhd, hdlr, minf))

    def _stbl(self, state: _TrackState, durs: list[int], base: int, co64: bool) -> bytes:
        n = len(state.sizes)
        stts_runs = _runs(durs)
        parts = [full_box(b"stsd", 0, 0, struct.pack(">I", 1), self._sample_entry(state)),
                 full_box(b"stts", 0, 0, struct.pack(">I", len(stts_runs)),
                          b"".join(struct.pack(">II", c, v) for c, v in stts_runs))]
        if state.is_video and any(state.cts):
            offsets = [c * 90 for c in state.cts]
            negative = any(o < 0 for o in offsets)
            runs = _runs(offsets)
            fmt = ">Ii" if negative else ">II"
            parts.append(full_box(b"ctts", int(negative), 0, struct.pack(">I", len(runs)),
                                  b"".join(struct.pack(fmt, c, v) for c, v in runs)))
        if state.is_video and len(state.sync) < n:
            parts.append(full_box(b"stss", 0, 0, struct.pack(">I", len(state.sync)), _be32(state.sync)))
        stsc_runs: list[tuple[int, int]] = []
        for i, count in enumerate(state.chunk_samples):
            if not stsc_runs or stsc_runs[-1][1] != count:
                stsc_runs.append((i + 1, count))
        parts.append(full_box(b"stsc", 0, 0, struct.pack(">I", len(stsc_runs)),
                              b"".join(struct.pack(">III", first, count, 1) for first, count in stsc_runs)))
        parts.append(full_box(b"stsz", 0, 0, struct.pack(">II", 0, n), _be32(state.sizes)))
        offsets = [base + o for o in state.chunk_offsets]
        if co64:
            parts.append(full_box(b"co64", 0, 0, struct.pack(">I", len(offsets)),
                                  struct.pack(f">{len(offsets)}Q", *offsets)))
        else:
            parts.append(full_box(b"stco", 0, 0, struct.pack(">I", len(offsets)),
                                  struct.pack(f">{len(offsets)}I", *offsets)))
        return box(b"stbl", *parts)

    def _sample_entry(self, state: _TrackState) -> bytes:
        t = state.track
        if state.is_video:
            kind, config_box = (b"avc1", b"avcC") if t.codec is Codec.H264 else (b"hvc1", b"hvcC")
            return box(kind, bytes(6), struct.pack(">H", 1), bytes(16), struct.pack(">HH", t.width, t.height),
                       struct.pack(">II4xH", 0x00480000, 0x00480000, 1), bytes(32), struct.pack(">Hh", 0x0018, -1),
                       box(config_box, t.config))
        channels = t.channels or 2
        rate = state.timescale
        bitrate = 0
        if self.duration_ms:
            bitrate = int(sum(state.sizes) * 8 * 1000 / max(1, self.duration_ms))
        dec_config = _descriptor(0x04, bytes((0x40, 0x15)) + (max(state.sizes, default=0)).to_bytes(3, "big")
                                 + struct.pack(">II", bitrate, bitrate) + _descriptor(0x05, t.config))
        es = _descriptor(0x03, struct.pack(">HB", state.track_id, 0) + dec_config + _descriptor(0x06, b"\x02"))
        esds = full_box(b"esds", 0, 0, es)
        return box(b"mp4a", bytes(6), struct.pack(">H", 1), bytes(8), struct.pack(">HHHH", channels, 16, 0, 0),
                   struct.pack(">I", (rate & 0xFFFF) << 16 if rate < 65536 else 0), esds)


_LITTLE = array("I", [1]).tobytes()[0] == 1


def _be32(values: array) -> bytes:
    a = array("I", values)
    if _LITTLE:
        a.byteswap()
    return a.tobytes()


def assemble(final_path: str, header: bytes, data_path: str) -> int:
    """Write ``header`` then the data file into ``final_path`` (atomically, via a
    temporary name); return the file size.  Blocking: run it in a thread."""
    tmp = final_path + ".tmp"
    with open(tmp, "wb") as out, open(data_path, "rb") as src:
        out.write(header)
        out.flush()
        size = os.fstat(src.fileno()).st_size
        copied = 0
        try:
            while copied < size:
                n = os.copy_file_range(src.fileno(), out.fileno(), size - copied)
                if n == 0:
                    break
                copied += n
        except (AttributeError, OSError):
            src.seek(copied)
            out.seek(len(header) + copied)
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                out.write(block)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, final_path)
    os.unlink(data_path)
    return os.path.getsize(final_path)
