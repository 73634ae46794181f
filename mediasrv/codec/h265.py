"""H.265 / HEVC: decoder configuration record, SPS, NAL unit helpers (sans-IO).

References:

* ISO/IEC 14496-15 8.3.3.1 ``HEVCDecoderConfigurationRecord`` (the ``hvcC``
  that enhanced-RTMP ``SequenceStart`` and MP4 carry; our ``Track.config``).
* ITU-T H.265 7.3.1.2 NAL unit header, 7.3.2.2 ``seq_parameter_set_rbsp``,
  7.3.3 ``profile_tier_level``, 7.3.4 ``scaling_list_data``, 7.3.7
  ``st_ref_pic_set``, E.2.1 ``vui_parameters``; 7.4.3.2.1 for the
  conformance window arithmetic.

Annex B and length-prefixed framing is the same as for H.264; the helpers are
re-exported from :mod:`.bits`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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
    "NAL_PPS",
    "NAL_SEI_PREFIX",
    "NAL_SEI_SUFFIX",
    "NAL_SPS",
    "NAL_VPS",
    "H265Error",
    "HevcConfig",
    "SpsInfo",
    "annexb_to_hvcc",
    "avcc_to_nals",
    "build_hevc_config",
    "is_irap",
    "is_keyframe_hvcc",
    "nal_type",
    "nals_to_avcc",
    "parse_hevc_config",
    "parse_sps",
    "split_annexb",
]

# nal_unit_type values, H.265 Table 7-1.
NAL_BLA_W_LP = 16
NAL_IDR_W_RADL = 19
NAL_IDR_N_LP = 20
NAL_CRA = 21
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
NAL_SEI_PREFIX = 39
NAL_SEI_SUFFIX = 40

_IRAP_FIRST = 16  # BLA_W_LP
_IRAP_LAST = 23  # RSV_IRAP_VCL23

_U16 = struct.Struct(">H")
_HVCC_HEADER_SIZE = 23


class H265Error(CodecError):
    """A malformed HEVC decoder configuration record or SPS."""


@dataclass(frozen=True, slots=True)
class HevcConfig:
    """The fields of an ``HEVCDecoderConfigurationRecord`` (ISO 14496-15 8.3.3.1).

    ``general_profile_compatibility_flags`` is the 32-bit field and
    ``general_constraint_indicator_flags`` the 48-bit one, as integers.  Only
    the VPS, SPS and PPS arrays are kept; other arrays (SEI) are skipped.
    """

    general_profile_space: int
    general_tier_flag: bool
    general_profile_idc: int
    general_profile_compatibility_flags: int
    general_constraint_indicator_flags: int
    general_level_idc: int
    min_spatial_segmentation_idc: int
    parallelism_type: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    avg_frame_rate: int
    constant_frame_rate: int
    num_temporal_layers: int
    temporal_id_nested: bool
    nal_length_size: int
    vps: list[bytes]
    sps: list[bytes]
    pps: list[bytes]


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What we need from an H.265 SPS.

    ``width`` / ``height`` are after the conformance window (7.4.3.2.1).
    ``fps`` is ``vui_time_scale / vui_num_units_in_tick`` (E.3.1) or 0.0.
    ``profile_tier_level`` is the 12 raw bytes of the general profile, tier
    and level (profile space .. general_level_idc), exactly as the ``hvcC``
    header carries them at offsets 1..12.
    """

    width: int
    height: int
    general_profile_space: int
    general_tier_flag: bool
    general_profile_idc: int
    general_level_idc: int
    fps: float
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    max_sub_layers: int
    temporal_id_nesting: bool
    profile_tier_level: bytes


def nal_type(nal: bytes) -> int:
    """``nal_unit_type``: bits 1..6 of the first header byte (H.265 7.3.1.2)."""
    if not nal:
        raise H265Error("empty NAL unit has no header")
    return (nal[0] >> 1) & 0x3F


def is_irap(nal_unit_type: int) -> bool:
    """IRAP pictures (BLA, IDR, CRA and the reserved 22/23) start a GOP (H.265 3.73)."""
    return _IRAP_FIRST <= nal_unit_type <= _IRAP_LAST


