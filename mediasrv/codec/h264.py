"""H.264 / AVC: decoder configuration record, SPS, NAL unit helpers (sans-IO).

References:

* ISO/IEC 14496-15 5.3.3.1 ``AVCDecoderConfigurationRecord`` (the ``avcC``
  that FLV's AVC sequence header and MP4 carry, and our ``Track.config``).
* ITU-T H.264 7.3.1 NAL unit header, 7.3.2.1.1 ``seq_parameter_set_data``,
  7.3.2.1.1.1 ``scaling_list``, E.1.1 ``vui_parameters``, and 7.4.2.1.1 for
  the cropping arithmetic.

The Annex B / length-prefixed framing helpers are shared with H.265 and live
in :mod:`.bits`; they are re-exported here under the names used for AVC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from mediasrv.codec.bits import (
    BitReader,
    BitstreamError,
    CodecError,
    avcc_to_nals,
    iter_nal_units,
    nals_to_avcc,
    remove_emulation_prevention,
    split_annexb,
)

__all__ = [
    "NAL_AUD",
    "NAL_IDR",
    "NAL_NON_IDR",
    "NAL_PPS",
    "NAL_SEI",
    "NAL_SPS",
    "AvcConfig",
    "H264Error",
    "SpsInfo",
    "annexb_to_avcc",
    "avcc_to_nals",
    "build_avc_config",
    "is_keyframe_avcc",
    "nal_type",
    "nals_to_avcc",
    "parse_avc_config",
    "parse_sps",
    "split_annexb",
]

# nal_unit_type values, H.264 Table 7-1.
NAL_NON_IDR = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

# profile_idc values whose SPS carries chroma_format_idc, bit depths and
# scaling matrices (H.264 7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# profile_idc values for which the avcC carries its extension fields
# (ISO 14496-15 5.3.3.1.2).
_AVCC_EXT_PROFILES = frozenset({100, 110, 122, 144})

_U16 = struct.Struct(">H")


class H264Error(CodecError):
    """A malformed AVC decoder configuration record or SPS."""


@dataclass(frozen=True, slots=True)
class AvcConfig:
    """The fields of an ``AVCDecoderConfigurationRecord`` (ISO 14496-15 5.3.3.1).

    ``chroma_format``, ``bit_depth_luma``, ``bit_depth_chroma`` and
    ``sps_ext`` come from the optional trailer the record has for the high
    profiles; they are ``None`` / empty when it is absent.
    """

    profile: int
    compat: int
    level: int
    nal_length_size: int
    sps: list[bytes]
    pps: list[bytes]
    chroma_format: int | None = None
    bit_depth_luma: int | None = None
    bit_depth_chroma: int | None = None
    sps_ext: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What we need from an H.264 SPS: the displayed size and the frame rate.

    ``width`` / ``height`` are after frame cropping (7.4.2.1.1).  ``fps`` is
    ``time_scale / (2 * num_units_in_tick)`` from the VUI timing info (E.2.1),
    or 0.0 when the SPS has none.
    """

    width: int
    height: int
    profile_idc: int
    level_idc: int
    fps: float
    constraint_flags: int = 0
    chroma_format_idc: int = 1
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8
    frame_mbs_only: bool = True


def nal_type(nal: bytes) -> int:
    """``nal_unit_type``: the low 5 bits of the NAL header byte (H.264 7.3.1)."""
    if not nal:
        raise H264Error("empty NAL unit has no header")
    return nal[0] & 0x1F


def annexb_to_avcc(data: bytes) -> bytes:
    """Annex B byte stream to 4-byte length-prefixed NAL units."""
    return nals_to_avcc(split_annexb(data))


def is_keyframe_avcc(data: bytes, length_size: int = 4) -> bool:
    """Whether length-prefixed NAL units contain an IDR slice (nal_unit_type 5).

    Walks the length fields without copying the NAL units and stops at the
    first IDR slice.

    :raises BitstreamError: the length framing is truncated before an IDR slice.
    """
    return any(data[start] & 0x1F == NAL_IDR for start, _ in iter_nal_units(data, length_size))


