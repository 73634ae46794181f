"""The skeleton every client-connection adapter shares (RTMP, RTSP).

A :class:`SessionProtocol` is one client connection seen from the core: its
row in the session table, the ``general.maxConnections`` check, the byte
counters and the idle clock, the ways a connection ends, and the order in
which ``connectionLost`` tears it down.  A protocol subclass parses bytes
(:meth:`~SessionProtocol.bytes_received`), decides when it is idle
(:meth:`~SessionProtocol.idle_expired`) and says how to stop playing and
publishing; everything else is here, so the two adapters cannot drift apart.

It talks to the core only (config, clock, sessions): access decisions come
through the gate, which the subclasses call.

Ending a connection:

* :meth:`~SessionProtocol.fail`: bad input or a refusal with nothing to tell
  the peer: one warning line, then abort.
* :meth:`~SessionProtocol.refuse`: the peer was told why (an error status): one
  info line, then flush and close.
* :meth:`~SessionProtocol.kick`: the admin API or a hook reply said so: the
  publisher leaves at once (no ``continue_push_ms`` grace), then abort.
* Flushing may stall on a peer that never reads; :data:`CLOSE_GRACE` seconds
  later the connection is aborted, so a peer can't keep the socket.
"""

from __future__ import annotations

from typing import Any, ClassVar

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.core.context import Core
from mediasrv.core.sessions import SessionInfo

# seconds a closing peer gets to read what we still send (a refusal's reason)
CLOSE_GRACE = 5.0


