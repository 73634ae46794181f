"""The session skeleton shared by the RTMP and RTSP adapters, on a minimal
subclass over StringTransport and task.Clock: capacity, byte counters, the
idle clock, fail/refuse/kick/close with the grace abort, producers and the
teardown order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from mediasrv import config
from mediasrv.core.adapter import CLOSE_GRACE, SessionProtocol
from mediasrv.core.context import Core
from mediasrv.core.reader import StreamReader


class Echo(SessionProtocol):
    """Echoes what it gets; ``boom`` is bad input, ``bug`` a bug of ours."""

    name = "echo"
    bad_input = (ValueError,)

    def __init__(self, core: Core, secure: bool = False) -> None:
        super().__init__(core, secure)
        self.steps: list[str] = []
        self.idle_limit = 10.0

    def session_started(self) -> None:
        self.arm_idle_check(1.0)

    def bytes_received(self, data: bytes) -> None:
        if data == b"boom":
            raise ValueError("bad bytes")
        if data == b"bug":
            raise RuntimeError("a bug")
        self.write(data)

    def idle_expired(self, idle: float) -> str | None:
        return f"idle for {idle:.0f} s" if idle >= self.idle_limit else None

    def idle_check_interval(self) -> float:
        return 1.0

    def stop_playing(self, connected: bool = True) -> None:
        self.steps.append(f"stop_playing connected={connected}")

    def stop_publishing(self, abrupt: bool) -> None:
        self.steps.append(f"stop_publishing abrupt={abrupt}")

    def release(self) -> None:
        self.steps.append(f"release session_open={self.core.sessions.get(self.session.id) is not None}")


class Transport(StringTransport):
    def __init__(self) -> None:
        super().__init__(hostAddress=IPv4Address("TCP", "127.0.0.1", 1935),
                         peerAddress=IPv4Address("TCP", "10.0.0.7", 40000))
        self.aborted = 0

    def abortConnection(self) -> None:
        self.aborted += 1
        self.disconnecting = True


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def lines(events: list[LogEvent], level: LogLevel) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") == level
            and str(e.get("log_namespace", "")) == __name__]


def connect(clock: Clock, *sets: str, secure: bool = False) -> tuple[Echo, Transport]:
    core = Core.build(config.load(None, list(sets)), clock)
    proto, transport = Echo(core, secure), Transport()
    proto.makeConnection(transport)
    return proto, transport


def lose(proto: Echo, reason: Failure | None = None) -> None:
    proto.connectionLost(reason or Failure(ConnectionResetError()))


def test_session_row_and_byte_counters(clock: Clock) -> None:
    proto, transport = connect(clock, secure=True)
    s = proto.session
    assert (s.protocol, s.peer_ip, s.peer_port, s.local_port) == ("echos", "10.0.0.7", 40000, 1935)
    assert proto.core.sessions.get(s.id) is s
    clock.advance(3)
    proto.dataReceived(b"hello")
    assert transport.value() == b"hello" and (s.bytes_in, s.bytes_out) == (5, 5)
    assert proto.last_activity == 3
    lose(proto)
    assert proto.core.sessions.get(s.id) is None


def test_over_capacity_is_refused_at_once(clock: Clock, log_events: list[LogEvent]) -> None:
    core = Core.build(config.load(None, ["general.maxConnections=1"]), clock)
    first, second = Echo(core), Echo(core)
    first.makeConnection(Transport())
    t2 = Transport()
    second.makeConnection(t2)
    assert t2.aborted == 1 and second.closing and not first.closing
    (line,) = lines(log_events, LogLevel.warn)
    assert "too many connections (general.maxConnections)" in line and second.session.id in line
    lose(first)
    lose(second)


def test_idle_clock_fails_a_silent_peer(clock: Clock, log_events: list[LogEvent]) -> None:
    proto, transport = connect(clock)
    for _ in range(5):
        clock.advance(4)
        proto.dataReceived(b"x")  # activity keeps it
    clock.advance(9)
    assert not transport.aborted
    clock.advance(1)
    assert transport.aborted == 1
    (line,) = lines(log_events, LogLevel.warn)
    assert line.startswith(f"echo session {proto.session.id} from 10.0.0.7:40000: idle for 10 s; closing")
    lose(proto)


def test_bad_input_and_bugs(clock: Clock, log_events: list[LogEvent]) -> None:
    proto, transport = connect(clock)
    proto.dataReceived(b"boom")
    assert transport.aborted == 1
    (line,) = lines(log_events, LogLevel.warn)
    assert "ValueError: bad bytes; closing" in line
    proto.dataReceived(b"more")  # nothing is read once closing
    assert proto.session.bytes_in == 4 and transport.value() == b""
    lose(proto)

    proto, transport = connect(clock)
    proto.dataReceived(b"bug")
    assert transport.aborted == 1
    (failure,) = [e for e in log_events if e.get("log_failure") is not None]
    assert failure["log_failure"].check(RuntimeError) and proto.session.id in formatEvent(failure)
    lose(proto)


def test_refuse_flushes_then_aborts_after_the_grace(clock: Clock, log_events: list[LogEvent]) -> None:
    proto, transport = connect(clock)
    proto.write(b"the reason")
    proto.refuse("told the peer why")
    assert transport.disconnecting and not transport.aborted
    proto.write(b"more")  # nothing is written once closing
    assert transport.value() == b"the reason"
    (line,) = lines(log_events, LogLevel.info)
    assert line == f"echo session {proto.session.id}: told the peer why"
    proto.refuse("again")  # one close, one line
    assert len(lines(log_events, LogLevel.info)) == 1
    clock.advance(CLOSE_GRACE - 0.1)
    assert not transport.aborted
    clock.advance(0.1)  # the peer never read: aborted
    assert transport.aborted == 1
    lose(proto)


def test_a_peer_that_reads_cancels_the_grace_abort(clock: Clock) -> None:
    proto, transport = connect(clock)
    proto.refuse("bye")
    lose(proto)
    assert not clock.getDelayedCalls()
    clock.advance(CLOSE_GRACE)
    assert not transport.aborted


def test_kick_unpublishes_for_good_and_aborts_even_while_flushing(clock: Clock,
                                                                 log_events: list[LogEvent]) -> None:
    proto, transport = connect(clock)
    proto.refuse("flushing")
    assert proto.core.sessions.kick(proto.session.id, "admin")
    assert transport.aborted == 1 and proto.steps == ["stop_publishing abrupt=False"]
    assert not [d for d in clock.getDelayedCalls() if "_abort_if_open" in repr(d)]  # gone with the abort
    proto.kick("again")
    assert transport.aborted == 1
    assert any(line.endswith("kicked: admin") for line in lines(log_events, LogLevel.info))
    lose(proto)


def test_teardown_order(clock: Clock) -> None:
    proto, transport = connect(clock)
    pending: defer.Deferred[None] = defer.Deferred()
    cancelled: list[bool] = []
    pending.addErrback(lambda f: cancelled.append(bool(f.check(defer.CancelledError))))
    proto.pending = pending
    lose(proto)
    assert cancelled == [True] and proto.pending is None
    assert proto.steps == ["stop_playing connected=False", "stop_publishing abrupt=True", "release session_open=True"]
    assert proto.core.sessions.get(proto.session.id) is None
    assert not clock.getDelayedCalls()  # the idle clock is gone


def test_tls_failure_is_one_line(clock: Clock, log_events: list[LogEvent]) -> None:
    proto, _ = connect(clock, secure=True)
    lose(proto, Failure(SSL.Error([("SSL routines", "", "wrong version number")])))
    (line,) = lines(log_events, LogLevel.warn)
    assert "TLS failed" in line and "wrong version number" in line and proto.session.id in line


def test_producer_is_unregistered_only_if_attached(clock: Clock) -> None:
    proto, transport = connect(clock)
    player, other = StreamReader(1000), StreamReader(1000)
    proto.detach_producer(player)  # never attached: nothing to undo
    proto.attach_producer(player)
    assert transport.producer is player and transport.streaming
    proto.detach_producer(other)
    assert transport.producer is player
    proto.detach_producer(player)
    assert transport.producer is None
    proto.attach_producer(player)
    proto.detach_producer(player, connected=False)  # connectionLost: the transport is gone
    assert transport.producer is player
    lose(proto)