def parse_avc_config(record: bytes) -> AvcConfig:
    """Parse an ``AVCDecoderConfigurationRecord`` (ISO 14496-15 5.3.3.1.1).

    :raises H264Error: wrong version, reserved length size, or truncation.
    """
    if len(record) < 7:
        raise H264Error(f"avcC truncated: {len(record)} bytes, the fixed part needs 7")
    if record[0] != 1:
        raise H264Error(f"avcC configurationVersion is {record[0]}, expected 1")
    length_size = (record[4] & 0x03) + 1
    if length_size == 3:
        raise H264Error("avcC lengthSizeMinusOne is 2, which ISO 14496-15 reserves")
    pos = 5
    sps, pos = _read_nal_array(record, pos, record[pos] & 0x1F, "SPS")
    if pos >= len(record):
        raise H264Error(f"avcC truncated at offset {pos}: numOfPictureParameterSets missing")
    count = record[pos]
    pps, pos = _read_nal_array(record, pos, count, "PPS")
    chroma: int | None = None
    depth_luma: int | None = None
    depth_chroma: int | None = None
    sps_ext: list[bytes] = []
    # The trailer is optional in practice: many writers omit it even for High.
    if record[1] in _AVCC_EXT_PROFILES and len(record) - pos >= 4:
        chroma = record[pos] & 0x03
        depth_luma = (record[pos + 1] & 0x07) + 8
        depth_chroma = (record[pos + 2] & 0x07) + 8
        pos += 3
        sps_ext, pos = _read_nal_array(record, pos, record[pos], "SPS extension")
    return AvcConfig(
        profile=record[1],
        compat=record[2],
        level=record[3],
        nal_length_size=length_size,
        sps=sps,
        pps=pps,
        chroma_format=chroma,
        bit_depth_luma=depth_luma,
        bit_depth_chroma=depth_chroma,
        sps_ext=sps_ext,
    )


def _read_nal_array(record: bytes, pos: int, count: int, what: str) -> tuple[list[bytes], int]:
    """Read ``count`` (u16 length, NAL unit) pairs that start after the count byte at ``pos``."""
    pos += 1
    nals: list[bytes] = []
    for i in range(count):
        if pos + 2 > len(record):
            raise H264Error(f"avcC truncated in the length of {what} {i} at offset {pos}")
        (size,) = _U16.unpack_from(record, pos)
        pos += 2
        if pos + size > len(record):
            raise H264Error(f"avcC truncated in {what} {i}: {size} bytes declared, {len(record) - pos} remain")
        nals.append(record[pos : pos + size])
        pos += size
    return nals, pos


def build_avc_config(sps: list[bytes], pps: list[bytes]) -> bytes:
    """Build an ``AVCDecoderConfigurationRecord`` with 4-byte NAL lengths.

    Profile, compatibility and level are copied from the first SPS (14496-15
    5.3.3.1.2).  For profiles 100/110/122/144 the chroma / bit depth trailer is
    written from the parsed SPS, as the record requires (and as ffmpeg does).

    :raises H264Error: no SPS, a NAL unit that is not an SPS / PPS, or a
        parameter set too large for the record's 16-bit length.
    """
    if not sps:
        raise H264Error("an avcC needs at least one SPS")
    if len(sps) > 31:
        raise H264Error(f"an avcC holds at most 31 SPS, got {len(sps)}")
    if len(pps) > 255:
        raise H264Error(f"an avcC holds at most 255 PPS, got {len(pps)}")
    for nal in sps:
        _check_param_set(nal, NAL_SPS, "SPS")
    for nal in pps:
        _check_param_set(nal, NAL_PPS, "PPS")
    first = sps[0]
    if len(first) < 4:
        raise H264Error(f"SPS of {len(first)} bytes is too short for profile and level")
    parts = [bytes((1, first[1], first[2], first[3], 0xFF, 0xE0 | len(sps)))]
    for nal in sps:
        parts += (_U16.pack(len(nal)), nal)
    parts.append(bytes((len(pps),)))
    for nal in pps:
        parts += (_U16.pack(len(nal)), nal)
    if first[1] in _AVCC_EXT_PROFILES:
        info = parse_sps(first)
        parts.append(
            bytes(
                (
                    0xFC | info.chroma_format_idc,
                    0xF8 | (info.bit_depth_luma - 8),
                    0xF8 | (info.bit_depth_chroma - 8),
                    0,
                )
            )
        )
    return b"".join(parts)


def _check_param_set(nal: bytes, expected: int, what: str) -> None:
    if not nal or nal[0] & 0x1F != expected:
        got = nal[0] & 0x1F if nal else "none (empty)"
        raise H264Error(f"expected an {what} (nal_unit_type {expected}), got type {got}")
    if len(nal) > 0xFFFF:
        raise H264Error(f"{what} of {len(nal)} bytes exceeds the avcC 16-bit length")


def parse_sps(sps: bytes) -> SpsInfo:
    """Parse an SPS NAL unit, header byte included (H.264 7.3.2.1.1).

    Emulation prevention bytes are removed first.  Handles the high profiles'
    chroma format, bit depth and scaling lists, all three
    ``pic_order_cnt_type`` values, field coding (``frame_mbs_only_flag`` 0)
    and frame cropping.

    :raises H264Error: not an SPS, truncated, or out-of-range values.
    """
    if not sps:
        raise H264Error("empty SPS")
    if sps[0] & 0x1F != NAL_SPS:
        raise H264Error(f"not an SPS: nal_unit_type {sps[0] & 0x1F}")
    try:
        return _parse_sps_rbsp(BitReader(remove_emulation_prevention(sps[1:])))
    except BitstreamError as exc:
        raise H264Error(f"SPS truncated or malformed: {exc}") from exc


