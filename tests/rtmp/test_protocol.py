"""RtmpServerProtocol on StringTransport and task.Clock (issue 2, items 4, 6, 7 and 8).

Every test drives real server protocols with :class:`RtmpTestClient`, which is
built from the sans-IO client pieces (ClientHandshake, ChunkReader,
messages.command), on one ``Core`` with a ``task.Clock``.  No sockets, no
reactor, no sleeps; the ``clock`` fixture fails a test that leaves a delayed
call behind.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from mediasrv import config
from mediasrv.codec import amf0, flv, h265
from mediasrv.codec.bits import nals_to_avcc, split_annexb
from mediasrv.core.context import AccessDenied, Core
from mediasrv.core.frames import Codec
from mediasrv.core.registry import StreamBusy, StreamNotFound
from mediasrv.core.sessions import Role
from mediasrv.core.stream import Stream
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import RtmpMessage, encode_message
from mediasrv.rtmp.protocol import RtmpServerProtocol, refusal_status
from tests.conftest import FIXTURES
from tests.support.rtmp_client import RtmpTestClient, TlsRtmpTestClient, self_signed_pem

# -- media from the fixtures ----------------------------------------------------------

_FLV_TAGS = flv.FlvReader().feed((FIXTURES / "h264_aac_720p.flv").read_bytes())
METADATA: list[Any] = amf0.decode_all(_FLV_TAGS[0].payload)  # ["onMetaData", {...}]
AVC_CONFIG = _FLV_TAGS[1]
AAC_CONFIG = _FLV_TAGS[2]
FRAMES = [t for t in _FLV_TAGS[3:] if t.payload[:2] != b"\x17\x02"]  # without the end-of-sequence tag
assert AVC_CONFIG.payload[:2] == b"\x17\x00" and AAC_CONFIG.payload[:2] == b"\xaf\x00"
assert FRAMES[0].payload[:2] == b"\x17\x01"  # the first frame is a keyframe


def _hevc() -> tuple[bytes, list[tuple[bool, bytes]]]:
    """hvcC and access units (keyframe?, length-prefixed NALs) of h265_720p.hevc."""
    nals = split_annexb((FIXTURES / "h265_720p.hevc").read_bytes())
    by_type: dict[int, list[bytes]] = {}
    aus: list[list[bytes]] = []
    current: list[bytes] = []
    for nal in nals:
        t = h265.nal_type(nal)
        if t in (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS):
            by_type.setdefault(t, []).append(nal)
            continue
        current.append(nal)
        if t < 32:  # a VCL NAL closes the access unit (one slice per picture here)
            aus.append(current)
            current = []
    hvcc = h265.build_hevc_config(by_type[h265.NAL_VPS], by_type[h265.NAL_SPS], by_type[h265.NAL_PPS])
    return hvcc, [(h265.is_irap(h265.nal_type(au[-1])), nals_to_avcc(au)) for au in aus]


HVCC, HEVC_AUS = _hevc()
assert HEVC_AUS[0][0] and not any(key for key, _ in HEVC_AUS[1:])


# -- harness ------------------------------------------------------------------------------


class Harness:
    """One Core on the test's clock, and every client made on it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._core: Core | None = None
        self.clients: list[RtmpTestClient] = []

    def configure(self, *sets: str) -> Core:
        assert self._core is None, "configure() before the first client"
        self._core = Core.build(config.load(None, list(sets)), self.clock)
        return self._core

    @property
    def core(self) -> Core:
        return self._core or self.configure()

    def client(self, **kw: Any) -> RtmpTestClient:
        c = RtmpTestClient(self.core, port=40000 + len(self.clients), **kw)
        self.clients.append(c)
        return c

    def publisher(self, name: str = "test", app: str = "live", media: bool = True) -> RtmpTestClient:
        c = self.client()
        c.start(app)
        c.publish(name)
        assert c.statuses() == ["NetStream.Publish.Start"], c.statuses()
        if media:
            send_headers(c)
            send_tags(c, FRAMES[:4])
        return c

    def player(self, name: str = "test", app: str = "live", **kw: Any) -> RtmpTestClient:
        c = self.client(**kw)
        c.start(app)
        c.play(name)
        return c

    def stream(self, name: str = "test", app: str = "live") -> Stream | None:
        return self.core.registry.find(self.core.registry.key("", app, name))

    def close_all(self) -> None:
        for c in self.clients:
            if not c.lost:
                c.drop()
        if self._core is not None:
            self._core.registry.close_all("test over")
        self.clock.advance(0)


@pytest.fixture
def h(clock: Clock) -> Iterator[Harness]:
    harness = Harness(clock)
    yield harness
    harness.close_all()


@pytest.fixture(autouse=True)
def log_events() -> Iterator[list[LogEvent]]:
    """Every event logged during the test.  A test fails if anything logged a
    failure (a traceback), including an unhandled error in a Deferred that
    was dropped (hence the gc.collect)."""
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield events
        gc.collect()
        failures = [formatEvent(e) for e in events if e.get("log_failure") is not None]
        assert not failures, failures
    finally:
        globalLogPublisher.removeObserver(observer)


def warnings(events: list[LogEvent]) -> list[str]:
    """Warning-or-worse lines logged by mediasrv."""
    return [formatEvent(e) for e in events
            if str(e.get("log_namespace", "")).startswith("mediasrv")
            and e.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical)]


def send_headers(c: RtmpTestClient, metadata: bool = True) -> None:
    if metadata:
        c.data("@setDataFrame", *METADATA)
    c.message(m.VIDEO, AVC_CONFIG.payload, 0)
    c.message(m.AUDIO, AAC_CONFIG.payload, 0)


def send_tags(c: RtmpTestClient, tags: list[flv.FlvTag], offset: int = 0) -> None:
    for t in tags:
        c.message(t.tag_type, t.payload, t.timestamp + offset)


