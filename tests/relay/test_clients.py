"""The Twisted relay clients on a MemoryReactorClock: start, deadlines, watchdog, close exactly once,
polite and abrupt endings, push flow control; the connection is a StringTransport driven by the test."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from mediasrv.core.frames import TrackKind
from mediasrv.relay.client import State
from mediasrv.relay.errors import (
    ConnectFailed,
    PeerClosed,
    ProtocolViolation,
    RelayError,
    RelayTimeout,
    SourceEnded,
    Stopped,
    StreamNotFound,
)
from mediasrv.relay.rtmp import RtmpPullClient, RtmpPushClient
from mediasrv.relay.rtsp import RtspPullClient
from mediasrv.relay.source import IteratorSource
from mediasrv.rtmp import messages as m
from mediasrv.rtsp.parser import RtspParser, RtspRequest, encode_interleaved, encode_response, parse_transport
from tests.relay.support import AUDIO_TRACK, FRAMES, VIDEO_TRACK, Recorder, ScriptedRtmpServer, TcpPeer
from tests.relay.test_rtsp_session import SDP, rtp_packets
from tests.support.media import looped

URL = "rtmp://127.0.0.1:1935/live/cam"


class Rig:
    """A client connected to a scripted RTMP server."""

    def __init__(self, client: Any, reactor: MemoryReactorClock) -> None:
        self.client = client
        self.reactor = reactor
        self.outcome: list[Any] = []
        self.started = client.start()
        self.started.addBoth(self.outcome.append)
        reactor.advance(0)
        self.peer = TcpPeer(reactor)
        self.server = ScriptedRtmpServer()
        self.pump()

    def pump(self, data: bytes = b"") -> None:
        if data:
            self.peer.send(data)
        while True:
            answer = self.server.receive(self.peer.sent())
            if not answer:
                return
            self.peer.send(answer)

    def play(self) -> None:
        self.pump(self.server.answer_connect())
        self.pump(self.server.command("_result", 2.0, None, 1.0))
        self.pump(self.server.status("NetStream.Play.Start") + self.server.configs() + self.server.frames(20))


def pull_rig(timeout: float = 5.0) -> tuple[Rig, Recorder]:
    reactor = MemoryReactorClock()
    sink = Recorder()
    return Rig(RtmpPullClient(URL, sink, reactor, timeout_sec=timeout), reactor), sink


def test_rtmp_pull_starts_with_its_tracks_and_stops_politely() -> None:
    rig, sink = pull_rig()
    assert rig.client.state is State.CONNECTING and rig.outcome == []
    rig.play()
    assert rig.outcome == [None] and rig.client.state is State.STARTED
    assert sink.calls[0] == "tracks_ready" and sink.tracks[0] == [VIDEO_TRACK, AUDIO_TRACK]
    assert len(sink.frames) == 20 and rig.client.bytes_in > 0 and rig.client.bytes_out > 0
    rig.client.stop()
    rig.pump()
    assert rig.server.command_names()[-1] == "deleteStream"
    assert rig.peer.transport.disconnecting
    assert sink.calls[-1] == "closed" and isinstance(sink.reasons[0], Stopped)
    rig.peer.close()
    rig.client.stop()
    assert sink.calls.count("closed") == 1
    assert not [c for c in rig.reactor.getDelayedCalls() if c.active()]


def test_start_deadline_names_the_stage() -> None:
    rig, sink = pull_rig(timeout=3)
    rig.pump(rig.server.answer_connect())
    rig.pump(rig.server.command("_result", 2.0, None, 1.0))
    rig.reactor.advance(3)
    assert isinstance(rig.outcome[0], Failure) and rig.outcome[0].check(RelayTimeout)
    assert "did not start within 3 s (play not answered)" in str(rig.outcome[0].value)
    assert sink.calls == ["closed"] and isinstance(sink.reasons[0], RelayTimeout)
    assert rig.peer.transport.disconnecting  # aborted, no goodbye owed to a stuck peer


def test_connection_refused() -> None:
    reactor = MemoryReactorClock()
    sink = Recorder()
    client = RtmpPullClient(URL, sink, reactor)
    outcome: list[Any] = []
    client.start().addBoth(outcome.append)
    reactor.advance(0)
    _, _, factory, _, _ = reactor.tcpClients[0]
    factory.clientConnectionFailed(reactor.connectors[0], Failure(ConnectionRefusedError()))
    reactor.advance(1)
    assert outcome[0].check(ConnectFailed) and "cannot connect to 127.0.0.1:1935" in str(outcome[0].value)
    assert sink.calls == ["closed"]
    assert not [c for c in reactor.getDelayedCalls() if c.active()]


def test_a_silent_source_is_cut_off_by_the_watchdog() -> None:
    rig, sink = pull_rig(timeout=4)
    rig.play()
    rig.reactor.advance(3)
    rig.pump(rig.server.frames(2))
    for _ in range(6):
        rig.reactor.advance(1)
    assert isinstance(sink.reasons[0], RelayTimeout) and "no data from" in str(sink.reasons[0])
    assert rig.client.closed


def test_source_dropping_closes_at_once() -> None:
    rig, sink = pull_rig()
    rig.play()
    rig.peer.close(ConnectionLost("reset by peer"))
    assert sink.calls[-1] == "closed" and isinstance(sink.reasons[0], PeerClosed)
    assert "reset by peer" in str(sink.reasons[0])


def test_unpublish_is_a_clean_source_end() -> None:
    rig, sink = pull_rig()
    rig.play()
    rig.pump(rig.server.status("NetStream.Play.UnpublishNotify"))
    assert isinstance(sink.reasons[0], SourceEnded)


def test_garbage_cuts_the_connection_without_goodbye() -> None:
    rig, sink = pull_rig()
    rig.play()
    before = len(rig.server.messages)
    rig.peer.send(b"\x03" + b"\xff" * 40)
    assert isinstance(sink.reasons[0], ProtocolViolation)
    assert rig.peer.transport.disconnecting
    assert rig.server.messages[before:] == []


def test_stream_not_found_fails_the_start_after_the_sink_heard_it() -> None:
    rig, sink = pull_rig()
    seen_by_waiter: list[list[str]] = []
    rig.client.when_closed().addCallback(lambda _: seen_by_waiter.append(list(sink.calls)))
    rig.pump(rig.server.answer_connect())
    rig.pump(rig.server.command("_result", 2.0, None, 1.0))
    rig.pump(rig.server.status("NetStream.Play.StreamNotFound", "error"))
    assert rig.outcome[0].check(StreamNotFound) and isinstance(sink.reasons[0], StreamNotFound)
    assert seen_by_waiter == [["closed"]]


def test_start_fires_after_the_sink_has_its_tracks() -> None:
    rig, sink = pull_rig()
    seen: list[list[str]] = []
    rig.started.addCallback(lambda _: seen.append(list(sink.calls)))
    rig.play()
    assert seen == [["tracks_ready"]]
    rig.client.stop()


def test_a_sink_stopping_the_client_gets_nothing_more() -> None:
    rig, sink = pull_rig()

    class Stopper(Recorder):
        def frame(self, frame: Any) -> None:
            super().frame(frame)
            if len(self.frames) == 3:
                rig.client.stop()

    stopper = Stopper()
    rig.client.delivery.sink = stopper
    rig.play()
    assert stopper.calls == ["tracks_ready", "frame", "frame", "frame", "closed"]


# -- push ----------------------------------------------------------------------------------------------


def push_rig(realtime: bool = False, timeout: float = 5.0) -> tuple[Rig, IteratorSource]:
    reactor = MemoryReactorClock()
    source = IteratorSource([VIDEO_TRACK, AUDIO_TRACK], looped(FRAMES, 10), reactor, realtime=realtime)
    rig = Rig(RtmpPushClient("rtmp://127.0.0.1/live/out", source, reactor, timeout_sec=timeout), reactor)
    rig.pump(rig.server.answer_connect())
    rig.pump(rig.server.command("_result", 4.0, None, 1.0))
    return rig, source


def test_push_sends_headers_then_frames_and_leaves_when_the_source_ends() -> None:
    rig, source = push_rig()
    assert rig.server.command_names() == ["connect", "releaseStream", "FCPublish", "createStream", "publish"]
    client: RtmpPushClient = rig.client
    rig.pump(rig.server.status("NetStream.Publish.Start"))
    assert rig.outcome == [None] and rig.peer.transport.producer is client
    closed: list[RelayError] = []
    client.when_closed().addCallback(closed.append)
    for _ in range(10):
        rig.reactor.advance(0)
    rig.pump()
    media = [msg for msg in rig.server.messages if msg.type_id in (m.AUDIO, m.VIDEO)]
    assert len(media) == 2 + len(looped(FRAMES, 10)) and client.frames_out == len(media) - 2
    assert len(media) > 600
    assert rig.server.command_names()[-2:] == ["FCUnpublish", "deleteStream"]
    assert isinstance(closed[0], Stopped) and "ended with its source" in str(closed[0])
    assert rig.peer.transport.producer is None


def test_push_target_that_stops_reading_pauses_the_source_then_is_cut_off() -> None:
    rig, source = push_rig(realtime=True, timeout=4)
    rig.pump(rig.server.status("NetStream.Publish.Start"))
    rig.reactor.advance(1)
    sent = source.sent
    rig.client.pauseProducing()  # what the transport does when its buffer fills
    assert source.paused
    rig.reactor.advance(2)
    assert source.sent == sent
    rig.client.resumeProducing()
    rig.reactor.advance(1)
    assert source.sent > sent
    rig.client.pauseProducing()
    rig.reactor.advance(4)
    assert isinstance(rig.client.reason, RelayTimeout) and "has not read" in str(rig.client.reason)
    assert source._sink is None  # stopped


def test_push_refused_stops_nothing_it_did_not_start() -> None:
    rig, source = push_rig()
    rig.pump(rig.server.status("NetStream.Publish.BadName", "error", description="Stream already publishing"))
    assert rig.outcome[0].check(RelayError) and "BadName" in str(rig.outcome[0].value)
    assert source.sent == 0


def test_iterator_source_paces_by_dts() -> None:
    reactor = MemoryReactorClock()
    sink = Recorder()
    video = [f for f in looped(FRAMES, 3) if f.kind is TrackKind.VIDEO][:26]
    source = IteratorSource([VIDEO_TRACK], video, reactor)
    source.start(sink)
    reactor.advance(0)
    assert len(sink.frames) == 1
    reactor.advance(0.5)
    assert abs(len(sink.frames) - (1 + 500 // (video[1].dts - video[0].dts))) <= 1
    reactor.pump([0.1] * 10)
    assert len(sink.frames) == 26 and isinstance(sink.reasons[0], SourceEnded)


# -- RTSP adapter ------------------------------------------------------------------------------------------


def test_rtsp_pull_keeps_alive_and_tears_down() -> None:
    reactor = MemoryReactorClock()
    sink = Recorder()
    client = RtspPullClient("rtsp://127.0.0.1:8554/live/cam", sink, reactor, timeout_sec=5)
    outcome: list[Any] = []
    client.start().addBoth(outcome.append)
    reactor.advance(0)
    peer = TcpPeer(reactor)
    parser = RtspParser()

    def requests() -> list[RtspRequest]:
        return [r for r in parser.feed(peer.sent()) if isinstance(r, RtspRequest)]

    def answer(req: RtspRequest, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        peer.send(encode_response(200, [("CSeq", req.cseq or "")] + (headers or []), body))

    (opts,) = requests()
    answer(opts, [("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN")])
    (desc,) = requests()
    answer(desc, body=SDP)
    for _ in range(2):
        (setup,) = requests()
        spec = parse_transport(setup.header("Transport") or "")[0]
        answer(setup, [("Session", "S1;timeout=8"), ("Transport", f"RTP/AVP/TCP;interleaved="
                                                                  f"{spec.interleaved[0]}-{spec.interleaved[1]}")])  # type: ignore[index]
    (play,) = requests()
    assert play.uri == "rtsp://127.0.0.1:8554/live/cam"
    answer(play, [("Session", "S1;timeout=8")])
    assert outcome == [None] and sink.tracks[0] == [VIDEO_TRACK, AUDIO_TRACK]
    peer.send(b"".join(encode_interleaved(2 * i, pkt) for i, pkt in rtp_packets(FRAMES[:20])))
    assert sink.frames
    reactor.advance(4)
    (ka,) = requests()
    assert (ka.method, ka.header("Session")) == ("GET_PARAMETER", "S1")
    answer(ka)
    client.stop()
    (td,) = requests()
    assert td.method == "TEARDOWN" and peer.transport.disconnecting
    peer.close()
    assert sink.calls.count("closed") == 1
    assert not [c for c in reactor.getDelayedCalls() if c.active()]


@pytest.mark.parametrize("url", ["rtsp://h/x", "http://h/x.flv"])
def test_rtmp_clients_refuse_other_schemes(url: str) -> None:
    with pytest.raises(RelayError):
        RtmpPullClient(url, Recorder(), MemoryReactorClock())
