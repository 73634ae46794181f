"""Live HLS: MPEG-TS segments built in memory, a sliding playlist, and HLS
viewers as sessions.

``GET /{app}/{stream}/hls.m3u8`` and ``GET /{app}/{stream}/{seq}.ts``.

Muxing (CONTRACT §2 ``hls.*``): an :class:`HlsMuxer` reads each stream whose
``enable_hls`` is on (config, or the on_publish reply) and cuts a segment at
the first video keyframe ``hls.segDur`` after the segment began (audio-only:
at any frame).  The playlist lists the last ``hls.segNum`` segments; the
``hls.segRetain`` before them stay downloadable for late players.  The
playlist state belongs to the stream *name*: a publisher that comes back
continues the media sequence after an ``EXT-X-DISCONTINUITY``.  Segments live
in memory; ``hls.filePath`` also writes them (and the playlist) to disk.

Viewers (hooks.md §1.4, ZLMediaKit's HLS cookie semantics): the first
request of a viewer opens a session (protocol ``hls``) and asks the play gate
(on_play with schema ``hls``, SRS on_play, NMS postPlay, oclp play) once; the
answer is remembered in a ``ZLM_HTTP_COOKIE`` cookie (path of the stream's
directory, 60 s, refreshed by every request) and, for clients that drop
cookies, under the whole query string.  A viewer that sends no request for
60 s ends, which fires its end events (on_flow_report, on_stop, donePlay,
oclp play done) through the SessionTable.  Kicking the session revokes the
cookie (and the query-string id): the next request gets 403.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from mediasrv.codec.mpegts import TsMuxer
from mediasrv.core.context import AccessDenied, Core, start_play
from mediasrv.core.frames import MediaFrame, Track, TrackKind
from mediasrv.core.reader import StreamReader
from mediasrv.core.registry import StreamNotFound
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.core.stream import Stream, StreamKey
from mediasrv.hooks.model import AccessRequest, Action, HookCall
from mediasrv.hooks.srs import stream_url

log = Logger()

COOKIE_NAME = b"ZLM_HTTP_COOKIE"
#: ZLMediaKit's kHlsCookieSecond: a viewer's cookie lifetime, refreshed per request.
VIEWER_SECONDS = 60.0
PLAYLIST_NAME = "hls.m3u8"
MPEGURL = b"application/vnd.apple.mpegurl"
MP2T = b"video/mp2t"
# audio frames gathered into one PES (fewer TS packets of padding)
_AUDIO_PER_PES = 4


def parse_playlist_path(path: str) -> tuple[str, str] | None:
    """``/live/test/hls.m3u8`` → ``("live", "test")``."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[-1] != PLAYLIST_NAME:
        return None
    return "/".join(parts[:-2]), parts[-2]


