"""H.264 tests, plus the shared bit reader and NAL framing of ``codec.bits``.

Golden inputs are ffmpeg 5.1 / libx264 output; the expected values are what
ffprobe reports for the same files:

* ``h264_aac_720p.flv`` (see test_flv.py): High, level 3.1, 1280x720, 25 fps;
  its SPS contains emulation prevention bytes.
* ``h264_1080p_baseline.h264``: ``color=black:size=1920x1080:rate=30``,
  ``-profile:v baseline`` (coded 1920x1088, cropped).
* ``h264_576i_interlaced.h264``: 720x576 at 25, ``-flags +ildct+ilme
  -x264-params interlaced=1`` (``frame_mbs_only_flag`` 0).
* ``h264_444_cqm.h264``: 352x288 at 30000/1001, ``-pix_fmt yuv444p
  -x264-params cqm=jvt`` (High 4:4:4 Predictive, scaling matrices).
* ``h264_high10.h264``: 640x360 at 50, ``-pix_fmt yuv420p10le`` (High 10).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediasrv.codec import flv, h264
from mediasrv.codec.bits import BitReader, BitstreamError, CodecError, iter_nal_units, remove_emulation_prevention
from mediasrv.codec.flv import FlvReader, VideoKind
from mediasrv.codec.h264 import H264Error
from tests.support.bits import BitWriter, add_emulation_prevention

FIXTURES = Path(__file__).parent.parent / "fixtures"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# -- bits: BitReader ---------------------------------------------------------


def test_read_bits_msb_first() -> None:
    r = BitReader(b"\xa5\x0f")
    assert r.read_bits(1) == 1
    assert r.read_bits(3) == 0b010
    assert r.read_bits(0) == 0
    assert r.read_bits(8) == 0x50
    assert r.read_flag() is True
    assert r.position == 13 and r.bits_left == 3
    r.skip_bits(3)
    assert r.bits_left == 0


def test_exp_golomb_table() -> None:
    # 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2, 3, 4
    r = BitReader(bytes([0b10100110, 0b01000010, 0b10000000]))
    assert [r.read_ue() for _ in range(5)] == [0, 1, 2, 3, 4]
    r = BitReader(bytes([0b10100110, 0b01000010, 0b10000000]))
    assert [r.read_se() for _ in range(5)] == [0, 1, -1, 2, -2]


@given(st.lists(st.tuples(st.sampled_from(["u", "ue", "se"]), st.integers(0, 2**32 - 2)), max_size=20))
def test_bit_reader_matches_reference_writer(fields: list[tuple[str, int]]) -> None:
    w = BitWriter()
    expected = []
    for kind, v in fields:
        if kind == "u":
            w.bits(32, v)
        elif kind == "ue":
            w.ue(v)
        else:
            v = v // 2 - (2**30)
            w.se(v)
        expected.append(v)
    r = BitReader(w.rbsp())
    got = []
    for kind, _ in fields:
        got.append(r.read_bits(32) if kind == "u" else r.read_ue() if kind == "ue" else r.read_se())
    assert got == expected
    assert r.read_bits(1) == 1  # the stop bit


def test_bit_reader_overrun_messages() -> None:
    r = BitReader(b"\xff")
    r.read_bits(5)
    with pytest.raises(BitstreamError, match="needed 4 bits at bit offset 5, only 3 of 8 left"):
        r.read_bits(4)
    with pytest.raises(BitstreamError, match="needed 9 bits"):
        r.skip_bits(9)
    with pytest.raises(BitstreamError, match="exp-Golomb code at bit offset 0 runs past the end"):
        BitReader(b"\x00\x00").read_ue()
    with pytest.raises(BitstreamError, match="runs past the end"):
        BitReader(b"").read_ue()
    assert BitReader(b"\x10").read_ue() == 7  # 0001 000
    with pytest.raises(BitstreamError, match="needed 8 bits at bit offset 7"):
        BitReader(b"\x01").read_ue()  # 0000000 1, then 7 info bits missing
    with pytest.raises(BitstreamError, match="has 32 leading zero bits"):
        BitReader(b"\x00\x00\x00\x00\xff\xff\xff\xff\xff").read_ue()
    assert issubclass(BitstreamError, CodecError) and issubclass(CodecError, ValueError)


# -- bits: emulation prevention ----------------------------------------------


@pytest.mark.parametrize(
    ("nal", "rbsp"),
    [
        (b"", b""),
        (b"\x67\x64", b"\x67\x64"),
        (b"\x00\x00\x03\x01", b"\x00\x00\x01"),
        (b"\x00\x00\x03\x00\x00\x03", b"\x00\x00\x00\x00"),
        (b"\x11\x00\x00\x03\x00\x00\x03\x02", b"\x11\x00\x00\x00\x00\x02"),
        (b"\x00\x03\x00\x00\x03", b"\x00\x03\x00\x00"),
    ],
)
def test_remove_emulation_prevention(nal: bytes, rbsp: bytes) -> None:
    assert remove_emulation_prevention(nal) == rbsp


@given(st.binary(max_size=64))
def test_emulation_prevention_round_trip(rbsp: bytes) -> None:
    assert remove_emulation_prevention(add_emulation_prevention(rbsp)) == rbsp


# -- bits: Annex B and length-prefixed framing --------------------------------


def test_split_annexb_start_codes_and_trailing_zeros() -> None:
    data = b"junk\x00\x00\x00\x01\x67AA\x00\x00\x01\x68BB\x00\x00\x00\x00\x01\x65CC\x00\x00"
    assert h264.split_annexb(data) == [b"\x67AA", b"\x68BB", b"\x65CC"]
    assert h264.split_annexb(b"\x00\x00\x01\x00\x00\x01\x09\xf0") == [b"\x09\xf0"]
    assert h264.split_annexb(b"") == []
    assert h264.split_annexb(b"\x00\x00") == []
    with pytest.raises(BitstreamError, match="no Annex B start code in 3 bytes"):
        h264.split_annexb(b"\x67AA")


nal_units = st.binary(min_size=1, max_size=40).map(lambda b: add_emulation_prevention(b"\x41" + b) + b"\x80")


@given(st.lists(st.tuples(nal_units, st.booleans()), max_size=8))
def test_split_annexb_round_trip(items: list[tuple[bytes, bool]]) -> None:
    stream = b"".join((b"\x00\x00\x00\x01" if four else b"\x00\x00\x01") + nal for nal, four in items)
    assert h264.split_annexb(stream) == [nal for nal, _ in items]


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.sampled_from([1, 2, 3, 4]))
def test_avcc_round_trip(nals: list[bytes], length_size: int) -> None:
    packed = h264.nals_to_avcc(nals)
    assert h264.avcc_to_nals(packed) == nals
    if all(len(n) < 256 for n in nals):
        reframed = b"".join(len(n).to_bytes(length_size, "big") + n for n in nals)
        assert h264.avcc_to_nals(reframed, length_size) == nals


def test_avcc_to_nals_truncated_at_every_prefix() -> None:
    nals = [b"\x65" + bytes(range(20)), b"\x41\x9a", b"\x06\x05\x01"]
    packed = h264.nals_to_avcc(nals)
    boundaries = {0, 25, 31, 38}
    for n in range(len(packed) + 1):
        if n in boundaries:
            assert h264.avcc_to_nals(packed[:n]) == nals[: sorted(boundaries).index(n)]
        else:
            with pytest.raises(BitstreamError, match="truncated NAL length|declares"):
                h264.avcc_to_nals(packed[:n])
            if n < 25:  # past the first NAL the IDR answers before the truncation
                with pytest.raises(BitstreamError):
                    h264.is_keyframe_avcc(packed[:n])


def test_avcc_framing_errors() -> None:
    with pytest.raises(BitstreamError, match="NAL unit at offset 0 declares 9 bytes, only 2 remain"):
        h264.avcc_to_nals(b"\x00\x00\x00\x09ab")
    with pytest.raises(BitstreamError, match="NAL length size must be 1, 2, 3 or 4, not 5"):
        h264.avcc_to_nals(b"", 5)
    assert h264.avcc_to_nals(b"\x00\x00\x00\x00\x00\x00\x00\x01\x09") == [b"\x09"]


def test_iter_nal_units_yields_spans_and_stops_where_the_caller_stops() -> None:
    data = b"\x00\x00\x00\x02\x09\xf0" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x02\x65\x88" + b"\x00\x00\x00\x09ab"
    walk = iter_nal_units(data)
    assert next(walk) == (4, 6)  # the empty entry at 6..10 is skipped
    assert next(walk) == (14, 16) and data[14:16] == b"\x65\x88"
    with pytest.raises(BitstreamError, match="NAL unit at offset 16 declares 9 bytes, only 2 remain"):
        next(walk)
    # a keyframe test answers before it reaches the truncated tail
    assert h264.is_keyframe_avcc(data)
    assert list(iter_nal_units(b"\x02\x41\x9a\x01\x06", 1)) == [(1, 3), (4, 5)]
    assert list(iter_nal_units(b"")) == []
    with pytest.raises(BitstreamError, match="truncated NAL length field at offset 0: 3 of 4 bytes"):
        list(iter_nal_units(b"\x00\x00\x00"))
    for bad in (0, 5):
        with pytest.raises(BitstreamError, match=f"NAL length size must be 1, 2, 3 or 4, not {bad}"):
            h264.is_keyframe_avcc(b"\x00\x01\x65", bad)


def test_annexb_to_avcc() -> None:
    assert h264.annexb_to_avcc(b"\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x65\x88") == (
        b"\x00\x00\x00\x02\x09\xf0\x00\x00\x00\x02\x65\x88"
    )


def test_nal_type_and_keyframe() -> None:
    assert h264.nal_type(b"\x67") == h264.NAL_SPS
    assert h264.nal_type(b"\x65\x88") == h264.NAL_IDR
    with pytest.raises(H264Error, match="empty NAL unit"):
        h264.nal_type(b"")
    assert h264.is_keyframe_avcc(h264.nals_to_avcc([b"\x09\xf0", b"\x06\x05", b"\x65\x88"]))
    assert not h264.is_keyframe_avcc(h264.nals_to_avcc([b"\x09\xf0", b"\x41\x9a"]))
    assert not h264.is_keyframe_avcc(b"")


# -- avcC and SPS from the FLV capture ---------------------------------------


@pytest.fixture(scope="module")
def flv_video() -> list[flv.VideoPacket]:
    tags = FlvReader().feed(load("h264_aac_720p.flv"))
    return [flv.parse_video(t.payload) for t in tags if t.tag_type == flv.TAG_VIDEO]


@pytest.fixture(scope="module")
def avcc(flv_video: list[flv.VideoPacket]) -> bytes:
    assert flv_video[0].kind is VideoKind.CONFIG
    return flv_video[0].data


def test_capture_avcc_to_sps_size(avcc: bytes) -> None:
    cfg = h264.parse_avc_config(avcc)
    assert (cfg.profile, cfg.compat, cfg.level, cfg.nal_length_size) == (100, 0, 31, 4)
    assert len(cfg.sps) == 1 and len(cfg.pps) == 1
    assert (cfg.chroma_format, cfg.bit_depth_luma, cfg.bit_depth_chroma, cfg.sps_ext) == (1, 8, 8, [])
    assert b"\x00\x00\x03" in cfg.sps[0]  # exercises emulation prevention removal
    info = h264.parse_sps(cfg.sps[0])
    assert (info.width, info.height, info.fps) == (1280, 720, 25.0)
    assert (info.profile_idc, info.level_idc) == (100, 31)


def test_build_avc_config_matches_ffmpeg(avcc: bytes) -> None:
    cfg = h264.parse_avc_config(avcc)
    assert h264.build_avc_config(cfg.sps, cfg.pps) == avcc


def test_capture_keyframes_and_nal_units(flv_video: list[flv.VideoPacket]) -> None:
    frames = [p for p in flv_video if p.kind is VideoKind.FRAME]
    assert [h264.is_keyframe_avcc(p.data) for p in frames] == [p.keyframe for p in frames]
    assert sum(p.keyframe for p in frames) == 3  # -g 12 over 25 frames
    first = h264.avcc_to_nals(frames[0].data)
    assert [h264.nal_type(n) for n in first] == [h264.NAL_SEI, h264.NAL_IDR]
    assert h264.nals_to_avcc(first) == frames[0].data


# -- SPS variants from Annex B captures ---------------------------------------


@pytest.mark.parametrize(
    ("name", "width", "height", "profile", "level", "fps", "chroma", "depth", "progressive"),
    [
        ("h264_1080p_baseline.h264", 1920, 1080, 66, 40, 30.0, 1, 8, True),
        ("h264_576i_interlaced.h264", 720, 576, 100, 30, 25.0, 1, 8, False),
        ("h264_444_cqm.h264", 352, 288, 244, 13, 30000 / 1001, 3, 8, True),
        ("h264_high10.h264", 640, 360, 110, 31, 50.0, 1, 10, True),
    ],
)
def test_sps_variants(
    name: str,
    width: int,
    height: int,
    profile: int,
    level: int,
    fps: float,
    chroma: int,
    depth: int,
    progressive: bool,
) -> None:
    nals = h264.split_annexb(load(name))
    assert h264.nal_type(nals[0]) == h264.NAL_SPS and h264.nal_type(nals[1]) == h264.NAL_PPS
    info = h264.parse_sps(nals[0])
    assert (info.width, info.height) == (width, height)
    assert (info.profile_idc, info.level_idc) == (profile, level)
    assert info.fps == pytest.approx(fps)
    assert (info.chroma_format_idc, info.bit_depth_luma, info.bit_depth_chroma) == (chroma, depth, depth)
    assert info.frame_mbs_only is progressive
    record = h264.build_avc_config([nals[0]], [nals[1]])
    cfg = h264.parse_avc_config(record)
    assert (cfg.sps, cfg.pps, cfg.profile, cfg.level) == ([nals[0]], [nals[1]], profile, level)
    if profile in (100, 110, 122, 144):
        assert (cfg.chroma_format, cfg.bit_depth_luma) == (chroma, depth)
    else:
        assert cfg.chroma_format is None and len(record) == 11 + len(nals[0]) + len(nals[1])
    assert any(h264.nal_type(n) == h264.NAL_IDR for n in nals)


def test_sps_scaling_lists_and_poc_type_1() -> None:
    """A synthetic High SPS with explicit scaling lists and pic_order_cnt_type 1."""
    w = BitWriter().bits(8, 100).bits(8, 0).bits(8, 40).ue(0)
    w.ue(1).ue(0).ue(0).bits(1, 0)  # chroma 4:2:0, 8-bit, no bypass
    w.bits(1, 1)  # seq_scaling_matrix_present_flag
    for i in range(8):
        w.bits(1, 1)
        for j in range(16 if i < 6 else 64):
            w.se(1 if j % 3 else -2)  # never reaches nextScale 0
    w.ue(0).ue(1).bits(1, 0).se(-1).se(2).ue(2).se(1).se(-1)  # poc type 1, cycle of 2
    w.ue(4).bits(1, 0).ue(119).ue(67).bits(1, 1).bits(1, 1)  # 1920 x 1088, frame_mbs_only
    w.bits(1, 1).ue(0).ue(0).ue(0).ue(4)  # crop bottom 8 lines
    w.bits(1, 1)  # vui_parameters_present_flag
    w.bits(1, 1).bits(8, 255).bits(16, 4).bits(16, 3)  # extended SAR
    w.bits(1, 1).bits(1, 0)  # overscan
    w.bits(1, 1).bits(4, 5).bits(1, 1).bits(24, 0x010101)  # signal type + colour
    w.bits(1, 1).ue(0).ue(0)  # chroma loc
    w.bits(1, 1).bits(32, 1001).bits(32, 60000).bits(1, 1)  # timing: 29.97 fps
    sps = b"\x67" + add_emulation_prevention(w.rbsp())
    info = h264.parse_sps(sps)
    assert (info.width, info.height, info.profile_idc, info.level_idc) == (1920, 1080, 100, 40)
    assert info.fps == pytest.approx(60000 / 2002)


def test_sps_without_vui_and_field_cropping() -> None:
    w = BitWriter().bits(8, 77).bits(8, 0).bits(8, 30).ue(0)
    w.ue(0).ue(2)  # poc type 2
    w.ue(1).bits(1, 0).ue(44).ue(17).bits(1, 0).bits(1, 0).bits(1, 1)  # 720 x 36*16*2 fields
    w.bits(1, 1).ue(0).ue(0).ue(1).ue(1)  # crop 4 lines top and bottom (units of 4)
    w.bits(1, 0)  # no VUI
    info = h264.parse_sps(b"\x67" + w.rbsp())
    assert (info.width, info.height, info.fps, info.frame_mbs_only) == (720, 568, 0.0, False)


@pytest.mark.parametrize(
    ("sps", "message"),
    [
        (b"", "empty SPS"),
        (b"\x68\x64", "not an SPS: nal_unit_type 8"),
        (b"\x67\x64\x00", "SPS truncated or malformed: needed 8 bits"),
        (b"\x67" + BitWriter().bits(24, 0x420028).ue(32).rbsp(), "seq_parameter_set_id 32"),
        (b"\x67" + BitWriter().bits(24, 0x640028).ue(0).ue(4).rbsp(), "chroma_format_idc 4"),
        (b"\x67" + BitWriter().bits(24, 0x420028).ue(0).ue(0).ue(3).rbsp(), "pic_order_cnt_type 3"),
        (
            b"\x67"
            + BitWriter()
            .bits(24, 0x420028)
            .ue(0)
            .ue(0)
            .ue(2)
            .ue(1)
            .bits(1, 0)
            .ue(0)
            .ue(0)
            .bits(2, 0b11)
            .bits(1, 1)
            .ue(8)
            .ue(0)
            .ue(0)
            .ue(0)
            .bits(1, 0)
            .rbsp(),
            r"frame cropping leaves an empty picture \(0x16\)",
        ),
    ],
)
def test_parse_sps_errors(sps: bytes, message: str) -> None:
    with pytest.raises(H264Error, match=message):
        h264.parse_sps(sps)


def test_parse_sps_every_prefix_raises_h264_error(avcc: bytes) -> None:
    sps = h264.parse_avc_config(avcc).sps[0]
    outcomes = []
    for n in range(len(sps)):
        try:
            h264.parse_sps(sps[:n])
            outcomes.append(True)
        except H264Error:
            outcomes.append(False)
    # Everything up to the VUI timing info (which ends in byte 22 here) is
    # needed; the fields after it (fixed_frame_rate_flag, HRD flags,
    # bitstream_restriction) are not read, so cutting them goes unnoticed.
    assert outcomes == [False] * 22 + [True] * (len(sps) - 22)


@given(st.binary(max_size=40))
def test_parse_sps_raises_only_h264_error(body: bytes) -> None:
    for header in (b"\x67\x64", b"\x67\x42", b"\x67\xf4"):
        try:
            h264.parse_sps(header + body)
        except H264Error:
            pass


# -- avcC errors ----------------------------------------------------------------


def test_parse_avc_config_every_prefix(avcc: bytes) -> None:
    pps_end = len(avcc) - 4  # ffmpeg appends the 4-byte High trailer
    for n in range(len(avcc)):
        if n < pps_end:
            with pytest.raises(H264Error, match="avcC truncated"):
                h264.parse_avc_config(avcc[:n])
        else:  # an incomplete trailer is treated as absent, as many writers omit it
            assert h264.parse_avc_config(avcc[:n]).chroma_format is None


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"\x00\x64\x00\x1f\xff\xe0\x00", "configurationVersion is 0, expected 1"),
        (b"\x01\x64\x00\x1f\xfe\xe0\x00", "lengthSizeMinusOne is 2"),
        (b"\x01\x64\x00\x1f\xff\xe1\x00\x05\x67", r"avcC truncated in SPS 0: 5 bytes declared, 1 remain"),
        (b"\x01\x64\x00\x1f\xff\xe0\x01\x00", "avcC truncated in the length of PPS 0"),
        (b"\x01\x64\x00\x1f\xff\xe0\x00\xfd\xf8\xf8\x01\x00", "avcC truncated in the length of SPS extension 0"),
    ],
)
def test_parse_avc_config_errors(record: bytes, message: str) -> None:
    with pytest.raises(H264Error, match=message):
        h264.parse_avc_config(record)


def test_parse_avc_config_two_byte_lengths_and_sps_ext() -> None:
    record = b"\x01\x64\x00\x1f\xfd\xe1\x00\x02\x67\x64\x01\x00\x01\x68\xfd\xf9\xfa\x01\x00\x01\x6d"
    cfg = h264.parse_avc_config(record)
    assert cfg.nal_length_size == 2
    assert (cfg.sps, cfg.pps, cfg.sps_ext) == ([b"\x67\x64"], [b"\x68"], [b"\x6d"])
    assert (cfg.chroma_format, cfg.bit_depth_luma, cfg.bit_depth_chroma) == (1, 9, 10)


@given(st.binary(max_size=60))
def test_parse_avc_config_raises_only_h264_error(body: bytes) -> None:
    try:
        h264.parse_avc_config(b"\x01\x64\x00\x1f" + body)
    except H264Error:
        pass


def test_build_avc_config_errors() -> None:
    with pytest.raises(H264Error, match="needs at least one SPS"):
        h264.build_avc_config([], [b"\x68"])
    with pytest.raises(H264Error, match=r"expected an SPS \(nal_unit_type 7\), got type 8"):
        h264.build_avc_config([b"\x68\x00\x00\x00"], [])
    with pytest.raises(H264Error, match=r"expected an PPS \(nal_unit_type 8\), got type none"):
        h264.build_avc_config([b"\x67\x42\x00\x1e"], [b""])
    with pytest.raises(H264Error, match="too short for profile and level"):
        h264.build_avc_config([b"\x67\x42"], [])
    with pytest.raises(H264Error, match="exceeds the avcC 16-bit length"):
        h264.build_avc_config([b"\x67\x42\x00\x1e"], [b"\x68" + bytes(0x10000)])
    # Baseline needs no trailer, so the SPS body is not parsed.
    assert h264.build_avc_config([b"\x67\x42\xc0\x1e"], [b"\x68\xce"]) == (
        b"\x01\x42\xc0\x1e\xff\xe1\x00\x04\x67\x42\xc0\x1e\x01\x00\x02\x68\xce"
    )
