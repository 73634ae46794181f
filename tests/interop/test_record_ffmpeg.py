"""MP4 recording with real ffmpeg publishers, a real hook backend, ffprobe/ffmpeg
reading the files: complete, decodable end to end, duration within 1 s of
what was published, announced by on_record_mp4 / on_dvr / oclp record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import FFMPEG, FFPROBE, needs_ffmpeg, publish_args, start_publisher
from tests.support.hookserver import HookServer, fields_of, running_hookserver
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    with running_hookserver(tmp_path_factory.mktemp("rec-backend")) as hs:
        yield hs


@pytest.fixture(scope="module")
def server(hooks: HookServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    work = tmp_path_factory.mktemp("rec-server")
    with running_server(work, "protocol.enable_mp4=1", "protocol.continue_push_ms=1500",
                        "hook.enable=1", f"hook.on_record_mp4={hooks.url('/index/hook/on_record_mp4')}",
                        f"hook.outbox={work / 'outbox'}", "hook.timeoutSec=3",
                        "http_hooks.enabled=1", f"http_hooks.on_dvr={hooks.url('/srs/on_dvr')}",
                        f"oclp.oclp_record={hooks.url('/oclp')} stage=start,done") as srv:
        yield srv, work


def probe(path: Path) -> dict[str, Any]:
    r = subprocess.run([FFPROBE or "ffprobe", "-v", "error", "-show_entries",
                        "stream=codec_type,codec_name,width,height,nb_frames:format=duration", "-of", "json",
                        str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    parsed: dict[str, Any] = json.loads(r.stdout)
    return parsed


def decode_all(path: Path) -> tuple[int, str]:
    """Decode every frame; (video frames, stderr)."""
    r = subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framecrc", "-"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return sum(1 for line in r.stdout.splitlines() if line and not line.startswith("#")), r.stderr


def recordings(work: Path, stream: str) -> list[Path]:
    return sorted((work / "www" / "record" / "live" / stream).rglob("*.mp4"))


def wait_files(work: Path, stream: str, count: int = 1, timeout: float = 20) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = recordings(work, stream)
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no recording of {stream} after {timeout} s: {list((work / 'www').rglob('*'))}")


def test_recording_is_complete_and_announced(server: tuple[Server, Path], hooks: HookServer) -> None:
    srv, work = server
    seconds = 6
    r = subprocess.run(publish_args(f"{srv.rtmp}/live/rec?token=t1", size="640x360", bitrate="800k",
                                    duration=seconds), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    (path,) = wait_files(work, "rec")
    info = probe(path)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert abs(float(info["format"]["duration"]) - seconds) < 1.0, info
    frames, err = decode_all(path)
    assert err.strip() == "" and frames == int(streams["video"]["nb_frames"]) >= seconds * 25 - 5
    # moov before mdat
    head = path.read_bytes()[:64]
    assert head[4:8] == b"ftyp" and path.read_bytes().find(b"moov") < path.read_bytes().find(b"mdat")
    (zlm,) = hooks.wait("/index/hook/on_record_mp4", stream="rec")
    body = fields_of(zlm)
    assert body["file_path"] == str(path.resolve()) and body["file_size"] == path.stat().st_size
    assert body["file_name"] == path.name and body["folder"] == str(path.parent.resolve())
    assert body["url"] == path.resolve().relative_to((work / "www").resolve()).as_posix()
    assert abs(body["time_len"] - seconds) < 1.0 and body["params"] == "token=t1" and body["app"] == "live"
    assert abs(body["start_time"] - time.time()) < 60
    (dvr,) = hooks.wait("/srs/on_dvr", stream="rec")
    d = fields_of(dvr)
    assert d["action"] == "on_dvr" and Path(d["cwd"], d["file"]).resolve() == path.resolve()
    assert d["param"] == "?token=t1" and d["tcUrl"].startswith("rtmp://")
    acts = [fields_of(x)["act"] for x in hooks.wait("/oclp", count=2, name="rec")]
    assert acts == ["start", "done"]


def test_publisher_killed_file_is_finalised(server: tuple[Server, Path]) -> None:
    srv, work = server
    proc = start_publisher(f"{srv.rtmp}/live/killed", size="640x360", bitrate="800k")
    started = time.monotonic()
    time.sleep(5)
    proc.send_signal(signal.SIGKILL)
    published = time.monotonic() - started
    proc.wait()
    (path,) = wait_files(work, "killed", timeout=15)
    duration = float(probe(path)["format"]["duration"])
    # ffmpeg needs a few hundred ms to start sending; nothing received is lost
    assert published - 1.0 < duration <= published + 0.2, (duration, published)
    _, err = decode_all(path)
    assert err.strip() == ""
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_files_roll_at_file_second(tmp_path: Path) -> None:
    with running_server(tmp_path, "protocol.enable_mp4=1", "record.fileSecond=4") as srv:
        r = subprocess.run(publish_args(f"{srv.rtmp}/live/roll", size="320x240", bitrate="300k", duration=9),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        files = wait_files(tmp_path, "roll", count=3)
    durations = [float(probe(p)["format"]["duration"]) for p in files]
    assert len(files) == 3 and all(abs(d - 4) < 0.15 for d in durations[:2]), durations
    assert abs(sum(durations) - 9) < 1.0
    for p in files:
        assert decode_all(p)[1].strip() == ""
    assert all(os.path.basename(p).count("-") == 2 for p in files)