def media_tuples(msgs: list[RtmpMessage]) -> list[tuple[int, int, bytes]]:
    return [(x.type_id, x.timestamp, x.payload) for x in msgs if x.type_id in (m.VIDEO, m.AUDIO)]


def tag_tuples(tags: list[flv.FlvTag], offset: int = 0) -> list[tuple[int, int, bytes]]:
    return [(t.tag_type, t.timestamp + offset, t.payload) for t in tags]


def events_of(c: RtmpTestClient) -> list[tuple[str, Any]]:
    """What a player saw, in order, without the chunk-layer control messages."""
    out: list[tuple[str, Any]] = []
    for x in c.messages:
        if x.type_id == m.COMMAND_AMF0:
            cmd = m.parse_command(x)
            out.append(("status", cmd.args[0]["code"]) if cmd.name == "onStatus" else (cmd.name, cmd.args))
        elif x.type_id == m.DATA_AMF0:
            name, args = m.parse_data(x)
            out.append(("data", name))
        elif x.type_id == m.USER_CONTROL:
            event, values = m.parse_user_control(x.payload)
            out.append(("user", (event, *values)))
        elif x.type_id in (m.VIDEO, m.AUDIO):
            out.append(("video" if x.type_id == m.VIDEO else "audio", x.payload))
    return out


# -- publishing -------------------------------------------------------------------------


@pytest.mark.parametrize("digest", [False, True], ids=["plain", "digest"])
@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["all-at-once", "byte-by-byte"])
def test_full_publish(h: Harness, digest: bool, byte_by_byte: bool) -> None:
    c = h.client(digest=digest, byte_by_byte=byte_by_byte)
    c.do_handshake()
    assert c.proto.handshake.digest_used is digest
    c.connect("live")
    c.pump()
    # Window Ack Size, Set Peer Bandwidth and Set Chunk Size 4096 come before the _result.
    control = [(x.type_id, x.payload) for x in c.messages if x.type_id in (1, 5, 6)]
    assert control == [(m.WINDOW_ACK_SIZE, (2_500_000).to_bytes(4, "big")),
                       (m.SET_PEER_BANDWIDTH, (2_500_000).to_bytes(4, "big") + b"\x02"),
                       (m.SET_CHUNK_SIZE, (4096).to_bytes(4, "big"))]
    assert c.reader.chunk_size == 4096
    (result,) = c.commands()
    assert (result.name, result.transaction_id) == ("_result", 1.0)
    assert result.command_object["fmsVer"].startswith("FMS/")
    assert result.args[0]["code"] == "NetConnection.Connect.Success"
    assert result.args[0]["level"] == "status"

    c.publish("test?token=abc")
    cmds = c.commands()[1:]
    assert [(x.name, x.transaction_id) for x in cmds] == [
        ("_result", 2.0),  # releaseStream
        ("onFCPublish", 0.0), ("_result", 3.0),  # FCPublish
        ("_result", 4.0),  # createStream
        ("onStatus", 0.0),  # publish
    ]
    assert cmds[3].args == [1.0]
    status = cmds[4].args[0]
    assert (status["level"], status["code"]) == ("status", "NetStream.Publish.Start")
    assert c.of_type(m.COMMAND_AMF0)[-1].stream_id == 1
    assert ("user", (m.STREAM_BEGIN, 1)) in events_of(c)

    row = h.core.sessions.get(c.session.id)
    assert row is c.session
    assert (row.protocol, row.role, row.app, row.stream, row.params) == (
        "rtmp", Role.PUBLISHER, "live", "test", "token=abc")
    assert (row.peer_ip, row.peer_port, row.local_port) == ("127.0.0.1", 40000, 1935)
    assert row.bytes_in > 3073 and row.bytes_out > 3073
    assert not c.closed


def test_params_from_connect_app_and_tcurl(h: Harness) -> None:
    c = h.client()
    c.do_handshake()
    c.command("connect", obj={"app": "live?token=xyz", "tcUrl": "rtmp://media.example:1935/live?token=xyz"})
    c.publish("test")
    assert c.statuses() == ["NetStream.Publish.Start"]
    assert (c.session.app, c.session.stream, c.session.params) == ("live", "test", "token=xyz")


@pytest.mark.parametrize("encoding", [3.0, None, "amf3", {"x": 1.0}, [1.0]])
def test_connect_tolerates_any_object_encoding(h: Harness, log_events: list[LogEvent], encoding: Any) -> None:
    c = h.client()
    c.do_handshake()
    c.connect("live", objectEncoding=encoding)
    c.pump()
    (result,) = c.commands()
    assert result.args[0]["code"] == "NetConnection.Connect.Success"
    assert result.args[0]["objectEncoding"] == (3.0 if encoding == 3.0 else 0.0)
    assert not c.closed and not any(e.get("log_failure") for e in log_events)


def test_rtmps_sessions_say_so(h: Harness) -> None:
    c = h.client(secure=True)
    assert c.session.protocol == "rtmps"


# -- playing H.264 + AAC ---------------------------------------------------------------------


