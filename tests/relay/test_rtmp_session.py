"""The sans-IO RTMP client against a scripted server byte stream, fed whole and one byte at a time."""

from __future__ import annotations

import pytest

from mediasrv.codec import flv
from mediasrv.core import flvmux
from mediasrv.core.frames import MediaFrame, Track, TrackKind
from mediasrv.relay.errors import ProtocolViolation, Refused, StreamNotFound
from mediasrv.relay.flvbody import Metadata, Notice
from mediasrv.relay.rtmp_session import Ended, Mode, RtmpClientSession, RtmpEvent, Started
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import encode_message
from tests.relay.support import AUDIO_TRACK, FRAMES, VIDEO_TRACK, ScriptedRtmpServer, feed

BYTES = [False, True]


def zeros(n: int) -> bytes:
    return bytes(n)


class Exchange:
    """A client session and a scripted server, wired back to back."""

    def __init__(self, mode: Mode, byte_at_a_time: bool, stream: str = "cam?token=1") -> None:
        self.client = RtmpClientSession("live", stream, "rtmp://h:1935/live", mode, random_bytes=zeros)
        self.server = ScriptedRtmpServer()
        self.byte = byte_at_a_time
        self.events: list[RtmpEvent] = []

    def to_server(self) -> None:
        answer = self.server.receive(self.client.data_to_send())
        if answer:
            self.to_client(answer)

    def to_client(self, data: bytes) -> list[RtmpEvent]:
        new = feed(self.client.receive_data, data, self.byte)
        self.events += new
        self.to_server()
        return new

    def connect(self) -> None:
        self.to_server()  # C0+C1 → S0+S1+S2 → C2, Set Chunk Size, connect
        assert self.server.command_names() == ["connect"]
        self.to_client(self.server.answer_connect())


@pytest.mark.parametrize("byte_at_a_time", BYTES)
def test_play_exchange(byte_at_a_time: bool) -> None:
    x = Exchange(Mode.PLAY, byte_at_a_time)
    x.to_server()
    assert x.server.handshake.complete and x.server.reader.chunk_size == 4096
    connect = x.server.commands()[0]
    assert connect.transaction_id == 1.0
    props = connect.command_object
    assert props["app"] == "live" and props["tcUrl"] == "rtmp://h:1935/live"
    assert props["flashVer"].startswith("LNX") and props["fourCcList"] == ["hvc1", "avc1"]

    x.to_client(x.server.answer_connect())
    assert x.server.command_names() == ["connect", "createStream"]
    assert any(msg.type_id == m.WINDOW_ACK_SIZE for msg in x.server.messages)

    x.to_client(x.server.command("_result", 2.0, None, 1.0))
    play = x.server.commands()[-1]
    assert (play.name, play.args, play.transaction_id) == ("play", ["cam?token=1", -2000.0], 0.0)
    assert x.server.messages[-1].type_id == m.USER_CONTROL
    assert m.parse_user_control(x.server.messages[-1].payload) == (m.SET_BUFFER_LENGTH, [1, 3000])

    events = x.to_client(x.server.set_chunk_size(4096) + m.stream_begin(1)
                         + x.server.status("NetStream.Play.Reset") + x.server.status("NetStream.Play.Start")
                         + m.data("|RtmpSampleAccess", True, True, stream_id=1, chunk_size=4096)
                         + x.server.metadata({"width": 1280.0, "videocodecid": 7.0, "audiocodecid": 10.0})
                         + x.server.configs() + x.server.frames(30))
    assert isinstance(events[0], Started)
    assert isinstance(events[1], Metadata) and events[1].kinds() == {TrackKind.VIDEO, TrackKind.AUDIO}
    assert events[2] == VIDEO_TRACK and events[3] == AUDIO_TRACK
    frames = [e for e in events if isinstance(e, MediaFrame)]
    assert [(f.codec, f.dts, f.pts, f.keyframe, f.payload) for f in frames] == [
        (f.codec, f.dts, f.pts, f.keyframe, f.payload) for f in FRAMES[:30]]
    assert x.client.started and x.client.stream_id == 1


