"""The MPEG-TS muxer, checked by parsing its output back (tests.support.media.parse_ts)
and by ffprobe/ffmpeg on real files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasrv.codec import aac, h264
from mediasrv.codec.bits import avcc_to_nals, split_annexb
from mediasrv.codec.mpegts import (
    AUDIO_PID,
    PMT_PID,
    TS_OFFSET_MS,
    VIDEO_PID,
    TsMuxer,
    crc32_mpeg,
)
from mediasrv.core.frames import Codec, MediaFrame, TrackKind
from tests.support.clients import FFMPEG, FFPROBE, needs_ffmpeg
from tests.support.media import load_annexb_hevc, load_flv, looped, parse_ts

TRACKS, FRAMES = load_flv()
VIDEO, AUDIO = TRACKS[TrackKind.VIDEO], TRACKS[TrackKind.AUDIO]


def mux(frames: list[MediaFrame], muxer: TsMuxer | None = None) -> bytes:
    m = muxer or TsMuxer(VIDEO, AUDIO)
    return m.tables() + b"".join(m.frame(f) for f in frames)


def test_crc32_mpeg_known_value() -> None:
    # CRC-32/MPEG-2 check value of "123456789"
    assert crc32_mpeg(b"123456789") == 0x0376E6E7


def test_pat_pmt_parse_back() -> None:
    out = parse_ts(TsMuxer(VIDEO, AUDIO).tables())
    assert out.packets == 2
    assert out.crc_ok
    assert out.pmt_pid == PMT_PID
    assert out.pcr_pid == VIDEO_PID
    assert out.streams == {VIDEO_PID: 0x1B, AUDIO_PID: 0x0F}


def test_pmt_for_hevc_and_audio_only() -> None:
    track, _ = load_annexb_hevc()
    assert parse_ts(TsMuxer(track, None).tables()).streams == {VIDEO_PID: 0x24}
    audio_only = parse_ts(TsMuxer(None, AUDIO).tables())
    assert audio_only.streams == {AUDIO_PID: 0x0F}
    assert audio_only.pcr_pid == AUDIO_PID


def test_every_frame_comes_back_with_its_timestamps() -> None:
    data = mux(FRAMES)
    out = parse_ts(data)
    assert out.crc_ok and not out.cc_errors
    video = [f for f in FRAMES if f.kind is TrackKind.VIDEO]
    audio = [f for f in FRAMES if f.kind is TrackKind.AUDIO]
    vpes = [p for p in out.pes if p.pid == VIDEO_PID]
    apes = [p for p in out.pes if p.pid == AUDIO_PID]
    assert len(vpes) == len(video) and len(apes) == len(audio)
    for f, p in zip(video, vpes, strict=True):
        assert p.stream_id == 0xE0
        assert p.pts == (f.pts + TS_OFFSET_MS) * 90
        assert p.dts == ((f.dts + TS_OFFSET_MS) * 90 if f.pts != f.dts else None)
        assert p.random_access == f.keyframe
        # PCR on the video PID, at the frame's decode time, below its DTS
        assert p.pcr == f.dts * 90
        assert p.pcr < (p.dts or p.pts)
    for f, p in zip(audio, apes, strict=True):
        assert p.stream_id == 0xC0
        assert p.pts == (f.pts + TS_OFFSET_MS) * 90 and p.dts is None and p.pcr is None


def test_video_is_annexb_with_aud_and_parameter_sets_on_keyframes() -> None:
    out = parse_ts(mux(FRAMES))
    cfg = h264.parse_avc_config(VIDEO.config)
    video = [f for f in FRAMES if f.kind is TrackKind.VIDEO]
    for f, p in zip(video, [p for p in out.pes if p.pid == VIDEO_PID], strict=True):
        assert p.data.startswith(b"\x00\x00\x00\x01\x09\xf0")
        nals = split_annexb(p.data)
        assert h264.nal_type(nals[0]) == h264.NAL_AUD
        original = [n for n in avcc_to_nals(f.payload) if h264.nal_type(n) != h264.NAL_AUD]
        if f.keyframe:
            assert nals[1:3] == [cfg.sps[0], cfg.pps[0]]
            assert nals[3:] == original
        else:
            assert all(h264.nal_type(n) not in (h264.NAL_SPS, h264.NAL_PPS) for n in nals)
            assert nals[1:] == original


def test_parameter_sets_not_doubled_when_the_frame_has_them() -> None:
    cfg = h264.parse_avc_config(VIDEO.config)
    key = next(f for f in FRAMES if f.kind is TrackKind.VIDEO and f.keyframe)
    from mediasrv.codec.bits import nals_to_avcc

    inband = MediaFrame(Codec.H264, 0, 0, True, nals_to_avcc([cfg.sps[0], cfg.pps[0], *avcc_to_nals(key.payload)]))
    nals = split_annexb(TsMuxer(VIDEO, AUDIO).annexb(inband))
    assert [h264.nal_type(n) for n in nals].count(h264.NAL_SPS) == 1


def test_audio_is_adts_and_several_frames_share_a_pes() -> None:
    m = TsMuxer(VIDEO, AUDIO)
    audio = [f for f in FRAMES if f.kind is TrackKind.AUDIO][:4]
    out = parse_ts(m.tables() + m.audio_frames(audio))
    (pes,) = out.pes
    units = aac.parse_adts(pes.data)
    assert [u for _, u in units] == [f.payload for f in audio]
    asc = aac.parse_asc(AUDIO.config)
    assert all((c.sample_rate, c.channels, c.object_type) == (asc.sample_rate, asc.channels, asc.object_type)
               for c, _ in units)
    assert pes.pts == (audio[0].pts + TS_OFFSET_MS) * 90


def test_continuity_counters_run_on_across_segments() -> None:
    m = TsMuxer(VIDEO, AUDIO)
    first = m.tables() + b"".join(m.frame(f) for f in FRAMES[:30])
    second = m.tables() + b"".join(m.frame(f) for f in FRAMES[30:])
    assert not parse_ts(first + second).cc_errors


def test_large_video_frame_has_unbounded_pes_length() -> None:
    big = MediaFrame(Codec.H264, 0, 0, True, (200_000).to_bytes(4, "big") + b"\x65" + bytes(199_999))
    out = parse_ts(TsMuxer(VIDEO, None).tables() + TsMuxer(VIDEO, None).video_frame(big))
    (pes,) = out.pes
    assert pes.data.endswith(bytes(1000))


def test_audio_only_stream_carries_pcr_on_audio() -> None:
    m = TsMuxer(None, AUDIO)
    audio = [f for f in FRAMES if f.kind is TrackKind.AUDIO][:3]
    out = parse_ts(m.tables() + b"".join(m.frame(f) for f in audio))
    assert [p.pcr for p in out.pes] == [f.dts * 90 for f in audio]
    assert all(p.random_access for p in out.pes)


def test_timestamps_wrap_at_33_bits() -> None:
    late = (1 << 33) // 90 + 5000  # ms past the 33-bit wrap
    frame = MediaFrame(Codec.AAC, late, late, True, FRAMES[2].payload)
    (pes,) = parse_ts(TsMuxer(None, AUDIO).tables() + TsMuxer(None, AUDIO).frame(frame)).pes
    assert pes.pts == ((late + TS_OFFSET_MS) * 90) & ((1 << 33) - 1)


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=1200), min_size=1, max_size=6),
       keyframe=st.booleans())
def test_any_payload_size_packs_into_whole_packets(sizes: list[int], keyframe: bool) -> None:
    """Stuffing at every boundary (183/184/185 bytes left, with and without PCR)."""
    m = TsMuxer(VIDEO, AUDIO)
    frames = []
    for i, n in enumerate(sizes):
        frames.append(MediaFrame(Codec.H264, i * 40, i * 40, keyframe and i == 0,
                                 n.to_bytes(4, "big") + b"\x41" + b"\x5a" * (n - 1)))
        frames.append(MediaFrame(Codec.AAC, i * 40, i * 40, True, bytes(n % 700 + 1)))
    data = mux(frames, m)
    out = parse_ts(data)
    assert not out.cc_errors
    audio = [p for p in out.pes if p.pid == AUDIO_PID]
    assert [len(aac.parse_adts(p.data)[0][1]) for p in audio] == [n % 700 + 1 for n in sizes]
    video = [p for p in out.pes if p.pid == VIDEO_PID]
    for f, p in zip([f for f in frames if f.codec is Codec.H264], video, strict=True):
        assert split_annexb(p.data)[-1] == avcc_to_nals(f.payload)[-1]


# -- real decoders ---------------------------------------------------------------------------------------------
def _probe(path: Path) -> dict[str, object]:
    r = subprocess.run([FFPROBE or "ffprobe", "-v", "error", "-show_entries",
                        "stream=codec_name,codec_type,width,height,sample_rate:format=format_name,duration",
                        "-of", "json", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    parsed: dict[str, object] = json.loads(r.stdout)
    return parsed


def _decode_errors(path: Path) -> str:
    r = subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stderr.strip()


@needs_ffmpeg
def test_ffprobe_reads_h264_aac(tmp_path: Path) -> None:
    path = tmp_path / "a.ts"
    path.write_bytes(mux(looped(FRAMES, 4)))
    info = _probe(path)
    streams = {s["codec_type"]: s for s in info["streams"]}  # type: ignore[union-attr,index]
    assert info["format"]["format_name"] == "mpegts"  # type: ignore[index]
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (1280, 720)
    assert streams["audio"]["codec_name"] == "aac" and streams["audio"]["sample_rate"] == "44100"
    assert abs(float(info["format"]["duration"]) - 4.0) < 0.2  # type: ignore[index]
    assert _decode_errors(path) == ""


@needs_ffmpeg
def test_ffprobe_reads_h265(tmp_path: Path) -> None:
    track, frames = load_annexb_hevc()
    m = TsMuxer(track, None)
    path = tmp_path / "h.ts"
    path.write_bytes(m.tables() + b"".join(m.frame(f) for f in frames))
    (stream,) = _probe(path)["streams"]  # type: ignore[misc]
    assert stream["codec_name"] == "hevc" and (stream["width"], stream["height"]) == (1280, 720)
    # the fixture has reordered pictures and we stamp decode order (pts == dts), which
    # only the null muxer complains about; the decoder itself must be silent
    errors = [line for line in _decode_errors(path).splitlines() if "monotonically" not in line]
    assert errors == []


@needs_ffmpeg
def test_segments_decode_on_their_own(tmp_path: Path) -> None:
    """A segment that starts with PAT/PMT and a keyframe is playable alone (what HLS needs)."""
    m = TsMuxer(VIDEO, AUDIO)
    frames = looped(FRAMES, 3)
    m.tables()
    for f in frames[:40]:
        m.frame(f)
    start = next(i for i, f in enumerate(frames) if i >= 40 and f.keyframe and f.kind is TrackKind.VIDEO)
    path = tmp_path / "seg.ts"
    path.write_bytes(m.tables() + b"".join(m.frame(f) for f in frames[start:]))
    assert _decode_errors(path) == ""


def test_bad_audio_config_is_reported() -> None:
    from mediasrv.core.frames import Track

    m = TsMuxer(None, Track(Codec.AAC, b""))
    with pytest.raises(ValueError):
        m.frame(MediaFrame(Codec.AAC, 0, 0, True, b"\x01\x02"))
