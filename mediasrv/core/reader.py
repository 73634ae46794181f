"""A player's view of a stream: a bounded queue that never blocks the publisher.

``Stream.write`` calls :meth:`StreamReader.push` for every frame.  While the
player's transport accepts data, frames go straight out.  When the transport
pauses us (Twisted's ``IPushProducer``), frames queue up to
``max_queue_bytes``; past that the queue is thrown away and the reader drops
every frame until the next video keyframe, counting the drops, so a slow
player costs the server a bounded amount of memory and resumes on a clean
picture.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from mediasrv.core.frames import MediaFrame, TrackKind

if TYPE_CHECKING:
    from mediasrv.core.sessions import SessionInfo
    from mediasrv.core.stream import Stream


@implementer(IPushProducer)
class StreamReader:
    """Base class of every player.  Subclasses implement the ``send_*`` methods
    (write muxed bytes to their transport) and may override ``stream_ended``."""

    # the ZLMediaKit schema this reader serves (rtmp for RTMP and FLV players,
    # rtsp, hls, mp4): readerCount per schema in on_stream_changed and the APIs
    schema = ""

    def __init__(self, max_queue_bytes: int, session: SessionInfo | None = None) -> None:
        self.stream: Stream | None = None
        self.session = session
        self.max_queue_bytes = max_queue_bytes
        self.paused = False
        self.need_keyframe = True
        self.dropped_frames = 0
        self._queue: deque[MediaFrame] = deque()
        self._queued_bytes = 0

    # -- called by Stream -------------------------------------------------
    def attached(self, stream: Stream) -> None:
        """Added to ``stream``: send the stream headers; frames follow."""
        self.stream = stream
        self.send_headers(stream)

    def push(self, frame: MediaFrame) -> None:
        if self.need_keyframe:
            if not self._starts_picture(frame):
                self._dropped(1)
                return
            self.need_keyframe = False
        if self.paused or self._queue:
            self._queue.append(frame)
            self._queued_bytes += len(frame.payload)
            if self._queued_bytes > self.max_queue_bytes:
                self._dropped(len(self._queue))
                self._queue.clear()
                self._queued_bytes = 0
                self.need_keyframe = True
            return
        self.send_frame(frame)

    def headers_changed(self, stream: Stream) -> None:
        """Codec configuration or metadata changed mid-stream."""
        self.send_headers(stream)

    def stream_ended(self, reason: str) -> None:
        """The stream is gone for good; subclasses close their connection."""

    # -- IPushProducer (the player's transport calls these) ----------------
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self._queue and not self.paused:
            frame = self._queue.popleft()
            self._queued_bytes -= len(frame.payload)
            self.send_frame(frame)

    def stopProducing(self) -> None:
        self.paused = True
        self._queue.clear()
        self._queued_bytes = 0

    def _dropped(self, count: int) -> None:
        self.dropped_frames += count
        if self.session is not None:
            self.session.dropped_frames += count

    # -- for subclasses ----------------------------------------------------
    def _starts_picture(self, frame: MediaFrame) -> bool:
        if frame.kind is TrackKind.VIDEO:
            return frame.keyframe
        stream = self.stream
        return stream is None or TrackKind.VIDEO not in stream.tracks

    def send_headers(self, stream: Stream) -> None:
        raise NotImplementedError

    def send_frame(self, frame: MediaFrame) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        """Leave the stream (the player went away)."""
        if self.stream is not None:
            self.stream.remove_reader(self)
            self.stream = None
        self.stopProducing()

    def viewer_count(self) -> int:
        """How many viewers this reader stands for: 1 for a player; a muxer
        serving many clients (HLS) counts its clients, a recorder none.  The
        no-reader logic (on_stream_none_reader, auto_close) sums these."""
        return 1

    def viewer_sessions(self) -> list[SessionInfo]:
        """The player sessions behind this reader (the APIs list them)."""
        return [self.session] if self.session is not None else []

    def describe(self) -> dict[str, Any]:
        return {"queued_frames": len(self._queue), "dropped_frames": self.dropped_frames}
