"""TrackAssembler: when a pulled stream's tracks count as known, and what happens to early frames."""

from __future__ import annotations

from dataclasses import replace

from mediasrv.core.frames import Codec, MediaFrame, TrackKind
from mediasrv.relay.tracks import TrackAssembler
from tests.relay.support import AUDIO_TRACK, VIDEO_TRACK, Recorder

V, A = TrackKind.VIDEO, TrackKind.AUDIO


def vf(dts: int, key: bool = False) -> MediaFrame:
    return MediaFrame(Codec.H264, dts, dts, key, b"\x00\x00\x00\x01\x65")


def af(dts: int) -> MediaFrame:
    return MediaFrame(Codec.AAC, dts, dts, True, b"\x21")


def test_announced_tracks_wait_for_both_configs_and_hold_frames() -> None:
    sink = Recorder()
    asm = TrackAssembler(sink)
    asm.expect({V, A})
    asm.track(VIDEO_TRACK)
    asm.frame(vf(0, True))
    asm.frame(vf(40))
    assert sink.calls == []
    asm.track(AUDIO_TRACK)
    asm.frame(af(50))
    assert sink.calls == ["tracks_ready", "frame", "frame", "frame"]
    assert [t.kind for t in sink.tracks[0]] == [V, A]
    assert [f.dts for f in sink.frames] == [0, 40, 50]


def test_a_missing_announced_track_is_given_up_after_the_wait() -> None:
    sink = Recorder()
    asm = TrackAssembler(sink, max_wait_ms=1000)
    asm.expect({V, A})
    asm.track(VIDEO_TRACK)
    for i in range(25):
        asm.frame(vf(i * 40, i == 0))
    assert sink.calls == []
    asm.frame(vf(1000))
    assert sink.calls[0] == "tracks_ready" and [t.kind for t in sink.tracks[0]] == [V]
    assert len(sink.frames) == 26
    # audio turning up later is announced with the full list
    asm.track(AUDIO_TRACK)
    assert [t.kind for t in sink.tracks[-1]] == [V, A]


def test_pending_frames_are_bounded() -> None:
    sink = Recorder()
    asm = TrackAssembler(sink, max_wait_ms=10**9, max_pending_frames=10)
    asm.expect({V, A})
    asm.track(VIDEO_TRACK)
    for i in range(10):
        asm.frame(vf(i, i == 0))
    assert sink.calls and sink.calls[0] == "tracks_ready"


def test_without_an_announcement_the_first_frame_decides() -> None:
    sink = Recorder()
    asm = TrackAssembler(sink)
    asm.track(VIDEO_TRACK)
    asm.track(AUDIO_TRACK)
    assert sink.calls == []
    asm.frame(af(0))
    assert sink.calls == ["tracks_ready", "frame"]


def test_frames_before_their_config_are_dropped() -> None:
    sink = Recorder()
    asm = TrackAssembler(sink)
    asm.frame(vf(0, True))
    asm.frame(af(10))
    assert sink.calls == [] and asm.dropped == 2


def test_repeated_config_is_silent_and_a_changed_one_is_announced() -> None:
    sink = Recorder()
    asm = TrackAssembler(sink)
    asm.expect({V})
    asm.track(VIDEO_TRACK)
    assert sink.calls == ["tracks_ready"]
    asm.track(replace(VIDEO_TRACK))
    assert sink.calls == ["tracks_ready"]
    asm.track(replace(VIDEO_TRACK, config=VIDEO_TRACK.config + b"\x00", width=640))
    assert sink.calls == ["tracks_ready", "tracks_ready"] and sink.tracks[-1][0].width == 640


def test_an_empty_announcement_is_no_announcement() -> None:
    sink = Recorder()
    asm = TrackAssembler(sink)
    asm.expect(set())
    asm.track(VIDEO_TRACK)
    asm.frame(vf(0, True))
    assert sink.calls == ["tracks_ready", "frame"]


def test_held_until_released_keeps_early_frames_bounded() -> None:
    sink = Recorder()
    asm = TrackAssembler(sink, max_pending_frames=5)
    asm.hold()
    asm.expect({V, A})
    asm.track(VIDEO_TRACK)
    asm.track(AUDIO_TRACK)
    for i in range(8):
        asm.frame(vf(i * 40, i == 0))
    assert sink.calls == [] and asm.dropped == 3
    asm.release()
    assert sink.calls == ["tracks_ready"] + ["frame"] * 5
    assert [f.dts for f in sink.frames] == [120, 160, 200, 240, 280]
