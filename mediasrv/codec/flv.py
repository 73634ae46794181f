"""FLV: file header, tags, and the audio / video tag bodies RTMP shares (sans-IO).

References:

* Adobe "Video File Format Specification" v10.1, Annex E: E.2 FLV header,
  E.3 FLV file body (PreviousTagSize), E.4.1 FLVTAG, E.4.2.1 AUDIODATA /
  AACAUDIODATA, E.4.3.1 VIDEODATA / AVCVIDEOPACKET.
* Enhanced RTMP (veovera/enhanced-rtmp, v1 and v2) "Enhancing Video":
  ``ExVideoTagHeader`` (IsExVideoHeader bit, FrameType, VideoPacketType,
  VideoFourCc) and ``ExVideoTagBody``.

RTMP video / audio messages carry exactly these tag bodies, so
:func:`parse_video` / :func:`build_video` serve both RTMP and HTTP-FLV.

Choices:

* H.264 is sent in the legacy form (CodecID 7), which every player reads.
* H.265 is sent in the enhanced form (FourCC ``hvc1``).  ffmpeg 6.1+ and
  OBS 29.1+ read and write it; older players that only know the Chinese-CDN
  CodecID 12 extension will not.  Both forms are accepted on input.
* A video FourCC other than ``avc1`` / ``hvc1`` (``av01``, ``vp09``,
  ``vp08`` ...), enhanced Multitrack / ModEx packets and non-AAC audio raise
  :class:`FlvError`: we cannot carry those codecs, so the publisher should be
  refused at the edge rather than have its media dropped silently.
* Video command frames (FrameType 5) and enhanced Metadata packets parse to
  kinds the caller ignores (:attr:`VideoKind.COMMAND`,
  :attr:`VideoKind.METADATA`).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediasrv.codec.amf0 import EcmaArray, encode
from mediasrv.codec.bits import CodecError
from mediasrv.core.frames import Codec

__all__ = [
    "DEFAULT_MAX_TAG_SIZE",
    "TAG_AUDIO",
    "TAG_SCRIPT",
    "TAG_VIDEO",
    "AudioPacket",
    "FlvError",
    "FlvReader",
    "FlvTag",
    "VideoKind",
    "VideoPacket",
    "build_audio",
    "build_video",
    "build_video_end",
    "encode_tag",
    "flv_header",
    "parse_audio",
    "parse_video",
    "script_tag_payload",
]

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18
_TAG_TYPES = frozenset({TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT})

#: Default bound of :class:`FlvReader`; a tag's DataSize field allows 16 MiB.
DEFAULT_MAX_TAG_SIZE = 8 * 1024 * 1024

_TAG_HEADER_SIZE = 11
_FLV_HEADER_SIZE = 9
_MAX_DATA_SIZE = 0xFFFFFF
_SI24_MIN = -(1 << 23)
_SI24_MAX = (1 << 23) - 1

# Tag header: TagType + DataSize as one u32, Timestamp (24) + TimestampExtended
# as one u32, then StreamID (3 zero bytes).  E.4.1.
_TAG_HEAD = struct.Struct(">II3x")
_U32 = struct.Struct(">I")
# Legacy video: FrameType|CodecID, AVCPacketType + SI24 CompositionTime as a u32.
_LEGACY_VIDEO = struct.Struct(">BI")
# Enhanced video: FrameType|PacketType, FourCC, then optionally SI24 as u16 + u8.
_EX_VIDEO = struct.Struct(">B4s")
_EX_VIDEO_CTS = struct.Struct(">B4sHB")

_FRAME_KEY = 1
_FRAME_INTER = 2
_FRAME_GENERATED_KEY = 4
_FRAME_COMMAND = 5

_CODEC_ID_AVC = 7
_CODEC_ID_HEVC = 12  # not in Adobe's spec; the Chinese CDN extension
_VIDEO_CODEC_IDS = {_CODEC_ID_AVC: Codec.H264, _CODEC_ID_HEVC: Codec.H265}
_VIDEO_CODEC_NAMES = {
    1: "JPEG",
    2: "Sorenson H.263",
    3: "Screen video",
    4: "On2 VP6",
    5: "On2 VP6 with alpha",
    6: "Screen video v2",
}

_PT_SEQUENCE_START = 0
_PT_CODED_FRAMES = 1
_PT_SEQUENCE_END = 2
_PT_CODED_FRAMES_X = 3
_PT_METADATA = 4
_EX_PACKET_TYPE_NAMES = {5: "MPEG2TSSequenceStart", 6: "Multitrack", 7: "ModEx"}
_FOURCC_CODECS = {b"avc1": Codec.H264, b"hvc1": Codec.H265}
_CODEC_FOURCCS = {codec: fourcc for fourcc, codec in _FOURCC_CODECS.items()}

_SOUND_FORMAT_AAC = 10
_SOUND_FORMAT_NAMES = {
    0: "Linear PCM, platform endian",
    1: "ADPCM",
    2: "MP3",
    3: "Linear PCM, little endian",
    4: "Nellymoser 16 kHz mono",
    5: "Nellymoser 8 kHz mono",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    9: "enhanced RTMP ExAudioTagHeader",
    11: "Speex",
    14: "MP3 8 kHz",
    15: "Device-specific sound",
}
# SoundFormat 10 (AAC), SoundRate 3 (44 kHz), SoundSize 1 (16-bit), SoundType 1
# (stereo): E.4.2.1 says AAC always uses these flags; the real values are in
# the AudioSpecificConfig.
_AAC_CONFIG_HEADER = b"\xaf\x00"
_AAC_RAW_HEADER = b"\xaf\x01"


class FlvError(CodecError):
    """Malformed or unsupported FLV / RTMP media data."""


class VideoKind(enum.StrEnum):
    """What a video tag body holds."""

    CONFIG = "config"  # AVC/HEVC sequence header: the decoder configuration record
    FRAME = "frame"  # one access unit, length-prefixed NAL units
    EOS = "eos"  # end of sequence, no data
    METADATA = "metadata"  # enhanced RTMP AMF metadata (e.g. colorInfo); ignorable
    COMMAND = "command"  # FrameType 5 video info / command frame; ignorable


@dataclass(frozen=True, slots=True)
class FlvTag:
    """One FLV tag (E.4.1); ``timestamp`` is the full 32-bit value in ms."""

    tag_type: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class VideoPacket:
    """A parsed video tag body.

    ``codec`` is ``None`` only for an enhanced command frame, which carries no
    FourCC.  ``cts`` is the composition time offset in ms (signed 24-bit);
    ``data`` is the configuration record for :attr:`VideoKind.CONFIG`, the
    length-prefixed NAL units for :attr:`VideoKind.FRAME`, the AMF body for
    :attr:`VideoKind.METADATA` and the command byte for
    :attr:`VideoKind.COMMAND`.
    """

    codec: Codec | None
    keyframe: bool
    kind: VideoKind
    cts: int
    data: bytes


@dataclass(frozen=True, slots=True)
class AudioPacket:
    """A parsed AAC audio tag body (E.4.2.2 AACAUDIODATA).

    ``data`` is the AudioSpecificConfig when ``config`` is true, otherwise one
    raw AAC access unit.
    """

    codec: Codec
    config: bool
    data: bytes


def flv_header(has_audio: bool, has_video: bool) -> bytes:
    """The 9-byte FLV header (E.2) followed by PreviousTagSize0 (E.3)."""
    flags = (0x04 if has_audio else 0) | (0x01 if has_video else 0)
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09\x00\x00\x00\x00"


def encode_tag(tag_type: int, timestamp: int, payload: bytes) -> bytes:
    """One FLV tag (E.4.1) plus its trailing PreviousTagSize (E.3).

    ``timestamp`` is in ms and wraps at 32 bits (the low 24 bits go in
    Timestamp, the high 8 in TimestampExtended).

    :raises FlvError: a payload over 16 MiB or an unknown tag type.
    """
    size = len(payload)
    if size > _MAX_DATA_SIZE:
        raise FlvError(f"FLV tag payload of {size} bytes exceeds the 24-bit DataSize")
    if tag_type not in _TAG_TYPES:
        raise FlvError(f"unknown FLV tag type {tag_type}")
    ts = timestamp & 0xFFFFFFFF
    return b"".join(
        (
            _TAG_HEAD.pack((tag_type << 24) | size, ((ts & 0xFFFFFF) << 8) | (ts >> 24)),
            payload,
            _U32.pack(size + _TAG_HEADER_SIZE),
        )
    )


class FlvReader:
    """Incremental FLV parser: feed bytes, get whole tags (E.2 - E.4.1).

    Sans-IO (DESIGN.md §4 principle 1): :meth:`feed` takes any slice of the
    stream and returns the tags it completes.  Memory stays bounded: a tag
    whose DataSize exceeds ``max_tag_size`` raises before its body is
    buffered.  Tags of every type are returned, unknown ones included; the
    caller dispatches on :attr:`FlvTag.tag_type`.

    :param check_previous_size: verify each PreviousTagSize equals
        11 + DataSize, which catches a desynchronised stream early.
    """

    def __init__(self, max_tag_size: int = DEFAULT_MAX_TAG_SIZE, check_previous_size: bool = True) -> None:
        self._max_tag_size = max_tag_size
        self._check_previous_size = check_previous_size
        self._buffer = bytearray()
        self._header_done = False
        self._failed: FlvError | None = None
        self.has_audio: bool | None = None
        self.has_video: bool | None = None

    def feed(self, data: bytes) -> list[FlvTag]:
        """Add ``data``; return the tags now complete, in stream order.

        :raises FlvError: bad signature or version, an encrypted tag, a tag
            over ``max_tag_size``, or a PreviousTagSize mismatch.  The reader
            is unusable afterwards and re-raises the same error.
        """
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        try:
            return self._parse()
        except FlvError as exc:
            self._failed = exc
            raise

    def _parse(self) -> list[FlvTag]:
        buf = self._buffer
        pos = 0
        if not self._header_done:
            pos = self._parse_header()
            if pos == 0:
                return []
        tags: list[FlvTag] = []
        end = len(buf)
        # One copy per tag body: slice the memoryview, then release it before
        # the buffer is resized.
        with memoryview(buf) as view:
            while end - pos >= _TAG_HEADER_SIZE:
                first = buf[pos]
                if first & 0x20:
                    raise FlvError(f"encrypted FLV tag (Filter bit set) at buffer offset {pos} is unsupported")
                tag_type = first & 0x1F
                size = int.from_bytes(view[pos + 1 : pos + 4], "big")
                if size > self._max_tag_size:
                    raise FlvError(f"FLV tag type {tag_type} of {size} bytes exceeds the limit of {self._max_tag_size}")
                total = _TAG_HEADER_SIZE + size + 4
                if end - pos < total:
                    break
                body = pos + _TAG_HEADER_SIZE
                if self._check_previous_size:
                    previous = int.from_bytes(view[body + size : total + pos], "big")
                    if previous != size + _TAG_HEADER_SIZE:
                        raise FlvError(
                            f"PreviousTagSize {previous} after FLV tag type {tag_type} of "
                            f"{size} bytes, expected {size + _TAG_HEADER_SIZE}"
                        )
                timestamp = int.from_bytes(view[pos + 4 : pos + 7], "big") | (buf[pos + 7] << 24)
                tags.append(FlvTag(tag_type, timestamp, view[body : body + size].tobytes()))
                pos += total
        del buf[:pos]
        return tags

    def _parse_header(self) -> int:
        """Consume the FLV header and PreviousTagSize0; return the offset after them, 0 if incomplete."""
        buf = self._buffer
        if len(buf) >= 3 and buf[:3] != b"FLV":
            raise FlvError(f"not an FLV stream: signature {bytes(buf[:3])!r}, expected b'FLV'")
        if len(buf) >= 4 and buf[3] != 1:
            raise FlvError(f"unsupported FLV version {buf[3]}, expected 1")
        if len(buf) < _FLV_HEADER_SIZE:
            return 0
        data_offset = int.from_bytes(buf[5:9], "big")
        if not _FLV_HEADER_SIZE <= data_offset <= 1024:
            raise FlvError(f"FLV header DataOffset {data_offset} out of range 9..1024")
        if len(buf) < data_offset + 4:
            return 0
        self.has_audio = bool(buf[4] & 0x04)
        self.has_video = bool(buf[4] & 0x01)
        self._header_done = True
        # PreviousTagSize0 should be 0; its value is not checked.
        return data_offset + 4


def _si24(data: bytes, pos: int) -> int:
    value = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
    return value - 0x1000000 if value & 0x800000 else value


def parse_video(payload: bytes) -> VideoPacket:
    """Parse a video tag body / RTMP video message (E.4.3.1, enhanced RTMP).

    :raises FlvError: truncated, a reserved frame type or packet type, or a
        codec we do not carry (the message names it).
    """
    if not payload:
        raise FlvError("empty video tag body")
    first = payload[0]
    if first & 0x80:
        return _parse_ex_video(payload, first)
    frame_type = first >> 4
    codec_id = first & 0x0F
    codec = _VIDEO_CODEC_IDS.get(codec_id)
    if codec is None:
        name = _VIDEO_CODEC_NAMES.get(codec_id, "reserved")
        raise FlvError(f"unsupported video codec id {codec_id} ({name})")
    if frame_type == _FRAME_COMMAND:
        if len(payload) < 2:
            raise FlvError("video command frame truncated: no command byte")
        return VideoPacket(codec, False, VideoKind.COMMAND, 0, payload[1:2])
    if not _FRAME_KEY <= frame_type <= _FRAME_GENERATED_KEY:
        raise FlvError(f"reserved video frame type {frame_type}")
    if len(payload) < 5:
        raise FlvError(f"{codec.value} video tag truncated: {len(payload)} bytes, the header needs 5")
    packet_type = payload[1]
    keyframe = frame_type in (_FRAME_KEY, _FRAME_GENERATED_KEY)
    if packet_type == 1:
        return VideoPacket(codec, keyframe, VideoKind.FRAME, _si24(payload, 2), payload[5:])
    if packet_type == 0:
        return VideoPacket(codec, keyframe, VideoKind.CONFIG, 0, payload[5:])
    if packet_type == 2:
        return VideoPacket(codec, keyframe, VideoKind.EOS, 0, b"")
    raise FlvError(f"unknown AVCPacketType {packet_type} for {codec.value}")


def _parse_ex_video(payload: bytes, first: int) -> VideoPacket:
    """The enhanced RTMP ExVideoTagHeader / ExVideoTagBody path."""
    frame_type = (first >> 4) & 0x07
    packet_type = first & 0x0F
    if frame_type == _FRAME_COMMAND and packet_type != _PT_METADATA:
        # No FourCC follows: just a UI8 VideoCommand.
        if len(payload) < 2:
            raise FlvError("enhanced video command frame truncated: no command byte")
        return VideoPacket(None, False, VideoKind.COMMAND, 0, payload[1:2])
    if packet_type >= 6:
        name = _EX_PACKET_TYPE_NAMES.get(packet_type, "reserved")
        raise FlvError(f"unsupported enhanced video packet type {packet_type} ({name})")
    if len(payload) < 5:
        raise FlvError(f"enhanced video tag truncated: {len(payload)} bytes, the header needs 5")
    fourcc = payload[1:5]
    codec = _FOURCC_CODECS.get(fourcc)
    if codec is None:
        raise FlvError(f"unsupported video FourCC {fourcc.decode('latin-1')!r}")
    if packet_type == 5:
        raise FlvError(
            f"enhanced video packet type 5 (MPEG2TSSequenceStart) is defined for av01 only, "
            f"got {fourcc.decode('latin-1')!r}"
        )
    if not _FRAME_KEY <= frame_type <= _FRAME_GENERATED_KEY and packet_type != _PT_METADATA:
        raise FlvError(f"reserved video frame type {frame_type}")
    keyframe = frame_type in (_FRAME_KEY, _FRAME_GENERATED_KEY)
    if packet_type == _PT_CODED_FRAMES:
        if len(payload) < 8:
            raise FlvError(f"enhanced {codec.value} CodedFrames truncated: {len(payload)} bytes, the header needs 8")
        return VideoPacket(codec, keyframe, VideoKind.FRAME, _si24(payload, 5), payload[8:])
    if packet_type == _PT_CODED_FRAMES_X:
        return VideoPacket(codec, keyframe, VideoKind.FRAME, 0, payload[5:])
    if packet_type == _PT_SEQUENCE_START:
        return VideoPacket(codec, keyframe, VideoKind.CONFIG, 0, payload[5:])
    if packet_type == _PT_SEQUENCE_END:
        return VideoPacket(codec, keyframe, VideoKind.EOS, 0, b"")
    # _PT_METADATA: FrameType is to be ignored.
    return VideoPacket(codec, False, VideoKind.METADATA, 0, payload[5:])


def build_video(codec: Codec, keyframe: bool, config: bool, cts: int, data: bytes) -> bytes:
    """Build a video tag body / RTMP video message.

    H.264 uses the legacy AVCVIDEOPACKET (CodecID 7).  H.265 uses the enhanced
    RTMP form with FourCC ``hvc1``: SequenceStart for the configuration
    record, CodedFrames (with SI24 CompositionTime) when ``cts`` is non-zero
    and CodedFramesX otherwise.  A configuration record is always marked as a
    key frame and sent with ``cts`` 0, as both specs require.

    :raises FlvError: ``cts`` outside the signed 24-bit range, or a
        non-video codec.
    """
    if config:
        frame_type = _FRAME_KEY
        cts = 0
    else:
        frame_type = _FRAME_KEY if keyframe else _FRAME_INTER
        if not _SI24_MIN <= cts <= _SI24_MAX:
            raise FlvError(f"composition time {cts} ms does not fit a signed 24-bit field")
    if codec is Codec.H264:
        return (
            _LEGACY_VIDEO.pack((frame_type << 4) | _CODEC_ID_AVC, ((0 if config else 1) << 24) | (cts & 0xFFFFFF))
            + data
        )
    if codec is Codec.H265:
        if config:
            return _EX_VIDEO.pack(0x80 | (frame_type << 4) | _PT_SEQUENCE_START, b"hvc1") + data
        if cts == 0:
            return _EX_VIDEO.pack(0x80 | (frame_type << 4) | _PT_CODED_FRAMES_X, b"hvc1") + data
        cts24 = cts & 0xFFFFFF
        return _EX_VIDEO_CTS.pack(0x80 | (frame_type << 4) | _PT_CODED_FRAMES, b"hvc1", cts24 >> 8, cts24 & 0xFF) + data
    raise FlvError(f"{codec.value} is not a video codec")


def build_video_end(codec: Codec) -> bytes:
    """An end-of-sequence video body (AVCPacketType 2 / enhanced SequenceEnd)."""
    if codec is Codec.H264:
        return _LEGACY_VIDEO.pack((_FRAME_KEY << 4) | _CODEC_ID_AVC, _PT_SEQUENCE_END << 24)
    if codec is Codec.H265:
        return _EX_VIDEO.pack(0x80 | (_FRAME_KEY << 4) | _PT_SEQUENCE_END, _CODEC_FOURCCS[codec])
    raise FlvError(f"{codec.value} is not a video codec")


def parse_audio(payload: bytes) -> AudioPacket:
    """Parse an audio tag body / RTMP audio message (E.4.2.1, E.4.2.2).

    :raises FlvError: not AAC (the message names the SoundFormat), a reserved
        AACPacketType, or truncation.
    """
    if not payload:
        raise FlvError("empty audio tag body")
    sound_format = payload[0] >> 4
    if sound_format != _SOUND_FORMAT_AAC:
        name = _SOUND_FORMAT_NAMES.get(sound_format, "reserved")
        raise FlvError(f"unsupported audio format {sound_format} ({name})")
    if len(payload) < 2:
        raise FlvError("AAC audio tag truncated: no AACPacketType")
    packet_type = payload[1]
    if packet_type > 1:
        raise FlvError(f"unknown AACPacketType {packet_type}")
    return AudioPacket(Codec.AAC, packet_type == 0, payload[2:])


def build_audio(config: bool, data: bytes) -> bytes:
    """Build an AAC audio tag body with the 0xAF header byte (E.4.2.1).

    ``data`` is the AudioSpecificConfig when ``config`` is true, otherwise one
    raw AAC access unit.  The header flags are fixed for AAC (44 kHz,
    16-bit, stereo) whatever the stream is; players read the real values from
    the AudioSpecificConfig.
    """
    return (_AAC_CONFIG_HEADER if config else _AAC_RAW_HEADER) + data


def script_tag_payload(name: str, values: Mapping[str, Any]) -> bytes:
    """A script data tag body: the AMF0 string ``name`` then an ECMA array.

    E.4.4.1 SCRIPTDATA; ``onMetaData`` is conventionally an ECMA array, which
    some players insist on.
    """
    return encode(name, EcmaArray(values))