def _parse_sps_rbsp(r: BitReader) -> SpsInfo:
    profile_idc = r.read_bits(8)
    constraint_flags = r.read_bits(8)
    level_idc = r.read_bits(8)
    sps_id = r.read_ue()
    if sps_id > 31:
        raise H264Error(f"seq_parameter_set_id {sps_id} out of range 0..31")
    chroma_format_idc = 1
    separate_colour_plane = False
    bit_depth_luma = bit_depth_chroma = 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.read_ue()
        if chroma_format_idc > 3:
            raise H264Error(f"chroma_format_idc {chroma_format_idc} out of range 0..3")
        if chroma_format_idc == 3:
            separate_colour_plane = r.read_flag()
        bit_depth_luma = r.read_ue() + 8
        bit_depth_chroma = r.read_ue() + 8
        if bit_depth_luma > 14 or bit_depth_chroma > 14:
            raise H264Error(f"bit depth {bit_depth_luma}/{bit_depth_chroma} out of range 8..14")
        r.skip_bits(1)  # qpprime_y_zero_transform_bypass_flag
        if r.read_flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.read_flag():  # seq_scaling_list_present_flag[i]
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.read_ue()  # log2_max_frame_num_minus4
    poc_type = r.read_ue()
    if poc_type == 0:
        r.read_ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.skip_bits(1)  # delta_pic_order_always_zero_flag
        r.read_se()  # offset_for_non_ref_pic
        r.read_se()  # offset_for_top_to_bottom_field
        cycle = r.read_ue()
        if cycle > 255:
            raise H264Error(f"num_ref_frames_in_pic_order_cnt_cycle {cycle} out of range 0..255")
        for _ in range(cycle):
            r.read_se()
    elif poc_type != 2:
        raise H264Error(f"pic_order_cnt_type {poc_type} out of range 0..2")
    r.read_ue()  # max_num_ref_frames
    r.skip_bits(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.read_ue() + 1
    height_map_units = r.read_ue() + 1
    frame_mbs_only = r.read_flag()
    if not frame_mbs_only:
        r.skip_bits(1)  # mb_adaptive_frame_field_flag
    r.skip_bits(1)  # direct_8x8_inference_flag
    crop_left = crop_right = crop_top = crop_bottom = 0
    if r.read_flag():  # frame_cropping_flag
        crop_left, crop_right = r.read_ue(), r.read_ue()
        crop_top, crop_bottom = r.read_ue(), r.read_ue()
    fps = _parse_vui_fps(r) if r.read_flag() else 0.0

    # 7.4.2.1.1: crop units depend on ChromaArrayType and field coding.
    field_factor = 1 if frame_mbs_only else 2
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    if chroma_array_type == 0:
        crop_unit_x, crop_unit_y = 1, field_factor
    else:
        sub_width_c = 2 if chroma_format_idc in (1, 2) else 1
        sub_height_c = 2 if chroma_format_idc == 1 else 1
        crop_unit_x, crop_unit_y = sub_width_c, sub_height_c * field_factor
    width = width_mbs * 16 - crop_unit_x * (crop_left + crop_right)
    height = field_factor * height_map_units * 16 - crop_unit_y * (crop_top + crop_bottom)
    if width <= 0 or height <= 0:
        raise H264Error(f"frame cropping leaves an empty picture ({width}x{height})")
    return SpsInfo(
        width=width,
        height=height,
        profile_idc=profile_idc,
        level_idc=level_idc,
        fps=fps,
        constraint_flags=constraint_flags,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        frame_mbs_only=frame_mbs_only,
    )


def _skip_scaling_list(r: BitReader, size: int) -> None:
    """Consume ``scaling_list()`` (H.264 7.3.2.1.1.1); the values are not needed."""
    last_scale = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta = r.read_se()
            next_scale = (last_scale + delta + 256) % 256
        if next_scale != 0:
            last_scale = next_scale


def _parse_vui_fps(r: BitReader) -> float:
    """Read ``vui_parameters()`` up to the timing info (H.264 E.1.1, E.2.1)."""
    if r.read_flag():  # aspect_ratio_info_present_flag
        if r.read_bits(8) == 255:  # aspect_ratio_idc == Extended_SAR
            r.skip_bits(32)  # sar_width, sar_height
    if r.read_flag():  # overscan_info_present_flag
        r.skip_bits(1)
    if r.read_flag():  # video_signal_type_present_flag
        r.skip_bits(4)  # video_format, video_full_range_flag
        if r.read_flag():  # colour_description_present_flag
            r.skip_bits(24)
    if r.read_flag():  # chroma_loc_info_present_flag
        r.read_ue()
        r.read_ue()
    if not r.read_flag():  # timing_info_present_flag
        return 0.0
    num_units_in_tick = r.read_bits(32)
    time_scale = r.read_bits(32)
    if num_units_in_tick == 0 or time_scale == 0:
        return 0.0
    # One frame is two ticks (E.2.1: a tick is one field period).
    return time_scale / (2 * num_units_in_tick)
