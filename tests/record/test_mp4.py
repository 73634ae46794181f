"""The MP4 writer, checked by reading the boxes back and by ffprobe/ffmpeg."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mediasrv.core.frames import Codec, MediaFrame, TrackKind
from mediasrv.record.mp4 import Mp4Writer, assemble
from tests.support.clients import FFMPEG, FFPROBE, needs_ffmpeg
from tests.support.media import load_annexb_hevc, load_flv, looped

TRACKS, FRAMES = load_flv()
VIDEO, AUDIO = TRACKS[TrackKind.VIDEO], TRACKS[TrackKind.AUDIO]
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, payload offset, payload end) of the boxes in data[start:end]."""
    out = []
    pos, end = start, len(data) if end is None else end
    while pos < end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        head = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            head = 16
        assert size >= head and pos + size <= end, f"bad box {kind!r} at {pos}"
        out.append((kind, pos + head, pos + size))
        pos += size
    return out


def tree(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, Any]:
    """Nested {type: payload or subtree}; repeated types (trak) become lists."""
    out: dict[bytes, Any] = {}
    for kind, a, b in boxes(data, start, end):
        value: Any = tree(data, a, b) if kind in CONTAINERS else data[a:b]
        if kind in out:
            if not isinstance(out[kind], list):
                out[kind] = [out[kind]]
            out[kind].append(value)
        else:
            out[kind] = value
    return out


def write(tmp_path: Path, frames: list[MediaFrame], video: Any = VIDEO, audio: Any = AUDIO,
          name: str = "x.mp4") -> tuple[Path, Mp4Writer]:
    data_path = tmp_path / f".{name}.mdat"
    with open(data_path, "wb") as f:
        w = Mp4Writer(f, video, audio)
        for fr in frames:
            w.add(fr)
        header = w.header()
    path = tmp_path / name
    assemble(str(path), header, str(data_path))
    assert not data_path.exists()
    return path, w


def table(payload: bytes, fmt: str) -> list[tuple[int, ...]]:
    (count,) = struct.unpack(">I", payload[4:8])
    size = struct.calcsize(fmt)
    return [struct.unpack(fmt, payload[8 + i * size:8 + (i + 1) * size]) for i in range(count)]


def expand(runs: list[tuple[int, ...]]) -> list[int]:
    return [v for c, v in runs for _ in range(c)]


def test_moov_before_mdat_and_tables_match_the_frames(tmp_path: Path) -> None:
    frames = FRAMES
    path, _ = write(tmp_path, frames)
    data = path.read_bytes()
    assert [k for k, _, _ in boxes(data)] == [b"ftyp", b"moov", b"mdat"]
    moov = tree(data)[b"moov"]
    vtrak, atrak = moov[b"trak"]
    video = [f for f in frames if f.kind is TrackKind.VIDEO]
    audio = [f for f in frames if f.kind is TrackKind.AUDIO]
    vstbl = vtrak[b"mdia"][b"minf"][b"stbl"]
    assert b"avc1" in vstbl[b"stsd"] and VIDEO.config in vstbl[b"stsd"]
    # sizes
    sizes = list(struct.unpack(f">{len(video)}I", vstbl[b"stsz"][12:]))
    assert sizes == [len(f.payload) for f in video]
    # decode deltas in 90 kHz, composition offsets for the B-frames
    deltas = expand(table(vstbl[b"stts"], ">II"))
    assert deltas[:-1] == [(b.dts - a.dts) * 90 for a, b in zip(video, video[1:], strict=False)]
    assert expand(table(vstbl[b"ctts"], ">II")) == [(f.pts - f.dts) * 90 for f in video]
    assert [n for (n,) in table(vstbl[b"stss"], ">I")] == [i + 1 for i, f in enumerate(video) if f.keyframe]
    # every sample's bytes are where the chunk tables say
    offsets = [o for (o,) in table(vstbl[b"stco"], ">I")]
    per_chunk = table(vstbl[b"stsc"], ">III")
    counts = []
    for i, (first, n, _) in enumerate(per_chunk):
        last = per_chunk[i + 1][0] if i + 1 < len(per_chunk) else len(offsets) + 1
        counts += [n] * (last - first)
    k = 0
    for off, n in zip(offsets, counts, strict=True):
        for _ in range(n):
            assert data[off:off + sizes[k]] == video[k].payload
            off += sizes[k]
            k += 1
    assert k == len(video)
    astbl = atrak[b"mdia"][b"minf"][b"stbl"]
    assert b"mp4a" in astbl[b"stsd"] and b"esds" in astbl[b"stsd"] and AUDIO.config in astbl[b"stsd"]
    assert struct.unpack(">I", astbl[b"stsz"][8:12])[0] == len(audio)
    assert set(expand(table(astbl[b"stts"], ">II"))) == {1024}
    mdhd = atrak[b"mdia"][b"mdhd"]
    assert struct.unpack(">I", mdhd[12:16])[0] == 44100


def test_edit_lists_keep_audio_and_video_in_sync(tmp_path: Path) -> None:
    path, _ = write(tmp_path, looped(FRAMES, 2))
    moov = tree(path.read_bytes())[b"moov"]
    vtrak, atrak = moov[b"trak"]
    # video's first picture is shown at 80 ms, audio starts at 57 ms: video waits 23 ms
    # and skips its 80 ms composition offset
    v_edits = table(vtrak[b"edts"][b"elst"], ">Iihh")
    assert v_edits[0] == (23, -1, 1, 0)
    assert v_edits[1][1] == 80 * 90
    a_edits = table(atrak[b"edts"][b"elst"], ">Iihh")
    assert len(a_edits) == 1 and a_edits[0][1] == 0


