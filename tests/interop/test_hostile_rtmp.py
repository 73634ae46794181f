"""The audit's RTMP attacks against the real server (``twistd -n mediasrv``)
on loopback, while real ffmpeg players play another stream:

* finding 1: a publisher sends the 484-byte AMF0 reference bomb (and a
  652-byte one, ~50 minutes of CPU before the fix) as ``onMetaData`` while a
  player is attached to its stream; the server closes that publisher at
  once with one log line, and the other players keep their frame rate.
* finding 5: 63 chunk streams x 8 MiB messages one byte short, before and
  after publishing; the server's RSS stays bounded and the buffers are gone
  when the connections close.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from mediasrv.codec import flv
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import encode_message
from tests.conftest import FIXTURES
from tests.support.clients import needs_ffmpeg, start_publisher, stop
from tests.support.hostile import RawRtmpClient, amf_reference_bomb, chunk_flood_message
from tests.support.players import FramePlayer, rss_kb
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

FPS = 25
MIB = 1 << 20
TAGS = flv.FlvReader().feed((FIXTURES / "h264_aac_720p.flv").read_bytes())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("hostile-rtmp")) as srv:
        yield srv


@pytest.fixture(scope="module")
def published(server: Server) -> Iterator[str]:
    proc = start_publisher(f"{server.rtmp}/live/test", size="640x360", rate=FPS, bitrate="600k")
    probe = FramePlayer(f"{server.rtmp}/live/test")
    try:
        assert probe.wait_frames(10, 20), probe.stop()
    finally:
        probe.stop()
    yield "live/test"
    stop(proc)


def players(server: Server, name: str) -> list[FramePlayer]:
    return [FramePlayer(f"{server.rtmp}/{name}"), FramePlayer(f"{server.http}/{name}.live.flv")]


def assert_kept_playing(ps: list[FramePlayer], t0: float, t1: float) -> list[float]:
    rates = []
    for p in ps:
        got = p.frames_between(t0, t1)
        expected = FPS * (t1 - t0)
        rates.append(got / (t1 - t0))
        assert got >= 0.9 * expected, f"{p.url}: {got} frames in {t1 - t0:.1f} s, expected ~{expected:.0f}"
        assert p.longest_gap(t0, t1) < 1.5, f"{p.url}: stalled {p.longest_gap(t0, t1):.1f} s"
    return rates


class BombPublisher(threading.Thread):
    """Publishes ``live/<name>`` with real media (the fixture, looped and
    paced in real time) until :meth:`bomb` makes it send the reference bomb
    as its next metadata."""

    def __init__(self, server: Server, name: str, k: int) -> None:
        super().__init__(daemon=True)
        self.client = c = RawRtmpClient("127.0.0.1", server.rtmp_port)
        self.k = k
        self.bomb_at = 0.0
        self._go = threading.Event()
        self._halt = threading.Event()
        c.do_handshake()
        c.connect("live")
        assert c.publish(name), c.statuses()
        c.set_chunk_size(4096)

    def bomb(self) -> None:
        self._go.set()

    def run(self) -> None:
        c = self.client
        start = time.monotonic()
        offset = 0
        try:
            while not self._halt.is_set():
                for tag in TAGS:
                    ts = tag.timestamp + offset
                    delay = start + ts / 1000 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    if self._go.is_set():
                        self.bomb_at = time.monotonic()
                        c.message(m.DATA_AMF0, amf_reference_bomb(self.k))
                        return
                    if tag.tag_type == m.DATA_AMF0:
                        if offset:
                            continue
                        payload = b"\x02\x00\x0d@setDataFrame" + tag.payload
                    else:
                        payload = tag.payload
                    csid = {m.VIDEO: m.CSID_VIDEO, m.AUDIO: m.CSID_AUDIO}.get(tag.tag_type, m.CSID_DATA)
                    c.send(encode_message(csid, tag.tag_type, 1, ts, payload, c.chunk_size))
                offset += TAGS[-1].timestamp + 40
        except OSError:
            return


def test_reference_bomb_closes_its_publisher_and_players_keep_playing(server: Server, published: str) -> None:
    watching = players(server, published)
    victims: list[FramePlayer] = []
    try:
        assert all(p.wait_frames(FPS, 20) for p in watching)
        t0 = time.monotonic()
        for k in (21, 29):
            bomber = BombPublisher(server, f"bomb{k}", k)
            bomber.start()
            victim = FramePlayer(f"{server.rtmp}/live/bomb{k}")  # a player attached when the bomb lands
            victims.append(victim)
            assert victim.wait_frames(5, 15), victim.stop()
            bomber.bomb()
            bomber.join(5)
            assert bomber.client.wait_closed(3), f"the k={k} bomber was not closed"
            assert time.monotonic() - bomber.bomb_at < 2.0
            bomber.client.close()
        # a new player of the good stream gets media promptly right after the bombs
        late = FramePlayer(f"{server.rtmp}/{published}")
        watching.append(late)
        joined = time.monotonic()
        assert late.wait_frames(1, 5), late.stop()
        assert time.monotonic() - joined < 3.0
        while time.monotonic() < t0 + 8:
            time.sleep(0.2)
        assert_kept_playing(watching[:2], t0, time.monotonic())
        assert all(p.alive for p in watching)
    finally:
        for p in watching + victims:
            p.stop()
    bomb_lines = [line for line in server.log().splitlines() if "AmfExpansionError" in line]
    assert len(bomb_lines) == 2, bomb_lines
    assert "reference bomb" in bomb_lines[0]


def send_flood(c: RawRtmpClient, streams: int = 63) -> int:
    """The audit's finding-5 attack; returns how many chunk streams were sent
    before the server closed the connection."""
    c.set_chunk_size(8 * MIB - 1)
    for i in range(streams):
        try:
            c.send(chunk_flood_message(3 + i, 8 * MIB, 8 * MIB - 1))
        except OSError:
            return i
    return streams


def test_chunk_flood_memory_is_bounded_and_freed(server: Server, published: str) -> None:
    pid = server.proc.pid
    watching = players(server, published)
    try:
        assert all(p.wait_frames(FPS, 20) for p in watching)
        rss0 = rss_kb(pid)
        t0 = time.monotonic()
        peak = rss0
        sent = []
        for i in range(6):
            c = RawRtmpClient("127.0.0.1", server.rtmp_port)
            c.do_handshake()
            c.connect("live")
            if i % 2:  # after publishing is allowed (the default posture lets anyone publish)
                assert c.publish(f"flood{i}")
            sent.append(send_flood(c))
            assert c.wait_closed(5)
            c.close()
            peak = max(peak, rss_kb(pid))
        while time.monotonic() < t0 + 4:  # a window long enough to measure the frame rate
            time.sleep(0.2)
        rss1 = rss_kb(pid)
        t1 = time.monotonic()
        print(f"chunk flood: RSS {rss0 // 1024} -> peak {peak // 1024} -> {rss1 // 1024} MiB; "
              f"streams sent before the close: {sent}")
        # before: 504 MB held per connection and kept after close (3 GB for these six)
        assert peak - rss0 < 96 * 1024, f"RSS grew {(peak - rss0) // 1024} MiB"
        assert rss1 - rss0 < 64 * 1024, f"RSS kept {(rss1 - rss0) // 1024} MiB"
        assert all(n < 4 for n in sent), sent
        assert_kept_playing(watching, t0, t1)
    finally:
        for p in watching:
            p.stop()
    log = server.log()
    assert log.count("maxMessageSizeBeforePublish") >= 3
    assert log.count("rtmp.maxBufferedBytes") >= 3