def test_publish_then_play_h264_aac(h: Harness) -> None:
    pub = h.publisher(media=False)
    send_headers(pub)
    send_tags(pub, FRAMES[:10])
    stream = h.stream()
    assert stream is not None
    assert stream.video is not None and (stream.video.codec, stream.video.width, stream.video.height) == (
        Codec.H264, 1280, 720)
    assert stream.audio is not None and (stream.audio.codec, stream.audio.sample_rate) == (Codec.AAC, 44100)
    assert stream.metadata["encoder"] == "Lavf59.27.100"

    p = h.player()
    send_tags(pub, FRAMES[10:])
    p.pump()

    ev = [e for e in events_of(p) if e[0] != "_result"]
    assert ev[:7] == [
        ("user", (m.STREAM_BEGIN, 1)),
        ("status", "NetStream.Play.Reset"),
        ("status", "NetStream.Play.Start"),
        ("data", "|RtmpSampleAccess"),
        ("data", "onMetaData"),
        ("video", AVC_CONFIG.payload),
        ("audio", AAC_CONFIG.payload),
    ]
    assert [x.name for x in p.commands()][:2] == ["_result", "_result"]  # connect, createStream
    assert p.commands()[1].args == [1.0]

    md = dict(p.data_messages())
    assert md["|RtmpSampleAccess"] == [True, True]
    assert md["onMetaData"][0]["width"] == 1280.0
    assert md["onMetaData"][0]["encoder"] == "Lavf59.27.100"
    assert isinstance(md["onMetaData"][0], amf0.EcmaArray)

    # The configs, then every frame from the keyframe on, bytes and timestamps intact.
    assert media_tuples(p.messages) == [
        (m.VIDEO, 0, AVC_CONFIG.payload), (m.AUDIO, 0, AAC_CONFIG.payload)] + tag_tuples(FRAMES)
    # everything about the stream travels on message stream 1, the one createStream gave
    on_stream = [x for x in p.messages if x.type_id in (m.DATA_AMF0, m.VIDEO, m.AUDIO)
                 or x.type_id == m.COMMAND_AMF0 and m.parse_command(x).name == "onStatus"]
    assert {x.stream_id for x in on_stream} == {1}
    assert p.session.role is Role.PLAYER and p.session.stream == "test"
    assert not p.closed and not pub.closed


def test_play_without_reset(h: Harness) -> None:
    h.publisher()
    p = h.client()
    p.start()
    p.play("test", reset=False)
    assert p.statuses() == ["NetStream.Play.Start"]


def test_player_chunk_size_and_big_frames(h: Harness) -> None:
    """A publisher with a large chunk size, a frame bigger than our 4096-byte
    chunks: the player reassembles it exactly."""
    pub = h.client()
    pub.start()
    pub.set_chunk_size(60000)
    pub.publish("test")
    send_headers(pub)
    big = b"\x17\x01\x00\x00\x00" + (20000).to_bytes(4, "big") + bytes(range(256)) * 78 + bytes(32)
    pub.message(m.VIDEO, big, 0)
    p = h.player()
    assert media_tuples(p.messages)[-1] == (m.VIDEO, 0, big)
    assert p.reader.chunk_size == 4096


def test_aggregate_messages_are_split(h: Harness) -> None:
    pub = h.publisher(media=False)
    send_headers(pub)
    body = b""
    for t in FRAMES[:3]:
        ts = t.timestamp + 1000
        header = bytes((t.tag_type,)) + len(t.payload).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        header += bytes((ts >> 24,)) + b"\x00\x00\x00"
        body += header + t.payload + (11 + len(t.payload)).to_bytes(4, "big")
    pub.message(m.AGGREGATE, body, 1000, csid=m.CSID_VIDEO)
    p = h.player()
    assert media_tuples(p.messages)[2:] == tag_tuples(FRAMES[:3], 1000)


def test_shared_object_messages_are_ignored(h: Harness, log_events: list[LogEvent]) -> None:
    pub = h.publisher()
    for _ in range(3):
        pub.message(m.SHARED_OBJECT_AMF0, b"\x00\x03abc", stream_id=0)
    assert not pub.closed
    lines = [formatEvent(e) for e in log_events if "shared objects" in formatEvent(e)]
    assert len(lines) == 1
    assert warnings(log_events) == []


# -- H.265 over enhanced RTMP ---------------------------------------------------------------------


def _legacy_hevc(config: bool, key: bool, cts: int, data: bytes) -> bytes:
    """The pre-enhanced-RTMP CDN form: CodecID 12 with AVC-style packets."""
    first = (1 if key or config else 2) << 4 | 12
    return bytes((first, 0 if config else 1)) + (cts & 0xFFFFFF).to_bytes(3, "big") + data


@pytest.mark.parametrize("form", ["enhanced", "codec-id-12"])
def test_h265_enhanced_rtmp(h: Harness, form: str) -> None:
    pub = h.publisher("hevc", media=False)
    build = (lambda cfg, key, cts, data: flv.build_video(Codec.H265, key, cfg, cts, data)) \
        if form == "enhanced" else _legacy_hevc
    pub.message(m.VIDEO, build(True, True, 0, HVCC), 0)
    pub.message(m.AUDIO, AAC_CONFIG.payload, 0)
    sent = []
    for i, (key, au) in enumerate(HEVC_AUS):
        payload = build(False, key, 80 if i % 2 else 0, au)  # CodedFrames and CodedFramesX
        pub.message(m.VIDEO, payload, i * 40)
        sent.append((i * 40, key, 80 if i % 2 else 0, au))
    assert not pub.closed

    stream = h.stream("hevc")
    assert stream is not None and stream.video is not None
    assert (stream.video.codec, stream.video.width, stream.video.height) == (Codec.H265, 1280, 720)
    assert stream.video.config == HVCC

    p = h.player("hevc")
    video = [x for x in p.messages if x.type_id == m.VIDEO]
    assert video[0].payload == flv.build_video(Codec.H265, True, True, 0, HVCC)
    for x in video:
        assert x.payload[0] & 0x80 and x.payload[1:5] == b"hvc1"  # enhanced, FourCC hvc1
    got = []
    for x in video[1:]:
        pkt = flv.parse_video(x.payload)
        assert pkt.codec is Codec.H265 and pkt.kind == "frame"
        got.append((x.timestamp, pkt.keyframe, pkt.cts, pkt.data))
    assert got == sent
    md = dict(p.data_messages())["onMetaData"][0]
    assert (md["width"], md["height"]) == (1280.0, 720.0)


