"""Resource limits of the RTMP layer against the audit's attacks
(shared/research/security-audit.md findings 1 and 5): the chunk reader's
byte budget, the small message limit before publishing, buffers freed on
close, and a publisher whose metadata is a reference bomb.

The reader gets bytes (whole and byte at a time); the protocol runs on a
StringTransport and a task.Clock through :class:`RtmpTestClient`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher

from mediasrv import config
from mediasrv.core import limits
from mediasrv.core.context import Core
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import ChunkError, ChunkLimitError, ChunkReader, encode_message
from tests.support.hostile import amf_reference_bomb, chunk_flood_message
from tests.support.rtmp_client import RtmpTestClient

MIB = 1 << 20


def feed(reader: ChunkReader, data: bytes, byte_by_byte: bool) -> list[m.RtmpMessage]:
    if not byte_by_byte:
        return reader.feed(data)
    out = []
    for i in range(len(data)):
        out += reader.feed(data[i:i + 1])
    return out


# -- the reader ------------------------------------------------------------------------------------


def test_the_audit_chunk_flood_is_refused_at_the_byte_budget() -> None:
    """63 chunk streams x an 8 MiB message one byte short: the third header
    already exceeds 16 MiB of messages in progress; nothing near 504 MB is held."""
    reader = ChunkReader(max_message_size=8 * MIB, max_buffered_bytes=16 * MIB)
    before = limits.REFUSALS.get(limits.RTMP_BUFFERED_BYTES)
    reader.feed(m.set_chunk_size(8 * MIB - 1))
    reader.feed(chunk_flood_message(3, 8 * MIB, 8 * MIB - 1))
    reader.feed(chunk_flood_message(4, 8 * MIB, 8 * MIB - 1))
    assert reader.in_progress_bytes == 16 * MIB
    with pytest.raises(ChunkLimitError, match="rtmp.maxBufferedBytes") as e:
        reader.feed(chunk_flood_message(5, 8 * MIB, 8 * MIB - 1))
    assert e.value.limit == limits.RTMP_BUFFERED_BYTES
    assert limits.REFUSALS.get(limits.RTMP_BUFFERED_BYTES) == before + 1
    with pytest.raises(ChunkError):  # the reader stays failed
        reader.feed(b"\x03")


def test_before_publishing_only_small_messages() -> None:
    reader = ChunkReader(max_message_size=8 * MIB, initial_max_message_size=64 * 1024)
    before = limits.REFUSALS.get(limits.RTMP_MESSAGE_SIZE_BEFORE_PUBLISH)
    ok = encode_message(3, m.COMMAND_AMF0, 0, 0, b"\x05" * 65536, 128)
    assert len(reader.feed(ok)) == 1
    with pytest.raises(ChunkLimitError, match="65536 bytes .rtmp.maxMessageSizeBeforePublish"):
        reader.feed(chunk_flood_message(6, 65537, 128))
    assert limits.REFUSALS.get(limits.RTMP_MESSAGE_SIZE_BEFORE_PUBLISH) == before + 1

    reader = ChunkReader(max_message_size=8 * MIB, initial_max_message_size=64 * 1024)
    reader.allow_large_messages()
    big = encode_message(6, m.VIDEO, 1, 0, b"\x17" * (2 * MIB), 4096)
    reader.feed(m.set_chunk_size(4096))
    assert [len(x.payload) for x in reader.feed(big)] == [2 * MIB]
    with pytest.raises(ChunkLimitError, match=r"rtmp\.maxMessageSize\)"):
        reader.feed(chunk_flood_message(6, 8 * MIB + 1, 4096))


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "byte-by-byte"])
def test_a_real_publisher_interleaving_fits_a_tight_budget(byte_by_byte: bool) -> None:
    """A large video message with audio messages between its chunks (as
    ffmpeg and OBS send) completes with a budget of one video + one audio."""
    video = bytes(range(256)) * 200  # 51,200 bytes
    audio = [bytes([i]) * 300 for i in range(5)]
    vchunks = encode_message(6, m.VIDEO, 1, 40, video, 4096)
    # split the video's chunk encoding at its chunk boundaries and put an audio message after each
    parts, pos, first = [], 0, True
    while pos < len(vchunks):
        size = (12 if first else 1) + 4096
        parts.append(vchunks[pos:pos + size])
        pos += size
        first = False
    wire = bytearray(m.set_chunk_size(4096))
    for i, part in enumerate(parts):
        wire += part
        if i < len(audio):
            wire += encode_message(4, m.AUDIO, 1, 40 + i, audio[i], 4096)
    reader = ChunkReader(max_message_size=len(video), max_buffered_bytes=len(video) + 300)
    msgs = feed(reader, bytes(wire), byte_by_byte)
    assert [x.payload for x in msgs if x.type_id == m.VIDEO] == [video]
    assert [x.payload for x in msgs if x.type_id == m.AUDIO] == audio
    assert reader.in_progress_bytes == 0


def test_abort_releases_the_budget() -> None:
    reader = ChunkReader(max_message_size=1000, max_buffered_bytes=1004)  # room for the Abort itself
    reader.feed(chunk_flood_message(6, 1000, 128))
    assert reader.in_progress_bytes == 1000
    with pytest.raises(ChunkLimitError):  # a second message would not fit
        ChunkReader(max_message_size=1000, max_buffered_bytes=1004).feed(
            chunk_flood_message(6, 1000, 128) + chunk_flood_message(7, 5, 128))
    abort = encode_message(2, m.ABORT, 0, 0, (6).to_bytes(4, "big"), 128)
    reader.feed(abort)
    assert reader.in_progress_bytes == 0
    msg = encode_message(7, m.VIDEO, 1, 0, b"x" * 1000, 128)
    assert [len(x.payload) for x in reader.feed(msg)] == [1000]


def test_close_drops_the_buffers() -> None:
    reader = ChunkReader(max_message_size=8 * MIB)
    reader.feed(m.set_chunk_size(MIB))
    reader.feed(chunk_flood_message(6, 4 * MIB, MIB))
    held = sum(len(s.buf) for s in reader._streams.values())
    assert held == MIB
    reader.close()
    assert not reader._streams and reader.in_progress_bytes == 0
    with pytest.raises(ChunkError, match="closed"):
        reader.feed(b"\x06")


def test_reader_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        ChunkReader(max_buffered_bytes=-1)
    with pytest.raises(ValueError):
        ChunkReader(max_message_size=100, initial_max_message_size=-1)
    assert ChunkReader(max_message_size=100).max_buffered_bytes == 200
    assert ChunkReader(max_message_size=100, initial_max_message_size=500).max_message_size == 100


def test_config_refuses_a_buffer_budget_below_the_message_size() -> None:
    with pytest.raises(config.ConfigError, match="maxBufferedBytes"):
        config.load(None, ["rtmp.maxBufferedBytes=1000", "rtmp.maxMessageSize=2000"])


# -- the protocol ---------------------------------------------------------------------------------


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def warnings(events: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events if str(e.get("log_namespace", "")).startswith("mediasrv")
            and e.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical)]


def make_core(clock: Clock, *sets: str) -> Core:
    return Core.build(config.load(None, list(sets)), clock)


def test_an_unauthenticated_connection_cannot_buffer_large_messages(clock: Clock,
                                                                    log_events: list[LogEvent]) -> None:
    core = make_core(clock)
    c = RtmpTestClient(core)
    c.start("live")
    c.set_chunk_size(8 * MIB - 1)
    c.send(chunk_flood_message(7, 8 * MIB, 64 * 1024))
    assert c.lost and c.transport.aborted
    lines = warnings(log_events)
    assert len(lines) == 1 and "maxMessageSizeBeforePublish" in lines[0], lines
    assert c.proto.reader._streams == {} and c.proto.reader.in_progress_bytes == 0
    assert len(core.sessions) == 0
    core.registry.close_all("test over")


def test_a_publisher_gets_the_full_size_but_not_more_than_the_budget(clock: Clock,
                                                                     log_events: list[LogEvent]) -> None:
    core = make_core(clock, "rtmp.maxMessageSize=1048576", "rtmp.maxBufferedBytes=1572864")
    pub = RtmpTestClient(core, port=40001)
    pub.start("live")
    pub.publish("big")
    assert "NetStream.Publish.Start" in pub.statuses()
    pub.set_chunk_size(4096)
    pub.send(chunk_flood_message(7, MIB, 4096))  # allowed: one message in progress
    assert not pub.closed
    pub.send(chunk_flood_message(8, MIB, 4096))  # a second one would pass the budget
    assert pub.lost
    assert any("rtmp.maxBufferedBytes" in line for line in warnings(log_events))
    assert pub.proto.reader._streams == {}
    core.registry.close_all("test over")
    clock.advance(0)


def test_the_reference_bomb_closes_its_publisher_only(clock: Clock, log_events: list[LogEvent]) -> None:
    core = make_core(clock)
    other = RtmpTestClient(core, port=40002)
    other.start("live")
    other.publish("ok")
    bomber = RtmpTestClient(core, port=40003)
    bomber.start("live")
    bomber.publish("bomb")
    before = limits.REFUSALS.get(limits.AMF_EXPANSION)
    t0 = time.perf_counter()
    bomber.message(m.DATA_AMF0, amf_reference_bomb(21))
    assert time.perf_counter() - t0 < 0.5
    assert bomber.lost and not other.closed
    assert limits.REFUSALS.get(limits.AMF_EXPANSION) == before + 1
    lines = warnings(log_events)
    assert len(lines) == 1 and "AmfExpansionError" in lines[0] and "reference bomb" in lines[0], lines
    assert bomber.proto.publishing is None and other.proto.publishing is not None
    other.drop()
    core.registry.close_all("test over")
    clock.advance(0)
    gc.collect()


def test_a_live_change_cannot_set_a_budget_below_the_message_size(clock: Clock) -> None:
    from mediasrv.shell.liveconfig import apply_changes

    core = make_core(clock)
    with pytest.raises(config.ConfigError, match="maxBufferedBytes"):
        apply_changes(core, {"rtmp.maxBufferedBytes": "1000"})
    assert core.config.rtmp.maxBufferedBytes == 16 * MIB
    (change,) = apply_changes(core, {"rtmp.maxMessageSizeBeforePublish": "4096"})
    assert not change.restart and core.config.rtmp.maxMessageSizeBeforePublish == 4096
    (change,) = apply_changes(core, {"shell.maxConcurrentChecks": "4"})
    assert change.restart
    core.registry.close_all("test over")
