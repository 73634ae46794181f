"""H.265 tests against ffmpeg 5.1 / libx265 output.

* ``h265_720p.hevc``: ``testsrc2=size=1280x720:rate=25 -frames:v 5 -c:v libx265
  -crf 40`` (Annex B), and ``h265_720p.mp4``, the same stream remuxed with
  ``-c copy -tag:v hvc1``, whose ``hvcC`` box is ffmpeg's record.
* ``h265_636x356.hevc``: 636x356 at 30 (coded 640x360: conformance window).
* ``h265_main10.hevc``: 320x240 at 24, ``-pix_fmt yuv420p10le`` (Main 10).

Expected values are ffprobe's for the same files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediasrv.codec import h265
from mediasrv.codec.bits import BitstreamError
from mediasrv.codec.h265 import H265Error
from tests.support.bits import BitWriter, add_emulation_prevention

FIXTURES = Path(__file__).parent.parent / "fixtures"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def mp4_box(data: bytes, fourcc: bytes) -> bytes:
    """The body of the first box named ``fourcc`` (enough for one small file)."""
    i = data.index(fourcc)
    size = int.from_bytes(data[i - 4 : i], "big")
    return data[i + 4 : i - 4 + size]


@pytest.fixture(scope="module")
def hvcc() -> bytes:
    return mp4_box(load("h265_720p.mp4"), b"hvcC")


# -- NAL units ---------------------------------------------------------------


def test_nal_type_and_irap() -> None:
    assert h265.nal_type(b"\x40\x01") == h265.NAL_VPS
    assert h265.nal_type(b"\x42\x01") == h265.NAL_SPS
    assert h265.nal_type(b"\x28\x01") == 20  # IDR_N_LP
    with pytest.raises(H265Error, match="empty NAL unit"):
        h265.nal_type(b"")
    assert [t for t in range(64) if h265.is_irap(t)] == list(range(16, 24))


def test_annexb_capture_nal_types_and_keyframes() -> None:
    nals = h265.split_annexb(load("h265_720p.hevc"))
    assert [h265.nal_type(n) for n in nals] == [32, 33, 34, 39, 20, 1, 0, 1, 0]
    assert h265.is_keyframe_hvcc(h265.nals_to_avcc(nals[:5]))
    assert not h265.is_keyframe_hvcc(h265.nals_to_avcc(nals[5:]))
    assert h265.annexb_to_hvcc(load("h265_720p.hevc")) == h265.nals_to_avcc(nals)
    assert h265.avcc_to_nals(h265.annexb_to_hvcc(load("h265_720p.hevc"))) == nals


def test_is_keyframe_hvcc_truncated() -> None:
    with pytest.raises(BitstreamError, match="declares 5 bytes, only 2 remain"):
        h265.is_keyframe_hvcc(b"\x00\x00\x00\x05\x02\x01")
    with pytest.raises(BitstreamError, match="truncated NAL length field"):
        h265.is_keyframe_hvcc(b"\x00\x00\x00\x02\x02\x01\x00")


# -- hvcC ----------------------------------------------------------------------


def test_parse_ffmpeg_hvcc(hvcc: bytes) -> None:
    cfg = h265.parse_hevc_config(hvcc)
    assert (cfg.general_profile_space, cfg.general_tier_flag, cfg.general_profile_idc) == (0, False, 1)
    assert cfg.general_profile_compatibility_flags == 0x60000000
    assert cfg.general_constraint_indicator_flags == 0x900000000000
    assert cfg.general_level_idc == 93
    assert (cfg.chroma_format_idc, cfg.bit_depth_luma, cfg.bit_depth_chroma) == (1, 8, 8)
    assert (cfg.num_temporal_layers, cfg.temporal_id_nested, cfg.nal_length_size) == (1, True, 4)
    nals = h265.split_annexb(load("h265_720p.hevc"))
    assert (cfg.vps, cfg.sps, cfg.pps) == ([nals[0]], [nals[1]], [nals[2]])
    info = h265.parse_sps(cfg.sps[0])
    assert (info.width, info.height, info.fps) == (1280, 720, 25.0)


def test_build_hevc_config_matches_ffmpeg(hvcc: bytes) -> None:
    nals = h265.split_annexb(load("h265_720p.hevc"))
    assert h265.build_hevc_config([nals[0]], [nals[1]], [nals[2]]) == hvcc


def test_parse_hevc_config_every_prefix_raises(hvcc: bytes) -> None:
    for n in range(len(hvcc)):
        with pytest.raises(H265Error, match="hvcC truncated"):
            h265.parse_hevc_config(hvcc[:n])


def test_parse_hevc_config_skips_other_arrays_and_reads_length_size() -> None:
    nals = h265.split_annexb(load("h265_720p.hevc"))
    record = bytearray(h265.build_hevc_config([nals[0]], [nals[1]], [nals[2]]))
    record[21] = (record[21] & 0xFC) | 1  # 2-byte lengths
    record[22] += 1
    record += b"\x27\x00\x01\x00\x03\x4e\x01\x05"  # a prefix SEI array
    cfg = h265.parse_hevc_config(bytes(record))
    assert cfg.nal_length_size == 2
    assert (cfg.vps, cfg.sps, cfg.pps) == ([nals[0]], [nals[1]], [nals[2]])


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ((0, 0), "configurationVersion is 0, expected 1"),
        ((21, 0x0E), "lengthSizeMinusOne is 2"),
    ],
)
def test_parse_hevc_config_errors(hvcc: bytes, patch: tuple[int, int], message: str) -> None:
    record = bytearray(hvcc)
    record[patch[0]] = patch[1]
    with pytest.raises(H265Error, match=message):
        h265.parse_hevc_config(bytes(record))


@given(st.binary(max_size=60))
def test_parse_hevc_config_raises_only_h265_error(body: bytes) -> None:
    try:
        h265.parse_hevc_config(b"\x01" + bytes(20) + b"\x0f" + body)
    except H265Error:
        pass


def test_build_hevc_config_errors() -> None:
    nals = h265.split_annexb(load("h265_720p.hevc"))
    with pytest.raises(H265Error, match="needs at least one SPS"):
        h265.build_hevc_config([nals[0]], [], [nals[2]])
    with pytest.raises(H265Error, match=r"expected a VPS \(nal_unit_type 32\), got type 33"):
        h265.build_hevc_config([nals[1]], [nals[1]], [nals[2]])
    with pytest.raises(H265Error, match=r"expected a PPS \(nal_unit_type 34\), got type None"):
        h265.build_hevc_config([nals[0]], [nals[1]], [b""])
    with pytest.raises(H265Error, match="exceeds the hvcC 16-bit length"):
        h265.build_hevc_config([nals[0]], [nals[1]], [b"\x44\x01" + bytes(0x10000)])


# -- SPS ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "width", "height", "profile", "level", "fps", "depth"),
    [
        ("h265_720p.hevc", 1280, 720, 1, 93, 25.0, 8),
        ("h265_636x356.hevc", 636, 356, 1, 63, 30.0, 8),
        ("h265_main10.hevc", 320, 240, 2, 60, 24.0, 10),
    ],
)
def test_sps_variants(name: str, width: int, height: int, profile: int, level: int, fps: float, depth: int) -> None:
    nals = h265.split_annexb(load(name))
    vps, sps, pps = nals[:3]
    info = h265.parse_sps(sps)
    assert (info.width, info.height) == (width, height)
    assert (info.general_profile_idc, info.general_level_idc, info.general_tier_flag) == (profile, level, False)
    assert info.fps == pytest.approx(fps)
    assert (info.chroma_format_idc, info.bit_depth_luma, info.bit_depth_chroma) == (1, depth, depth)
    cfg = h265.parse_hevc_config(h265.build_hevc_config([vps], [sps], [pps]))
    assert (cfg.general_profile_idc, cfg.general_level_idc, cfg.bit_depth_luma) == (profile, level, depth)
    assert (cfg.vps, cfg.sps, cfg.pps) == ([vps], [sps], [pps])


def _synthetic_sps() -> bytes:
    """An SPS that exercises the rarely used branches before the VUI timing.

    Three sub-layers with sub-layer profile/level, a conformance window,
    10-bit, explicit scaling lists, PCM, inter-predicted short-term reference
    picture sets, long-term pictures, and a VUI with every optional block.
    """
    w = BitWriter().bits(4, 0).bits(3, 2).bits(1, 1)  # vps id, 3 sub-layers, nesting
    w.bits(2, 0).bits(1, 1).bits(5, 1)  # profile space 0, High tier, Main
    w.bits(32, 0x60000000).bits(48, 0x900000000000).bits(8, 120)
    w.bits(2, 0b11).bits(2, 0b01)  # sub-layer 0: profile+level, 1: level
    w.bits(12, 0)  # reserved_zero_2bits for i = 2..7
    w.bits(88, (1 << 87) | 12345).bits(8, 90).bits(8, 93)
    w.ue(0).ue(1).ue(1928).ue(1088)  # sps id, 4:2:0, coded 1928x1088
    w.bits(1, 1).ue(0).ue(4).ue(0).ue(4)  # window: 8 right, 8 bottom
    w.ue(2).ue(2).ue(4)  # 10-bit, log2_max_pic_order_cnt_lsb 8
    w.bits(1, 0).ue(4).ue(2).ue(0)  # ordering info for the top sub-layer only
    for v in (0, 3, 0, 3, 2, 2):
        w.ue(v)
    w.bits(1, 1).bits(1, 1)  # scaling lists enabled and sent
    for size_id in range(4):
        for matrix_id in range(0, 6, 3 if size_id == 3 else 1):
            if matrix_id % 2:
                w.bits(1, 0).ue(1)
            else:
                w.bits(1, 1)
                if size_id > 1:
                    w.se(-3)
                for i in range(min(64, 1 << (4 + (size_id << 1)))):
                    w.se(i % 5 - 2)
    w.bits(2, 0b11)  # amp, sao
    w.bits(1, 1).bits(8, 0x77).ue(0).ue(1).bits(1, 0)  # pcm
    w.ue(3)  # num_short_term_ref_pic_sets
    w.ue(2).ue(1).ue(0).bits(1, 1).ue(1).bits(1, 1).ue(0).bits(1, 0)  # set 0: 2 neg, 1 pos
    w.bits(1, 1).bits(1, 0).ue(0)  # set 1: predicted from set 0 (3 + 1 entries)
    w.bits(1, 1).bits(1, 0).bits(1, 1).bits(1, 0).bits(1, 0).bits(1, 1)  # 3 kept
    w.bits(1, 1).bits(1, 1).ue(1)  # set 2: predicted from set 1 (3 + 1 entries)
    w.bits(4, 0b1111)  # all used
    w.bits(1, 1).ue(2).bits(9, 0x1FF).bits(9, 0x0AA)  # two long-term pictures
    w.bits(2, 0b11)  # temporal mvp, strong intra smoothing
    w.bits(1, 1)  # vui_parameters_present_flag
    w.bits(1, 1).bits(8, 255).bits(16, 1).bits(16, 1)
    w.bits(1, 1).bits(1, 1)
    w.bits(1, 1).bits(4, 5).bits(1, 1).bits(24, 0x091009)
    w.bits(1, 1).ue(2).ue(2)
    w.bits(3, 0)
    w.bits(1, 1).ue(0).ue(0).ue(0).ue(0)
    w.bits(1, 1).bits(32, 1001).bits(32, 60000)
    w.bits(1, 0).bits(1, 0).bits(1, 0)  # poc proportional, hrd, bitstream restriction
    w.bits(1, 0)  # sps_extension_present_flag
    return b"\x42\x01" + add_emulation_prevention(w.rbsp())


def test_synthetic_sps_walks_every_branch() -> None:
    sps = _synthetic_sps()
    assert b"\x00\x00\x03" in sps
    info = h265.parse_sps(sps)
    assert (info.width, info.height) == (1920, 1080)
    assert info.fps == pytest.approx(60000 / 1001)
    assert (info.general_tier_flag, info.general_level_idc, info.bit_depth_luma) == (True, 120, 10)
    assert (info.max_sub_layers, info.temporal_id_nesting) == (3, True)
    assert info.profile_tier_level == bytes.fromhex("21 60000000 900000000000 78")
    vps = b"\x40\x01\x0c"
    cfg = h265.parse_hevc_config(h265.build_hevc_config([vps], [sps], []))
    assert (cfg.general_tier_flag, cfg.general_level_idc, cfg.num_temporal_layers) == (True, 120, 3)
    assert (cfg.bit_depth_luma, cfg.bit_depth_chroma, cfg.pps) == (10, 10, [])


def test_parse_sps_every_prefix() -> None:
    for name in ("h265_720p.hevc", "h265_636x356.hevc"):
        sps = h265.split_annexb(load(name))[1]
        full = h265.parse_sps(sps)
        for n in range(len(sps)):
            try:
                info = h265.parse_sps(sps[:n])
            except H265Error:
                continue
            # Only fields after the VUI timing info may be cut off unnoticed.
            assert info == full and n >= len(sps) - 8


@pytest.mark.parametrize(
    ("sps", "message"),
    [
        (b"\x42", "SPS of 1 bytes has no complete NAL header"),
        (b"\x44\x01\x00", "not an SPS: nal_unit_type 34"),
        (b"\x42\x01\x0f", r"sps_max_sub_layers_minus1 7 out of range"),
        (b"\x42\x01\x01\x01", "SPS truncated or malformed: needed"),
    ],
)
def test_parse_sps_errors(sps: bytes, message: str) -> None:
    with pytest.raises(H265Error, match=message):
        h265.parse_sps(sps)


@given(st.binary(max_size=48))
def test_parse_sps_raises_only_h265_error(body: bytes) -> None:
    for prefix in (b"\x42\x01\x01", b"\x42\x01\x01\x01\x60\x00\x00\x00\x90\x00\x00\x00\x00\x00\x5d"):
        try:
            h265.parse_sps(prefix + body)
        except H265Error:
            pass