def parse_segment_path(path: str) -> tuple[str, str, int] | None:
    """``/live/test/12.ts`` → ``("live", "test", 12)``."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3:
        return None
    name = parts[-1]
    if not name.endswith(".ts") or not name[:-3].isdigit() or len(name) > 24:
        return None
    return "/".join(parts[:-2]), parts[-2], int(name[:-3])


def hls_enabled(core: Core, stream: Stream) -> bool:
    value = stream.options.get("enable_hls")
    if value is None:
        return core.config.protocol.enable_hls
    return str(value).strip().lower() not in ("0", "false", "no", "off", "")


@dataclass(eq=False)
class Segment:
    seq: int
    data: bytes
    start_ms: int  # dts of the first frame
    duration: float  # seconds
    discontinuity: bool
    wall_start: float  # server time the first frame arrived (EXT-X-PROGRAM-DATE-TIME)


@dataclass(eq=False)
class _Building:
    start_ms: int
    wall_start: float
    discontinuity: bool
    data: bytearray
    last_ms: int = 0


class HlsPlaylist:
    """The segments of one stream name, the viewers watching it, and the
    playlist text."""

    def __init__(self, service: HlsService, key: StreamKey, first_seq: int, discontinuity_seq: int) -> None:
        self.service = service
        self.key = key
        cfg = service.core.config.hls
        self.seg_num = cfg.segNum
        self.seg_retain = cfg.segRetain
        self.seg_dur = cfg.segDur
        self.segments: deque[Segment] = deque()
        self.next_seq = first_seq
        self.discontinuity_seq = discontinuity_seq
        self.target = max(1, math.ceil(cfg.segDur))
        self.viewers: dict[str, HlsViewer] = {}
        self.muxer: HlsMuxer | None = None
        self.params = ""
        self.linger: IDelayedCall | None = None
        self._ready: list[defer.Deferred[None]] = []
        self._window_text = ""
        self.pending_discontinuity = first_seq > 0
        self.disk_dir: Path | None = None
        if cfg.filePath:
            self.disk_dir = Path(cfg.filePath) / key.app / key.stream

    # -- segments -----------------------------------------------------------
    @property
    def window(self) -> list[Segment]:
        segs = list(self.segments)
        return segs[-self.seg_num:]

    def add(self, seg: Segment) -> None:
        self.segments.append(seg)
        self.target = max(self.target, math.ceil(seg.duration - 0.0005))
        # the segment that just left the playlist window: a DISCONTINUITY
        # leaving the window bumps EXT-X-DISCONTINUITY-SEQUENCE (RFC 8216 6.2.1)
        if len(self.segments) > self.seg_num and self.segments[-self.seg_num - 1].discontinuity:
            self.discontinuity_seq += 1
        dropped: list[Segment] = []
        while len(self.segments) > self.seg_num + self.seg_retain:
            dropped.append(self.segments.popleft())
        self._window_text = self._render_window()
        if self.disk_dir is not None:
            self._write_disk(seg, dropped)
        waiters, self._ready = self._ready, []
        for d in waiters:
            d.callback(None)
        self.service.segment_ready(self, seg)

    def find(self, seq: int) -> Segment | None:
        for s in self.segments:
            if s.seq == seq:
                return s
        return None

    def when_ready(self) -> defer.Deferred[None]:
        if self.segments:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._ready.remove(d) if d in self._ready else None)
        self._ready.append(d)
        return d

    def _render_window(self) -> str:
        window = self.window
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{self.target}",
                 f"#EXT-X-MEDIA-SEQUENCE:{window[0].seq if window else self.next_seq}"]
        if self.discontinuity_seq:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_seq}")
        for s in window:
            if s.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s.wall_start))
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{stamp}.{int(s.wall_start * 1000) % 1000:03d}Z")
            lines.append(f"#EXTINF:{s.duration:.3f},")
            lines.append(f"\0{s.seq}.ts")  # \0 marks where a viewer's query string goes
        return "\n".join(lines) + "\n"

    def text(self, query: str) -> bytes:
        """The playlist; segment URIs carry ``query`` so cookie-less clients
        keep their query-string identity."""
        suffix = f"?{query}" if query else ""
        out = []
        for line in self._window_text.split("\n"):
            out.append(line[1:] + suffix if line.startswith("\0") else line)
        return "\n".join(out).encode("utf-8")

    # -- disk (hls.filePath) -----------------------------------------------------
    def _write_disk(self, seg: Segment, dropped: list[Segment]) -> None:
        assert self.disk_dir is not None
        try:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            path = self.disk_dir / f"{seg.seq}.ts"
            path.write_bytes(seg.data)
            tmp = self.disk_dir / f".{PLAYLIST_NAME}.tmp"
            tmp.write_bytes(self.text(""))
            os.replace(tmp, self.disk_dir / PLAYLIST_NAME)
            for old in dropped:
                (self.disk_dir / f"{old.seq}.ts").unlink(missing_ok=True)
        except OSError as e:
            log.warn("hls {key}: cannot write to {dir}: {why}", key=str(self.key), dir=str(self.disk_dir), why=e)

    def remove_disk(self) -> None:
        if self.disk_dir is None:
            return
        for s in self.segments:
            (self.disk_dir / f"{s.seq}.ts").unlink(missing_ok=True)
        (self.disk_dir / PLAYLIST_NAME).unlink(missing_ok=True)

    def fail_waiters(self) -> None:
        waiters, self._ready = self._ready, []
        for d in waiters:
            d.errback(StreamNotFound(f"{self.key}: no HLS segment"))


class HlsMuxer(StreamReader):
    """Reads one stream and cuts it into segments of its playlist."""

    schema = "hls"

    def __init__(self, playlist: HlsPlaylist, clock: Callable[[], float]) -> None:
        super().__init__(max_queue_bytes=1 << 62)
        self.playlist = playlist
        self.now = clock
        self.seg_ms = playlist.seg_dur * 1000.0
        self.ts: TsMuxer | None = None
        self._tracks: tuple[Track | None, Track | None] = (None, None)
        self._cur: _Building | None = None
        self._audio: list[MediaFrame] = []
        self._last_video_gap = 40

    # -- StreamReader --------------------------------------------------------
    def viewer_count(self) -> int:
        return len(self.playlist.viewers)

    def viewer_sessions(self) -> list[SessionInfo]:
        return [v.session for v in self.playlist.viewers.values()]

    def send_headers(self, stream: Stream) -> None:
        tracks = (stream.video, stream.audio)
        if self.ts is not None and tracks == self._tracks:
            return
        if self.ts is not None:
            # new codec configuration: end the segment; the next one starts
            # on a keyframe after a discontinuity
            self._close_segment(None)
            self.playlist.pending_discontinuity = bool(self.playlist.segments)
            self.need_keyframe = True
        self._tracks = tracks
        self.ts = TsMuxer(stream.video, stream.audio)

    def send_frame(self, frame: MediaFrame) -> None:
        ts = self.ts
        if ts is None:
            return
        is_video = frame.kind is TrackKind.VIDEO
        if is_video and (ts.video is None or frame.codec is not ts.video.codec):
            return
        if not is_video and ts.audio is None:
            return
        cur = self._cur
        starts = frame.keyframe if is_video else ts.video is None
        if starts and (cur is None or frame.dts - cur.start_ms >= self.seg_ms * 0.9):
            self._close_segment(frame.dts)
            cur = self._cur = _Building(frame.dts, self.now(), self.playlist.pending_discontinuity,
                                        bytearray(ts.tables()))
            self.playlist.pending_discontinuity = False
        if cur is None:
            return
        try:
            if is_video:
                if frame.dts > cur.last_ms:
                    self._last_video_gap = min(frame.dts - cur.last_ms, 1000)
                self._flush_audio()
                cur.data += ts.video_frame(frame)
            else:
                self._audio.append(frame)
                if len(self._audio) >= _AUDIO_PER_PES:
                    self._flush_audio()
        except ValueError as e:
            log.warn("hls {key}: frame dropped: {why}", key=str(self.playlist.key), why=e)
        cur.last_ms = max(cur.last_ms, frame.dts)

    def stream_ended(self, reason: str) -> None:
        self._close_segment(None)
        self.playlist.service.muxer_ended(self)

    # -- segments -------------------------------------------------------------
    def _flush_audio(self) -> None:
        if self._audio and self._cur is not None and self.ts is not None:
            self._cur.data += self.ts.audio_frames(self._audio)
        self._audio = []

    def _close_segment(self, next_start: int | None) -> None:
        cur = self._cur
        if cur is None:
            return
        self._flush_audio()
        self._cur = None
        end = next_start if next_start is not None else cur.last_ms + self._last_video_gap
        duration = max(0.0, (end - cur.start_ms) / 1000.0)
        if duration <= 0:
            return
        seq = self.playlist.next_seq
        self.playlist.next_seq += 1
        self.playlist.add(Segment(seq, bytes(cur.data), cur.start_ms, duration, cur.discontinuity, cur.wall_start))


@dataclass(eq=False)
class HlsViewer:
    """One HLS client: its session, cookie and query-string identity."""

    service: HlsService
    key: StreamKey
    token: str
    uid: str
    session: SessionInfo
    timer: IDelayedCall | None = None
    ended: bool = False

    def touch(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.reset(VIEWER_SECONDS)

    def kick(self, reason: str) -> None:
        log.info("hls session {sid} kicked: {reason}", sid=self.session.id, reason=reason)
        self.service.revoke(self)
        self.service.end_viewer(self, reason)


@dataclass(eq=False)
class _Admission:
    """A viewer's first request(s) waiting for the gate."""

    session: SessionInfo
    uid: str
    key: StreamKey
    waiting: list[tuple[Request, int | None]] = field(default_factory=list)
    gate: defer.Deferred[Stream] | None = None


