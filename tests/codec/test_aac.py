"""AAC AudioSpecificConfig and ADTS tests.

``aac_48k_mono.aac`` is ffmpeg 5.1's native encoder writing ADTS::

    ffmpeg -f lavfi -i sine=frequency=1000:sample_rate=48000 -t 0.3 -ac 1 \
        -c:a aac aac_48k_mono.aac

(ffprobe: AAC LC, 48000 Hz, mono, 16 frames).  The FLV capture of
test_flv.py supplies ffmpeg's AudioSpecificConfig for 44.1 kHz stereo.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediasrv.codec import aac
from mediasrv.codec.aac import AacConfig, AacError

FIXTURES = Path(__file__).parent.parent / "fixtures"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# -- AudioSpecificConfig ------------------------------------------------------


@pytest.mark.parametrize(
    ("asc", "expected"),
    [
        # ffmpeg's, from the FLV capture: LC 44.1 kHz stereo + SBR sync extension.
        (b"\x12\x10\x56\xe5\x00", AacConfig(2, 44100, 2, 4, 2)),
        (b"\x11\x88", AacConfig(2, 48000, 1, 3, 1)),
        (b"\x14\x18", AacConfig(2, 16000, 3, 8, 3)),
        (b"\x11\xb0", AacConfig(2, 48000, 6, 3, 6)),
        (b"\x11\xb8", AacConfig(2, 48000, 8, 3, 7)),
        (b"\x2b\x92\x08\x00", AacConfig(5, 22050, 2, 7, 2)),  # explicit SBR
        # Object type escape: 31 + 6 bits (42 = USAC), 48 kHz, stereo.
        (bytes.fromhex("f94640"), AacConfig(42, 48000, 2, 3, 2)),
        # Explicit rate: index 15 + 24 bits (12345 Hz), mono.
        (bytes.fromhex("1780181c88"), AacConfig(2, 12345, 1, 15, 1)),
        (bytes.fromhex("1180"), AacConfig(2, 48000, 0, 3, 0)),  # channels in a PCE
    ],
)
def test_parse_asc(asc: bytes, expected: AacConfig) -> None:
    assert aac.parse_asc(asc) == expected


@pytest.mark.parametrize(
    ("args", "asc"),
    [
        ((2, 44100, 2), b"\x12\x10"),
        ((2, 48000, 1), b"\x11\x88"),
        ((2, 48000, 6), b"\x11\xb0"),
        ((2, 48000, 8), b"\x11\xb8"),
        ((2, 12345, 1), bytes.fromhex("1780181c88")),
        ((1, 96000, 2), b"\x08\x10"),
    ],
)
def test_build_asc(args: tuple[int, int, int], asc: bytes) -> None:
    assert aac.build_asc(*args) == asc


@given(
    object_type=st.sampled_from([1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23]),
    sample_rate=st.one_of(st.sampled_from(aac.SAMPLE_RATES), st.integers(1, (1 << 24) - 1)),
    channels=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8]),
)
def test_asc_round_trip(object_type: int, sample_rate: int, channels: int) -> None:
    cfg = aac.parse_asc(aac.build_asc(object_type, sample_rate, channels))
    assert (cfg.object_type, cfg.sample_rate, cfg.channels) == (object_type, sample_rate, channels)
    in_table = sample_rate in aac.SAMPLE_RATES
    assert cfg.sampling_index == (aac.SAMPLE_RATES.index(sample_rate) if in_table else 15)


@pytest.mark.parametrize(
    ("asc", "message"),
    [
        (b"", r"AudioSpecificConfig truncated: needed 5 bits"),
        (b"\x12", r"AudioSpecificConfig truncated: needed 4 bits at bit offset 5, only 3 of 8 left"),
        (b"\xf9", "AudioSpecificConfig truncated"),
        (b"\x17\x80\x18", "AudioSpecificConfig truncated: needed 24 bits"),
        (b"\x00\x10", "audioObjectType 0"),
        (b"\x16\x90", "reserved samplingFrequencyIndex 13"),
        (b"\x11\xc0", "reserved channelConfiguration 8"),
        (b"\x17\x80\x00\x00\x08", "explicit samplingFrequency of 0"),
    ],
)
def test_parse_asc_errors(asc: bytes, message: str) -> None:
    with pytest.raises(AacError, match=message):
        aac.parse_asc(asc)


def test_parse_asc_every_prefix() -> None:
    asc = bytes.fromhex("1780181c88")
    for n in range(len(asc)):
        with pytest.raises(AacError, match="truncated"):
            aac.parse_asc(asc[:n])


@given(st.binary(max_size=8))
def test_parse_asc_raises_only_aac_error(asc: bytes) -> None:
    try:
        aac.parse_asc(asc)
    except AacError:
        pass


def test_build_asc_errors() -> None:
    with pytest.raises(AacError, match="audioObjectType 5"):
        aac.build_asc(5, 44100, 2)
    with pytest.raises(AacError, match="no AAC channelConfiguration for 9 channels"):
        aac.build_asc(2, 44100, 9)
    with pytest.raises(AacError, match="sample rate 16777216 does not fit 24 bits"):
        aac.build_asc(2, 1 << 24, 2)


# -- ADTS ------------------------------------------------------------------------


def test_parse_adts_capture() -> None:
    data = load("aac_48k_mono.aac")
    frames = aac.parse_adts(data)
    assert len(frames) == 16
    assert {cfg for cfg, _ in frames} == {AacConfig(2, 48000, 1, 3, 1)}
    assert aac.build_asc(2, 48000, 1) == b"\x11\x88"


def test_adts_capture_rebuilds_byte_for_byte() -> None:
    data = load("aac_48k_mono.aac")
    rebuilt = b"".join(aac.adts_header(cfg, len(au)) + au for cfg, au in aac.parse_adts(data))
    assert rebuilt == data


def test_parse_adts_every_prefix() -> None:
    data = load("aac_48k_mono.aac")
    frames = aac.parse_adts(data)
    boundaries = {0}
    pos = 0
    for _, au in frames:
        pos += 7 + len(au)
        boundaries.add(pos)
    for n in range(len(data)):
        if n in boundaries:
            assert aac.parse_adts(data[:n]) == frames[: sorted(boundaries).index(n)]
        else:
            with pytest.raises(AacError, match="truncated"):
                aac.parse_adts(data[:n])


def test_adts_header_layout() -> None:
    cfg = aac.parse_asc(b"\x12\x10")
    # FFF1: sync, MPEG-4, layer 0, no CRC; 50: LC, index 4; 80: stereo;
    # frame_length 7 + 10 = 17; buffer fullness 0x7FF; one raw block.
    assert aac.adts_header(cfg, 10) == bytes.fromhex("fff15080023ffc")


@given(
    object_type=st.integers(1, 4),
    index=st.integers(0, 12),
    channel_config=st.integers(0, 7),
    payload=st.binary(max_size=200),
)
def test_adts_round_trip(object_type: int, index: int, channel_config: int, payload: bytes) -> None:
    channels = {7: 8}.get(channel_config, channel_config)
    cfg = AacConfig(object_type, aac.SAMPLE_RATES[index], channels, index, channel_config)
    frame = aac.adts_header(cfg, len(payload)) + payload
    assert aac.parse_adts(frame * 2) == [(cfg, payload), (cfg, payload)]


def test_parse_adts_with_crc() -> None:
    # protection_absent 0: a 16-bit crc_check follows the 7 header bytes.
    header = int.from_bytes(aac.adts_header(aac.parse_asc(b"\x11\x88"), 2 + 3), "big")
    header &= ~(1 << 40)
    frame = header.to_bytes(7, "big") + b"\xbe\xef" + b"abc"
    assert aac.parse_adts(frame) == [(AacConfig(2, 48000, 1, 3, 1), b"abc")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xf1\x50", "ADTS header at offset 0 truncated: 3 of 7 bytes"),
        (b"\xff\xe1\x50\x80\x02\x3f\xfc", "no ADTS syncword at offset 0 \\(found ffe1\\)"),
        (b"\xff\xf3\x50\x80\x02\x3f\xfc", "ADTS layer 1 at offset 0"),
        (b"\xff\xf1\x74\x80\x02\x3f\xfc", "reserved samplingFrequencyIndex 13"),
        (b"\xff\xf1\x50\x80\x02\x3f\xfd", "2 raw data blocks, only 1 is supported"),
        (b"\xff\xf1\x50\x80\x00\xdf\xfc", "frame_length 6, shorter than its 7-byte header"),
        (b"\xff\xf0\x50\x80\x01\x1f\xfc", "frame_length 8, shorter than its 9-byte header"),
        (b"\xff\xf1\x50\x80\x02\x3f\xfcabc", "truncated: frame_length 17, 10 bytes remain"),
    ],
)
def test_parse_adts_errors(data: bytes, message: str) -> None:
    with pytest.raises(AacError, match=message):
        aac.parse_adts(data)


@given(st.binary(max_size=40))
def test_parse_adts_raises_only_aac_error(data: bytes) -> None:
    try:
        aac.parse_adts(b"\xff\xf1" + data)
    except AacError:
        pass


def test_adts_header_errors() -> None:
    with pytest.raises(AacError, match="audioObjectType 5"):
        aac.adts_header(AacConfig(5, 44100, 2, 4, 2), 10)
    with pytest.raises(AacError, match="samplingFrequencyIndex 15"):
        aac.adts_header(AacConfig(2, 12345, 2, 15, 2), 10)
    with pytest.raises(AacError, match="channelConfiguration 11"):
        aac.adts_header(AacConfig(2, 48000, 7, 3, 11), 10)
    with pytest.raises(AacError, match="ADTS frame of 8192 bytes"):
        aac.adts_header(AacConfig(2, 48000, 2, 3, 2), 8185)