def annexb_to_hvcc(data: bytes) -> bytes:
    """Annex B byte stream to 4-byte length-prefixed NAL units."""
    return nals_to_avcc(split_annexb(data))


def is_keyframe_hvcc(data: bytes, length_size: int = 4) -> bool:
    """Whether length-prefixed NAL units contain an IRAP slice (types 16..23).

    Stops at the first IRAP slice.

    :raises BitstreamError: the length framing is truncated before an IRAP slice.
    """
    return any(_IRAP_FIRST <= (data[start] >> 1) & 0x3F <= _IRAP_LAST for start, _ in iter_nal_units(data, length_size))


def parse_hevc_config(record: bytes) -> HevcConfig:
    """Parse an ``HEVCDecoderConfigurationRecord`` (ISO 14496-15 8.3.3.1.1).

    :raises H265Error: wrong version, reserved length size, or truncation.
    """
    if len(record) < _HVCC_HEADER_SIZE:
        raise H265Error(f"hvcC truncated: {len(record)} bytes, the fixed part needs {_HVCC_HEADER_SIZE}")
    if record[0] != 1:
        raise H265Error(f"hvcC configurationVersion is {record[0]}, expected 1")
    length_size = (record[21] & 0x03) + 1
    if length_size == 3:
        raise H265Error("hvcC lengthSizeMinusOne is 2, which ISO 14496-15 reserves")
    arrays: dict[int, list[bytes]] = {NAL_VPS: [], NAL_SPS: [], NAL_PPS: []}
    pos = _HVCC_HEADER_SIZE
    for index in range(record[22]):
        if pos + 3 > len(record):
            raise H265Error(f"hvcC truncated in the header of array {index} at offset {pos}")
        kind = record[pos] & 0x3F
        (count,) = _U16.unpack_from(record, pos + 1)
        pos += 3
        for i in range(count):
            if pos + 2 > len(record):
                raise H265Error(
                    f"hvcC truncated in the length of NAL {i} of array {index} (type {kind}) at offset {pos}"
                )
            (size,) = _U16.unpack_from(record, pos)
            pos += 2
            if pos + size > len(record):
                raise H265Error(
                    f"hvcC truncated in NAL {i} of array {index} (type {kind}): "
                    f"{size} bytes declared, {len(record) - pos} remain"
                )
            if kind in arrays:
                arrays[kind].append(record[pos : pos + size])
            pos += size
    b21 = record[21]
    return HevcConfig(
        general_profile_space=record[1] >> 6,
        general_tier_flag=bool(record[1] & 0x20),
        general_profile_idc=record[1] & 0x1F,
        general_profile_compatibility_flags=int.from_bytes(record[2:6], "big"),
        general_constraint_indicator_flags=int.from_bytes(record[6:12], "big"),
        general_level_idc=record[12],
        min_spatial_segmentation_idc=int.from_bytes(record[13:15], "big") & 0x0FFF,
        parallelism_type=record[15] & 0x03,
        chroma_format_idc=record[16] & 0x03,
        bit_depth_luma=(record[17] & 0x07) + 8,
        bit_depth_chroma=(record[18] & 0x07) + 8,
        avg_frame_rate=int.from_bytes(record[19:21], "big"),
        constant_frame_rate=b21 >> 6,
        num_temporal_layers=(b21 >> 3) & 0x07,
        temporal_id_nested=bool(b21 & 0x04),
        nal_length_size=length_size,
        vps=arrays[NAL_VPS],
        sps=arrays[NAL_SPS],
        pps=arrays[NAL_PPS],
    )


