"""RTMP relay clients: pull (play) and push (publish), over rtmp:// and rtmps://.

Thin adapters between a TCP connection (:class:`~mediasrv.relay.client.TcpRelayClient`)
and the sans-IO :class:`~mediasrv.relay.rtmp_session.RtmpClientSession`.

* :class:`RtmpPullClient` plays ``rtmp://host[:port]/app/stream[?query]``
  into a :class:`~mediasrv.relay.interfaces.RelaySink`.  Started once the
  tracks are known; an unpublish on the source closes it with
  :class:`~mediasrv.relay.errors.SourceEnded`.
* :class:`RtmpPushClient` publishes a
  :class:`~mediasrv.relay.interfaces.FrameSource` to
  ``rtmp://host/app/stream``.  Started on ``NetStream.Publish.Start``; the
  source is started then, and stopped when the push closes.  The push is the
  connection's producer: a target that stops reading pauses the source (if
  it can be paused) and, after ``timeout_sec`` paused, is cut off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IOpenSSLClientConnectionCreator, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from mediasrv.core.frames import MediaFrame, Track
from mediasrv.relay.client import DEFAULT_TIMEOUT_SEC, PullDelivery, TcpRelayClient
from mediasrv.relay.errors import RelayError, RelayTimeout, SourceEnded, Stopped, UnsupportedUrl
from mediasrv.relay.interfaces import FrameSource, RelaySink
from mediasrv.relay.rtmp_session import Ended, Metadata, Mode, Notice, RtmpClientSession, Started
from mediasrv.relay.url import RelayUrl

__all__ = ["RtmpPullClient", "RtmpPushClient"]

log = Logger()


class _RtmpClient(TcpRelayClient):
    mode = Mode.PLAY

    def __init__(self, url: str | RelayUrl, reactor: Any, *, timeout_sec: float = DEFAULT_TIMEOUT_SEC,
                 tls: IOpenSSLClientConnectionCreator | None = None, digest_handshake: bool = False) -> None:
        super().__init__(url, reactor, timeout_sec=timeout_sec, tls=tls)
        if self.url.scheme not in ("rtmp", "rtmps"):
            raise UnsupportedUrl(f"{self.url.masked()} is not an rtmp:// or rtmps:// URL")
        app, stream, tc_url = self.url.rtmp_target()
        self.session = RtmpClientSession(app, stream, tc_url, self.mode, digest_handshake=digest_handshake)

    def _on_connected(self) -> None:
        self.write(self.session.data_to_send())

    def _on_data(self, data: bytes) -> None:
        events = self.session.receive_data(data)
        self.write(self.session.data_to_send())
        for event in events:
            if self.closed:
                return
            self._event(event)

    def _event(self, event: object) -> None:
        raise NotImplementedError

    def _goodbye(self) -> bytes:
        self.session.close()
        return self.session.data_to_send()

    def _start_stage(self) -> str:
        s = self.session
        if not s.handshake.complete:
            return " (RTMP handshake)"
        if not s.stream_id:
            return " (connect/createStream)"
        if not s.started:
            return f" ({self.mode.value} not answered)"
        return " (no tracks)"


class RtmpPullClient(_RtmpClient):
    """Play an RTMP stream into ``sink``."""

    role = "pull"
    mode = Mode.PLAY

    def __init__(self, url: str | RelayUrl, sink: RelaySink, reactor: Any, *,
                 timeout_sec: float = DEFAULT_TIMEOUT_SEC, tls: IOpenSSLClientConnectionCreator | None = None,
                 digest_handshake: bool = False) -> None:
        super().__init__(url, reactor, timeout_sec=timeout_sec, tls=tls, digest_handshake=digest_handshake)
        self.delivery = PullDelivery(self, sink)

    def _event(self, event: object) -> None:
        assembler = self.delivery.assembler
        if isinstance(event, MediaFrame):
            assembler.frame(event)
        elif isinstance(event, Track):
            assembler.track(event)
        elif isinstance(event, Metadata):
            assembler.expect(event.kinds())
        elif isinstance(event, Ended):
            self._fail(SourceEnded(f"{self.url.masked()} ended the stream: {event.code}"))
        elif isinstance(event, Notice):
            log.info("relay pull {url}: {text}", url=self.url.masked(), text=event.text)
        # Started: the tracks decide when the pull counts as started

    def _deliver_close(self, reason: RelayError) -> None:
        self.delivery.closed(reason)


@implementer(IPushProducer)
class RtmpPushClient(_RtmpClient):
    """Publish ``source`` to an RTMP server."""

    role = "push"
    mode = Mode.PUBLISH
    watch_idle = False  # a target only acknowledges; a stalled one is caught by the paused deadline

    def __init__(self, url: str | RelayUrl, source: FrameSource, reactor: Any, *,
                 timeout_sec: float = DEFAULT_TIMEOUT_SEC, tls: IOpenSSLClientConnectionCreator | None = None,
                 digest_handshake: bool = False) -> None:
        super().__init__(url, reactor, timeout_sec=timeout_sec, tls=tls, digest_handshake=digest_handshake)
        self.source = source
        self.frames_out = 0
        self.paused = False
        self._tracks_sent = False
        self._source_started = False
        self._producer_registered = False
        self._paused_timer: IDelayedCall | None = None

    # -- the target --------------------------------------------------------------------------
    def _event(self, event: object) -> None:
        if isinstance(event, Started):
            self._mark_started()
            if self.transport is not None:
                self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
                self._producer_registered = True
            self._source_started = True
            self.source.start(_PushSink(self))
        elif isinstance(event, Notice):
            log.info("relay push {url}: {text}", url=self.url.masked(), text=event.text)

    # -- the source (through _PushSink) --------------------------------------------------------
    def send_tracks(self, tracks: Sequence[Track]) -> None:
        if self.closed or not tracks:
            return
        self.session.send_tracks(tracks)
        self._tracks_sent = True
        self.write(self.session.data_to_send())

    def send_frame(self, frame: MediaFrame) -> None:
        if self.closed or not self._tracks_sent:
            return
        self.session.send_frame(frame)
        self.frames_out += 1
        self.write(self.session.data_to_send())

    def source_closed(self, reason: RelayError) -> None:
        if not self.closed:
            self._source_started = False  # it is done; no stop() owed
            self._finish(Stopped(f"push to {self.url.masked()} ended with its source: {reason}"))

    # -- IPushProducer: the target's transport pauses and resumes us ------------------------------
    def pauseProducing(self) -> None:
        self.paused = True
        if self._paused_timer is None:
            self._paused_timer = self.clock.callLater(self.timeout_sec, self._stalled)
        if IPushProducer.providedBy(self.source):
            self.source.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self.paused = False
        self._cancel_paused_timer()
        if IPushProducer.providedBy(self.source):
            self.source.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        self._cancel_paused_timer()

    def _stalled(self) -> None:
        self._paused_timer = None
        self._fail(RelayTimeout(f"{self.url.masked()} has not read what we sent for {self.timeout_sec:g} s"))

    def _cancel_paused_timer(self) -> None:
        timer, self._paused_timer = self._paused_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # -- closing -------------------------------------------------------------------------------
    def _teardown(self, reason: RelayError) -> None:
        self._cancel_paused_timer()
        if self._producer_registered and self.transport is not None:
            self._producer_registered = False
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
        super()._teardown(reason)

    def _deliver_close(self, reason: RelayError) -> None:
        if self._source_started:
            self._source_started = False
            self.source.stop()


class _PushSink:
    """What the source sees of a push client (a :class:`RelaySink`)."""

    def __init__(self, client: RtmpPushClient) -> None:
        self._client = client

    def tracks_ready(self, tracks: Sequence[Track]) -> None:
        self._client.send_tracks(tracks)

    def frame(self, frame: MediaFrame) -> None:
        self._client.send_frame(frame)

    def closed(self, reason: RelayError) -> None:
        self._client.source_closed(reason)
