"""The RTSP request pipeline (rtsp/protocol.py) on StringTransport and task.Clock:
framing of replies, dispatch by method name, refusals, pipelining, the session
check, the idle clock, kicks and bad input.  No sockets, no reactor; the
``clock`` fixture fails a test that leaves a delayed call behind.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.logger import LogEvent, LogLevel
from twisted.python.failure import Failure

from mediasrv.codec import rtp
from tests.rtsp.support import URL, Harness, headers, mediasrv_lines, play_tcp


def test_options(h: Harness) -> None:
    c = h.client()
    resp = c.request("OPTIONS", URL)
    assert resp is not None and resp.status == 200
    hd = headers(resp)
    assert hd["cseq"] == "1" and hd["server"].startswith("mediasrv/")
    assert hd["public"] == "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, PAUSE, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
    assert "session" not in hd


def test_unknown_method_is_501(h: Harness) -> None:
    c = h.client()
    resp = c.request("REDIRECT", URL)
    assert resp is not None and resp.status == 501 and not c.lost


def test_request_without_cseq_gets_400_and_is_closed(h: Harness, log_events: list[LogEvent]) -> None:
    c = h.client()
    c.send(c.raw("OPTIONS", URL, cseq=False))
    c.pump()
    assert c.responses[-1].status == 400 and c.lost
    assert len(mediasrv_lines(log_events, LogLevel.warn)) == 1
    h.clock.advance(5)


def test_huge_header_gets_400_and_is_closed(h: Harness, log_events: list[LogEvent]) -> None:
    c = h.client()
    c.send(b"DESCRIBE " + URL.encode() + b" RTSP/1.0\r\nCSeq: 1\r\nX-Junk: " + b"a" * 20000)
    c.pump()
    assert c.responses[-1].status == 400 and c.lost
    (line,) = mediasrv_lines(log_events, LogLevel.warn)
    assert "header block exceeds" in line
    h.clock.advance(5)


def test_require_is_refused_with_551(h: Harness) -> None:
    c = h.client()
    resp = c.request("OPTIONS", URL, [("Require", "implicit-play")])
    assert resp is not None and resp.status == 551 and headers(resp)["unsupported"] == "implicit-play"


def test_play_before_setup_is_455_and_wrong_session_454(h: Harness) -> None:
    h.publish()
    c = h.client()
    c.request("DESCRIBE", URL)
    assert c.request("PLAY", URL).status == 455  # type: ignore[union-attr]
    c.request("SETUP", URL + "/trackID=0", [("Transport", "RTP/AVP/TCP;interleaved=0-1")])
    r = c.request("PLAY", URL, [("Session", "NOTMINE")])
    assert r is not None and r.status == 454


def test_describe_of_a_missing_stream_waits_then_404(h: Harness) -> None:
    h.configure("general.maxStreamWaitMS=3000")
    c = h.client()
    assert c.request("DESCRIBE", URL) is None  # waiting for the stream
    c.send(c.raw("OPTIONS", URL))  # pipelined: answered after the DESCRIBE
    c.pump()
    assert not c.responses
    h.clock.advance(3)
    c.pump()
    assert [r.status for r in c.responses] == [404, 200]
    assert [headers(r)["cseq"] for r in c.responses] == ["1", "2"]


def test_interleaved_data_on_an_unknown_channel_closes(h: Harness, log_events: list[LogEvent]) -> None:
    h.publish()
    c = h.client()
    play_tcp(c)
    c.interleave(1, rtp.build_receiver_report(5))  # a receiver report: fine
    c.pump()
    assert not c.lost
    c.interleave(9, b"junk")
    c.pump()
    assert c.lost
    (line,) = mediasrv_lines(log_events, LogLevel.warn)
    assert "channel 9" in line


def test_idle_connection_times_out(h: Harness) -> None:
    c = h.client()
    c.request("OPTIONS", URL)
    h.clock.advance(16)
    c.pump()
    assert c.lost


def test_tls_failure_is_one_line(h: Harness, log_events: list[LogEvent]) -> None:
    """Garbage on the RTSPS port never reaches dataReceived: TLS refuses it and
    the connection is lost with an SSL error, which gets its line (as RTMPS)."""
    c = h.client()
    c.lost = True
    c.proto.connectionLost(Failure(SSL.Error([("SSL routines", "", "wrong version number")])))
    (line,) = mediasrv_lines(log_events, LogLevel.warn)
    assert "TLS failed" in line and "wrong version number" in line and c.proto.session.id in line
    assert len(h.core.sessions) == 0


def test_kick(h: Harness) -> None:
    h.publish()
    c = h.client()
    play_tcp(c)
    assert h.core.sessions.kick(c.proto.session.id)
    c.pump()
    assert c.lost and c.proto.play is not None and c.proto.play.player is None