def build_hevc_config(vps: list[bytes], sps: list[bytes], pps: list[bytes]) -> bytes:
    """Build an ``HEVCDecoderConfigurationRecord`` with 4-byte NAL lengths.

    Profile, tier, level, chroma format, bit depths and temporal layering come
    from the first SPS (its ``profile_tier_level``, 7.3.3).  Fields we do not
    derive are written with their "unknown" values, which 14496-15 allows:
    ``min_spatial_segmentation_idc`` 0, ``parallelismType`` 0,
    ``avgFrameRate`` 0, ``constantFrameRate`` 0.  ``array_completeness`` is 1:
    for an ``hvc1`` sample entry all parameter sets are in the record.

    :raises H265Error: no SPS, a NAL unit of the wrong type, or a parameter
        set too large for the record's 16-bit length.
    """
    if not sps:
        raise H265Error("an hvcC needs at least one SPS")
    for nals, expected, what in ((vps, NAL_VPS, "VPS"), (sps, NAL_SPS, "SPS"), (pps, NAL_PPS, "PPS")):
        if len(nals) > 0xFFFF:
            raise H265Error(f"an hvcC array holds at most 65535 NAL units, got {len(nals)} {what}")
        for nal in nals:
            got = nal_type(nal) if nal else None
            if got != expected:
                raise H265Error(f"expected a {what} (nal_unit_type {expected}), got type {got}")
            if len(nal) > 0xFFFF:
                raise H265Error(f"{what} of {len(nal)} bytes exceeds the hvcC 16-bit length")
    info = parse_sps(sps[0])
    if info.bit_depth_luma > 15 or info.bit_depth_chroma > 15:
        raise H265Error(
            f"bit depth {info.bit_depth_luma}/{info.bit_depth_chroma} does not fit the hvcC 3-bit bitDepthMinus8 fields"
        )
    header = b"".join(
        (
            b"\x01",
            info.profile_tier_level,
            b"\xf0\x00",  # reserved '1111', min_spatial_segmentation_idc 0
            b"\xfc",  # reserved '111111', parallelismType 0
            bytes(
                (
                    0xFC | info.chroma_format_idc,
                    0xF8 | (info.bit_depth_luma - 8),
                    0xF8 | (info.bit_depth_chroma - 8),
                )
            ),
            b"\x00\x00",  # avgFrameRate
            bytes(
                (
                    (info.max_sub_layers << 3) | (int(info.temporal_id_nesting) << 2) | 0x03,
                    sum(1 for nals in (vps, sps, pps) if nals),
                )
            ),
        )
    )
    parts = [header]
    for nals, kind in ((vps, NAL_VPS), (sps, NAL_SPS), (pps, NAL_PPS)):
        if not nals:
            continue
        parts.append(bytes((0x80 | kind,)) + _U16.pack(len(nals)))
        for nal in nals:
            parts += (_U16.pack(len(nal)), nal)
    return b"".join(parts)


def parse_sps(sps: bytes) -> SpsInfo:
    """Parse an SPS NAL unit, 2-byte header included (H.265 7.3.2.2).

    Emulation prevention bytes are removed first.  Walks the whole SPS up to
    the VUI timing info when present (scaling lists, short-term reference
    picture sets and long-term pictures included) to find the frame rate.

    :raises H265Error: not an SPS, truncated, or out-of-range values.
    """
    if len(sps) < 2:
        raise H265Error(f"SPS of {len(sps)} bytes has no complete NAL header")
    if nal_type(sps) != NAL_SPS:
        raise H265Error(f"not an SPS: nal_unit_type {nal_type(sps)}")
    rbsp = remove_emulation_prevention(sps[2:])
    try:
        return _parse_sps_rbsp(BitReader(rbsp), rbsp)
    except BitstreamError as exc:
        raise H265Error(f"SPS truncated or malformed: {exc}") from exc