# -- a player that comes first ------------------------------------------------------------------


def test_player_waits_for_the_stream(h: Harness) -> None:
    p = h.player()
    assert p.statuses() == []  # nothing is announced before the stream exists
    assert not p.closed
    h.clock.advance(5)  # well within maxStreamWaitMS (15 s), and players are not idle-checked
    pub = h.publisher(media=False)
    send_headers(pub)
    p.pump()
    assert p.statuses() == []  # configs alone do not make a stream
    send_tags(pub, FRAMES[:8])
    p.pump()
    assert p.statuses() == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    assert [name for name, _ in p.data_messages()] == ["|RtmpSampleAccess", "onMetaData"]
    got = media_tuples(p.messages)
    assert got[:2] == [(m.VIDEO, 0, AVC_CONFIG.payload), (m.AUDIO, 0, AAC_CONFIG.payload)]
    assert set(got[2:]) == set(tag_tuples(FRAMES[:8]))


def test_waiting_player_gets_each_frame_once(h: Harness) -> None:
    p = h.player()
    pub = h.publisher(media=False)
    send_headers(pub)
    send_tags(pub, FRAMES[:8])
    p.pump()
    assert media_tuples(p.messages)[2:] == tag_tuples(FRAMES[:8])


def test_play_stream_not_found_after_max_wait(h: Harness, log_events: list[LogEvent]) -> None:
    h.configure("general.maxStreamWaitMS=2500")
    p = h.player("nothing")
    h.clock.advance(2.4)
    p.pump()
    assert p.statuses() == [] and not p.closed
    h.clock.advance(0.1)
    p.pump()
    (cmd,) = [c for c in p.commands() if c.name == "onStatus"]
    assert (cmd.args[0]["level"], cmd.args[0]["code"]) == ("error", "NetStream.Play.StreamNotFound")
    assert p.closed and not p.transport.aborted  # the reply is flushed before the close
    p.settle()
    assert p.lost
    assert h.core.sessions.get(p.session.id) is None
    assert h.clock.getDelayedCalls() == []
    assert warnings(log_events) == []


def test_waiting_player_leaving_cancels_the_wait(h: Harness) -> None:
    p = h.player("later")
    p.drop()
    assert h.clock.getDelayedCalls() == []
    assert len(h.core.sessions) == 0


# -- refusals ---------------------------------------------------------------------------------


def test_second_publisher_is_refused(h: Harness) -> None:
    first = h.publisher()
    p = h.player()
    second = h.client()
    second.start()
    second.publish("test")
    (cmd,) = [c for c in second.commands() if c.name == "onStatus"]
    assert (cmd.args[0]["level"], cmd.args[0]["code"]) == ("error", "NetStream.Publish.BadName")
    assert second.closed
    second.settle()
    assert second.lost and h.core.sessions.get(second.session.id) is None
    # the first publisher and its player carry on
    assert not first.closed and not p.closed
    stream = h.stream()
    assert stream is not None and stream.publisher is first.session
    send_tags(first, FRAMES[4:6])
    p.pump()
    assert media_tuples(p.messages)[-2:] == tag_tuples(FRAMES[4:6])


def test_publish_and_play_on_one_connection_is_refused(h: Harness, log_events: list[LogEvent]) -> None:
    c = h.publisher()
    c.play("test")
    assert c.transport.aborted
    (line,) = warnings(log_events)
    assert "play on a connection that already publishes or plays" in line


def test_too_many_connections(h: Harness, log_events: list[LogEvent]) -> None:
    h.configure("general.maxConnections=1")
    first = h.client()
    second = h.client()
    assert second.transport.aborted and not first.closed
    second.settle()
    assert len(h.core.sessions) == 1
    (line,) = warnings(log_events)
    assert "too many connections" in line


# -- control messages -----------------------------------------------------------------------


def test_acknowledgement_after_window(h: Harness) -> None:
    c = h.client()
    c.start()
    c.send(m.window_ack_size(5000))
    filler = "x" * 900
    acks: list[int] = []
    received_at_acks: list[int] = []
    while len(acks) < 2:
        before = c.proto.reader.bytes_received
        c.command("noop", filler, txn=0)  # a notification: no reply
        c.pump()
        new = [m.parse_u32(x.payload) for x in c.of_type(m.ACK)][len(acks):]
        after = c.proto.reader.bytes_received
        if new:
            (seq,) = new
            assert seq == after
            received_at_acks.append(after)
            acks.append(seq)
            # sent as soon as the window was crossed, not later
            last = received_at_acks[-2] if len(received_at_acks) > 1 else 0
            assert before - last < 5000 <= after - last
    assert c.of_type(m.COMMAND_AMF0)[1:] == []  # no reply to the notifications
    assert all(x.csid == 2 and x.stream_id == 0 for x in c.of_type(m.ACK))


def test_no_acknowledgement_without_window(h: Harness) -> None:
    c = h.client()
    c.start()
    for _ in range(40):
        c.command("noop", "x" * 900, txn=0)
    c.pump()
    assert c.of_type(m.ACK) == []


def test_ping_request_gets_ping_response(h: Harness) -> None:
    c = h.client()
    c.start()
    c.send(m.ping_request(0xDEADBEEF))
    c.pump()
    (uc,) = [m.parse_user_control(x.payload) for x in c.of_type(m.USER_CONTROL)]
    assert uc == (m.PING_RESPONSE, [0xDEADBEEF])


def test_unknown_command(h: Harness) -> None:
    c = h.client()
    c.start()
    c.command("fancyCall", 1.0, txn=7)
    c.command("fancyNotify", txn=0)
    c.pump()
    (err,) = [x for x in c.commands() if x.name == "_error"]
    assert err.transaction_id == 7.0
    assert (err.args[0]["level"], err.args[0]["code"]) == ("error", "NetConnection.Call.Failed")
    assert "fancyCall" in err.args[0]["description"]
    assert len(c.commands()) == 2 and not c.closed