@pytest.mark.parametrize("byte_at_a_time", BYTES)
def test_publish_exchange(byte_at_a_time: bool) -> None:
    x = Exchange(Mode.PUBLISH, byte_at_a_time, stream="out")
    x.connect()
    assert x.server.commands()[0].command_object["flashVer"].startswith("FMLE/3.0")
    assert x.server.command_names() == ["connect", "releaseStream", "FCPublish", "createStream"]
    assert [c.args for c in x.server.commands()[1:3]] == [["out"], ["out"]]
    x.to_client(x.server.command("_result", 4.0, None, 7.0))
    publish = x.server.commands()[-1]
    assert (publish.name, publish.args) == ("publish", ["out", "live"]) and x.server.messages[-1].stream_id == 7
    with pytest.raises(RuntimeError):
        x.client.send_frame(FRAMES[0])
    events = x.to_client(x.server.command("onFCPublish", 0, None, {"code": "NetStream.Publish.Start"})
                         + x.server.status("NetStream.Publish.Start", stream_id=7))
    assert [type(e) for e in events] == [Started]

    seen = len(x.server.messages)
    x.client.send_tracks([VIDEO_TRACK, AUDIO_TRACK])
    for f in FRAMES[5:25]:  # start anywhere: timestamps are rebased to 0
        x.client.send_frame(f)
    x.to_server()
    sent = x.server.messages[seen:]
    assert sent[0].type_id == m.DATA_AMF0 and sent[0].stream_id == 7
    name, args = m.parse_data(sent[0])
    assert name == "@setDataFrame" and args[0] == "onMetaData" and args[1]["width"] == 1280.0
    assert flv.parse_video(sent[1].payload).kind == flv.VideoKind.CONFIG
    assert flv.parse_audio(sent[2].payload).config
    media = sent[3:]
    assert len(media) == 20 and all(msg.stream_id == 7 for msg in media)
    assert [msg.timestamp for msg in media] == [max(0, f.dts - FRAMES[5].dts) for f in FRAMES[5:25]]

    x.client.close()
    x.to_server()
    assert x.server.command_names()[-2:] == ["FCUnpublish", "deleteStream"]
    assert x.server.commands()[-1].args == [7.0]


def test_acknowledgement_every_window_and_ping_answered() -> None:
    x = Exchange(Mode.PLAY, False)
    x.connect()
    x.to_client(x.server.command("_result", 2.0, None, 1.0) + m.window_ack_size(5000)
                + x.server.status("NetStream.Play.Start"))
    seen = len(x.server.messages)
    x.to_client(x.server.configs() + x.server.frames(40) + m.ping_request(1234))
    acks = [msg for msg in x.server.messages[seen:] if msg.type_id == m.ACK]
    assert acks and m.parse_u32(acks[0].payload) == x.client.bytes_received
    pongs = [m.parse_user_control(msg.payload) for msg in x.server.messages[seen:] if msg.type_id == m.USER_CONTROL]
    assert pongs == [(m.PING_RESPONSE, [1234])]


def play_started(x: Exchange) -> None:
    x.connect()
    x.to_client(x.server.command("_result", 2.0, None, 1.0) + x.server.status("NetStream.Play.Start"))


@pytest.mark.parametrize("code", ["NetStream.Play.Stop", "NetStream.Play.UnpublishNotify"])
def test_end_statuses(code: str) -> None:
    x = Exchange(Mode.PLAY, False)
    play_started(x)
    events = x.to_client(x.server.status(code))
    assert events == [Ended(code, "")]


def test_stream_eof_ends_the_play() -> None:
    x = Exchange(Mode.PLAY, False)
    play_started(x)
    assert x.to_client(m.stream_eof(2)) == []  # not ours
    assert [type(e) for e in x.to_client(m.stream_eof(1))] == [Ended]


