"""AAC: AudioSpecificConfig and ADTS framing (sans-IO).

References: ISO/IEC 14496-3 1.6.2.1 ``AudioSpecificConfig`` (Table 1.15),
Table 1.16 ``samplingFrequencyIndex``, Table 1.19 ``channelConfiguration``,
4.4.1 ``GASpecificConfig``, and 1.A.2 / 1.A.3 (``adts_fixed_header``,
``adts_variable_header``, ``adts_error_check``).

Our canonical AAC payload is one raw access unit; ADTS is only an import and
export format (MPEG-TS, raw ``.aac``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mediasrv.codec.bits import BitReader, BitstreamError, CodecError

__all__ = [
    "SAMPLE_RATES",
    "AacConfig",
    "AacError",
    "adts_header",
    "build_asc",
    "parse_adts",
    "parse_asc",
]

#: samplingFrequencyIndex 0..12 (ISO 14496-3 Table 1.16); 13, 14 reserved, 15 escape.
SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_ESCAPE_INDEX = 15
_RATE_INDEX = {rate: index for index, rate in enumerate(SAMPLE_RATES)}

# channelConfiguration -> channel count (Table 1.19; 0 means "in the PCE").
_CONFIG_CHANNELS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}
_CHANNELS_CONFIG = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 11, 8: 7}

# Audio object types whose config is a GASpecificConfig (Table 1.15).
_GA_OBJECT_TYPES = frozenset({1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23})
_ADTS_MAX_FRAME = (1 << 13) - 1


class AacError(CodecError):
    """A malformed AudioSpecificConfig or ADTS stream."""


@dataclass(frozen=True, slots=True)
class AacConfig:
    """The leading fields of an AudioSpecificConfig (or of an ADTS header).

    ``sampling_index`` is 15 when the rate is sent explicitly.
    ``channel_config`` is the raw ``channelConfiguration``; ``channels`` is the
    count it stands for (0 when a program config element defines it).  For
    explicitly signalled SBR / PS (object types 5 and 29) these are the
    signalled values; the extension fields are not interpreted.
    """

    object_type: int
    sample_rate: int
    channels: int
    sampling_index: int
    channel_config: int


def parse_asc(asc: bytes) -> AacConfig:
    """Parse the start of an AudioSpecificConfig (ISO 14496-3 1.6.2.1).

    Handles the object-type escape (31 → 32 + 6 bits) and the explicit
    24-bit sampling frequency (index 15).

    :raises AacError: truncated, or a reserved index / channel configuration.
    """
    r = BitReader(asc)
    try:
        object_type = r.read_bits(5)
        if object_type == 31:
            object_type = 32 + r.read_bits(6)
        index = r.read_bits(4)
        rate = r.read_bits(24) if index == _ESCAPE_INDEX else 0
        channel_config = r.read_bits(4)
    except BitstreamError as exc:
        raise AacError(f"AudioSpecificConfig truncated: {exc}") from exc
    if object_type == 0:
        raise AacError("AudioSpecificConfig has audioObjectType 0 (null)")
    if index != _ESCAPE_INDEX:
        if index >= len(SAMPLE_RATES):
            raise AacError(f"AudioSpecificConfig has reserved samplingFrequencyIndex {index}")
        rate = SAMPLE_RATES[index]
    elif rate == 0:
        raise AacError("AudioSpecificConfig has an explicit samplingFrequency of 0")
    channels = _CONFIG_CHANNELS.get(channel_config)
    if channels is None:
        raise AacError(f"AudioSpecificConfig has reserved channelConfiguration {channel_config}")
    return AacConfig(object_type, rate, channels, index, channel_config)


def build_asc(object_type: int, sample_rate: int, channels: int) -> bytes:
    """Build an AudioSpecificConfig with an all-zero GASpecificConfig (4.4.1).

    ``frameLengthFlag`` 0 (1024 samples), no core coder, no extension: what
    AAC-LC encoders emit.  A rate outside Table 1.16 is sent explicitly.
    7 channels map to ``channelConfiguration`` 11 and 8 to 7.

    :raises AacError: an object type without GASpecificConfig, a channel count
        without a channel configuration, or a rate that does not fit 24 bits.
    """
    if object_type not in _GA_OBJECT_TYPES:
        raise AacError(
            f"cannot build an AudioSpecificConfig for audioObjectType {object_type}: "
            f"only the GASpecificConfig types {sorted(_GA_OBJECT_TYPES)} are supported"
        )
    channel_config = _CHANNELS_CONFIG.get(channels)
    if channel_config is None:
        raise AacError(f"no AAC channelConfiguration for {channels} channels")
    if not 0 < sample_rate < (1 << 24):
        raise AacError(f"AAC sample rate {sample_rate} does not fit 24 bits")
    index = _RATE_INDEX.get(sample_rate, _ESCAPE_INDEX)
    # object_type < 31 here, so it takes exactly 5 bits.
    value, nbits = object_type, 5
    value, nbits = (value << 4) | index, nbits + 4
    if index == _ESCAPE_INDEX:
        value, nbits = (value << 24) | sample_rate, nbits + 24
    value, nbits = (value << 4) | channel_config, nbits + 4
    value, nbits = value << 3, nbits + 3  # frameLengthFlag, dependsOnCoreCoder, extensionFlag
    pad = -nbits % 8
    return (value << pad).to_bytes((nbits + pad) // 8, "big")


def adts_header(cfg: AacConfig, payload_len: int) -> bytes:
    """Build a 7-byte ADTS header without CRC for one raw data block (1.A.2.2).

    :raises AacError: an object type ADTS cannot express (only 1..4, as the
        2-bit ``profile``), an explicit rate, or a frame over 8191 bytes.
    """
    if not 1 <= cfg.object_type <= 4:
        raise AacError(f"ADTS cannot carry audioObjectType {cfg.object_type} (only 1..4)")
    if cfg.sampling_index >= len(SAMPLE_RATES):
        raise AacError(f"ADTS cannot carry samplingFrequencyIndex {cfg.sampling_index}")
    if not 0 <= cfg.channel_config <= 7:
        raise AacError(f"ADTS cannot carry channelConfiguration {cfg.channel_config}")
    frame_len = payload_len + 7
    if payload_len < 0 or frame_len > _ADTS_MAX_FRAME:
        raise AacError(f"ADTS frame of {frame_len} bytes exceeds the 13-bit frame_length")
    value = (
        (0xFFF << 44)  # syncword
        | (1 << 40)  # ID 0 (MPEG-4), layer 00, protection_absent 1
        | ((cfg.object_type - 1) << 38)
        | (cfg.sampling_index << 34)
        | (cfg.channel_config << 30)  # private_bit 0 above
        | (frame_len << 13)  # original/copy, home, copyright bits 0 above
        | (0x7FF << 2)  # adts_buffer_fullness: VBR
    )  # number_of_raw_data_blocks_in_frame 0
    return value.to_bytes(7, "big")


def parse_adts(data: bytes) -> list[tuple[AacConfig, bytes]]:
    """Split concatenated ADTS frames into (config, raw access unit) pairs.

    Accepts headers with and without CRC (``protection_absent`` 0 adds a
    16-bit ``crc_check``, which is skipped, not verified).  Frames with more
    than one raw data block are rejected.

    :raises AacError: lost sync, reserved values, or a truncated frame.
    """
    frames: list[tuple[AacConfig, bytes]] = []
    pos = 0
    total = len(data)
    while pos < total:
        if pos + 7 > total:
            raise AacError(f"ADTS header at offset {pos} truncated: {total - pos} of 7 bytes")
        value = int.from_bytes(data[pos : pos + 7], "big")
        if value >> 44 != 0xFFF:
            raise AacError(f"no ADTS syncword at offset {pos} (found {data[pos : pos + 2].hex()})")
        if (value >> 41) & 0x3:
            raise AacError(f"ADTS layer {(value >> 41) & 0x3} at offset {pos}, expected 0")
        protection_absent = (value >> 40) & 1
        object_type = ((value >> 38) & 0x3) + 1
        index = (value >> 34) & 0xF
        channel_config = (value >> 30) & 0x7
        frame_len = (value >> 13) & 0x1FFF
        blocks = (value & 0x3) + 1
        header_len = 7 if protection_absent else 9
        if index >= len(SAMPLE_RATES):
            raise AacError(f"ADTS frame at offset {pos} has reserved samplingFrequencyIndex {index}")
        if blocks != 1:
            raise AacError(f"ADTS frame at offset {pos} has {blocks} raw data blocks, only 1 is supported")
        if frame_len < header_len:
            raise AacError(
                f"ADTS frame at offset {pos} has frame_length {frame_len}, shorter than its {header_len}-byte header"
            )
        if pos + frame_len > total:
            raise AacError(
                f"ADTS frame at offset {pos} truncated: frame_length {frame_len}, {total - pos} bytes remain"
            )
        cfg = AacConfig(object_type, SAMPLE_RATES[index], _CONFIG_CHANNELS[channel_config], index, channel_config)
        frames.append((cfg, data[pos + header_len : pos + frame_len]))
        pos += frame_len
    return frames