def test_get_stream_length_and_fcsubscribe(h: Harness) -> None:
    c = h.client()
    c.start()
    c.command("getStreamLength", "test", txn=5)
    c.command("FCSubscribe", "test", txn=6)
    c.pump()
    assert [(x.name, x.transaction_id, x.args) for x in c.commands()[1:]] == [
        ("_result", 5.0, [0.0]), ("_result", 6.0, [amf0.UNDEFINED])]


def test_abort_message_discards_a_partial_message(h: Harness) -> None:
    pub = h.publisher()
    p = h.player()
    n = len(p.media())
    whole = encode_message(m.CSID_VIDEO, m.VIDEO, 1, 120, FRAMES[6].payload, pub.chunk_size)
    assert len(FRAMES[6].payload) > pub.chunk_size
    pub.send(whole[:12 + pub.chunk_size])  # the fmt 0 header and the first chunk only
    pub.send(encode_message(2, m.ABORT, 0, 0, m.CSID_VIDEO.to_bytes(4, "big"), pub.chunk_size))
    send_tags(pub, FRAMES[4:5])
    p.pump()
    assert media_tuples(p.messages[-1:]) == tag_tuples(FRAMES[4:5])
    assert len(p.media()) == n + 1
    assert not pub.closed


# -- ending streams ----------------------------------------------------------------------------


def _assert_play_ended(p: RtmpTestClient) -> None:
    p.pump()
    ev = events_of(p)
    assert ("user", (m.STREAM_EOF, 1)) in ev
    assert p.statuses()[-2:] == ["NetStream.Play.UnpublishNotify", "NetStream.Play.Stop"]
    assert p.closed and not p.transport.aborted


@pytest.mark.parametrize("how", ["deleteStream", "FCUnpublish", "closeStream"])
def test_unpublish_ends_the_stream_at_once(h: Harness, how: str) -> None:
    pub = h.publisher()
    players = [h.player(), h.player()]
    if how == "FCUnpublish":
        pub.command("FCUnpublish", "test")
    elif how == "deleteStream":
        pub.command("deleteStream", 1.0, txn=0)
    else:
        pub.command("closeStream", txn=0, stream_id=1)
    assert h.stream() is None and len(h.core.registry) == 0
    for p in players:
        _assert_play_ended(p)
        p.settle()
        assert p.lost and h.core.sessions.get(p.session.id) is None
    assert not pub.closed
    if how == "FCUnpublish":
        pub.pump()
        assert "onFCUnpublish" in [x.name for x in pub.commands()]
    # the connection may publish again
    pub.command("publish", "test", "live", stream_id=1, txn=0)
    pub.pump()
    assert pub.statuses()[-1] == "NetStream.Publish.Start"
    send_headers(pub)
    send_tags(pub, FRAMES[:2])
    again = h.player()
    assert media_tuples(again.messages)[2:] == tag_tuples(FRAMES[:2])


def test_player_delete_stream_leaves_the_stream(h: Harness) -> None:
    h.publisher()
    p = h.player()
    stream = h.stream()
    assert stream is not None and len(stream.readers) == 1
    p.command("deleteStream", 1.0, txn=0)
    assert stream.readers == [] and p.proto.player is None
    assert p.transport.producer is None
    assert not p.closed
    # and may play again
    p.play("test")
    assert p.statuses()[-1] == "NetStream.Play.Start"
    assert len(stream.readers) == 1 and p.transport.producer is p.proto.player


def test_abrupt_publisher_loss_keeps_players_until_it_returns(h: Harness) -> None:
    h.configure("protocol.continue_push_ms=5000")
    pub = h.publisher()
    send_tags(pub, FRAMES[4:10])
    p = h.player()
    stream = h.stream()
    pub.drop()
    assert h.core.sessions.get(pub.session.id) is None
    h.clock.advance(4)
    p.pump()
    assert not p.closed and "NetStream.Play.UnpublishNotify" not in p.statuses()
    assert h.stream() is stream

    back = h.client()
    back.start()
    back.publish("test")
    assert back.statuses() == ["NetStream.Publish.Start"]
    send_headers(back)
    n = len(p.media())
    send_tags(back, FRAMES[:3])  # the encoder restarts at 0
    p.pump()
    h.clock.advance(2)  # past the old deadline: nothing fires
    p.pump()
    assert not p.closed and h.stream() is stream
    frames = media_tuples(p.messages)[n:]
    frames = [f for f in frames if f[2] not in (AVC_CONFIG.payload, AAC_CONFIG.payload)]
    assert [f[2] for f in frames] == [t.payload for t in FRAMES[:3]]
    # timestamps continue after the last frame the player saw
    assert frames[0][1] == FRAMES[9].timestamp + 40


def test_abrupt_publisher_loss_ends_players_after_continue_push(h: Harness) -> None:
    h.configure("protocol.continue_push_ms=5000")
    pub = h.publisher()
    p = h.player()
    pub.drop()
    h.clock.advance(4.999)
    p.pump()
    assert not p.closed
    h.clock.advance(0.001)
    _assert_play_ended(p)
    p.settle()
    assert len(h.core.sessions) == 0 and len(h.core.registry) == 0


@pytest.mark.parametrize("who", ["publisher", "player"])
def test_kick_closes_the_connection(h: Harness, who: str) -> None:
    pub = h.publisher()
    p = h.player()
    victim = pub if who == "publisher" else p
    assert h.core.sessions.kick(victim.session.id, "by the admin")
    assert victim.transport.aborted
    victim.settle()
    assert victim.lost and h.core.sessions.get(victim.session.id) is None
    if who == "publisher":
        # kicked, not lost: the stream ends at once and its players are told
        assert h.stream() is None
        _assert_play_ended(p)
    else:
        stream = h.stream()
        assert stream is not None and stream.readers == []
        assert not pub.closed
    h.core.sessions.kick(victim.session.id)  # gone: nothing happens


