"""The stream directory: which process owns which stream, as one narrow interface.

A stream is *owned* by the process that originates it (its publisher, or the relay pulling
it from outside).  Every other process that has a player for it pulls it from the owner.
Three implementations share the :class:`Directory` protocol:

* :class:`~mediasrv.cluster.local.LocalDirectory` -- one process, in memory (and the
  master's map of its workers);
* :class:`~mediasrv.cluster.node.NodeDirectory` -- one host: its workers' map, plus the
  cluster's directory when ``[cluster] redis`` is set;
* :class:`~mediasrv.cluster.redis.RedisDirectory` -- the nodes of a cluster, in Redis;

and a worker reaches its host's through ``mediasrv.workers.hostdir.HostDirectory`` (AMP).

A claim never takes a stream another live owner holds: ``claim`` answers either "ours" or
the current owner.  Claiming again what is ours is the renewal.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


def stream_key(vhost: str, app: str, stream: str) -> str:
    """The directory key of a stream: ``vhost/app/stream`` (as ZLMediaKit's proxy keys)."""
    return f"{vhost}/{app}/{stream}"


@dataclass(frozen=True)
class OwnerInfo:
    """Who owns a stream and where to pull it from.

    ``node`` and ``epoch`` name one run of one node (the epoch changes at every start, so a
    restarted node never mistakes its predecessor's claims for its own); ``worker`` is the
    worker process on that node; ``flv``/``rtmp`` are base URLs other nodes pull from
    (``http://10.0.0.5:8080``, ``rtmp://10.0.0.5:1935``)."""

    node: str
    epoch: str
    worker: int = 0
    flv: str = ""
    rtmp: str = ""
    origin_type: int = 1
    since_ms: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> OwnerInfo:
        """ValueError when ``text`` is not an owner record."""
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"not JSON: {e}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("node"), str) or not isinstance(raw.get("epoch"), str):
            raise ValueError("not an owner record (node and epoch strings expected)")
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        try:
            info = cls(**known)
        except TypeError as e:
            raise ValueError(str(e)) from None
        if not isinstance(info.worker, int) or not isinstance(info.origin_type, int):
            raise ValueError("worker and origin_type must be integers")
        return info

    def same_node(self, other: OwnerInfo) -> bool:
        """The same run of the same node (the identity a cluster claim is checked against)."""
        return self.node == other.node and self.epoch == other.epoch

    def same_process(self, other: OwnerInfo) -> bool:
        """The same worker of the same node run (the identity a host's claim is checked against)."""
        return self.same_node(other) and self.worker == other.worker


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: ``ours``, or the owner that holds the stream."""

    ours: bool
    owner: OwnerInfo


@dataclass(frozen=True)
class DirectoryEvent:
    """``up``: a stream got an owner; ``down``: its owner released it; ``lost``: a claim of
    ours was found held by someone else (e.g. after Redis lost our key and another node
    claimed the name first) -- the stream must stop here."""

    op: Literal["up", "down", "lost"]
    key: str
    owner: OwnerInfo | None


Listener = Callable[[DirectoryEvent], None]


class DirectoryUnavailable(Exception):
    """The directory could not answer (Redis down or too slow); ``str`` is one log line."""


class Directory(Protocol):
    def claim(self, key: str, owner: OwnerInfo) -> Deferred[Claim]:
        """Take ``key`` for ``owner`` unless another owner holds it (then answer that owner)."""

    def renew(self, key: str, owner: OwnerInfo) -> Deferred[Claim]:
        """The same as :meth:`claim`: keeps (or restores) a claim that is ours."""

    def release(self, key: str, owner: OwnerInfo) -> Deferred[bool]:
        """Drop ``key`` if ``owner`` holds it; True when it did."""

    def lookup(self, key: str) -> Deferred[OwnerInfo | None]:
        """The current owner of ``key``, or None."""

    def wait_for_owner(self, key: str, timeout: float) -> Deferred[OwnerInfo | None]:
        """The owner as soon as there is one, or None after ``timeout`` seconds (cancellable)."""

    def add_listener(self, listener: Listener) -> None: ...

    def remove_listener(self, listener: Listener) -> None: ...

    def close(self) -> Deferred[None]: ...


class Listeners:
    """The listener list every directory keeps; a failing listener is logged, not fatal."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def add(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, event: DirectoryEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.failure("directory listener failed on {event}", event=event)


class Waiters:
    """Players waiting for a stream's owner, per key, each with its own deadline.

    ``recheck`` (e.g. a fresh GET) runs once at a waiter's deadline before it gives up, so a
    wake-up that was lost (a pub/sub message during a disconnect) costs a delay, not a miss."""

    def __init__(self, clock: IReactorTime,
                 recheck: Callable[[str], Deferred[OwnerInfo | None]] | None = None) -> None:
        self.clock = clock
        self.recheck = recheck
        self._waiting: dict[str, list[Deferred[OwnerInfo | None]]] = {}
        self._timers: dict[int, IDelayedCall] = {}

    def keys(self) -> list[str]:
        return list(self._waiting)

    def wait(self, key: str, timeout: float) -> Deferred[OwnerInfo | None]:
        def cancel(d: Deferred[OwnerInfo | None]) -> None:
            self._forget(key, d)

        d: Deferred[OwnerInfo | None] = Deferred(cancel)
        self._waiting.setdefault(key, []).append(d)
        self._timers[id(d)] = self.clock.callLater(timeout, self._deadline, key, d)
        return d

    def wake(self, key: str, owner: OwnerInfo) -> None:
        for d in self._waiting.pop(key, []):
            self._stop_timer(d)
            d.callback(owner)

    def close(self) -> None:
        """Release every waiter with None."""
        for key in list(self._waiting):
            for d in self._waiting.pop(key, []):
                self._stop_timer(d)
                d.callback(None)

    def _deadline(self, key: str, d: Deferred[OwnerInfo | None]) -> None:
        self._timers.pop(id(d), None)
        if self.recheck is None:
            self._forget(key, d)
            d.callback(None)
            return

        def done(result: OwnerInfo | None | Failure) -> None:
            if d.called:
                return
            self._forget(key, d)
            if isinstance(result, Failure):
                if not result.check(CancelledError):
                    log.info("directory: final look-up of {key} failed: {why}", key=key,
                             why=result.getErrorMessage())
                result = None
            d.callback(result)

        self.recheck(key).addBoth(done)

    def _forget(self, key: str, d: Deferred[OwnerInfo | None]) -> None:
        self._stop_timer(d)
        waiting = self._waiting.get(key)
        if waiting and d in waiting:
            waiting.remove(d)
            if not waiting:
                del self._waiting[key]

    def _stop_timer(self, d: Deferred[OwnerInfo | None]) -> None:
        timer = self._timers.pop(id(d), None)
        if timer is not None and timer.active():
            timer.cancel()


def first_owner(waits: list[Deferred[OwnerInfo | None]]) -> Deferred[OwnerInfo | None]:
    """The first non-None owner of several waits (the others cancelled), or None when all end
    without one.  A wait that fails counts as None (it is logged by whoever failed it)."""
    def cancel(_: Deferred[OwnerInfo | None]) -> None:
        for w in waits:
            w.cancel()

    result: Deferred[OwnerInfo | None] = Deferred(cancel)
    remaining = [len(waits)]

    def one(value: Any) -> None:
        remaining[0] -= 1
        if result.called:
            return
        if isinstance(value, Failure):
            value = None
        if value is not None:
            result.callback(value)
            for w in waits:
                w.cancel()
        elif remaining[0] == 0:
            result.callback(None)

    if not waits:
        result.callback(None)
    for w in waits:
        w.addBoth(one)
    return result
