"""A :class:`~mediasrv.relay.interfaces.FrameSource` over an iterable of frames.

Until the integration gives push clients a stream reader as their source,
this is how they are fed: from a list, a generator (a file demuxer), or a
callable wrapped with ``iter(callable, None)``.  Frames are paced by their
``dts`` on the injected clock (real time, as ``ffmpeg -re``), or sent as fast
as the consumer reads; the source is an ``IPushProducer``, so a push
connection that backs up pauses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from mediasrv.core.frames import MediaFrame, Track
from mediasrv.relay.errors import SourceEnded
from mediasrv.relay.interfaces import RelaySink

__all__ = ["IteratorSource"]

BATCH = 64
"""Frames sent per reactor turn when not pacing, so other connections get served."""


@implementer(IPushProducer)
class IteratorSource:
    """Deliver ``tracks``, then ``frames`` (in decode order), then close with :class:`SourceEnded`."""

    def __init__(self, tracks: Sequence[Track], frames: Iterable[MediaFrame], clock: IReactorTime, *,
                 realtime: bool = True) -> None:
        self.tracks = list(tracks)
        self.clock = clock
        self.realtime = realtime
        self.sent = 0
        self.paused = False
        self._frames: Iterator[MediaFrame] = iter(frames)
        self._sink: RelaySink | None = None
        self._held: MediaFrame | None = None
        self._timer: IDelayedCall | None = None
        self._origin: tuple[float, int] | None = None  # (clock seconds, dts) of the first frame

    def start(self, sink: RelaySink) -> None:
        if self._sink is not None:
            raise RuntimeError("IteratorSource started twice")
        self._sink = sink
        sink.tracks_ready(self.tracks)
        self._schedule(0)

    def stop(self) -> None:
        self._sink = None
        self._cancel()

    # -- IPushProducer ---------------------------------------------------------------------------
    def pauseProducing(self) -> None:
        self.paused = True
        self._cancel()

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            if self._sink is not None:
                self._schedule(0)

    def stopProducing(self) -> None:
        self.stop()

    # -- pacing ------------------------------------------------------------------------------------
    def _schedule(self, delay: float) -> None:
        self._cancel()
        self._timer = self.clock.callLater(delay, self._run)

    def _cancel(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _run(self) -> None:
        self._timer = None
        budget = BATCH
        while self._sink is not None and not self.paused:
            frame = self._held if self._held is not None else next(self._frames, None)
            self._held = None
            if frame is None:
                sink, self._sink = self._sink, None
                sink.closed(SourceEnded(f"the source ended after {self.sent} frames"))
                return
            if self.realtime:
                now = self.clock.seconds()
                if self._origin is None:
                    self._origin = (now, frame.dts)
                due = self._origin[0] + (frame.dts - self._origin[1]) / 1000.0
                if due > now:
                    self._held = frame
                    self._schedule(due - now)
                    return
            elif budget == 0:
                self._held = frame
                self._schedule(0)
                return
            budget -= 1
            self.sent += 1
            self._sink.frame(frame)
