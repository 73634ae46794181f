"""Media core: registry, stream fan-out, GOP cache, bounded readers, sessions."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from mediasrv.core.frames import Codec, MediaFrame, Track
from mediasrv.core.reader import StreamReader
from mediasrv.core.registry import StreamBusy, StreamNotFound, StreamRegistry
from mediasrv.core.sessions import SessionTable
from mediasrv.core.stream import Stream


def vframe(dts: int, key: bool = False, size: int = 100) -> MediaFrame:
    return MediaFrame(Codec.H264, dts, dts, key, b"\x00" * size)


def aframe(dts: int) -> MediaFrame:
    return MediaFrame(Codec.AAC, dts, dts, True, b"\x01" * 10)


class RecordingReader(StreamReader):
    def __init__(self, max_queue_bytes: int = 10_000) -> None:
        super().__init__(max_queue_bytes)
        self.headers = 0
        self.frames: list[MediaFrame] = []
        self.ended: str | None = None

    def send_headers(self, stream: Stream) -> None:
        self.headers += 1

    def send_frame(self, frame: MediaFrame) -> None:
        self.frames.append(frame)

    def stream_ended(self, reason: str) -> None:
        self.ended = reason


@pytest.fixture
def sessions() -> SessionTable:
    n = iter(range(1000))
    return SessionTable(new_id=lambda: f"s{next(n)}")


def publish(registry: StreamRegistry, sessions: SessionTable, name: str = "test") -> Stream:
    pub = sessions.open("rtmp", "127.0.0.1", 5000, 1935, 0.0)
    stream = registry.publish(registry.key("", "live", name), pub)
    stream.set_track(Track(Codec.H264, b"cfg"))
    return stream


def test_session_table_ids_and_close_once(sessions: SessionTable) -> None:
    closed = []

    class L:
        def session_opened(self, s: object) -> None:
            pass

        def session_closed(self, s: object) -> None:
            closed.append(s)

    sessions.add_listener(L())
    a = sessions.open("rtmp", "1.2.3.4", 1, 1935, 10.0)
    assert sessions.get(a.id) is a and len(sessions) == 1
    sessions.close(a)
    sessions.close(a)
    assert closed == [a] and len(sessions) == 0


def test_player_waiting_gets_stream_when_it_starts(clock: Clock, sessions: SessionTable) -> None:
    registry = StreamRegistry(clock)
    key = registry.key("", "live", "test")
    d = registry.wait_for(key, 15)
    got: list[Stream] = []
    d.addCallback(got.append)
    stream = publish(registry, sessions)
    assert not got, "not ready before the first frame"
    stream.write(vframe(0, key=True))
    assert got == [stream]


def test_wait_times_out_and_cancel_cleans_up(clock: Clock, sessions: SessionTable) -> None:
    registry = StreamRegistry(clock)
    key = registry.key("", "live", "none")
    failures: list[object] = []
    registry.wait_for(key, 2).addErrback(failures.append)
    clock.advance(2)
    assert failures and failures[0].check(StreamNotFound)  # type: ignore[attr-defined]
    d = registry.wait_for(key, 5)
    d.addErrback(lambda f: f.trap(defer.CancelledError))
    d.cancel()
    assert not clock.getDelayedCalls()


def test_second_publisher_is_refused(clock: Clock, sessions: SessionTable) -> None:
    registry = StreamRegistry(clock)
    publish(registry, sessions)
    with pytest.raises(StreamBusy):
        publish(registry, sessions)


def test_gop_cache_starts_new_players_on_keyframe(clock: Clock, sessions: SessionTable) -> None:
    registry = StreamRegistry(clock)
    stream = publish(registry, sessions)
    for f in [vframe(0, True), vframe(40), aframe(41), vframe(80, True), vframe(120), aframe(121)]:
        stream.write(f)
    reader = RecordingReader()
    stream.add_reader(reader)
    assert reader.headers == 1
    assert [f.dts for f in reader.frames] == [80, 120, 121]
    stream.write(vframe(160))
    assert reader.frames[-1].dts == 160


def test_slow_reader_queues_then_drops_to_next_keyframe(clock: Clock, sessions: SessionTable) -> None:
    registry = StreamRegistry(clock)
    stream = publish(registry, sessions)
    stream.write(vframe(0, True))
    fast, slow = RecordingReader(), RecordingReader(max_queue_bytes=450)
    stream.add_reader(fast)
    stream.add_reader(slow)
    slow.pauseProducing()
    for dts in (40, 80, 120):
        stream.write(vframe(dts))
    assert [f.dts for f in slow.frames] == [0]
    slow.resumeProducing()  # a short stall: the queue catches up, nothing lost
    assert [f.dts for f in slow.frames] == [0, 40, 80, 120]
    slow.pauseProducing()
    for dts in range(160, 400, 40):  # too much: queue thrown away
        stream.write(vframe(dts))
    assert slow.dropped_frames == 6  # five queued frames thrown away, then one non-key
    slow.resumeProducing()
    stream.write(vframe(400))  # not a keyframe: dropped
    stream.write(vframe(440, True))
    stream.write(vframe(480))
    assert [f.dts for f in slow.frames][-2:] == [440, 480]
    assert slow.dropped_frames == 7
    assert len(fast.frames) == 13 and fast.dropped_frames == 0


def test_frames_muxed_once_are_shared(clock: Clock, sessions: SessionTable) -> None:
    registry = StreamRegistry(clock)
    stream = publish(registry, sessions)
    a, b = RecordingReader(), RecordingReader()
    stream.write(vframe(0, True))
    stream.add_reader(a)
    stream.add_reader(b)
    stream.write(vframe(40))
    assert a.frames[-1] is b.frames[-1]


def test_publisher_drop_keeps_players_within_continue_push(clock: Clock, sessions: SessionTable) -> None:
    registry = StreamRegistry(clock, continue_push_ms=5000)
    stream = publish(registry, sessions)
    stream.write(vframe(1000, True))
    reader = RecordingReader()
    stream.add_reader(reader)
    registry.unpublish(stream, stream.publisher, abrupt=True)  # type: ignore[arg-type]
    clock.advance(4)
    assert reader.ended is None
    again = publish(registry, sessions)
    assert again is stream
    again.write(vframe(0, True))  # the new publisher restarts its clock at 0
    assert reader.frames[-1].dts == 1040, "timestamps continue for the players"
    clock.advance(10)
    assert reader.ended is None
    registry.unpublish(stream, stream.publisher, abrupt=True)  # type: ignore[arg-type]
    clock.advance(5)
    assert reader.ended == "publisher did not come back"
    assert registry.find(stream.key) is None


def test_explicit_unpublish_ends_at_once(clock: Clock, sessions: SessionTable) -> None:
    registry = StreamRegistry(clock)
    stream = publish(registry, sessions)
    stream.write(vframe(0, True))
    reader = RecordingReader()
    stream.add_reader(reader)
    registry.unpublish(stream, stream.publisher, abrupt=False)  # type: ignore[arg-type]
    assert reader.ended == "unpublished"
    assert len(registry) == 0


def test_codec_change_resends_headers(clock: Clock, sessions: SessionTable) -> None:
    registry = StreamRegistry(clock)
    stream = publish(registry, sessions)
    stream.write(vframe(0, True))
    reader = RecordingReader()
    stream.add_reader(reader)
    stream.set_track(Track(Codec.H264, b"new config"))
    assert reader.headers == 2
    assert stream.gop.frames == []


def test_gop_cache_is_bounded(clock: Clock, sessions: SessionTable) -> None:
    registry = StreamRegistry(clock, max_gop_bytes=1000)
    stream = publish(registry, sessions)
    stream.write(vframe(0, True, size=500))
    for i in range(1, 10):
        stream.write(vframe(i * 40, size=200))
    assert stream.gop.size <= 1000
    stream.write(vframe(400, True, size=100))
    assert [f.dts for f in stream.gop.frames] == [400]
