"""Mp4Recorder / RecordService on task.Clock: when recording happens, file names
and rolling, finalisation at stream end, and the hooks that announce files."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from mediasrv import config
from mediasrv.core.context import Core
from mediasrv.record.recorder import RecordService
from tests.support.clients import FFPROBE, needs_ffmpeg
from tests.support.http import AutoClient
from tests.support.media import Publisher

START = 1_750_000_000.0  # a fixed wall clock for file names


@pytest.fixture
def make(clock: Clock, tmp_path: Path) -> Iterator[Callable[..., tuple[Core, AutoClient, RecordService]]]:
    clock.advance(START)
    cores: list[Core] = []

    def factory(*sets: str) -> tuple[Core, AutoClient, RecordService]:
        client = AutoClient()
        core = Core.build(config.load(overrides=[f"record.filePath={tmp_path / 'rec'}",
                                                 f"http.rootPath={tmp_path}", *sets]), clock, client)  # type: ignore[arg-type]
        cores.append(core)
        return core, client, RecordService.of(core)

    yield factory
    for core in cores:
        core.registry.close_all("test over")
    for _ in range(10):
        if not clock.getDelayedCalls():
            break
        clock.advance(600)


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_off_by_default(make: Callable[..., Any], tmp_path: Path) -> None:
    core, _, svc = make()
    pub = Publisher(core, core.clock)
    pub.feed(3)
    assert svc.recorders == {}
    pub.stop()
    assert not (tmp_path / "rec").exists()


def test_on_publish_reply_turns_it_on(make: Callable[..., Any], tmp_path: Path) -> None:
    core, _, svc = make()
    pub = Publisher(core, core.clock, options={"enable_mp4": "1"})
    pub.feed(3)
    pub.stop()
    assert len(files(tmp_path / "rec")) == 1
    core2, _, _ = make("protocol.enable_mp4=1")
    pub2 = Publisher(core2, core2.clock, name="other", options={"enable_mp4": "0"})
    pub2.feed(2)
    pub2.stop()
    assert not (tmp_path / "rec" / "live" / "other").exists()


def test_file_path_and_finalisation_at_stream_end(make: Callable[..., Any], tmp_path: Path) -> None:
    core, _, svc = make("protocol.enable_mp4=1")
    pub = Publisher(core, core.clock)
    pub.feed(5)
    (partial,) = files(tmp_path / "rec")
    assert partial.name.startswith(".") and partial.name.endswith(".mp4.mdat")  # still being written
    pub.stop()
    (done,) = files(tmp_path / "rec")
    local = time.localtime(START)
    assert done.relative_to(tmp_path / "rec").as_posix() == \
        f"live/test/{time.strftime('%Y-%m-%d', local)}/{time.strftime('%H-%M-%S', local)}.mp4"
    (rec,) = svc.finished
    assert abs(rec.time_len - 5.0) < 0.1 and rec.file_size == done.stat().st_size
    assert svc.recorders == {}


def test_rolls_every_file_second_on_a_keyframe(make: Callable[..., Any], tmp_path: Path) -> None:
    core, _, svc = make("protocol.enable_mp4=1", "record.fileSecond=4")
    pub = Publisher(core, core.clock)
    pub.feed(10.5)
    pub.stop()
    names = [p.name for p in files(tmp_path / "rec")]
    assert names == [time.strftime("%H-%M-%S.mp4", time.localtime(r.start_time)) for r in svc.finished]
    assert [round(r.start_time - START, 2) for r in svc.finished] == [0, 4, 8]
    assert [round(r.time_len, 1) for r in svc.finished] == [4.0, 4.0, 2.5]


def test_mp4_max_second_from_on_publish(make: Callable[..., Any], tmp_path: Path) -> None:
    core, _, svc = make("protocol.enable_mp4=1")
    pub = Publisher(core, core.clock, options={"mp4_max_second": "2"})
    pub.feed(6.5)
    pub.stop()
    assert len(svc.finished) == 4


def test_publisher_returning_continues_the_file(make: Callable[..., Any], tmp_path: Path) -> None:
    core, _, svc = make("protocol.enable_mp4=1", "protocol.continue_push_ms=5000")
    pub = Publisher(core, core.clock)
    pub.feed(3)
    core.registry.unpublish(pub.stream, pub.session, abrupt=True)  # connection lost
    core.sessions.close(pub.session)
    core.clock.advance(2)
    assert svc.finished == []
    back = core.sessions.open("rtmp", "10.0.0.1", 50001, 1935, core.clock.seconds())
    assert core.registry.publish(pub.stream.key, back) is pub.stream
    pub.session = back
    pub.feed(2)
    pub.stop()
    (rec,) = svc.finished
    assert 4.9 < rec.time_len < 5.2  # rebased timestamps: no hole, one file


def test_publisher_vanishing_finalises_after_continue_push(make: Callable[..., Any], tmp_path: Path) -> None:
    core, _, svc = make("protocol.enable_mp4=1", "protocol.continue_push_ms=3000")
    pub = Publisher(core, core.clock)
    pub.feed(3)
    core.registry.unpublish(pub.stream, pub.session, abrupt=True)
    core.sessions.close(pub.session)
    assert svc.finished == []
    core.clock.advance(3.1)
    (rec,) = svc.finished
    assert rec.path.exists() and abs(rec.time_len - 3.0) < 0.1


def test_codec_change_starts_a_new_file(make: Callable[..., Any], tmp_path: Path) -> None:
    from mediasrv.core.frames import Track, TrackKind

    core, _, svc = make("protocol.enable_mp4=1")
    pub = Publisher(core, core.clock)
    pub.feed(2)
    audio = pub.stream.tracks[TrackKind.AUDIO]
    pub.stream.set_track(Track(audio.codec, b"\x11\x90", sample_rate=48000, channels=2))
    pub.feed(2)
    pub.stop()
    assert len(svc.finished) == 2


def test_hooks_announce_every_file(make: Callable[..., Any], tmp_path: Path) -> None:
    core, client, svc = make(
        "protocol.enable_mp4=1", "record.fileSecond=3", "hook.enable=1", "hook.on_record_mp4=http://h/on_record_mp4",
        "http_hooks.enabled=1", "http_hooks.on_dvr=http://h/srs/on_dvr http://h/srs/on_dvr2",
        "oclp.oclp_record=http://h/oclp stage=start,done")
    pub = Publisher(core, core.clock)
    pub.session.params = "token=abc"
    pub.stream.params = "token=abc"
    pub.feed(7)
    pub.stop()
    zlm = client.to("/on_record_mp4")
    assert len(zlm) == 3
    first = zlm[0]
    path = svc.finished[0].path.resolve()
    assert first["start_time"] == int(START) and first["file_size"] == path.stat().st_size
    assert abs(first["time_len"] - 3.0) < 0.05
    assert first["file_path"] == str(path) and first["file_name"] == path.name and first["folder"] == str(path.parent)
    assert first["url"] == path.relative_to(tmp_path).as_posix() and first["url"].startswith("rec/live/test/")
    assert (first["vhost"], first["app"], first["stream"], first["params"]) == \
        ("__defaultVhost__", "live", "test", "token=abc")
    assert first["mediaServerId"] and "hook_index" in first
    dvr = client.to("/srs/on_dvr")
    assert len(dvr) == 3 and len(client.to("/srs/on_dvr2")) == 3
    d = dvr[0]
    assert d["action"] == "on_dvr" and d["client_id"] == pub.session.id and d["ip"] == "10.0.0.1"
    assert d["cwd"] == os.getcwd() and Path(d["cwd"], d["file"]).resolve() == path
    assert d["param"] == "?token=abc" and d["stream_url"] == "/live/test" and d["stream"] == "test"
    oclp = [h for h in client.sent if "/oclp" in h.url]
    acts = [re.search(r"act=(\w+)", h.url).group(1) for h in oclp]  # type: ignore[union-attr]
    assert acts == ["start", "done", "start", "done", "start", "done"]
    done_url = oclp[1].url
    assert "call=record" in done_url and f"clientid={pub.session.id}" in done_url
    assert f"begintime={int(START * 1000)}" in done_url and f"file={path.name}" in done_url
    assert "endtime=" in done_url and "index=" in done_url and "token=abc" in done_url


def test_a_single_frame_makes_a_file(make: Callable[..., Any], tmp_path: Path) -> None:
    core, _, svc = make("protocol.enable_mp4=1")
    pub = Publisher(core, core.clock)
    pub.stream.write(pub._frames().__next__())  # registers, the first frame is a keyframe
    pub.stop()
    assert len(svc.finished) == 1  # one frame still makes a (tiny) file
    assert all(not p.name.startswith(".") for p in files(tmp_path / "rec"))


@needs_ffmpeg
def test_recording_probes(make: Callable[..., Any], tmp_path: Path) -> None:
    core, _, svc = make("protocol.enable_mp4=1")
    pub = Publisher(core, core.clock)
    pub.feed(4)
    pub.stop()
    (rec,) = svc.finished
    r = subprocess.run([FFPROBE or "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                        str(rec.path)], capture_output=True, text=True, timeout=30)
    assert abs(float(r.stdout) - 4.0) < 0.1
