"""A live stream: its tracks, its GOP cache and its readers (the fan-out)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from mediasrv.core.frames import MediaFrame, Track, TrackKind

if TYPE_CHECKING:
    from mediasrv.core.reader import StreamReader
    from mediasrv.core.sessions import SessionInfo


class StreamKey(NamedTuple):
    vhost: str
    app: str
    stream: str

    def __str__(self) -> str:
        return f"{self.vhost}/{self.app}/{self.stream}"


class GopCache:
    """Frames since the last video keyframe, so a new player starts on a
    picture at once (SRS's ``SrsGopCache``).  Audio-only streams keep nothing.

    Bounded by ``max_bytes``: a stream whose keyframes are too far apart stops
    caching until the next keyframe rather than growing without limit.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.frames: list[MediaFrame] = []
        self.size = 0
        self._overflowed = False

    def add(self, frame: MediaFrame) -> None:
        if frame.kind is TrackKind.VIDEO and frame.keyframe:
            self.frames = [frame]
            self.size = len(frame.payload)
            self._overflowed = False
            return
        if not self.frames or self._overflowed:
            return
        self.size += len(frame.payload)
        if self.size > self.max_bytes:
            self.clear()
            self._overflowed = True
            return
        self.frames.append(frame)

    def clear(self) -> None:
        self.frames = []
        self.size = 0


class Stream:
    """One published stream.

    The publisher's adapter calls :meth:`set_track`, :meth:`set_metadata` and
    :meth:`write`; players attach with :meth:`add_reader`.  The stream is
    *ready* (visible to players) once its first media frame has arrived, so a
    player always learns the codecs before the first frame.

    Timestamps stay continuous when a publisher comes back within
    ``continue_push_ms``: frames of the new publisher are shifted to follow the
    last frame the players saw.
    """

    def __init__(
        self,
        key: StreamKey,
        now: float,
        max_gop_bytes: int,
        on_ready: Callable[[Stream], None] = lambda s: None,
        on_readers_changed: Callable[[Stream], None] = lambda s: None,
    ) -> None:
        self.key = key
        self.id = secrets.token_hex(4)
        self.params = ""
        self.created = now
        self.tracks: dict[TrackKind, Track] = {}
        self.metadata: dict[str, Any] = {}
        self.gop = GopCache(max_gop_bytes)
        self.readers: list[StreamReader] = []
        self.publisher: SessionInfo | None = None
        self.ready = False
        self.closed = False
        self.options: dict[str, Any] = {}
        self.frames_in = 0
        self.bytes_in = 0
        self._on_ready = on_ready
        self._on_readers_changed = on_readers_changed
        self._last_dts = 0
        self._ts_offset = 0
        self._rebase_pending = False

    # -- publisher side --------------------------------------------------
    def set_track(self, track: Track) -> None:
        old = self.tracks.get(track.kind)
        self.tracks[track.kind] = track
        if old is not None and old != track:
            # New codec configuration (encoder restart, resolution change):
            # players must get the new decoder config, and a new GOP.
            if track.kind is TrackKind.VIDEO:
                self.gop.clear()
            for reader in list(self.readers):
                reader.headers_changed(self)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata
        if self.ready:
            for reader in list(self.readers):
                reader.headers_changed(self)

    def write(self, frame: MediaFrame) -> None:
        if self.closed:
            return
        if self._rebase_pending:
            # First frame of a returning publisher: continue 40 ms after the last one.
            self._ts_offset = self._last_dts + 40 - frame.dts
            self._rebase_pending = False
        if self._ts_offset:
            frame.dts += self._ts_offset
            frame.pts += self._ts_offset
        self._last_dts = frame.dts
        self.frames_in += 1
        self.bytes_in += len(frame.payload)
        self.gop.add(frame)
        # a snapshot: a reader may leave (its socket failed) while we push
        for reader in tuple(self.readers):
            reader.push(frame)
        if not self.ready:
            # after the fan-out: players waiting for the stream attach now and
            # get this frame from the GOP cache, exactly once
            self.ready = True
            self._on_ready(self)

    def publisher_returned(self) -> None:
        """A publisher took the stream over inside its continue_push window."""
        self._rebase_pending = True

    # -- player side -------------------------------------------------------
    def add_reader(self, reader: StreamReader) -> None:
        self.readers.append(reader)
        reader.attached(self)
        for frame in self.gop.frames:
            reader.push(frame)
        self._on_readers_changed(self)

    def remove_reader(self, reader: StreamReader) -> None:
        try:
            self.readers.remove(reader)
        except ValueError:
            return
        self._on_readers_changed(self)

    def readers_changed(self) -> None:
        """A reader's viewer count changed (an HLS muxer gained or lost a
        viewer): tell the registry's listeners, as add/remove_reader do."""
        self._on_readers_changed(self)

    @property
    def viewer_count(self) -> int:
        """Viewers behind all readers (see ``StreamReader.viewer_count``)."""
        return sum(r.viewer_count() for r in self.readers)

    def close(self, reason: str) -> None:
        """End the stream for every reader."""
        if self.closed:
            return
        self.closed = True
        readers, self.readers = self.readers, []
        for reader in readers:
            reader.stream = None
            reader.stream_ended(reason)
        self.gop.clear()

    @property
    def video(self) -> Track | None:
        return self.tracks.get(TrackKind.VIDEO)

    @property
    def audio(self) -> Track | None:
        return self.tracks.get(TrackKind.AUDIO)