def test_stream_not_found() -> None:
    x = Exchange(Mode.PLAY, False)
    x.connect()
    x.to_client(x.server.command("_result", 2.0, None, 1.0))
    with pytest.raises(StreamNotFound, match="NetStream.Play.StreamNotFound: No such stream"):
        x.to_client(x.server.status("NetStream.Play.StreamNotFound", "error", description="No such stream"))


def test_bad_name_on_publish() -> None:
    x = Exchange(Mode.PUBLISH, False, stream="busy")
    x.connect()
    x.to_client(x.server.command("_result", 4.0, None, 1.0))
    with pytest.raises(Refused) as e:
        x.to_client(x.server.status("NetStream.Publish.BadName", "error", description="Stream already publishing"))
    assert e.value.code == "NetStream.Publish.BadName" and "already publishing" in str(e.value)


def test_connect_rejected() -> None:
    x = Exchange(Mode.PLAY, False)
    x.to_server()
    with pytest.raises(Refused) as e:
        x.to_client(x.server.command("_error", 1.0, None, {"level": "error", "code": "NetConnection.Connect.Rejected",
                                                           "description": "token expired"}))
    assert e.value.code == "NetConnection.Connect.Rejected" and "token expired" in str(e.value)


def test_release_stream_errors_are_tolerated() -> None:
    x = Exchange(Mode.PUBLISH, False, stream="s")
    x.connect()
    events = x.to_client(x.server.command("_error", 2.0, None, {"code": "NetConnection.Call.Failed"})
                         + x.server.command("_error", 3.0, None, {"code": "NetConnection.Call.Failed"}))
    assert events == []


def test_garbage_is_a_protocol_violation() -> None:
    x = Exchange(Mode.PLAY, False)
    with pytest.raises(ProtocolViolation, match="HandshakeError"):
        x.to_client(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def test_a_huge_message_is_cut_off_before_it_is_buffered() -> None:
    x = Exchange(Mode.PLAY, False)
    play_started(x)
    header = encode_message(m.CSID_VIDEO, m.VIDEO, 1, 0, bytes(9 * 1024 * 1024), 4096)[:12]
    with pytest.raises(ProtocolViolation, match="exceeds the limit"):
        x.to_client(header)


def test_unsupported_audio_is_skipped_once_and_video_still_flows() -> None:
    x = Exchange(Mode.PLAY, False)
    play_started(x)
    mp3 = bytes([0x2F]) + bytes(50)
    events = x.to_client(x.server.media(m.AUDIO, 0, mp3) + x.server.media(m.AUDIO, 20, mp3)
                         + x.server.media(m.VIDEO, 0, flvmux.config_body(VIDEO_TRACK)))
    assert [type(e) for e in events] == [Notice, Track]
    assert "audio skipped: unsupported audio format 2 (MP3)" in events[0].text  # type: ignore[union-attr]


def test_garbage_in_a_track_that_decoded_is_fatal() -> None:
    x = Exchange(Mode.PLAY, False)
    play_started(x)
    x.to_client(x.server.configs())
    with pytest.raises(ProtocolViolation):
        x.to_client(x.server.media(m.VIDEO, 40, b"\x17\x09\x00\x00\x00"))


def test_metadata_in_setdataframe_and_onstatus_as_data() -> None:
    x = Exchange(Mode.PLAY, False)
    x.connect()
    x.to_client(x.server.command("_result", 2.0, None, 1.0))
    events = x.to_client(m.data("onStatus", {"level": "status", "code": "NetStream.Play.Start"}, stream_id=1,
                                chunk_size=128)
                         + m.data("@setDataFrame", "onMetaData", {"videocodecid": 7.0}, stream_id=1, chunk_size=128))
    assert [type(e) for e in events] == [Started, Metadata]
    assert events[1].kinds() == {TrackKind.VIDEO}  # type: ignore[union-attr]
