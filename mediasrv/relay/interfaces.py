"""The two narrow interfaces between relay clients and the rest of the server.

A **pull** client feeds a :class:`RelaySink`; a **push** client drains a
:class:`FrameSource`.  Nothing else of the server is visible to the clients,
so they can be tested with a list as sink and an iterator as source, and the
integration (a pulled stream entering the registry like a published one, a
push draining a stream like a player) is one adapter on each side.

Call order on a sink, for one client run:

1. ``tracks_ready(tracks)`` once the source's tracks and their decoder
   configurations are known; again, with the complete list, whenever one of
   them changes mid-stream (an encoder restart, a resolution change);
2. ``frame(frame)`` for every access unit, in decode order per track, only
   after the first ``tracks_ready`` and only for tracks it listed;
3. ``closed(reason)`` exactly once, last, also when the client never got as
   far as ``tracks_ready``.

A push client is itself a :class:`RelaySink`: the source calls it in the
same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from mediasrv.core.frames import MediaFrame, Track
from mediasrv.relay.errors import RelayError

__all__ = ["FrameSource", "RelaySink"]


@runtime_checkable
class RelaySink(Protocol):
    """Where a pull client delivers what it receives."""

    def tracks_ready(self, tracks: Sequence[Track]) -> None:
        """The tracks of the stream (at most one video and one audio), with their configurations."""

    def frame(self, frame: MediaFrame) -> None:
        """One access unit of a track announced by ``tracks_ready``."""

    def closed(self, reason: RelayError) -> None:
        """The client is done; ``reason`` says why (:class:`~mediasrv.relay.errors.Stopped` after ``stop()``)."""


@runtime_checkable
class FrameSource(Protocol):
    """What a push client sends from.

    A source that also provides ``twisted.internet.interfaces.IPushProducer``
    is registered as the producer of the push connection, so a slow target
    pauses it (the stream reader of the integration then drops until the next
    keyframe, as it does for a slow player).
    """

    def start(self, sink: RelaySink) -> None:
        """Begin delivering to ``sink``: ``tracks_ready`` first, then frames, ``closed`` when the source ends."""

    def stop(self) -> None:
        """The push client is gone: deliver nothing more, release what the source holds."""