class SessionProtocol(Protocol):
    """One client connection: session row, capacity, byte counters, idle
    clock, closing and teardown.  See the module docstring."""

    name: ClassVar[str] = ""
    """``rtmp`` / ``rtsp``: the session's protocol (``rtmps`` / ``rtsps`` over
    TLS) and the first word of every log line."""

    bad_input: ClassVar[tuple[type[Exception], ...]] = ()
    """Exceptions from :meth:`bytes_received` that mean the peer sent garbage:
    :meth:`fail` with their message.  Any other exception is a bug of ours:
    logged with its traceback, and only this connection goes."""

    def __init__(self, core: Core, secure: bool = False) -> None:
        self.core = core
        self.secure = secure
        self.session: SessionInfo = None  # type: ignore[assignment]  # set in connectionMade
        self.closing = False
        self.last_activity = 0.0
        # a gate, hook or stream wait in progress; cancelled when the peer leaves
        self.pending: defer.Deferred[Any] | None = None
        # the namespace of the adapter's module (mediasrv.rtmp.protocol, ...)
        self.log = Logger(namespace=type(self).__module__, source=self)
        self._idle_timer: IDelayedCall | None = None
        self._abort_timer: IDelayedCall | None = None
        self._aborted = False
        self._producer: IPushProducer | None = None

    # -- for subclasses -------------------------------------------------------------
    def session_started(self) -> None:
        """The connection is admitted (a session row, within capacity): arm the idle clock."""

    def bytes_received(self, data: bytes) -> None:
        """Bytes from the peer (already counted in ``bytes_in``; never called while closing)."""

    def idle_expired(self, idle: float) -> str | None:
        """Asked by the idle clock with the seconds since the peer last did
        something: why the connection must go, or None to keep it."""
        return None

    def idle_check_interval(self) -> float:
        """Seconds until the idle clock asks again."""
        return 1.0

    def stop_playing(self, connected: bool = True) -> None:
        """Leave the stream being played, if any (``connected`` is False in ``connectionLost``)."""

    def stop_publishing(self, abrupt: bool) -> None:
        """Unpublish, if publishing; ``abrupt`` lets the stream wait for the
        publisher to come back (``continue_push_ms``)."""

    def release(self) -> None:
        """Free what else the connection holds (ports, queues); last step of the teardown."""

    # -- Twisted callbacks -------------------------------------------------------------
    def connectionMade(self) -> None:
        protocol = self.name + "s" if self.secure else self.name
        self.session = self.core.open_session(protocol, self.transport, self.kick)
        self.touch()
        if self.core.over_capacity():
            self.fail("too many connections (general.maxConnections)")
            return
        self.session_started()

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self.session.bytes_in += len(data)
        self.touch()
        try:
            self.bytes_received(data)
        except self.bad_input as e:
            self.fail(f"{type(e).__name__}: {e}")
        except Exception:
            # A bug of ours, not the peer's: the traceback with the session id,
            # and only this connection goes.
            self.log.failure("{name} session {sid}: internal error; closing", name=self.name, sid=self.session.id)
            self.close(abort=True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The teardown order: timers, the pending step, playing, publishing,
        the rest, and last the session row (its listeners see a finished session)."""
        if not self.closing and reason.check(SSL.Error):
            # Garbage on a TLS port (plain RTMP/RTSP, HTTP, a scanner) never
            # reaches dataReceived: TLS itself refuses it.
            self.log.warn("{name} session {sid} from {ip}:{port}: TLS failed: {why}; closing", name=self.name,
                          sid=self.session.id, ip=self.session.peer_ip, port=self.session.peer_port,
                          why=reason.getErrorMessage())
        self.closing = True
        for timer in (self._idle_timer, self._abort_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = self._abort_timer = None
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.cancel()
        self.stop_playing(connected=False)
        self.stop_publishing(abrupt=True)
        self.release()
        if self.session is not None:
            self.core.sessions.close(self.session)

    # -- output ---------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send to the peer, counted in ``bytes_out``; nothing once closing."""
        if self.closing or self.transport is None:
            return
        self.session.bytes_out += len(data)
        self.transport.write(data)

    def attach_producer(self, producer: IPushProducer) -> None:
        """Let the transport pause ``producer`` (a player) while its buffer is full."""
        if self.transport is not None:
            self.transport.registerProducer(producer, True)  # type: ignore[attr-defined]
            self._producer = producer

    def detach_producer(self, producer: IPushProducer, connected: bool = True) -> None:
        """Undo :meth:`attach_producer`.  Whatever the transport: a TLS
        transport keeps its producer as ``_producer`` (not ``producer``), and
        while one is registered its ``loseConnection`` never shuts TLS down."""
        if self._producer is not producer:
            return
        self._producer = None
        if connected and self.transport is not None:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]

    # -- the idle clock ----------------------------------------------------------------------
    def touch(self) -> None:
        """The peer did something that keeps the connection alive."""
        self.last_activity = self.core.clock.seconds()

    def arm_idle_check(self, delay: float) -> None:
        """Ask :meth:`idle_expired` in ``delay`` seconds (replacing an earlier schedule)."""
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = self.core.clock.callLater(delay, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        why = self.idle_expired(self.core.clock.seconds() - self.last_activity)
        if why is not None:
            self.fail(why)
            return
        self.arm_idle_check(self.idle_check_interval())

    # -- ending ----------------------------------------------------------------------------
    def fail(self, why: str, abort: bool = True) -> None:
        """Bad input or a refusal that ends the connection: one warning line, then close."""
        if self.closing:
            return
        s = self.session
        self.log.warn("{name} session {sid} from {ip}:{port}: {why}; closing", name=self.name, sid=s.id,
                      ip=s.peer_ip, port=s.peer_port, why=why)
        self.close(abort)

    def refuse(self, why: str) -> None:
        """A refusal after the peer was told why: flush the reply, then close."""
        if self.closing:
            return
        self.log.info("{name} session {sid}: {why}", name=self.name, sid=self.session.id, why=why)
        self.close(abort=False)

    def kick(self, reason: str) -> None:
        """The session table's closer: the publisher leaves for good, the connection is aborted."""
        self.log.info("{name} session {sid} kicked: {reason}", name=self.name, sid=self.session.id, reason=reason)
        self.stop_publishing(abrupt=False)
        self.close(abort=True)

    def close(self, abort: bool) -> None:
        """Abort at once (bad input, kick), or flush and close -- and abort
        after :data:`CLOSE_GRACE` if the peer never reads.  A later abort
        overrides a flush in progress.  The timer is armed before
        ``loseConnection``, which may call ``connectionLost`` at once."""
        self.closing = True
        transport = self.transport
        if transport is None or self._aborted:
            return
        if abort:
            self._aborted = True
            if self._abort_timer is not None and self._abort_timer.active():
                self._abort_timer.cancel()
            self._abort_timer = None
            transport.abortConnection()  # type: ignore[attr-defined]
        elif self._abort_timer is None:
            self._abort_timer = self.core.clock.callLater(CLOSE_GRACE, self._abort_if_open)
            transport.loseConnection()

    def _abort_if_open(self) -> None:
        self._abort_timer = None
        if getattr(self.transport, "connected", False) and not self._aborted:
            self._aborted = True
            self.transport.abortConnection()  # type: ignore[union-attr]