def _parse_sps_rbsp(r: BitReader, rbsp: bytes) -> SpsInfo:
    r.skip_bits(4)  # sps_video_parameter_set_id
    max_sub_layers = r.read_bits(3) + 1
    if max_sub_layers > 7:
        raise H265Error(f"sps_max_sub_layers_minus1 {max_sub_layers - 1} out of range 0..6")
    temporal_id_nesting = r.read_flag()
    # profile_tier_level(1, sps_max_sub_layers_minus1), 7.3.3: the general part
    # is byte aligned here and 12 bytes long.
    ptl_start = r.position // 8
    profile_space = r.read_bits(2)
    tier_flag = r.read_flag()
    profile_idc = r.read_bits(5)
    r.skip_bits(32 + 48)  # compatibility flags, constraint flags
    level_idc = r.read_bits(8)
    profile_tier_level = rbsp[ptl_start : ptl_start + 12]
    sub_profile_present: list[bool] = []
    sub_level_present: list[bool] = []
    for _ in range(max_sub_layers - 1):
        sub_profile_present.append(r.read_flag())
        sub_level_present.append(r.read_flag())
    if max_sub_layers > 1:
        r.skip_bits(2 * (9 - max_sub_layers))  # reserved_zero_2bits up to 8 entries
    for profile_present, level_present in zip(sub_profile_present, sub_level_present, strict=True):
        if profile_present:
            r.skip_bits(88)
        if level_present:
            r.skip_bits(8)

    sps_id = r.read_ue()
    if sps_id > 15:
        raise H265Error(f"sps_seq_parameter_set_id {sps_id} out of range 0..15")
    chroma_format_idc = r.read_ue()
    if chroma_format_idc > 3:
        raise H265Error(f"chroma_format_idc {chroma_format_idc} out of range 0..3")
    separate_colour_plane = chroma_format_idc == 3 and r.read_flag()
    pic_width = r.read_ue()
    pic_height = r.read_ue()
    win_left = win_right = win_top = win_bottom = 0
    if r.read_flag():  # conformance_window_flag
        win_left, win_right = r.read_ue(), r.read_ue()
        win_top, win_bottom = r.read_ue(), r.read_ue()
    bit_depth_luma = r.read_ue() + 8
    bit_depth_chroma = r.read_ue() + 8
    if bit_depth_luma > 16 or bit_depth_chroma > 16:
        raise H265Error(f"bit depth {bit_depth_luma}/{bit_depth_chroma} out of range 8..16")

    # 7.4.3.2.1 / Table 6-1: the window is in chroma sample units.
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    sub_width_c = 2 if chroma_array_type in (1, 2) else 1
    sub_height_c = 2 if chroma_array_type == 1 else 1
    width = pic_width - sub_width_c * (win_left + win_right)
    height = pic_height - sub_height_c * (win_top + win_bottom)
    if width <= 0 or height <= 0:
        raise H265Error(f"conformance window leaves an empty picture ({width}x{height})")

    fps = _parse_rest_for_fps(r, max_sub_layers)
    return SpsInfo(
        width=width,
        height=height,
        general_profile_space=profile_space,
        general_tier_flag=tier_flag,
        general_profile_idc=profile_idc,
        general_level_idc=level_idc,
        fps=fps,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        max_sub_layers=max_sub_layers,
        temporal_id_nesting=temporal_id_nesting,
        profile_tier_level=profile_tier_level,
    )


def _parse_rest_for_fps(r: BitReader, max_sub_layers: int) -> float:
    """Walk from ``log2_max_pic_order_cnt_lsb_minus4`` to the VUI timing info."""
    log2_max_poc_lsb = r.read_ue() + 4
    if log2_max_poc_lsb > 16:
        raise H265Error(f"log2_max_pic_order_cnt_lsb_minus4 {log2_max_poc_lsb - 4} out of range 0..12")
    ordering_info_present = r.read_flag()
    for _ in range(0 if ordering_info_present else max_sub_layers - 1, max_sub_layers):
        r.read_ue()  # sps_max_dec_pic_buffering_minus1
        r.read_ue()  # sps_max_num_reorder_pics
        r.read_ue()  # sps_max_latency_increase_plus1
    for _ in range(6):
        # log2_min_luma_coding_block_size_minus3 .. max_transform_hierarchy_depth_intra
        r.read_ue()
    if r.read_flag() and r.read_flag():  # scaling_list_enabled, sps_scaling_list_data_present
        _skip_scaling_list_data(r)
    r.skip_bits(2)  # amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if r.read_flag():  # pcm_enabled_flag
        r.skip_bits(8)  # pcm sample bit depths
        r.read_ue()  # log2_min_pcm_luma_coding_block_size_minus3
        r.read_ue()  # log2_diff_max_min_pcm_luma_coding_block_size
        r.skip_bits(1)  # pcm_loop_filter_disabled_flag
    num_sets = r.read_ue()
    if num_sets > 64:
        raise H265Error(f"num_short_term_ref_pic_sets {num_sets} out of range 0..64")
    num_delta_pocs: list[int] = []
    for idx in range(num_sets):
        num_delta_pocs.append(_skip_st_ref_pic_set(r, idx, num_delta_pocs))
    if r.read_flag():  # long_term_ref_pics_present_flag
        count = r.read_ue()
        if count > 32:
            raise H265Error(f"num_long_term_ref_pics_sps {count} out of range 0..32")
        r.skip_bits(count * (log2_max_poc_lsb + 1))  # lt_ref_pic_poc_lsb_sps, used_by_curr
    r.skip_bits(2)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
    if not r.read_flag():  # vui_parameters_present_flag
        return 0.0
    return _parse_vui_fps(r)


