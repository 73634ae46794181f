"""MP4 recording of live streams (CONTRACT §2 ``record.*``, ``protocol.enable_mp4``).

A stream is recorded when ``protocol.enable_mp4`` is on, or when its
on_publish reply says ``enable_mp4`` (``stream.options``).  The
:class:`Mp4Recorder` is a reader of the stream (it starts with the GOP cache,
so the first file begins on a keyframe) and writes
``record.filePath/{app}/{stream}/{YYYY-MM-DD}/{HH-MM-SS}.mp4`` (local time of
the file's start).  A file is closed and a new one begun at the first video
keyframe ``record.fileSecond`` (or the on_publish reply's ``mp4_max_second``)
after it began, when the codec configuration changes, and at the end of the
stream (publisher gone, kicked, server shutting down): nothing received is
lost.  A publisher that drops and returns within ``continue_push_ms``
continues the same file.

Closing a file builds its index (``moov`` before ``mdat``) and copies the
sample data behind it in a worker thread, then announces the file:
ZLMediaKit ``on_record_mp4`` (hooks.md §1.4), SRS ``on_dvr`` (§2.3) and
PingOS ``oclp_record`` (``act=start`` when a file opens, ``act=done`` with
``begintime/endtime/index/file`` when it is complete, §4.2).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.core.context import Core
from mediasrv.core.frames import MediaFrame, Track, TrackKind
from mediasrv.core.reader import StreamReader
from mediasrv.core.sessions import SessionInfo
from mediasrv.core.stream import Stream, StreamKey
from mediasrv.hooks.model import HookCall
from mediasrv.hooks.srs import stream_url
from mediasrv.record.mp4 import Mp4Writer, assemble

log = Logger()


def mp4_enabled(core: Core, stream: Stream) -> bool:
    value = stream.options.get("enable_mp4")
    if value is None:
        return core.config.protocol.enable_mp4
    return str(value).strip().lower() not in ("0", "false", "no", "off", "")


@dataclass
class RecordedFile:
    """One finished recording (what the hooks announce)."""

    key: StreamKey
    path: Path  # as configured (may be relative to the working directory)
    start_time: float  # unix seconds, wall clock of the first frame
    end_time: float
    time_len: float  # seconds of media
    file_size: int
    params: str


@dataclass
class _Open:
    path: Path
    data_path: Path
    data: IO[bytes]
    writer: Mp4Writer
    start_dts: int
    start_time: float
    tracks: tuple[Track | None, Track | None]


class Mp4Recorder(StreamReader):
    """Records one stream into a sequence of MP4 files."""

    schema = "mp4"

    def __init__(self, service: RecordService, stream: Stream) -> None:
        super().__init__(max_queue_bytes=1 << 62)
        self.service = service
        self.key = stream.key
        self.params = stream.params
        self.publisher: SessionInfo | None = None
        self.tc_url = ""
        self.domain = ""
        self._remember_publisher(stream)
        seconds = stream.options.get("mp4_max_second")
        try:
            self.file_ms = int(float(seconds) * 1000) if seconds else service.core.config.record.fileSecond * 1000
        except ValueError:
            self.file_ms = service.core.config.record.fileSecond * 1000
        self._tracks: tuple[Track | None, Track | None] = (None, None)
        self._file: _Open | None = None
        self.files = 0

    def _remember_publisher(self, stream: Stream) -> None:
        """Who publishes, and what its gate saw (the hooks need it after it left)."""
        pub = stream.publisher
        if pub is None or pub is self.publisher:
            return
        self.publisher = pub
        hooks = self.service.core.hooks
        self.tc_url = hooks.tc_url(pub.id) or self.tc_url
        self.domain = hooks.oclp_domain(pub.id) or self.domain or stream.key.vhost

    def viewer_count(self) -> int:
        return 0

    def viewer_sessions(self) -> list[SessionInfo]:
        return []

    # -- StreamReader ----------------------------------------------------------------
    def send_headers(self, stream: Stream) -> None:
        tracks = (stream.video, stream.audio)
        self._remember_publisher(stream)
        if tracks == self._tracks:
            return
        self._tracks = tracks
        if self._file is not None:
            self._close("codec configuration changed")
            self.need_keyframe = True

    def send_frame(self, frame: MediaFrame) -> None:
        f = self._file
        video = self._tracks[0]
        starts = frame.keyframe if frame.kind is TrackKind.VIDEO else video is None
        if f is not None and starts and frame.dts - f.start_dts >= self.file_ms:
            self._close("record.fileSecond reached")
            f = None
        if f is None:
            if not starts:
                return
            f = self._open(frame)
            if f is None:
                return
        f.writer.add(frame)

    def stream_ended(self, reason: str) -> None:
        self._close(f"stream ended: {reason}")
        self.service.recorder_ended(self)

    # -- files ----------------------------------------------------------------------------
    def _open(self, frame: MediaFrame) -> _Open | None:
        if self.stream is not None:
            self._remember_publisher(self.stream)
        root = Path(self.service.root_for(self))
        now = self.service.core.clock.seconds()
        local = time.localtime(now)
        folder = root / self.key.app / self.key.stream / time.strftime("%Y-%m-%d", local)
        name = time.strftime("%H-%M-%S", local)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}.mp4"
            n = 1
            while path.exists() or (folder / f".{path.name}.mdat").exists():
                path = folder / f"{name}_{n}.mp4"
                n += 1
            data_path = folder / f".{path.name}.mdat"
            data = open(data_path, "wb", buffering=1 << 20)
        except OSError as e:
            log.error("record {key}: cannot open a file under {dir}: {why}", key=str(self.key), dir=str(folder), why=e)
            self.need_keyframe = True
            return None
        video, audio = self._tracks
        f = _Open(path, data_path, data, Mp4Writer(data, video, audio), frame.dts, now, self._tracks)
        self._file = f
        self.files += 1
        log.info("record {key}: writing {path}", key=str(self.key), path=str(path))
        self.service.file_started(self, f)
        return f

    def _close(self, why: str) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        self.service.finish(self, f, why)


class RecordService:
    """Registry listener: one :class:`Mp4Recorder` per recorded stream, and
    the finishing of files (index, copy, hooks) off the reactor thread."""

    def __init__(self, core: Core, run_blocking: Callable[..., defer.Deferred[Any]] | None = None) -> None:
        self.core = core
        self.recorders: dict[StreamKey, Mp4Recorder] = {}
        self._pending: set[defer.Deferred[Any]] = set()
        self.finished: list[RecordedFile] = []  # the last few, for tests and the shell
        if run_blocking is None:
            clock = core.clock
            if IReactorThreads.providedBy(clock):
                def run_blocking(fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
                    return threads.deferToThreadPool(clock, clock.getThreadPool(), fn, *args)  # type: ignore[arg-type]
            else:
                def run_blocking(fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
                    return defer.maybeDeferred(fn, *args)
        self.run_blocking = run_blocking
        core.registry.add_listener(self)

    @classmethod
    def of(cls, core: Core) -> RecordService:
        attrs = vars(core)
        svc: RecordService | None = attrs.get("_record_service")
        if svc is None:
            svc = attrs["_record_service"] = cls(core)
        return svc

    def root_for(self, recorder: Mp4Recorder) -> str:
        return self.core.config.record.filePath

    # -- StreamListener -------------------------------------------------------------------
    def stream_registered(self, stream: Stream) -> None:
        if not mp4_enabled(self.core, stream):
            return
        recorder = Mp4Recorder(self, stream)
        self.recorders[stream.key] = recorder
        stream.add_reader(recorder)

    def stream_unregistered(self, stream: Stream) -> None:
        pass  # the recorder's stream_ended closes the file

    def stream_readers_changed(self, stream: Stream) -> None:
        pass

    def recorder_ended(self, recorder: Mp4Recorder) -> None:
        if self.recorders.get(recorder.key) is recorder:
            del self.recorders[recorder.key]

    # -- files -------------------------------------------------------------------------------
    def file_started(self, recorder: Mp4Recorder, f: _Open) -> None:
        hooks = self.core.hooks
        pub = recorder.publisher
        call = hooks.oclp.call("record", "start", self._domain(recorder), recorder.key.app, recorder.key.stream,
                               pub.id if pub else "", recorder.params)
        hooks.notify([call], str(recorder.key))

    def finish(self, recorder: Mp4Recorder, f: _Open, why: str) -> None:
        writer = f.writer
        if writer.first_dts is None:
            self._discard(f)
            return
        try:
            header = writer.header()
            time_len = writer.duration_ms / 1000.0
        except Exception:
            log.failure("record {key}: cannot build the index of {path}", key=str(recorder.key), path=str(f.path))
            self._discard(f)
            return
        end = self.core.clock.seconds()

        def blocking() -> int:
            f.data.close()
            return assemble(str(f.path), header, str(f.data_path))

        d = self.run_blocking(blocking)
        self._pending.add(d)

        def done(size: int) -> None:
            rec = RecordedFile(recorder.key, f.path, f.start_time, end, time_len, size, recorder.params)
            self.finished.append(rec)
            del self.finished[:-20]
            log.info("record {key}: {path} complete ({secs:.1f} s, {size} bytes; {why})", key=str(recorder.key),
                     path=str(f.path), secs=time_len, size=size, why=why)
            self._announce(recorder, rec)

        def failed(failure: Failure) -> None:
            log.failure("record {key}: cannot finish {path}", failure, key=str(recorder.key), path=str(f.path))

        d.addCallbacks(done, failed)
        d.addBoth(lambda _: self._pending.discard(d))

    def _discard(self, f: _Open) -> None:
        try:
            f.data.close()
            f.data_path.unlink(missing_ok=True)
        except OSError:
            pass

    def _domain(self, recorder: Mp4Recorder) -> str:
        return recorder.domain or recorder.key.vhost

    def _announce(self, recorder: Mp4Recorder, rec: RecordedFile) -> None:
        hooks = self.core.hooks
        key = rec.key
        path = rec.path
        absolute = path.resolve()
        calls: list[HookCall | None] = []
        calls.append(hooks.zlm.call("on_record_mp4", {
            "start_time": int(rec.start_time), "file_size": rec.file_size, "time_len": round(rec.time_len, 3),
            "file_path": str(absolute), "file_name": path.name, "folder": str(absolute.parent),
            "url": self._url(absolute), "vhost": key.vhost, "app": key.app, "stream": key.stream,
            "params": rec.params}))
        pub = recorder.publisher
        srs = hooks.srs
        if srs.urls("on_dvr"):
            body = srs._common("on_dvr", pub.id if pub else "", pub.peer_ip if pub else "", key.vhost, key.app)
            file = str(path) if path.is_absolute() or str(path).startswith(".") else f"./{path}"
            body.update(tcUrl=recorder.tc_url, stream=key.stream,
                        param=f"?{rec.params}" if rec.params else "", cwd=os.getcwd(), file=file,
                        stream_url=stream_url(key.vhost, key.app, key.stream), stream_id="")
            calls += srs._calls("on_dvr", body)
        calls.append(hooks.oclp.call("record", "done", self._domain(recorder), key.app, key.stream,
                                     pub.id if pub else "", rec.params,
                                     extra={"begintime": str(int(rec.start_time * 1000)),
                                            "endtime": str(int(rec.end_time * 1000)),
                                            "index": self._url(absolute), "file": path.name}))
        hooks.notify(calls, str(key))

    def _url(self, absolute: Path) -> str:
        """The file's URL path under http.rootPath (ZLMediaKit's ``url``), else under record.filePath."""
        for base in (self.core.config.http.rootPath, self.core.config.record.filePath):
            try:
                return absolute.relative_to(Path(base).resolve()).as_posix()
            except ValueError:
                continue
        return absolute.name

    def stop(self) -> defer.Deferred[Any]:
        """Fires when every file being finished is complete (and announced)."""
        pending = list(self._pending)
        if not pending:
            return defer.succeed(None)
        return defer.DeferredList(pending, consumeErrors=True)