def test_idle_publisher_is_dropped(h: Harness, log_events: list[LogEvent]) -> None:
    h.configure("rtmp.keepAliveSecond=10")
    pub = h.publisher()
    p = h.player()
    h.clock.advance(9)
    send_tags(pub, FRAMES[4:5])
    h.clock.advance(9)
    assert not pub.closed and not p.closed  # data 9 s ago; players are never idle-dropped
    h.clock.advance(10)
    assert pub.transport.aborted and not p.closed
    (line,) = warnings(log_events)
    assert "rtmp.keepAliveSecond" in line and pub.session.id in line


# -- fan-out ------------------------------------------------------------------------------


def test_frame_chunks_are_built_once_for_all_rtmp_players(h: Harness) -> None:
    pub = h.publisher()
    p1, p2 = h.player(), h.player()
    send_tags(pub, FRAMES[4:6])  # video then audio
    stream = h.stream()
    assert stream is not None
    assert p1.proto.player is not None and p2.proto.player is not None
    key = p1.proto.player.mux_key
    assert key == p2.proto.player.mux_key
    for frame in stream.gop.frames[-2:]:
        chunks = frame.muxed[key]
        assert any(w is chunks for w in p1.transport.writes)
        assert any(w is chunks for w in p2.transport.writes)
    assert p1.transport.writes[-1] is p2.transport.writes[-1]
    assert p1.transport.writes[-2] is p2.transport.writes[-2]
    # and the FLV body is the publisher's own payload, not a re-encoding
    assert stream.gop.frames[-2].muxed["flv"] == FRAMES[4].payload
    p1.pump()
    p2.pump()
    assert media_tuples(p1.messages) == media_tuples(p2.messages)


def test_stalled_player_drops_to_the_next_keyframe(h: Harness) -> None:
    h.configure("general.maxPlayerQueueBytes=10000")
    pub = h.publisher()
    slow, fast = h.player(), h.player()
    fast_before = len(fast.media())
    reader = slow.proto.player
    assert reader is not None and slow.transport.producer is reader
    reader.pauseProducing()  # what the transport does when its buffer is full
    slow.pump()
    before = len(slow.media())
    gop_rest, next_gop = FRAMES[4:31], FRAMES[31:40]  # FRAMES[31] is the next keyframe
    send_tags(pub, gop_rest)  # more than 10000 bytes
    assert not pub.closed
    fast.pump()
    assert len(fast.media()) == fast_before + len(gop_rest)  # the other player is not held back
    assert slow.session.dropped_frames > 0
    reader.resumeProducing()
    slow.pump()
    assert len(slow.media()) == before  # the queue was thrown away
    send_tags(pub, next_gop)
    slow.pump()
    assert media_tuples(slow.messages)[before:] == tag_tuples(next_gop)


# -- bad input -------------------------------------------------------------------------------


def _truncated_handshake(c: RtmpTestClient, h: Harness) -> None:
    c.send(c.handshake.initial_bytes()[:700])
    assert not c.closed
    h.clock.advance(4.9)
    assert not c.closed
    h.clock.advance(0.1)


def _after_handshake(payload: bytes) -> Callable[[RtmpTestClient, Harness], None]:
    def run(c: RtmpTestClient, h: Harness) -> None:
        c.do_handshake()
        c.send(payload)
    return run


def _after_connect(payload: bytes) -> Callable[[RtmpTestClient, Harness], None]:
    def run(c: RtmpTestClient, h: Harness) -> None:
        c.start()
        c.send(payload)
    return run


def _command_payload(amf: bytes) -> bytes:
    return encode_message(3, m.COMMAND_AMF0, 0, 0, amf, 128)


_CONNECT = amf0.encode("connect", 1.0)
_DEEP = _CONNECT + b"\x0a\x00\x00\x00\x01" * 200 + b"\x05"
_CYCLIC = _CONNECT + b"\x03" + b"\x00\x04self\x07\x00\x00" + b"\x00\x00\x09"
# fmt 0 header on csid 3: timestamp 0, length 0xFFFFFF, type 20, stream 0; then a few body bytes
_HUGE = b"\x03" + b"\x00\x00\x00" + b"\xff\xff\xff" + b"\x14" + b"\x00\x00\x00\x00" + b"\x02" * 64


def _publish_without_connect(c: RtmpTestClient, h: Harness) -> None:
    c.do_handshake()
    c.command("createStream")
    c.command("publish", "test", "live", stream_id=1, txn=0)


def _publish_without_name(c: RtmpTestClient, h: Harness) -> None:
    c.start()
    c.command("createStream")
    c.command("publish", "", "live", stream_id=1, txn=0)


def _unsupported_codec(c: RtmpTestClient, h: Harness) -> None:
    c.start()
    c.publish("bad")
    c.message(m.VIDEO, b"\x14\x00\x00\x00\x00", 0)  # CodecID 4: On2 VP6


