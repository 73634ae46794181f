"""FLV media bodies → tracks and frames (shared by the RTMP publisher path and the relay pulls)."""

from __future__ import annotations

import pytest

from mediasrv.codec import flv
from mediasrv.core import flvmux
from mediasrv.core.frames import Codec, MediaFrame
from mediasrv.rtmp.flvdemux import demux_audio, demux_video
from tests.rtsp.support import AUDIO_TRACK, FRAMES, VIDEO_TRACK


def test_sequence_headers_become_tracks_with_parsed_fields() -> None:
    assert demux_video(0, flvmux.config_body(VIDEO_TRACK)) == VIDEO_TRACK
    assert demux_audio(0, flvmux.config_body(AUDIO_TRACK)) == AUDIO_TRACK
    assert (VIDEO_TRACK.width, VIDEO_TRACK.height, AUDIO_TRACK.sample_rate) == (1280, 720, 44100)


def test_frames_keep_timing_and_their_body_for_players() -> None:
    for f in FRAMES[:20]:
        body = flvmux.frame_body(MediaFrame(f.codec, f.dts, f.pts, f.keyframe, f.payload))
        out = demux_video(f.dts, body) if f.codec is Codec.H264 else demux_audio(f.dts, body)
        assert isinstance(out, MediaFrame)
        assert (out.codec, out.dts, out.pts, out.keyframe, out.payload) == (f.codec, f.dts, f.pts, f.keyframe,
                                                                           f.payload)
        assert out.muxed[flvmux.FLV_BODY] == body


def test_h265_enhanced_body_is_kept_and_legacy_codec_id_12_is_rebuilt() -> None:
    enhanced = flv.build_video(Codec.H265, True, False, 40, b"\x00\x00\x00\x02\x26\x01")
    out = demux_video(100, enhanced)
    assert isinstance(out, MediaFrame) and out.pts == 140 and out.muxed[flvmux.FLV_BODY] == enhanced
    legacy = bytes([0x1C, 1, 0, 0, 0]) + b"\x00\x00\x00\x02\x26\x01"
    out = demux_video(100, legacy)
    assert isinstance(out, MediaFrame) and out.codec is Codec.H265 and flvmux.FLV_BODY not in out.muxed


def test_bodies_without_media() -> None:
    assert demux_video(0, flv.build_video_end(Codec.H264)) is None
    assert demux_video(0, bytes([0x57, 0x01])) is None  # a command frame


@pytest.mark.parametrize("body", [b"", b"\x22\x00", bytes([0x2F, 0])])
def test_bad_or_unsupported_bodies_raise(body: bytes) -> None:
    with pytest.raises(flv.FlvError):
        demux_video(0, body) if body[:1] == b"\x22" else demux_audio(0, body)

