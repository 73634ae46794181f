"""FLV-family media from a pulled source: RTMP messages and HTTP-FLV tags alike (sans-IO).

RTMP audio (8), video (9) and AMF0 data (18) messages carry exactly FLV's
audio, video and script tag bodies under the same type numbers, so both pull
clients hand them to one :class:`FlvBodyDemuxer`.  The bodies become tracks
and frames through :mod:`mediasrv.rtmp.flvdemux` (the same functions as the
RTMP publisher path); ``onMetaData`` becomes :class:`Metadata`.

Unlike a publisher, which is refused when it sends a codec we cannot carry, a
pulled source keeps what we can carry: a track whose first body is not
H.264/H.265/AAC (MP3 audio next to H.264 video, say) is skipped with one
:class:`Notice`; a track that decoded before and then breaks is garbage, and
raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mediasrv.codec import amf0, flv
from mediasrv.core.frames import MediaFrame, Track, TrackKind
from mediasrv.rtmp.flvdemux import demux_audio, demux_video

__all__ = ["FlvBodyDemuxer", "Metadata", "Notice"]

AUDIO = 8
VIDEO = 9
SCRIPT = 18


@dataclass(frozen=True, slots=True)
class Metadata:
    """The source's ``onMetaData``."""

    values: dict[str, Any]

    def kinds(self) -> set[TrackKind]:
        """The track kinds its codec ids announce (empty when it names no codec: then it says nothing)."""
        kinds = set()
        if "videocodecid" in self.values:
            kinds.add(TrackKind.VIDEO)
        if "audiocodecid" in self.values:
            kinds.add(TrackKind.AUDIO)
        return kinds


@dataclass(frozen=True, slots=True)
class Notice:
    """Worth one log line, not fatal (a track skipped)."""

    text: str


FlvItem = Track | MediaFrame | Metadata | Notice


def metadata_from_script(name: str, args: list[Any]) -> Metadata | None:
    """``onMetaData`` (possibly wrapped in ``@setDataFrame``) → :class:`Metadata`; other script data → None."""
    if name == "@setDataFrame" and args:
        name, args = str(args[0]), list(args[1:])
    if name == "onMetaData" and args and isinstance(args[0], dict):
        return Metadata({str(k): v for k, v in args[0].items()})
    return None


class FlvBodyDemuxer:
    def __init__(self) -> None:
        self._skipped: set[int] = set()
        self._decoded: set[int] = set()

    def media(self, type_id: int, timestamp: int, payload: bytes) -> FlvItem | None:
        """An audio or video body.

        :raises flv.FlvError: garbage in a track that decoded before.
        """
        if type_id in self._skipped or not payload:
            return None
        try:
            item = demux_video(timestamp, payload) if type_id == VIDEO else demux_audio(timestamp, payload)
        except flv.FlvError as e:
            if type_id in self._decoded:
                raise
            self._skipped.add(type_id)
            return Notice(f"{'video' if type_id == VIDEO else 'audio'} skipped: {e}")
        if item is not None:
            self._decoded.add(type_id)
        return item

    def script(self, payload: bytes) -> Metadata | None:
        """An FLV script tag body (AMF0 name and values).

        :raises amf0.AmfError: a body that is not AMF0.
        """
        values = amf0.decode_all(payload)
        if not values or not isinstance(values[0], str):
            return None
        return metadata_from_script(values[0], values[1:])
