"""When are a pulled stream's tracks known? (sans-IO)

A source announces its tracks in different ways: an RTSP server in the SDP,
an RTMP server in ``onMetaData`` (``videocodecid``/``audiocodecid``), an
HTTP-FLV server in the FLV header flags, and some say nothing.  Decoder
configurations arrive as sequence headers or in band.  Like ZLMediaKit's
``MediaSink`` (all tracks ready, or a deadline), :class:`TrackAssembler`
calls ``tracks_ready`` once every announced track has its configuration,
holding the frames that arrive meanwhile (bounded), and gives up on a track
that never comes after :data:`MAX_WAIT_MS` of media so a broken audio track
does not keep the video from playing.  Without an announcement the first
frame decides.
"""

from __future__ import annotations

from collections.abc import Iterable

from mediasrv.core.frames import MediaFrame, Track, TrackKind
from mediasrv.relay.interfaces import RelaySink

__all__ = ["MAX_PENDING_FRAMES", "MAX_WAIT_MS", "TrackAssembler"]

MAX_WAIT_MS = 3000
"""Media time (dts span of the held frames) to wait for an announced track's configuration."""

MAX_PENDING_FRAMES = 600
"""Frames held before the tracks are ready; past it the wait ends (memory bound)."""


class TrackAssembler:
    """Turns a client's stream of tracks and frames into the sink's call order (see interfaces)."""

    def __init__(self, sink: RelaySink, max_wait_ms: int = MAX_WAIT_MS,
                 max_pending_frames: int = MAX_PENDING_FRAMES) -> None:
        self.sink = sink
        self.max_wait_ms = max_wait_ms
        self.max_pending_frames = max_pending_frames
        self.tracks: dict[TrackKind, Track] = {}
        self.expected: set[TrackKind] | None = None
        self.ready = False
        self.frames = 0
        """Frames delivered to the sink."""
        self.dropped = 0
        """Frames dropped because their track had no configuration yet."""
        self._pending: list[MediaFrame] = []
        self._held = False

    def hold(self) -> None:
        """Not ready before :meth:`release`, whatever arrives (RTSP: media may come before PLAY's answer)."""
        self._held = True

    def release(self) -> None:
        self._held = False
        self._check()

    def expect(self, kinds: Iterable[TrackKind]) -> None:
        """The source announced these kinds (an empty announcement is ignored)."""
        wanted = set(kinds)
        if wanted and not self.ready:
            self.expected = wanted
            self._check()

    def track(self, track: Track) -> None:
        """A track's configuration arrived (again)."""
        if self.tracks.get(track.kind) == track:
            return  # the same sequence header repeated
        self.tracks[track.kind] = track
        if self.ready:
            self.sink.tracks_ready(self.track_list())
        else:
            self._check()

    def frame(self, frame: MediaFrame) -> None:
        if frame.kind not in self.tracks:
            self.dropped += 1  # not decodable before its configuration
            return
        if self.ready:
            self.frames += 1
            self.sink.frame(frame)
            return
        self._pending.append(frame)
        self._check()

    def track_list(self) -> list[Track]:
        """Video first, then audio."""
        return [self.tracks[k] for k in (TrackKind.VIDEO, TrackKind.AUDIO) if k in self.tracks]

    def _check(self) -> None:
        pending = self._pending
        if self._held:
            if len(pending) > self.max_pending_frames:
                self.dropped += len(pending) - self.max_pending_frames
                del pending[: len(pending) - self.max_pending_frames]
            return
        if not self.tracks:
            return
        if self.expected is not None:
            if not self.expected <= self.tracks.keys():
                if not pending:
                    return
                waited = pending[-1].dts - pending[0].dts
                if len(pending) < self.max_pending_frames and waited < self.max_wait_ms:
                    return
        elif not pending:
            return
        self.ready = True
        self._pending = []
        self.sink.tracks_ready(self.track_list())
        for frame in pending:
            self.frames += 1
            self.sink.frame(frame)