def test_negative_composition_offsets_use_ctts_version_1(tmp_path: Path) -> None:
    frames = [MediaFrame(Codec.H264, 100 + i * 40, 100 + i * 40 - (40 if i % 2 else 0), i == 0, FRAMES[0].payload)
              for i in range(6)]
    path, _ = write(tmp_path, frames, audio=None)
    stbl = tree(path.read_bytes())[b"moov"][b"trak"][b"mdia"][b"minf"][b"stbl"]
    assert stbl[b"ctts"][0] == 1
    assert expand(table(stbl[b"ctts"], ">Ii")) == [0, -3600] * 3


def test_audio_gap_is_kept(tmp_path: Path) -> None:
    audio = [f for f in FRAMES if f.kind is TrackKind.AUDIO][:10]
    shifted = audio[:5] + [MediaFrame(f.codec, f.dts + 500, f.pts + 500, True, f.payload) for f in audio[5:]]
    path, w = write(tmp_path, shifted, video=None)
    stbl = tree(path.read_bytes())[b"moov"][b"trak"][b"mdia"][b"minf"][b"stbl"]
    deltas = expand(table(stbl[b"stts"], ">II"))
    assert deltas[3] == 1024 and deltas[4] > 20000  # the half second gap
    assert abs(w.duration_ms - (shifted[-1].dts - shifted[0].dts + 23)) < 3


def test_frames_going_backwards_are_dropped(tmp_path: Path) -> None:
    video = [f for f in FRAMES if f.kind is TrackKind.VIDEO][:5]
    back = MediaFrame(Codec.H264, 0, 0, False, video[1].payload)
    path, _ = write(tmp_path, [*video, back], audio=None)
    stbl = tree(path.read_bytes())[b"moov"][b"trak"][b"mdia"][b"minf"][b"stbl"]
    assert struct.unpack(">I", stbl[b"stsz"][8:12])[0] == 5


def test_large_files_switch_to_co64(tmp_path: Path) -> None:
    w = Mp4Writer(open(tmp_path / "d", "wb"), VIDEO, None)
    w.add(FRAMES[0])
    w.flush()
    w.data_size = 0x1_0000_0000  # pretend 4 GiB of samples were written
    header = w.header()
    kinds = [k for k, _, _ in boxes(header[:-16])]
    assert kinds == [b"ftyp", b"moov"]
    assert header[-16:-8] == struct.pack(">I4s", 1, b"mdat")
    assert b"co64" in header and b"stco" not in header
    w.data.close()


def _probe(path: Path) -> dict[str, Any]:
    r = subprocess.run([FFPROBE or "ffprobe", "-v", "error", "-show_entries",
                        "stream=codec_name,codec_tag_string,width,height,sample_rate,nb_frames,start_time,duration"
                        ":format=duration", "-of", "json", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    parsed: dict[str, Any] = json.loads(r.stdout)
    return parsed


def _decode(path: Path) -> str:
    r = subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stderr.strip()


@needs_ffmpeg
def test_ffprobe_h264_aac(tmp_path: Path) -> None:
    frames = looped(FRAMES, 6)
    path, w = write(tmp_path, frames)
    info = _probe(path)
    v, a = info["streams"]
    assert (v["codec_name"], v["codec_tag_string"], v["width"], v["height"]) == ("h264", "avc1", 1280, 720)
    assert (a["codec_name"], a["codec_tag_string"], a["sample_rate"]) == ("aac", "mp4a", "44100")
    assert int(v["nb_frames"]) == sum(1 for f in frames if f.kind is TrackKind.VIDEO)
    assert int(a["nb_frames"]) == sum(1 for f in frames if f.kind is TrackKind.AUDIO)
    assert abs(float(info["format"]["duration"]) - 6.0) < 0.15
    assert abs(float(v["start_time"]) - 0.023) < 0.002 and float(a["start_time"]) == 0.0
    assert _decode(path) == ""


@needs_ffmpeg
def test_ffprobe_h265(tmp_path: Path) -> None:
    track, frames = load_annexb_hevc()
    path, _ = write(tmp_path, frames, video=track, audio=None)
    (v,) = _probe(path)["streams"]
    assert (v["codec_name"], v["codec_tag_string"], v["width"], v["height"]) == ("hevc", "hvc1", 1280, 720)
    assert int(v["nb_frames"]) == len(frames)
    errors = [line for line in _decode(path).splitlines() if "monotonically" not in line]
    assert errors == []


@needs_ffmpeg
def test_faststart_file_plays_from_a_truncated_download(tmp_path: Path) -> None:
    """moov first: the first half of the file alone is probeable (progressive download)."""
    path, _ = write(tmp_path, looped(FRAMES, 4))
    half = tmp_path / "half.mp4"
    half.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    r = subprocess.run([FFPROBE or "ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "json",
                        str(half)], capture_output=True, text=True, timeout=30)
    assert {s["codec_name"] for s in json.loads(r.stdout)["streams"]} == {"h264", "aac"}


def test_empty_writer_has_no_duration(tmp_path: Path) -> None:
    with open(tmp_path / "d", "wb") as f:
        w = Mp4Writer(f, VIDEO, AUDIO)
        assert w.duration_ms == 0
        assert w.first_dts is None


@pytest.mark.parametrize("codec", [Codec.H264])
def test_frames_of_another_codec_are_ignored(tmp_path: Path, codec: Codec) -> None:
    with open(tmp_path / "d", "wb") as f:
        w = Mp4Writer(f, VIDEO, None)
        w.add(MediaFrame(Codec.H265, 0, 0, True, b"\x00\x00\x00\x01\x26"))
        w.add(MediaFrame(Codec.AAC, 0, 0, True, b"\x01"))
        assert w.first_dts is None