class HlsService:
    """Registry listener that keeps one playlist per HLS-enabled stream, and
    the HTTP side: viewers, cookies, playlist and segment responses."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.playlists: dict[StreamKey, HlsPlaylist] = {}
        # per stream name: (next media sequence, discontinuity sequence) for a returning publisher
        self._history: dict[StreamKey, tuple[int, int]] = {}
        self._by_token: dict[str, HlsViewer] = {}
        self._by_uid: dict[tuple[StreamKey, str], HlsViewer] = {}
        self._admitting: dict[tuple[StreamKey, str], _Admission] = {}
        self._revoked: dict[str, float] = {}
        self.linger_seconds = max(VIEWER_SECONDS,
                                  core.config.hls.segDur * (core.config.hls.segNum + core.config.hls.segRetain))
        if "hls" not in core.schemas:
            core.schemas.append("hls")
        core.registry.add_listener(self)

    @classmethod
    def of(cls, core: Core) -> HlsService:
        """The core's HLS service, created on first use (the server and the
        HTTP site share it; the site is built once per listener)."""
        attrs = vars(core)
        svc: HlsService | None = attrs.get("_hls_service")
        if svc is None:
            svc = attrs["_hls_service"] = cls(core)
        return svc

    # -- StreamListener -------------------------------------------------------------
    def stream_registered(self, stream: Stream) -> None:
        if not hls_enabled(self.core, stream):
            return
        playlist = self.playlists.get(stream.key)
        if playlist is None:
            seq, disc = self._history.pop(stream.key, (0, 0))
            playlist = self.playlists[stream.key] = HlsPlaylist(self, stream.key, seq, disc)
        else:
            # the same name published again while the old playlist lingered
            if playlist.linger is not None and playlist.linger.active():
                playlist.linger.cancel()
            playlist.linger = None
            playlist.pending_discontinuity = bool(playlist.segments)
        playlist.params = stream.params
        muxer = HlsMuxer(playlist, self.core.clock.seconds)
        playlist.muxer = muxer
        stream.add_reader(muxer)
        log.info("hls {key}: muxing ({dur:g} s segments)", key=str(stream.key), dur=playlist.seg_dur)

    def stream_unregistered(self, stream: Stream) -> None:
        pass  # the muxer's stream_ended does the work

    def stream_readers_changed(self, stream: Stream) -> None:
        pass

    def muxer_ended(self, muxer: HlsMuxer) -> None:
        playlist = muxer.playlist
        if playlist.muxer is not muxer:
            return
        playlist.muxer = None
        playlist.fail_waiters()
        playlist.linger = self.core.clock.callLater(self.linger_seconds, self._drop_playlist, playlist)

    def _drop_playlist(self, playlist: HlsPlaylist) -> None:
        playlist.linger = None
        if self.playlists.get(playlist.key) is not playlist or playlist.muxer is not None:
            return
        del self.playlists[playlist.key]
        self._history[playlist.key] = (playlist.next_seq, playlist.discontinuity_seq)
        if len(self._history) > 10000:
            for k in list(self._history)[:5000]:
                del self._history[k]
        playlist.remove_disk()

    def stop(self) -> None:
        for playlist in list(self.playlists.values()):
            if playlist.linger is not None and playlist.linger.active():
                playlist.linger.cancel()
            playlist.linger = None
        for viewer in list(self._by_token.values()):
            self.end_viewer(viewer, "server shutting down")

    # -- segment notifications (SRS on_hls, ZLMediaKit on_record_ts) -----------------------
    def segment_ready(self, playlist: HlsPlaylist, seg: Segment) -> None:
        hooks = self.core.hooks
        if not hooks.active:
            return
        key = playlist.key
        stream = playlist.muxer.stream if playlist.muxer is not None else None
        pub = stream.publisher if stream is not None else None
        url = f"{key.app}/{key.stream}/{seg.seq}.ts"
        m3u8_url = f"{key.app}/{key.stream}/{PLAYLIST_NAME}"
        on_disk = playlist.disk_dir is not None
        file = str(playlist.disk_dir / f"{seg.seq}.ts") if playlist.disk_dir else f"./{url}"
        m3u8 = str(playlist.disk_dir / PLAYLIST_NAME) if playlist.disk_dir else f"./{m3u8_url}"
        calls: list[HookCall | None] = []
        srs = hooks.srs
        if srs.urls("on_hls"):
            body = srs._common("on_hls", pub.id if pub else "", pub.peer_ip if pub else "", key.vhost, key.app)
            body.update(tcUrl=hooks.tc_url(pub.id) if pub else "", stream=key.stream,
                        param=f"?{playlist.params}" if playlist.params else "", duration=round(seg.duration, 3),
                        cwd=os.getcwd(), file=file, url=url, m3u8=m3u8, m3u8_url=m3u8_url, seq_no=seg.seq,
                        stream_url=stream_url(key.vhost, key.app, key.stream), stream_id=stream.id if stream else "")
            calls += srs._calls("on_hls", body)
        if on_disk:
            folder = str(Path(file).parent.resolve())
            calls.append(hooks.zlm.call("on_record_ts", {
                "start_time": int(seg.wall_start), "file_size": len(seg.data), "time_len": round(seg.duration, 3),
                "file_path": str(Path(file).resolve()), "file_name": f"{seg.seq}.ts", "folder": folder,
                "url": url, "vhost": key.vhost, "app": key.app, "stream": key.stream, "params": playlist.params}))
        hooks.notify(calls, str(key))

    # -- viewers ------------------------------------------------------------------
    def _cookie_tokens(self, request: Request) -> list[str]:
        out = []
        for header in request.requestHeaders.getRawHeaders(b"cookie", []):
            for part in header.split(b";"):
                name, eq, value = part.strip().partition(b"=")
                if eq and name == COOKIE_NAME:
                    out.append(value.strip().strip(b'"').decode("ascii", "replace"))
        return out

    def _is_revoked(self, token: str) -> bool:
        expires = self._revoked.get(token)
        if expires is None:
            return False
        if expires < self.core.clock.seconds():
            del self._revoked[token]
            return False
        return True

    def identify(self, request: Request, key: StreamKey, uid: str) -> tuple[HlsViewer | None, bool]:
        """(viewer, revoked): the cookie first, then the query string."""
        revoked = False
        for token in self._cookie_tokens(request):
            viewer = self._by_token.get(token)
            if viewer is not None and viewer.key == key:
                return viewer, False
            revoked = revoked or self._is_revoked(token)
        if uid:
            viewer = self._by_uid.get((key, uid))
            if viewer is not None:
                return viewer, False
            revoked = revoked or self._is_revoked(f"uid:{key}:{uid}")
        return None, revoked

    def revoke(self, viewer: HlsViewer) -> None:
        until = self.core.clock.seconds() + VIEWER_SECONDS
        self._revoked[viewer.token] = until
        if viewer.uid:
            self._revoked[f"uid:{viewer.key}:{viewer.uid}"] = until
        if len(self._revoked) > 100000:
            now = self.core.clock.seconds()
            self._revoked = {k: v for k, v in self._revoked.items() if v >= now}

    def _new_viewer(self, admission: _Admission) -> HlsViewer:
        token = secrets.token_urlsafe(18)
        viewer = HlsViewer(self, admission.key, token, admission.uid, admission.session)
        viewer.timer = self.core.clock.callLater(VIEWER_SECONDS, self.end_viewer, viewer, "no request for 60 s")
        admission.session.closer = viewer.kick
        self._by_token[token] = viewer
        if viewer.uid:
            self._by_uid[(viewer.key, viewer.uid)] = viewer
        playlist = self.playlists.get(viewer.key)
        if playlist is not None:
            playlist.viewers[token] = viewer
            self._viewers_changed(playlist)
        return viewer

    def end_viewer(self, viewer: HlsViewer, reason: str) -> None:
        if viewer.ended:
            return
        viewer.ended = True
        if viewer.timer is not None and viewer.timer.active():
            viewer.timer.cancel()
        self._by_token.pop(viewer.token, None)
        if viewer.uid and self._by_uid.get((viewer.key, viewer.uid)) is viewer:
            del self._by_uid[(viewer.key, viewer.uid)]
        for playlist in self.playlists.values():
            if playlist.viewers.pop(viewer.token, None) is not None:
                self._viewers_changed(playlist)
        log.info("hls session {sid} ended: {reason}", sid=viewer.session.id, reason=reason)
        self.core.sessions.close(viewer.session)

    def _viewers_changed(self, playlist: HlsPlaylist) -> None:
        muxer = playlist.muxer
        if muxer is not None and muxer.stream is not None:
            muxer.stream.readers_changed()

    def _attach_viewer(self, viewer: HlsViewer) -> None:
        """A viewer admitted before its playlist existed, or after a publisher restart."""
        playlist = self.playlists.get(viewer.key)
        if playlist is not None and viewer.token not in playlist.viewers:
            playlist.viewers[viewer.token] = viewer
            self._viewers_changed(playlist)

    # -- HTTP -------------------------------------------------------------------------
    def render(self, request: Request, app: str, stream: str, seq: int | None) -> Any:
        host = request.getRequestHostname().decode("ascii", "replace")
        key = self.core.registry.key(host, app, stream)
        uri = request.uri
        query = (uri.split(b"?", 1)[1] if b"?" in uri else b"").decode("utf-8", "replace")
        viewer, revoked = self.identify(request, key, query)
        if viewer is not None:
            viewer.touch()
            self._attach_viewer(viewer)
            self._respond(request, viewer, seq, query)
            return NOT_DONE_YET
        if revoked:
            return _plain(request, 403, "this HLS session was closed by the server")
        pending = self._admitting.get((key, query)) if query else None
        if pending is not None:
            self._wait_admission(pending, request, seq)
            return NOT_DONE_YET
        if self.core.at_capacity():
            return _plain(request, 503, "too many connections")
        self._admit(request, key, query, seq)
        return NOT_DONE_YET

    def _admit(self, request: Request, key: StreamKey, query: str, seq: int | None) -> None:
        peer = request.getClientAddress()
        host = request.getHost()
        s = self.core.sessions.open("hls", client_ip(request, self.core), getattr(peer, "port", 0),
                                    getattr(host, "port", 0), self.core.clock.seconds())
        s.role = Role.PLAYER
        s.vhost, s.app, s.stream, s.params = key.vhost, key.app, key.stream, query
        admission = _Admission(s, query, key)
        s.closer = lambda reason: self._abandon(admission, reason)
        if query:
            self._admitting[(key, query)] = admission
        self._wait_admission(admission, request, seq)
        transport = "https" if request.isSecure() else "http"
        req = AccessRequest(Action.PLAY, "hls", transport, key.vhost, key.app, key.stream, query, s.peer_ip,
                            s.peer_port, s.id, tc_url=f"{transport}://{request.getRequestHostname().decode('ascii', 'replace')}/{key.app}")
        admission.gate = d = start_play(self.core, req)
        d.addCallbacks(self._admitted, self._refused, callbackArgs=(admission,), errbackArgs=(admission,))

    def _wait_admission(self, admission: _Admission, request: Request, seq: int | None) -> None:
        entry = (request, seq)
        admission.waiting.append(entry)

        def gone(_: object) -> None:
            if entry in admission.waiting:
                admission.waiting.remove(entry)
                if not admission.waiting:
                    self._abandon(admission, "client left before the gate answered")

        request.notifyFinish().addErrback(gone)

    def _abandon(self, admission: _Admission, reason: str) -> None:
        if self._admitting.get((admission.key, admission.uid)) is admission:
            del self._admitting[(admission.key, admission.uid)]
        gate, admission.gate = admission.gate, None
        if gate is not None and not gate.called:
            gate.cancel()
        for request, _ in admission.waiting:
            _finish(request, 403, "this HLS session was closed by the server")
        admission.waiting = []
        self.core.sessions.close(admission.session)

    def _admitted(self, stream: Stream, admission: _Admission) -> None:
        if self._admitting.get((admission.key, admission.uid)) is admission:
            del self._admitting[(admission.key, admission.uid)]
        admission.gate = None
        if self.core.sessions.get(admission.session.id) is None:
            return  # kicked or abandoned meanwhile
        if admission.key not in self.playlists:
            for request, _ in admission.waiting:
                _finish(request, 404, f"{admission.key.app}/{admission.key.stream} has no HLS")
            admission.waiting = []
            self.core.sessions.close(admission.session)
            return
        viewer = self._new_viewer(admission)
        log.info("hls session {sid} plays {key}", sid=viewer.session.id, key=str(viewer.key))
        waiting, admission.waiting = admission.waiting, []
        for request, seq in waiting:
            self._respond(request, viewer, seq, viewer.uid)

    def _refused(self, failure: Failure, admission: _Admission) -> None:
        if self._admitting.get((admission.key, admission.uid)) is admission:
            del self._admitting[(admission.key, admission.uid)]
        admission.gate = None
        if failure.check(defer.CancelledError):
            return
        if failure.check(AccessDenied):
            code = 401
        elif failure.check(StreamNotFound):
            code = 404
        else:
            log.failure("hls session {sid}: play failed", failure, sid=admission.session.id)
            code = 500
        log.info("hls session {sid} {key}: {code} {why}", sid=admission.session.id, key=str(admission.key),
                 code=code, why=failure.getErrorMessage())
        for request, _ in admission.waiting:
            _finish(request, code, failure.getErrorMessage())
        admission.waiting = []
        self.core.sessions.close(admission.session)

    def _respond(self, request: Request, viewer: HlsViewer, seq: int | None, query: str) -> None:
        if _finished(request):
            return
        request.addCookie(COOKIE_NAME, viewer.token.encode(), path=f"/{viewer.key.app}/{viewer.key.stream}/".encode(),
                          max_age=str(int(VIEWER_SECONDS)).encode(), httpOnly=True)
        playlist = self.playlists.get(viewer.key)
        if playlist is None:
            _finish(request, 404, "stream not found")
            return
        if seq is not None:
            seg = playlist.find(seq)
            if seg is None:
                _finish(request, 404, "no such segment")
                return
            retention = max(1, int(playlist.seg_dur * (playlist.seg_num + playlist.seg_retain)))
            self._send(request, viewer, MP2T, seg.data, f"private, max-age={retention}".encode())
            return
        if playlist.segments:
            self._send(request, viewer, MPEGURL, playlist.text(query), b"no-cache")
            return
        # nothing cut yet: hold the request until the first segment
        ready = playlist.when_ready()
        ready.addTimeout(self.core.config.general.maxStreamWaitMS / 1000.0 + playlist.seg_dur * 2, self.core.clock)
        request.notifyFinish().addErrback(lambda _: ready.cancel())

        def send(_: object) -> None:
            again = self.playlists.get(viewer.key)
            if again is None or not again.segments:
                _finish(request, 404, "stream not found")
            else:
                self._send(request, viewer, MPEGURL, again.text(query), b"no-cache")

        def failed(f: Failure) -> None:
            if not _finished(request):
                _finish(request, 404, "no HLS segment yet")

        ready.addCallbacks(send, failed)

    def _send(self, request: Request, viewer: HlsViewer, ctype: bytes, body: bytes, cache: bytes) -> None:
        if _finished(request):
            return
        request.setHeader(b"content-type", ctype)
        request.setHeader(b"cache-control", cache)
        request.setHeader(b"content-length", str(len(body)).encode())
        if request.method != b"HEAD":
            request.write(body)
            viewer.session.bytes_out += len(body)
        request.finish()


def client_ip(request: Request, core: Core) -> str:
    """The client address: ``http.forwarded_ip_header`` when configured, else the peer."""
    header = core.config.http.forwarded_ip_header.strip()
    if header:
        value = request.getHeader(header.encode("latin-1"))
        if value:
            return value.decode("latin-1").split(",")[0].strip()
    peer = request.getClientAddress()
    return str(getattr(peer, "host", ""))


def _finished(request: Request) -> bool:
    return bool(request.finished or getattr(request, "_disconnected", False))


def _plain(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-cache")
    return text.encode("utf-8", "replace") + b"\n"


def _finish(request: Request, code: int, text: str) -> None:
    if _finished(request):
        return
    body = _plain(request, code, text)
    request.setHeader(b"content-length", str(len(body)).encode())
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


__all__ = ["HlsMuxer", "HlsPlaylist", "HlsService", "HlsViewer", "client_ip", "parse_playlist_path",
           "parse_segment_path"]