BAD_INPUTS: dict[str, tuple[Callable[[RtmpTestClient, Harness], None], str]] = {
    "garbage": (lambda c, h: c.send(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
                "HandshakeError: unsupported RTMP version 71 in C0 (0x47 'G': a text protocol"),
    "rtmpe": (lambda c, h: c.send(b"\x06" + bytes(1536)), "RTMPE"),
    "truncated handshake": (_truncated_handshake, "handshake not finished within 5 s"),
    "chunk size 0": (_after_handshake(encode_message(2, 1, 0, 0, b"\x00\x00\x00\x00", 128)),
                     "ChunkError: invalid chunk size 0"),
    "chunk size 2**31": (_after_connect(encode_message(2, 1, 0, 0, b"\x80\x00\x00\x00", 128)),
                         "ChunkError: invalid chunk size 2147483648"),
    "message length 16 MiB": (_after_handshake(_HUGE), "message length 16777215 on chunk stream 3 exceeds"),
    "message type 7": (_after_connect(encode_message(3, 7, 0, 0, b"\x00" * 8, 128)), "unknown RTMP message type 7"),
    "message type 30": (_after_connect(encode_message(3, 30, 1, 0, b"x", 128)), "unknown RTMP message type 30"),
    "fmt 3 on a new chunk stream": (_after_handshake(b"\xc9" + b"\x00" * 20), "fmt 3 chunk on chunk stream 9"),
    "too many chunk streams": (_after_handshake(b"".join(bytes((0, c)) + bytes(6) + b"\x03" + bytes(4)
                                                       for c in range(65))),
                               "would exceed the limit of 64 chunk streams"),
    "deep AMF": (_after_handshake(_command_payload(_DEEP)), "AmfError: AMF0 nesting deeper than 32"),
    "cyclic AMF": (_after_handshake(_command_payload(_CYCLIC)), "AmfError: AMF0 reference 0 is cyclic"),
    "truncated AMF": (_after_connect(encode_message(5, m.DATA_AMF0, 1, 0, b"\x02\x00\x0eonMeta", 128)),
                      "AmfError"),
    "publish without connect": (_publish_without_connect, "publish without an app or a stream name"),
    "publish without a name": (_publish_without_name, "publish without an app or a stream name"),
    "unsupported codec": (_unsupported_codec, "unsupported video codec id 4"),
}


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["all-at-once", "byte-by-byte"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_closes_only_that_connection(h: Harness, log_events: list[LogEvent], case: str,
                                               byte_by_byte: bool) -> None:
    h.configure("rtmp.handshakeSecond=5", "rtmp.keepAliveSecond=60")
    other_pub = h.publisher("other")
    other_player = h.player("other")
    bystander = h.client()  # connected, in the middle of nothing
    bystander.start()
    act, problem = BAD_INPUTS[case]
    bad = h.client(byte_by_byte=byte_by_byte)
    sid = bad.session.id
    assert h.core.sessions.get(sid) is bad.session

    act(bad, h)

    assert bad.closed and bad.transport.aborted
    bad.settle()
    assert bad.lost
    assert h.core.sessions.get(sid) is None
    lines = warnings(log_events)
    assert len(lines) == 1, lines
    assert problem in lines[0] and sid in lines[0], lines[0]
    assert not any(e.get("log_failure") for e in log_events)
    assert h.stream("bad") is None and len(h.core.registry) == 1

    # everybody else is untouched
    for c in (other_pub, other_player, bystander):
        assert not c.closed and h.core.sessions.get(c.session.id) is c.session
    n = len(other_player.media())
    send_tags(other_pub, FRAMES[4:6])
    other_player.pump()
    assert media_tuples(other_player.messages[-2:]) == tag_tuples(FRAMES[4:6])
    assert len(other_player.media()) == n + 2
    bystander.send(m.ping_request(5))
    bystander.pump()
    assert m.parse_user_control(bystander.of_type(m.USER_CONTROL)[-1].payload) == (m.PING_RESPONSE, [5])


@pytest.fixture(scope="module")
def tls_options() -> tuple[Any, Any]:
    cert_pem, key_pem = self_signed_pem()
    server = PrivateCertificate.loadPEM(cert_pem + key_pem).options()
    client = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(cert_pem))
    return server, client


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")  # inside Twisted's CertificateOptions
def test_rtmps_player_over_real_tls(h: Harness, tls_options: tuple[Any, Any]) -> None:
    """RTMPS end to end in memory (pyOpenSSL on both sides, iosim between):
    play, leave and play again on one connection, and a stream end that
    closes the TLS connection at once rather than after the 5 s abort."""
    pub = h.publisher()
    p = TlsRtmpTestClient(h.core, *tls_options, port=41000)
    h.clients.append(p)
    assert p.session.protocol == "rtmps"
    p.start()
    p.play("test")
    assert p.statuses() == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    assert media_tuples(p.messages) == [(m.VIDEO, 0, AVC_CONFIG.payload),
                                        (m.AUDIO, 0, AAC_CONFIG.payload)] + tag_tuples(FRAMES[:4])
    p.command("deleteStream", 1.0, txn=0)
    p.play("test")  # a second registerProducer: the first one must have been unregistered
    assert p.statuses()[-1] == "NetStream.Play.Start"
    send_tags(pub, FRAMES[4:6])
    p.pump()
    assert media_tuples(p.messages)[-2:] == tag_tuples(FRAMES[4:6])

    pub.command("deleteStream", 1.0, txn=0)
    p.pump()
    assert p.statuses()[-2:] == ["NetStream.Play.UnpublishNotify", "NetStream.Play.Stop"]
    assert p.closed and p.lost  # without advancing the clock
    assert h.core.sessions.get(p.session.id) is None


def test_tls_failure_is_one_line(h: Harness, log_events: list[LogEvent]) -> None:
    """Garbage on the RTMPS port never reaches dataReceived: TLS refuses it
    and the connection is lost with an SSL error, which gets its line."""
    c = h.client(secure=True)
    c.drop(SSL.Error([("SSL routines", "", "wrong version number")]))
    (line,) = warnings(log_events)
    assert "TLS failed" in line and "wrong version number" in line and c.session.id in line
    assert len(h.core.sessions) == 0


def test_clean_disconnects_log_no_warning(h: Harness, log_events: list[LogEvent]) -> None:
    pub = h.publisher()
    p = h.player()
    p.drop()
    pub.drop()
    h.client().drop()
    assert warnings(log_events) == []


def test_internal_error_closes_only_that_connection(h: Harness, log_events: list[LogEvent],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug of ours (not bad input) is logged with its traceback and the
    session id, and only that connection goes."""
    pub = h.publisher("other")
    p = h.player("other")

    def broken(self: RtmpServerProtocol, cmd: m.Command, msg: RtmpMessage) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(RtmpServerProtocol, "rtmp_createStream", broken)
    c = h.client()
    c.start()
    c.command("createStream")
    assert c.transport.aborted
    c.settle()
    assert h.core.sessions.get(c.session.id) is None
    (failure,) = [e for e in log_events if e.get("log_failure") is not None]
    assert failure["log_failure"].check(RuntimeError) and c.session.id in formatEvent(failure)
    log_events.clear()  # expected; the autouse check must not see it
    send_tags(pub, FRAMES[4:5])
    p.pump()
    assert media_tuples(p.messages[-1:]) == tag_tuples(FRAMES[4:5]) and not pub.closed


def test_max_message_size_is_configurable(h: Harness, log_events: list[LogEvent]) -> None:
    h.configure("rtmp.maxMessageSize=5000")
    pub = h.client()
    pub.start()
    pub.publish("test")
    send_headers(pub)
    pub.message(m.VIDEO, FRAMES[1].payload, 40)  # 2124 bytes: fine
    assert not pub.closed
    pub.message(m.VIDEO, FRAMES[0].payload, 80)  # 7206 bytes: refused at its header
    assert pub.transport.aborted
    (line,) = warnings(log_events)
    assert "message length 7206 on chunk stream 6 exceeds the limit of 5000 bytes" in line


def test_handshake_timer_is_cancelled_once_done(h: Harness, log_events: list[LogEvent]) -> None:
    h.configure("rtmp.handshakeSecond=5", "rtmp.keepAliveSecond=60")
    c = h.client()
    c.do_handshake()
    h.clock.advance(30)
    assert not c.closed
    assert warnings(log_events) == []


# -- fuzzing: whatever arrives, one connection at most closes with one line -----------------------

_amf_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4),
    max_leaves=12,
)
_command_names = st.sampled_from(["connect", "createStream", "releaseStream", "FCPublish", "publish", "play",
                                  "deleteStream", "closeStream", "FCUnpublish", "getStreamLength",
                                  "@setDataFrame", "onMetaData", "_result", "rtmp_connect", "unknown"])
_fuzz_messages = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([m.COMMAND_AMF0, m.DATA_AMF0, m.COMMAND_AMF3]),
                  st.builds(lambda n, t, o, a: amf0.encode(n, t, o, *a), _command_names,
                            st.sampled_from([0.0, 1.0, 2.0]), _amf_values, st.lists(_amf_values, max_size=3))),
        st.tuples(st.integers(0, 40), st.binary(max_size=300)),
        st.tuples(st.sampled_from([m.VIDEO, m.AUDIO]),
                  st.sampled_from([AVC_CONFIG.payload, AAC_CONFIG.payload, FRAMES[0].payload, FRAMES[2].payload,
                                   flv.build_video(Codec.H265, True, True, 0, HVCC), b"\x17\x01", b"\xaf",
                                   b"\x9chvc1\x00"])),
    ),
    max_size=8,
)


def _fuzz_run(feed: Callable[[RtmpTestClient], None]) -> None:
    clock = Clock()
    core = Core.build(config.load(None, []), clock)
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        c = RtmpTestClient(core)
        c.start()
        feed(c)
        c.settle()
        lines = warnings(events)
        assert not any(e.get("log_failure") for e in events), [formatEvent(e) for e in events]
        if c.transport.aborted:
            assert len(lines) == 1 and c.session.id in lines[0], lines
            assert core.sessions.get(c.session.id) is None
        else:
            assert lines == []
        if not c.lost:
            c.drop()
        core.registry.close_all("test over")
        clock.advance(0)
        assert clock.getDelayedCalls() == []
    finally:
        globalLogPublisher.removeObserver(observer)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=1500), step=st.integers(1, 200))
def test_fuzz_raw_bytes_after_connect(data: bytes, step: int) -> None:
    def feed(c: RtmpTestClient) -> None:
        for i in range(0, len(data), step):
            if c.closed:
                break
            c.send(data[i:i + step])
    _fuzz_run(feed)


@settings(max_examples=200, deadline=None)
@given(msgs=_fuzz_messages, chunk_size=st.sampled_from([128, 7, 4096]))
def test_fuzz_messages_after_connect(msgs: list[tuple[int, bytes]], chunk_size: int) -> None:
    def feed(c: RtmpTestClient) -> None:
        c.set_chunk_size(chunk_size)
        for type_id, payload in msgs:
            if c.closed:
                break
            c.message(type_id, payload, stream_id=1, csid=5 if type_id not in (m.VIDEO, m.AUDIO) else None)
    _fuzz_run(feed)


@pytest.mark.parametrize("error, prefix, status", [
    (AccessDenied("no token"), "Publish", ("NetStream.Publish.BadAuth", "no token")),
    (AccessDenied("no token"), "Play", ("NetStream.Play.BadAuth", "no token")),
    (StreamBusy("live/test"), "Publish", ("NetStream.Publish.BadName", "Stream already publishing")),
    (StreamNotFound("live/test"), "Play", ("NetStream.Play.StreamNotFound", "No such stream: test")),
    (RuntimeError("a bug"), "Play", None),
])
def test_refusal_status(error: Exception, prefix: str, status: tuple[str, str] | None) -> None:
    """The one map from the core's refusals to the onStatus codes clients expect."""
    assert refusal_status(Failure(error), prefix, "test") == status