def _skip_scaling_list_data(r: BitReader) -> None:
    """Consume ``scaling_list_data()`` (H.265 7.3.4)."""
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not r.read_flag():  # scaling_list_pred_mode_flag
                r.read_ue()  # scaling_list_pred_matrix_id_delta
                continue
            coef_num = min(64, 1 << (4 + (size_id << 1)))
            if size_id > 1:
                r.read_se()  # scaling_list_dc_coef_minus8
            for _ in range(coef_num):
                r.read_se()  # scaling_list_delta_coef


def _skip_st_ref_pic_set(r: BitReader, idx: int, num_delta_pocs: list[int]) -> int:
    """Consume ``st_ref_pic_set(idx)`` in an SPS (H.265 7.3.7); return NumDeltaPocs[idx]."""
    if idx != 0 and r.read_flag():  # inter_ref_pic_set_prediction_flag
        # In the SPS delta_idx_minus1 is absent (idx < num_short_term_ref_pic_sets),
        # so the reference set is the previous one (7.4.8).
        r.skip_bits(1)  # delta_rps_sign
        r.read_ue()  # abs_delta_rps_minus1
        count = 0
        for _ in range(num_delta_pocs[idx - 1] + 1):
            used_by_curr = r.read_flag()
            use_delta = used_by_curr or r.read_flag()
            count += use_delta
        return count
    negative = r.read_ue()
    positive = r.read_ue()
    if negative > 16 or positive > 16:
        raise H265Error(f"st_ref_pic_set {idx} has {negative}+{positive} pictures, at most 16 each")
    for _ in range(negative + positive):
        r.read_ue()  # delta_poc_s0/s1_minus1
        r.skip_bits(1)  # used_by_curr_pic_s0/s1_flag
    return negative + positive


def _parse_vui_fps(r: BitReader) -> float:
    """Read ``vui_parameters()`` up to the timing info (H.265 E.2.1)."""
    if r.read_flag():  # aspect_ratio_info_present_flag
        if r.read_bits(8) == 255:  # EXTENDED_SAR
            r.skip_bits(32)
    if r.read_flag():  # overscan_info_present_flag
        r.skip_bits(1)
    if r.read_flag():  # video_signal_type_present_flag
        r.skip_bits(4)
        if r.read_flag():  # colour_description_present_flag
            r.skip_bits(24)
    if r.read_flag():  # chroma_loc_info_present_flag
        r.read_ue()
        r.read_ue()
    r.skip_bits(3)  # neutral_chroma_indication, field_seq, frame_field_info_present
    if r.read_flag():  # default_display_window_flag
        for _ in range(4):
            r.read_ue()
    if not r.read_flag():  # vui_timing_info_present_flag
        return 0.0
    num_units_in_tick = r.read_bits(32)
    time_scale = r.read_bits(32)
    if num_units_in_tick == 0 or time_scale == 0:
        return 0.0
    return time_scale / num_units_in_tick
