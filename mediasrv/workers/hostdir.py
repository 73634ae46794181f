"""The worker's side of the control channel: HostDirectory and the calls the master fans out.

:class:`WorkerControl` is the AMP protocol on the worker's end of its control connection;
:class:`HostDirectory` is the :class:`~mediasrv.cluster.directory.Directory` a worker uses --
every question goes to the master, which answers from the host's map (and Redis, in a
cluster).  The wiring registers the worker's handlers of the fan-out calls
(:data:`mediasrv.workers.control.CALLS`) with :meth:`WorkerControl.handle`.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from mediasrv.cluster.directory import (
    Claim,
    DirectoryEvent,
    DirectoryUnavailable,
    Listener,
    Listeners,
    OwnerInfo,
    Waiters,
)
from mediasrv.workers import control

log = Logger()


def _owner(raw: Any) -> OwnerInfo | None:
    return None if raw is None else OwnerInfo.from_json(json.dumps(raw))


class WorkerControl(amp.AMP):  # type: ignore[misc]
    def __init__(self, on_master_lost: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.on_master_lost = on_master_lost
        self.directory: HostDirectory | None = None
        self._handlers: dict[str, Callable[[Any], Any]] = {}
        self.alive = False

    def handle(self, call: str, handler: Callable[[Any], Any]) -> None:
        """Answer the master's ``call`` (a key of ``control.CALLS``) with ``handler(args)``
        (a value or a Deferred of one, JSON-able)."""
        if call not in control.CALLS:
            raise KeyError(call)
        self._handlers[call] = handler

    def connectionMade(self) -> None:
        super().connectionMade()
        self.alive = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.alive = False
        super().connectionLost(reason)
        if self.directory is not None:
            self.directory._master_lost()
        if self.on_master_lost is not None:
            self.on_master_lost()

    def _call(self, call: str, args: Any) -> Deferred[dict[str, Any]]:
        handler = self._handlers.get(call)
        if handler is None:
            raise amp.RemoteAmpError(b"UNHANDLED", f"this worker does not answer {call!r}")
        return maybeDeferred(handler, args).addCallback(lambda r: {"result": r})

    @control.ListSessions.responder
    def list_sessions(self, args: Any) -> Deferred[dict[str, Any]]:
        return self._call("sessions", args)

    @control.Kick.responder
    def kick(self, args: Any) -> Deferred[dict[str, Any]]:
        return self._call("kick", args)

    @control.CloseStreams.responder
    def close_streams(self, args: Any) -> Deferred[dict[str, Any]]:
        return self._call("close_streams", args)

    @control.ListStreams.responder
    def list_streams(self, args: Any) -> Deferred[dict[str, Any]]:
        return self._call("streams", args)

    @control.MetricsText.responder
    def metrics_text(self, args: Any) -> Deferred[dict[str, Any]]:
        return self._call("metrics", args)

    @control.StreamUp.responder
    def stream_up(self, key: str, owner: Any) -> dict[str, Any]:
        self._event("up", key, owner)
        return {}

    @control.StreamDown.responder
    def stream_down(self, key: str, owner: Any) -> dict[str, Any]:
        self._event("down", key, owner)
        return {}

    @control.StreamLost.responder
    def stream_lost(self, key: str, owner: Any) -> dict[str, Any]:
        self._event("lost", key, owner)
        return {}

    def _event(self, op: Any, key: str, owner: Any) -> None:
        if self.directory is not None:
            self.directory._event(DirectoryEvent(op, key, _owner(owner)))


def connect_control(reactor: Any, fd: int, on_master_lost: Callable[[], None] | None = None) -> WorkerControl:
    """Adopt the inherited control socket ``fd`` (closed here; the reactor holds its duplicate)."""
    proto = WorkerControl(on_master_lost)
    reactor.adoptStreamConnection(fd, socket.AF_UNIX, Factory.forProtocol(lambda: proto))
    os.close(fd)
    return proto


class HostDirectory:
    """The Directory of a worker process: its host's directory, reached over AMP.

    ``me`` is this worker's owner record; the master overrides its identity anyway."""

    def __init__(self, link: WorkerControl, me: OwnerInfo, clock: IReactorTime, timeout: float = 5.0) -> None:
        self.link = link
        self.me = me
        self.clock = clock
        self.timeout = timeout
        link.directory = self
        self._listeners = Listeners()
        self._waiters = Waiters(clock, self.lookup)
        self._watching: dict[str, int] = {}

    def claim(self, key: str, owner: OwnerInfo) -> Deferred[Claim]:
        d = self._remote(control.Claim, key=key, owner=json.loads(owner.to_json()))
        return d.addCallback(lambda r: Claim(bool(r["ours"]), _owner(r["owner"]) or owner))

    renew = claim

    def release(self, key: str, owner: OwnerInfo) -> Deferred[bool]:
        d = self._remote(control.Release, key=key, owner=json.loads(owner.to_json()))
        return d.addCallback(lambda r: bool(r["released"]))

    def lookup(self, key: str) -> Deferred[OwnerInfo | None]:
        return self._remote(control.Lookup, key=key).addCallback(lambda r: _owner(r["owner"]))

    def wait_for_owner(self, key: str, timeout: float) -> Deferred[OwnerInfo | None]:
        """Watch, look up, then wait for StreamUp (or the deadline's final look-up)."""
        self.watch(key)
        wait = self._waiters.wait(key, timeout)

        def looked(owner: OwnerInfo | None | Failure) -> None:
            if isinstance(owner, OwnerInfo):
                self._waiters.wake(key, owner)

        self.lookup(key).addBoth(looked)

        def done(value: Any) -> Any:
            self.unwatch(key)
            return value

        return wait.addBoth(done)

    def watch(self, key: str) -> None:
        """Receive ``up``/``down`` events for ``key`` (counted: one Unwatch per watch)."""
        self._watching[key] = self._watching.get(key, 0) + 1
        if self._watching[key] == 1:
            self._remote(control.Watch, key=key).addErrback(lambda f: None)

    def unwatch(self, key: str) -> None:
        n = self._watching.get(key, 0) - 1
        if n > 0:
            self._watching[key] = n
            return
        self._watching.pop(key, None)
        if n == 0:
            self._remote(control.Unwatch, key=key).addErrback(lambda f: None)

    def fan_out(self, call: str, args: Any) -> Deferred[tuple[Any, list[int]]]:
        """``call`` on every worker of the host, merged: (result, workers that did not answer)."""
        d = self._remote(control.FanOut, call=call, args=args)
        return d.addCallback(lambda r: (r["result"], list(r["missing"])))

    def add_listener(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def close(self) -> Deferred[None]:
        self._waiters.close()
        return succeed(None)

    def _event(self, event: DirectoryEvent) -> None:
        if event.op == "up" and event.owner is not None:
            self._waiters.wake(event.key, event.owner)
        self._listeners.emit(event)

    def _master_lost(self) -> None:
        self._waiters.close()

    def _remote(self, command: type[amp.Command], **kw: Any) -> Deferred[dict[str, Any]]:
        if not self.link.alive:
            return _unavailable("the master is not connected")
        d: Deferred[dict[str, Any]] = self.link.callRemote(command, **kw)
        d.addTimeout(self.timeout, self.clock)

        def failed(f: Failure) -> Failure:
            if f.check(control.DirectoryError):
                return Failure(DirectoryUnavailable(f.getErrorMessage()))
            if f.check(amp.RemoteAmpError):
                return f
            return Failure(DirectoryUnavailable(f"master: {f.getErrorMessage() or f.type.__name__}"))

        return d.addErrback(failed)


def _unavailable(why: str) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(DirectoryUnavailable(why))
    return d
