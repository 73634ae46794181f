"""FLV media bodies (RTMP audio/video messages, HTTP-FLV tags) → tracks and frames (sans-IO).

An RTMP audio/video message payload is byte for byte an FLV tag body, so one
function per media type turns either into the project's vocabulary: a
sequence header becomes a :class:`~mediasrv.core.frames.Track` (with the
fields parsed from its decoder configuration), a coded frame becomes a
:class:`~mediasrv.core.frames.MediaFrame`.  The RTMP server's publisher path
and the relay clients (RTMP and HTTP-FLV pulls) share these, so a stream
pulled from a remote server is built exactly like a published one.

When the body already is what :func:`mediasrv.core.flvmux.frame_body` would
build for the frame, it is kept in ``frame.muxed`` so RTMP and FLV players
reuse it instead of building it again.
"""

from __future__ import annotations

from mediasrv.codec import flv
from mediasrv.core import flvmux
from mediasrv.core.frames import Codec, MediaFrame, Track

__all__ = ["demux_audio", "demux_video"]


def demux_video(timestamp: int, payload: bytes) -> Track | MediaFrame | None:
    """A video body at ``timestamp`` (ms): its track, its frame, or ``None``
    for what carries no media (command frames, end of sequence, metadata).

    :raises flv.FlvError: a malformed body or a codec we do not carry.
    """
    pkt = flv.parse_video(payload)
    codec = pkt.codec
    if codec is None:  # an enhanced command frame
        return None
    if pkt.kind == flv.VideoKind.CONFIG:
        return flvmux.track_from_config(codec, pkt.data)
    if pkt.kind != flv.VideoKind.FRAME:
        return None
    frame = MediaFrame(codec, timestamp, timestamp + pkt.cts, pkt.keyframe, pkt.data)
    # flvmux builds H.264 in the legacy form and H.265 in the enhanced form
    if codec is Codec.H264 and not payload[0] & 0x80 or codec is Codec.H265 and payload[0] & 0x80:
        frame.muxed[flvmux.FLV_BODY] = payload
    return frame


def demux_audio(timestamp: int, payload: bytes) -> Track | MediaFrame:
    """An audio body at ``timestamp`` (ms): the AAC track or one AAC frame.

    :raises flv.FlvError: a malformed body or an audio codec other than AAC.
    """
    pkt = flv.parse_audio(payload)
    if pkt.config:
        return flvmux.track_from_config(Codec.AAC, pkt.data)
    frame = MediaFrame(Codec.AAC, timestamp, timestamp, True, pkt.data)
    frame.muxed[flvmux.FLV_BODY] = payload
    return frame
