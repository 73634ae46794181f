"""``(vhost, app, stream) → Stream``: who publishes what, and players waiting for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mediasrv.config import DEFAULT_VHOST
from mediasrv.core.sessions import SessionInfo
from mediasrv.core.stream import Stream, StreamKey

log = Logger()


class StreamBusy(Exception):
    """The stream already has a live publisher."""


class StreamNotFound(Exception):
    """No such stream appeared within the wait."""


class StreamListener(Protocol):
    def stream_registered(self, stream: Stream) -> None: ...
    def stream_unregistered(self, stream: Stream) -> None: ...
    def stream_readers_changed(self, stream: Stream) -> None: ...


class StreamRegistry:
    """All streams of the server.

    A stream is created by :meth:`publish`, becomes visible to players when
    its first frame arrives (``Stream.ready``), and is removed by
    :meth:`unpublish`.  When a publisher vanishes without unpublishing, the
    stream is kept for ``continue_push_ms`` so its players stay connected while
    the publisher reconnects (ZLMediaKit's ``protocol.continue_push_ms``).
    """

    def __init__(
        self,
        clock: IReactorTime,
        continue_push_ms: int = 15000,
        max_gop_bytes: int = 16 * 1024 * 1024,
        enable_vhost: bool = False,
    ) -> None:
        self.clock = clock
        self.continue_push_ms = continue_push_ms
        self.max_gop_bytes = max_gop_bytes
        self.enable_vhost = enable_vhost
        self._streams: dict[StreamKey, Stream] = {}
        self._orphan_timers: dict[StreamKey, IDelayedCall] = {}
        self._waiters: dict[StreamKey, list[defer.Deferred[Stream]]] = {}
        self._listeners: list[StreamListener] = []

    def add_listener(self, listener: StreamListener) -> None:
        self._listeners.append(listener)

    def key(self, vhost: str, app: str, stream: str) -> StreamKey:
        return StreamKey(vhost if self.enable_vhost and vhost else DEFAULT_VHOST, app, stream)

    # -- publishing ---------------------------------------------------------
    def publish(self, key: StreamKey, publisher: SessionInfo) -> Stream:
        """Attach ``publisher`` to ``key``; raise StreamBusy if someone publishes it."""
        existing = self._streams.get(key)
        if existing is not None:
            if existing.publisher is not None:
                raise StreamBusy(f"{key} is already being published by session {existing.publisher.id}")
            timer = self._orphan_timers.pop(key, None)
            if timer is not None and timer.active():
                timer.cancel()
            existing.publisher = publisher
            existing.publisher_returned()
            log.info("stream {key} resumed by session {sid}", key=str(key), sid=publisher.id)
            return existing
        stream = Stream(key, self.clock.seconds(), self.max_gop_bytes, on_ready=self._ready,
                        on_readers_changed=self._readers_changed)
        stream.publisher = publisher
        stream.params = publisher.params
        self._streams[key] = stream
        return stream

    def unpublish(self, stream: Stream, publisher: SessionInfo, abrupt: bool) -> None:
        """The publisher stopped.  ``abrupt`` (connection lost without an
        unpublish) keeps the stream for ``continue_push_ms``."""
        if stream.publisher is not publisher or self._streams.get(stream.key) is not stream:
            return
        stream.publisher = None
        grace = stream.options.get("continue_push_ms", self.continue_push_ms)
        if abrupt and grace > 0 and stream.ready and not stream.closed:
            log.info("stream {key} lost its publisher; waiting {ms} ms for it", key=str(stream.key), ms=grace)
            self._orphan_timers[stream.key] = self.clock.callLater(
                grace / 1000.0, self.close_stream, stream.key, "publisher did not come back"
            )
            return
        self.close_stream(stream.key, "unpublished")

    def close_stream(self, key: StreamKey, reason: str) -> bool:
        stream = self._streams.pop(key, None)
        timer = self._orphan_timers.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        if stream is None:
            return False
        publisher = stream.publisher
        stream.publisher = None
        was_ready = stream.ready
        stream.close(reason)
        if was_ready:
            for listener in self._listeners:
                listener.stream_unregistered(stream)
        if publisher is not None:
            publisher.kick(reason)
        return True

    def _readers_changed(self, stream: Stream) -> None:
        if stream.ready and not stream.closed:
            for listener in self._listeners:
                listener.stream_readers_changed(stream)

    def _ready(self, stream: Stream) -> None:
        for listener in self._listeners:
            listener.stream_registered(stream)
        for waiter in self._waiters.pop(stream.key, []):
            waiter.callback(stream)

    # -- playing --------------------------------------------------------------
    def find(self, key: StreamKey) -> Stream | None:
        stream = self._streams.get(key)
        return stream if stream is not None and stream.ready else None

    def wait_for(self, key: StreamKey, timeout: float) -> defer.Deferred[Stream]:
        """Fire with the stream once it is ready, or fail with StreamNotFound
        after ``timeout`` seconds.  Cancelling the Deferred (the player left)
        removes the waiter."""
        stream = self.find(key)
        if stream is not None:
            return defer.succeed(stream)
        if timeout <= 0:
            return defer.fail(StreamNotFound(str(key)))
        waiters = self._waiters.setdefault(key, [])
        timer: list[IDelayedCall] = []

        def cancel(d: defer.Deferred[Stream]) -> None:
            self._forget(key, d)
            if timer and timer[0].active():
                timer[0].cancel()

        d: defer.Deferred[Stream] = defer.Deferred(cancel)
        waiters.append(d)

        def expire() -> None:
            self._forget(key, d)
            d.errback(StreamNotFound(f"{key} did not appear within {timeout:g} s"))

        timer.append(self.clock.callLater(timeout, expire))

        def stop_timer(result: object) -> object:
            if timer[0].active():
                timer[0].cancel()
            return result

        d.addBoth(stop_timer)
        return d

    def _forget(self, key: StreamKey, d: defer.Deferred[Stream]) -> None:
        waiters = self._waiters.get(key)
        if waiters and d in waiters:
            waiters.remove(d)
            if not waiters:
                del self._waiters[key]

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)

    def close_all(self, reason: str) -> None:
        for key in list(self._streams):
            self.close_stream(key, reason)
        for waiters in list(self._waiters.values()):
            for d in list(waiters):
                d.cancel()
