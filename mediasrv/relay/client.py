"""The lifecycle every relay client shares: start with a deadline, run, close exactly once.

:class:`RelayClient` owns the states (idle → connecting → started → closed),
the ``timeout_sec`` deadline for starting (connect, TLS, handshake, the
protocol's exchange, the first tracks), the idle watchdog once started (a
source silent for ``timeout_sec`` is cut off), byte counters for the APIs,
and the one log line per close.  :class:`TcpRelayClient` adds the TCP (and
TLS, for rtmps/rtsps) connection through Twisted endpoints and a thin
``Protocol`` that only forwards.  Protocol logic lives in the sans-IO
sessions; the subclasses (``relay.rtmp``, ``relay.rtsp``, ``relay.httpflv``)
connect the two.

Time comes only from the injected reactor (``IReactorTime``), so unit tests
drive it with ``task.Clock``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IOpenSSLClientConnectionCreator, IReactorTime, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.core.adapter import CLOSE_GRACE
from mediasrv.core.frames import MediaFrame, Track
from mediasrv.relay.errors import ConnectFailed, PeerClosed, ProtocolViolation, RelayError, RelayTimeout, Stopped
from mediasrv.relay.interfaces import RelaySink
from mediasrv.relay.tracks import TrackAssembler
from mediasrv.relay.url import RelayUrl

__all__ = ["DEFAULT_TIMEOUT_SEC", "PullDelivery", "RelayClient", "State", "TcpRelayClient"]

log = Logger()

DEFAULT_TIMEOUT_SEC = 10.0


class State(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    STARTED = "started"
    CLOSED = "closed"


class RelayClient:
    """One relay connection.  Subclasses implement :meth:`_connect`, :meth:`_teardown` and :meth:`_deliver_close`.

    :param reactor: provides ``IReactorTime`` and whatever the client connects
        with (``IReactorTCP``, ``IReactorUDP``, ``IReactorSSL``).
    :param timeout_sec: deadline for starting, and the longest silence
        tolerated from a source once started.
    """

    role = "pull"
    watch_idle = True

    def __init__(self, url: str | RelayUrl, reactor: Any, *, timeout_sec: float = DEFAULT_TIMEOUT_SEC) -> None:
        self.url = url if isinstance(url, RelayUrl) else RelayUrl.parse(url)
        if not timeout_sec > 0:
            raise ValueError(f"timeout_sec must be > 0, not {timeout_sec!r}")
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.timeout_sec = float(timeout_sec)
        self.state = State.IDLE
        self.reason: RelayError | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.started_at = 0.0
        self.last_activity = 0.0
        self._started: defer.Deferred[None] | None = None
        self._closed_waiters: list[defer.Deferred[RelayError]] = []
        self._timer: IDelayedCall | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.role} {self.url.masked()} {self.state.value}>"

    # -- public ------------------------------------------------------------------------------
    def masked_url(self) -> str:
        return self.url.masked()

    def start(self) -> defer.Deferred[None]:
        """Connect and start; fires when media can flow, or errbacks with the :class:`RelayError`."""
        if self.state is not State.IDLE:
            raise RuntimeError(f"{self!r} was already started")
        self.state = State.CONNECTING
        d: defer.Deferred[None] = defer.Deferred()
        self._started = d
        self.last_activity = self.clock.seconds()
        self._timer = self.clock.callLater(self.timeout_sec, self._start_timeout)
        try:
            self._connect()
        except Exception as e:
            self._fail(e if isinstance(e, RelayError) else ConnectFailed(f"cannot connect to {self.url.netloc}: {e}"))
        return d

    def stop(self, reason: RelayError | None = None) -> None:
        """Stop in any state; the close reason is :class:`Stopped` unless given."""
        self._finish(reason or Stopped(f"{self.role} of {self.url.masked()} stopped"))

    def when_closed(self) -> defer.Deferred[RelayError]:
        """A fresh Deferred fired with the close reason (at once if already closed)."""
        if self.reason is not None:
            return defer.succeed(self.reason)
        d: defer.Deferred[RelayError] = defer.Deferred()
        self._closed_waiters.append(d)
        return d

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def describe(self) -> dict[str, Any]:
        """Counters for the APIs (``listStreamProxy`` and friends)."""
        return {"url": self.url.masked(), "role": self.role, "state": self.state.value,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "started_at": self.started_at,
                "reason": str(self.reason) if self.reason is not None else ""}

    # -- for subclasses -----------------------------------------------------------------------
    def _connect(self) -> None:
        raise NotImplementedError

    def _teardown(self, reason: RelayError) -> None:
        """Release the connection (politely unless ``reason`` is a protocol violation)."""

    def _deliver_close(self, reason: RelayError) -> None:
        """Tell the sink (pull) or the source (push)."""

    def _touch(self, received: int = 0) -> None:
        self.bytes_in += received
        self.last_activity = self.clock.seconds()

    def _mark_started(self) -> None:
        if self.state is not State.CONNECTING:
            return
        self.state = State.STARTED
        self.started_at = self.last_activity = self.clock.seconds()
        self._cancel_timer()
        if self.watch_idle:
            self._arm_watchdog()
        log.info("relay {role} {url}: started", role=self.role, url=self.url.masked())
        d, self._started = self._started, None
        if d is not None:
            d.callback(None)

    def _fail(self, reason: RelayError) -> None:
        self._finish(reason)

    # -- internals ----------------------------------------------------------------------------
    def _finish(self, reason: RelayError) -> None:
        if self.state is State.CLOSED:
            return
        was = self.state
        self.state = State.CLOSED
        self.reason = reason
        self._cancel_timer()
        if isinstance(reason, Stopped):
            log.info("relay {role} {url}: {why}", role=self.role, url=self.url.masked(), why=reason)
        else:
            log.warn("relay {role} {url}: {kind}: {why}{when}", role=self.role, url=self.url.masked(),
                     kind=type(reason).__name__, why=reason, when="" if was is State.STARTED else " (while starting)")
        try:
            self._teardown(reason)
        finally:
            # the sink or source hears it first: whoever awaits start() finds it told
            self._deliver_close(reason)
            d, self._started = self._started, None
            if d is not None:
                d.errback(Failure(reason))
            waiters, self._closed_waiters = self._closed_waiters, []
            for w in waiters:
                w.callback(reason)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _start_timeout(self) -> None:
        self._timer = None
        self._fail(RelayTimeout(f"{self.url.masked()} did not start within {self.timeout_sec:g} s"
                                f"{self._start_stage()}"))

    def _start_stage(self) -> str:
        """Where starting got stuck, for the timeout message (`` (waiting for ...)``)."""
        return ""

    def _arm_watchdog(self) -> None:
        self._timer = self.clock.callLater(max(0.5, self.timeout_sec / 4), self._watchdog)

    def _watchdog(self) -> None:
        self._timer = None
        idle = self.clock.seconds() - self.last_activity
        if idle >= self.timeout_sec:
            self._fail(RelayTimeout(f"no data from {self.url.masked()} for {idle:.1f} s"))
            return
        self._arm_watchdog()


class _ForwardingProtocol(Protocol):
    """The thin Twisted side of a TCP relay client: forwards to it, decides nothing."""

    def __init__(self, client: TcpRelayClient) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client._connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.client._data_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.client._connection_lost(reason)


class TcpRelayClient(RelayClient):
    """A relay client on one TCP connection (TLS for the secure schemes).

    :param tls: client TLS options for rtmps/rtsps (default: verify the
        server's certificate for the URL's host against the system's CAs).
    """

    def __init__(self, url: str | RelayUrl, reactor: Any, *, timeout_sec: float = DEFAULT_TIMEOUT_SEC,
                 tls: IOpenSSLClientConnectionCreator | None = None) -> None:
        super().__init__(url, reactor, timeout_sec=timeout_sec)
        self.tls = tls
        self.transport: ITransport | None = None
        self._connecting: defer.Deferred[Protocol] | None = None
        self._abort_timer: IDelayedCall | None = None

    # -- connecting ----------------------------------------------------------------------------
    def _connect(self) -> None:
        url = self.url
        endpoint: Any = HostnameEndpoint(self.reactor, url.host, url.port, timeout=self.timeout_sec)
        if url.secure:
            endpoint = wrapClientTLS(self.tls or optionsForClientTLS(url.host), endpoint, self.clock)
        self._connecting = d = connectProtocol(endpoint, _ForwardingProtocol(self))
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, proto: Protocol) -> None:
        self._connecting = None

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(defer.CancelledError) or self.closed:
            return
        self._fail(ConnectFailed(f"cannot connect to {self.url.netloc}: {failure.getErrorMessage()}"))

    def _connection_made(self, proto: Protocol) -> None:
        self.transport = proto.transport
        if self.closed:  # stopped while the connection was being made
            self._close_transport(abort=True)
            return
        self._on_connected()

    def _data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._touch(len(data))
        try:
            self._on_data(data)
        except RelayError as e:
            self._fail(e)
        except Exception:
            log.failure("relay {role} {url}: internal error", role=self.role, url=self.url.masked())
            self._fail(RelayError(f"internal error in the {self.role} client of {self.url.masked()}"))

    def _connection_lost(self, reason: Failure) -> None:
        self.transport = None
        timer, self._abort_timer = self._abort_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self.closed:
            return
        if reason.check(SSL.Error):
            self._fail(ConnectFailed(f"TLS with {self.url.netloc} failed: {reason.getErrorMessage()}"))
        else:
            self._fail(self._lost_reason(reason))

    def _lost_reason(self, reason: Failure) -> RelayError:
        return PeerClosed(f"{self.url.masked()} closed the connection ({reason.getErrorMessage()})")

    # -- for subclasses ----------------------------------------------------------------------------
    def _on_connected(self) -> None:
        raise NotImplementedError

    def _on_data(self, data: bytes) -> None:
        raise NotImplementedError

    def _goodbye(self) -> bytes:
        """The protocol's polite last words (TEARDOWN, deleteStream), written before closing."""
        return b""

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.closed:
            self.bytes_out += len(data)
            self.transport.write(data)

    # -- closing -------------------------------------------------------------------------------------
    def _teardown(self, reason: RelayError) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        if self.transport is None:
            return
        abort = isinstance(reason, (ProtocolViolation, RelayTimeout))
        if not abort:
            try:
                data = self._goodbye()
            except Exception:
                log.failure("relay {role} {url}: goodbye failed", role=self.role, url=self.url.masked())
                data = b""
            if data:
                self.bytes_out += len(data)
                self.transport.write(data)
        self._close_transport(abort)

    def _close_transport(self, abort: bool) -> None:
        """Abort at once, or flush and close and abort after the server
        adapters' :data:`CLOSE_GRACE` if the peer never reads (the timer is
        armed before ``loseConnection``, which may call ``connectionLost`` at once)."""
        transport: Any = self.transport
        if transport is None:
            return
        if abort:
            transport.abortConnection()
            return
        self._abort_timer = self.clock.callLater(CLOSE_GRACE, self._abort_if_open, transport)
        transport.loseConnection()

    def _abort_if_open(self, transport: Any) -> None:
        self._abort_timer = None
        if getattr(transport, "connected", False):
            transport.abortConnection()


class PullDelivery:
    """The pull side of a client: tracks and frames through a :class:`TrackAssembler` to the sink.

    The first ``tracks_ready`` marks the client started (a pulled stream is
    usable once its tracks are known); nothing reaches the sink after the
    client closed, and ``closed`` reaches it exactly once.
    """

    def __init__(self, client: RelayClient, sink: RelaySink) -> None:
        self.client = client
        self.sink = sink
        self.assembler = TrackAssembler(self)
        self.frames = 0

    # what the assembler calls
    def tracks_ready(self, tracks: Sequence[Track]) -> None:
        if self.client.closed:
            return
        self.sink.tracks_ready(tracks)
        self.client._mark_started()

    def frame(self, frame: MediaFrame) -> None:
        if self.client.closed:
            return
        self.frames += 1
        self.sink.frame(frame)

    def closed(self, reason: RelayError) -> None:
        self.sink.closed(reason)
