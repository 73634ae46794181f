"""The protocol-neutral media model: tracks and frames.

Every ingest protocol turns its packets into :class:`MediaFrame` objects and
every output protocol muxes them.  The canonical payload forms are:

* video (H.264 / H.265): NAL units, each prefixed by a 4-byte big-endian length
  ("AVCC" / "HVCC" layout, the same as FLV and MP4 carry).
* audio (AAC): one raw access unit, no ADTS header.

Timestamps are integer milliseconds: ``dts`` is the decode time, ``pts`` the
presentation time (``pts - dts`` is FLV's composition time offset).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class TrackKind(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"


class Codec(enum.Enum):
    H264 = "H264"
    H265 = "H265"
    AAC = "AAC"

    @property
    def kind(self) -> TrackKind:
        return TrackKind.AUDIO if self is Codec.AAC else TrackKind.VIDEO


@dataclass(slots=True)
class Track:
    """One elementary stream of a live stream.

    ``config`` is the codec's decoder configuration as FLV/MP4 carry it:
    AVCDecoderConfigurationRecord, HEVCDecoderConfigurationRecord or the AAC
    AudioSpecificConfig.  The remaining fields are parsed from it for the APIs
    and the SDP (0 when unknown).
    """

    codec: Codec
    config: bytes = b""
    width: int = 0
    height: int = 0
    fps: float = 0.0
    sample_rate: int = 0
    channels: int = 0

    @property
    def kind(self) -> TrackKind:
        return self.codec.kind


@dataclass(slots=True, eq=False)
class MediaFrame:
    """One access unit of one track.

    ``muxed`` caches the frame's bytes per output format (for example the FLV
    tag, or the RTMP chunks), filled the first time a player of that format
    needs them and then shared by every player: each frame is muxed once per
    format, never once per player.
    """

    codec: Codec
    dts: int
    pts: int
    keyframe: bool
    payload: bytes
    muxed: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> TrackKind:
        return self.codec.kind

    @property
    def cts(self) -> int:
        """Composition time offset in ms (FLV's CompositionTime)."""
        return self.pts - self.dts
