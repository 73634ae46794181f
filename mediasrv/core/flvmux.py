"""FLV tag bodies for frames and tracks, built once and shared.

An FLV tag body is byte-for-byte an RTMP audio/video message payload, so the
RTMP and the HTTP-FLV/WS-FLV players both start from :func:`frame_body`.
The result is cached in ``frame.muxed`` so every player of every FLV-family
format shares one build per frame.
"""

from __future__ import annotations

from typing import Any

from mediasrv.codec import aac, flv, h264, h265
from mediasrv.codec.amf0 import EcmaArray, encode
from mediasrv.core.frames import Codec, MediaFrame, Track, TrackKind
from mediasrv.core.stream import Stream

FLV_BODY = "flv"
FLV_TAG = "flvtag"

# FLV codec ids reported in onMetaData (FLV spec Annex E.4.2.1; 12 is the
# CDN-era HEVC id that players such as flv.js forks understand).
_VIDEO_CODEC_ID = {Codec.H264: 7, Codec.H265: 12}
_AUDIO_CODEC_ID = {Codec.AAC: 10}


def frame_body(frame: MediaFrame) -> bytes:
    body: bytes | None = frame.muxed.get(FLV_BODY)
    if body is None:
        if frame.kind is TrackKind.VIDEO:
            body = flv.build_video(frame.codec, frame.keyframe, False, frame.cts, frame.payload)
        else:
            body = flv.build_audio(False, frame.payload)
        frame.muxed[FLV_BODY] = body
    return body


def frame_tag(frame: MediaFrame) -> bytes:
    """The complete FLV tag (header, body, PreviousTagSize) for HTTP-FLV."""
    tag: bytes | None = frame.muxed.get(FLV_TAG)
    if tag is None:
        tag_type = flv.TAG_VIDEO if frame.kind is TrackKind.VIDEO else flv.TAG_AUDIO
        tag = flv.encode_tag(tag_type, frame.dts & 0xFFFFFFFF, frame_body(frame))
        frame.muxed[FLV_TAG] = tag
    return tag


def config_body(track: Track) -> bytes:
    if track.kind is TrackKind.VIDEO:
        return flv.build_video(track.codec, True, True, 0, track.config)
    return flv.build_audio(True, track.config)


def track_from_config(codec: Codec, config: bytes) -> Track:
    """A Track with width/height or rate/channels parsed from the decoder config.

    A config we cannot parse still makes a track (players get it verbatim);
    only the descriptive fields stay 0.
    """
    track = Track(codec, config)
    try:
        if codec is Codec.H264:
            avc = h264.parse_avc_config(config)
            if avc.sps:
                info = h264.parse_sps(avc.sps[0])
                track.width, track.height, track.fps = info.width, info.height, info.fps
        elif codec is Codec.H265:
            hevc = h265.parse_hevc_config(config)
            if hevc.sps:
                hinfo = h265.parse_sps(hevc.sps[0])
                track.width, track.height = hinfo.width, hinfo.height
        else:
            asc = aac.parse_asc(config)
            track.sample_rate, track.channels = asc.sample_rate, asc.channels
    except ValueError:
        pass
    return track


def metadata_for(stream: Stream) -> dict[str, Any]:
    """onMetaData for players: the publisher's, or one built from the tracks."""
    if stream.metadata:
        return stream.metadata
    md: dict[str, Any] = {"duration": 0.0}
    video, audio = stream.video, stream.audio
    if video is not None:
        md.update(videocodecid=float(_VIDEO_CODEC_ID[video.codec]), width=float(video.width),
                  height=float(video.height))
        if video.fps:
            md["framerate"] = float(video.fps)
    if audio is not None:
        md.update(audiocodecid=float(_AUDIO_CODEC_ID[audio.codec]),
                  audiosamplerate=float(audio.sample_rate), stereo=audio.channels > 1)
    return md


def metadata_body(stream: Stream) -> bytes:
    """The AMF0 ``onMetaData`` script-data body (FLV script tag / RTMP data message)."""
    return encode("onMetaData", EcmaArray(metadata_for(stream)))


def header_tags(stream: Stream) -> bytes:
    """FLV file header, onMetaData and the codec configs: what an HTTP-FLV player needs first."""
    parts = [flv.flv_header(stream.audio is not None, stream.video is not None),
             flv.encode_tag(flv.TAG_SCRIPT, 0, metadata_body(stream))]
    parts += [flv.encode_tag(flv.TAG_VIDEO if t.kind is TrackKind.VIDEO else flv.TAG_AUDIO, 0, config_body(t))
              for t in (stream.video, stream.audio) if t is not None]
    return b"".join(parts)
