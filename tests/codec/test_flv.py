"""FLV container and tag-body tests, against an ffmpeg 5.1 capture.

Fixture ``h264_aac_720p.flv`` was made with::

    ffmpeg -f lavfi -i testsrc2=size=1280x720:rate=25 \
        -f lavfi -i sine=frequency=440:sample_rate=44100 -t 1 \
        -c:v libx264 -crf 40 -g 12 -c:a aac -ac 2 -b:a 64k h264_aac_720p.flv

and ``h264_aac_720p.flv.packets.json`` is ffprobe's view of the same file
(``ffprobe -show_packets``: dts, pts, size, key flag per packet), an
independent parser to compare against.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediasrv.codec import amf0, flv
from mediasrv.codec.flv import FlvError, FlvReader, FlvTag, VideoKind
from mediasrv.core.frames import Codec

FIXTURES = Path(__file__).parent.parent / "fixtures"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture(scope="module")
def capture() -> bytes:
    return load("h264_aac_720p.flv")


@pytest.fixture(scope="module")
def tags(capture: bytes) -> list[FlvTag]:
    return FlvReader().feed(capture)


# -- header and tags ---------------------------------------------------------


@pytest.mark.parametrize(
    ("has_audio", "has_video", "flags"),
    [(True, True, 5), (True, False, 4), (False, True, 1), (False, False, 0)],
)
def test_flv_header(has_audio: bool, has_video: bool, flags: int) -> None:
    assert flv.flv_header(has_audio, has_video) == (
        b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"
    )


def test_encode_tag_layout() -> None:
    tag = flv.encode_tag(flv.TAG_VIDEO, 0x12345678, b"abc")
    assert tag == (
        b"\x09"  # TagType
        b"\x00\x00\x03"  # DataSize
        b"\x34\x56\x78"  # Timestamp, low 24 bits
        b"\x12"  # TimestampExtended
        b"\x00\x00\x00"  # StreamID
        b"abc"
        b"\x00\x00\x00\x0e"  # PreviousTagSize = 11 + 3
    )


def test_encode_tag_wraps_timestamp_at_32_bits() -> None:
    assert flv.encode_tag(flv.TAG_AUDIO, (1 << 32) + 5, b"")[4:8] == b"\x00\x00\x05\x00"


def test_encode_tag_rejects_oversized_payload_and_unknown_type() -> None:
    with pytest.raises(FlvError, match="exceeds the 24-bit DataSize"):
        flv.encode_tag(flv.TAG_VIDEO, 0, bytes(1 << 24))
    with pytest.raises(FlvError, match="unknown FLV tag type 7"):
        flv.encode_tag(7, 0, b"")


def test_reader_parses_capture(capture: bytes, tags: list[FlvTag]) -> None:
    reader = FlvReader()
    assert reader.feed(capture) == tags
    assert reader.has_audio is True and reader.has_video is True
    assert [t.tag_type for t in tags[:3]] == [flv.TAG_SCRIPT, flv.TAG_VIDEO, flv.TAG_AUDIO]
    assert len(tags) == 74  # metadata, 2 sequence headers, 70 packets, end of sequence


def test_capture_reencodes_byte_for_byte(capture: bytes, tags: list[FlvTag]) -> None:
    rebuilt = flv.flv_header(True, True) + b"".join(flv.encode_tag(t.tag_type, t.timestamp, t.payload) for t in tags)
    assert rebuilt == capture


def test_byte_at_a_time_equals_all_at_once(capture: bytes, tags: list[FlvTag]) -> None:
    reader = FlvReader()
    got: list[FlvTag] = []
    for i in range(len(capture)):
        got += reader.feed(capture[i : i + 1])
    assert got == tags


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=40))
def test_any_chunking_equals_all_at_once(cuts: list[int]) -> None:
    capture = load("h264_aac_720p.flv")
    expected = FlvReader().feed(capture)
    reader = FlvReader()
    got: list[FlvTag] = []
    pos = 0
    for size in cuts:
        got += reader.feed(capture[pos : pos + size])
        pos += size
    got += reader.feed(capture[pos:])
    assert got == expected


def test_every_prefix_yields_only_complete_tags(capture: bytes, tags: list[FlvTag]) -> None:
    head = capture[:2000]
    complete = FlvReader().feed(head)
    for n in range(len(head) + 1):
        got = FlvReader().feed(head[:n])
        assert got == complete[: len(got)]


def test_reader_matches_ffprobe_packets(tags: list[FlvTag]) -> None:
    packets = json.loads(load("h264_aac_720p.flv.packets.json"))
    seen = []
    for tag in tags:
        if tag.tag_type == flv.TAG_VIDEO:
            video = flv.parse_video(tag.payload)
            if video.kind is VideoKind.FRAME:
                seen.append(
                    {
                        "type": "video",
                        "dts": tag.timestamp,
                        "pts": tag.timestamp + video.cts,
                        "size": len(video.data),
                        "keyframe": video.keyframe,
                    }
                )
        elif tag.tag_type == flv.TAG_AUDIO:
            audio = flv.parse_audio(tag.payload)
            if not audio.config:
                seen.append(
                    {
                        "type": "audio",
                        "dts": tag.timestamp,
                        "pts": tag.timestamp,
                        "size": len(audio.data),
                        "keyframe": True,
                    }
                )
    assert seen == packets
    assert any(p["pts"] != p["dts"] for p in packets)  # B-frames: non-zero cts covered


def _tag_stream(*tags: tuple[int, int, bytes]) -> bytes:
    return flv.flv_header(True, True) + b"".join(flv.encode_tag(*t) for t in tags)


def test_reader_returns_unknown_tag_types_and_extended_timestamps() -> None:
    stream = flv.flv_header(False, True) + b"".join(
        [
            b"\x0f\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00Z\x00\x00\x00\x0c",
            flv.encode_tag(flv.TAG_VIDEO, 0x01ABCDEF, b"v"),
        ]
    )
    reader = FlvReader()
    assert reader.feed(stream) == [FlvTag(15, 1, b"Z"), FlvTag(9, 0x01ABCDEF, b"v")]
    assert reader.has_audio is False and reader.has_video is True


def test_reader_skips_extended_header() -> None:
    header = b"FLV\x01\x05\x00\x00\x00\x0dXXXX\x00\x00\x00\x00"
    assert FlvReader().feed(header + flv.encode_tag(8, 3, b"a")) == [FlvTag(8, 3, b"a")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"FLX\x01", r"not an FLV stream: signature b'FLX'"),
        (b"FLV\x02", "unsupported FLV version 2"),
        (b"FLV\x01\x05\x00\x00\x00\x08", "DataOffset 8 out of range"),
        (
            flv.flv_header(True, True) + b"\x28\x00\x00\x01" + bytes(7),
            r"encrypted FLV tag \(Filter bit set\)",
        ),
        (
            flv.flv_header(True, True) + flv.encode_tag(9, 0, b"xy")[:-1] + b"\x0e",
            "PreviousTagSize 14 after FLV tag type 9 of 2 bytes, expected 13",
        ),
    ],
)
def test_reader_errors(data: bytes, message: str) -> None:
    reader = FlvReader()
    with pytest.raises(FlvError, match=message):
        reader.feed(data)
    with pytest.raises(FlvError, match=message):  # the reader stays failed
        reader.feed(b"")


def test_reader_bounds_tag_size_before_buffering_the_body() -> None:
    reader = FlvReader(max_tag_size=100)
    assert reader.feed(_tag_stream((8, 0, bytes(100)))) != []
    header_only = flv.encode_tag(9, 0, bytes(101))[:11]
    with pytest.raises(FlvError, match="FLV tag type 9 of 101 bytes exceeds the limit of 100"):
        reader.feed(header_only)


def test_reader_previous_size_check_can_be_disabled() -> None:
    data = flv.flv_header(True, True) + flv.encode_tag(9, 0, b"xy")[:-1] + b"\x00"
    assert FlvReader(check_previous_size=False).feed(data) == [FlvTag(9, 0, b"xy")]


# -- video tag bodies --------------------------------------------------------


def test_parse_video_capture(tags: list[FlvTag]) -> None:
    config = flv.parse_video(tags[1].payload)
    assert config.codec is Codec.H264
    assert config.kind is VideoKind.CONFIG and config.keyframe and config.cts == 0
    assert config.data[0] == 1  # AVCDecoderConfigurationRecord version
    end = flv.parse_video(tags[-1].payload)
    assert end.kind is VideoKind.EOS and end.data == b""
    assert tags[-1].payload == flv.build_video_end(Codec.H264)


def test_video_frames_rebuild_byte_for_byte(tags: list[FlvTag]) -> None:
    for tag in tags:
        if tag.tag_type != flv.TAG_VIDEO:
            continue
        p = flv.parse_video(tag.payload)
        if p.kind is VideoKind.EOS:
            continue
        assert p.codec is not None
        rebuilt = flv.build_video(p.codec, p.keyframe, p.kind is VideoKind.CONFIG, p.cts, p.data)
        assert rebuilt == tag.payload


def test_build_video_h264_layout() -> None:
    assert flv.build_video(Codec.H264, True, True, 0, b"REC") == b"\x17\x00\x00\x00\x00REC"
    assert flv.build_video(Codec.H264, False, False, -1, b"AU") == b"\x27\x01\xff\xff\xffAU"
    assert flv.build_video(Codec.H264, True, False, 80, b"AU") == b"\x17\x01\x00\x00\x50AU"


def test_build_video_h265_enhanced_layout() -> None:
    assert flv.build_video(Codec.H265, True, True, 0, b"REC") == b"\x90hvc1REC"
    assert flv.build_video(Codec.H265, True, False, 0, b"AU") == b"\x93hvc1AU"
    assert flv.build_video(Codec.H265, False, False, 0, b"AU") == b"\xa3hvc1AU"
    assert flv.build_video(Codec.H265, False, False, 0x123456, b"AU") == b"\xa1hvc1\x12\x34\x56AU"
    assert flv.build_video(Codec.H265, False, False, -2, b"AU") == b"\xa1hvc1\xff\xff\xfeAU"
    assert flv.build_video_end(Codec.H265) == b"\x92hvc1"


def test_build_video_config_is_a_keyframe_with_zero_cts() -> None:
    assert flv.build_video(Codec.H265, False, True, 40, b"R") == b"\x90hvc1R"
    assert flv.build_video(Codec.H264, False, True, 40, b"R") == b"\x17\x00\x00\x00\x00R"


def test_build_video_errors() -> None:
    with pytest.raises(FlvError, match="composition time 8388608 ms"):
        flv.build_video(Codec.H264, False, False, 1 << 23, b"")
    with pytest.raises(FlvError, match="composition time -8388609 ms"):
        flv.build_video(Codec.H265, False, False, -(1 << 23) - 1, b"")
    with pytest.raises(FlvError, match="AAC is not a video codec"):
        flv.build_video(Codec.AAC, False, False, 0, b"")
    with pytest.raises(FlvError, match="AAC is not a video codec"):
        flv.build_video_end(Codec.AAC)


@given(
    codec=st.sampled_from([Codec.H264, Codec.H265]),
    keyframe=st.booleans(),
    config=st.booleans(),
    cts=st.integers(min_value=-(1 << 23), max_value=(1 << 23) - 1),
    data=st.binary(max_size=64),
)
def test_build_parse_video_round_trip(codec: Codec, keyframe: bool, config: bool, cts: int, data: bytes) -> None:
    p = flv.parse_video(flv.build_video(codec, keyframe, config, cts, data))
    assert p.codec is codec
    assert p.kind is (VideoKind.CONFIG if config else VideoKind.FRAME)
    assert p.keyframe is (True if config else keyframe)
    assert p.cts == (0 if config else cts)
    assert p.data == data


def test_parse_legacy_hevc_codec_id_12() -> None:
    p = flv.parse_video(b"\x1c\x01\xff\xff\xd8AU")
    assert (p.codec, p.kind, p.keyframe, p.cts, p.data) == (Codec.H265, VideoKind.FRAME, True, -40, b"AU")
    p = flv.parse_video(b"\x1c\x00\x00\x00\x00REC")
    assert (p.codec, p.kind, p.data) == (Codec.H265, VideoKind.CONFIG, b"REC")


def test_parse_enhanced_avc1_and_metadata() -> None:
    p = flv.parse_video(b"\x91avc1\x00\x00\x28AU")
    assert (p.codec, p.kind, p.keyframe, p.cts, p.data) == (Codec.H264, VideoKind.FRAME, True, 40, b"AU")
    meta = amf0.encode("colorInfo", {"colorConfig": {"bitDepth": 10}})
    p = flv.parse_video(b"\x84hvc1" + meta)  # FrameType is ignored for Metadata
    assert (p.codec, p.kind, p.data) == (Codec.H265, VideoKind.METADATA, meta)


def test_parse_generated_keyframe_and_disposable_frames() -> None:
    assert flv.parse_video(b"\x47\x01\x00\x00\x00AU").keyframe is True
    assert flv.parse_video(b"\x37\x01\x00\x00\x00AU").keyframe is False


def test_parse_command_frames() -> None:
    legacy = flv.parse_video(b"\x57\x01")
    assert (legacy.codec, legacy.kind, legacy.data) == (Codec.H264, VideoKind.COMMAND, b"\x01")
    enhanced = flv.parse_video(b"\xd1\x00")  # ex header, FrameType 5, no FourCC
    assert (enhanced.codec, enhanced.kind, enhanced.data) == (None, VideoKind.COMMAND, b"\x00")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty video tag body"),
        (b"\x12\x00", r"unsupported video codec id 2 \(Sorenson H.263\)"),
        (b"\x14", r"unsupported video codec id 4 \(On2 VP6\)"),
        (b"\x1d", r"unsupported video codec id 13 \(reserved\)"),
        (b"\x07\x01\x00\x00\x00", "reserved video frame type 0"),
        (b"\x67\x01\x00\x00\x00", "reserved video frame type 6"),
        (b"\x17\x03\x00\x00\x00", "unknown AVCPacketType 3 for H264"),
        (b"\x17\x01\x00\x00", "H264 video tag truncated: 4 bytes, the header needs 5"),
        (b"\x57", "video command frame truncated"),
        (b"\x90av01\x81\x00", "unsupported video FourCC 'av01'"),
        (b"\x93vp09xx", "unsupported video FourCC 'vp09'"),
        (b"\x95hvc1", r"packet type 5 \(MPEG2TSSequenceStart\) is defined for av01 only"),
        (b"\x96\x00hvc1", r"unsupported enhanced video packet type 6 \(Multitrack\)"),
        (b"\x97", r"unsupported enhanced video packet type 7 \(ModEx\)"),
        (b"\x9ahvc1", r"unsupported enhanced video packet type 10 \(reserved\)"),
        (b"\x91hvc1\x00\x00", "enhanced H265 CodedFrames truncated: 7 bytes, the header needs 8"),
        (b"\x91hvc", "enhanced video tag truncated: 4 bytes, the header needs 5"),
        (b"\xe1hvc1\x00\x00\x00", "reserved video frame type 6"),
        (b"\xd0", "enhanced video command frame truncated"),
    ],
)
def test_parse_video_errors(payload: bytes, message: str) -> None:
    with pytest.raises(FlvError, match=message):
        flv.parse_video(payload)


@pytest.mark.parametrize(
    ("body", "header_len"),
    [
        (b"\x17\x01\x00\x00\x50AU", 5),
        (b"\x1c\x00\x00\x00\x00REC", 5),
        (b"\x90hvc1REC", 5),
        (b"\xa1hvc1\xff\xff\xfeAU", 8),
        (b"\x93hvc1AU", 5),
        (b"\x57\x01", 2),
        (b"\xd1\x00", 2),
    ],
)
def test_truncated_video_header_raises_flv_error(body: bytes, header_len: int) -> None:
    for n in range(len(body) + 1):
        if n < header_len:
            with pytest.raises(FlvError):
                flv.parse_video(body[:n])
        else:  # a shorter payload is still a valid packet
            flv.parse_video(body[:n])


@given(st.binary(max_size=12))
def test_parse_video_raises_only_flv_error(payload: bytes) -> None:
    try:
        flv.parse_video(payload)
    except FlvError:
        pass


# -- audio tag bodies --------------------------------------------------------


def test_parse_audio_capture(tags: list[FlvTag]) -> None:
    config = flv.parse_audio(tags[2].payload)
    assert config.codec is Codec.AAC and config.config
    assert config.data == b"\x12\x10\x56\xe5\x00"  # AAC-LC 44.1 kHz stereo + SBR sync ext
    raw = flv.parse_audio(tags[5].payload)
    assert not raw.config and raw.data == tags[5].payload[2:]


def test_build_audio() -> None:
    assert flv.build_audio(True, b"\x12\x10") == b"\xaf\x00\x12\x10"
    assert flv.build_audio(False, b"AU") == b"\xaf\x01AU"


@given(config=st.booleans(), data=st.binary(max_size=64))
def test_build_parse_audio_round_trip(config: bool, data: bytes) -> None:
    p = flv.parse_audio(flv.build_audio(config, data))
    assert (p.codec, p.config, p.data) == (Codec.AAC, config, data)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty audio tag body"),
        (b"\x2f\x00", r"unsupported audio format 2 \(MP3\)"),
        (b"\x7e", r"unsupported audio format 7 \(G.711 A-law\)"),
        (b"\x9f", r"unsupported audio format 9 \(enhanced RTMP ExAudioTagHeader\)"),
        (b"\xcf", r"unsupported audio format 12 \(reserved\)"),
        (b"\xaf", "AAC audio tag truncated: no AACPacketType"),
        (b"\xaf\x02", "unknown AACPacketType 2"),
    ],
)
def test_parse_audio_errors(payload: bytes, message: str) -> None:
    with pytest.raises(FlvError, match=message):
        flv.parse_audio(payload)


# -- script data -------------------------------------------------------------


def test_script_tag_payload_matches_ffmpeg_onmetadata(tags: list[FlvTag]) -> None:
    name, values = amf0.decode_all(tags[0].payload)
    assert name == "onMetaData" and values["width"] == 1280.0
    assert flv.script_tag_payload(name, dict(values)) == tags[0].payload
