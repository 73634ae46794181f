"""Tracks ↔ SDP media sections (pure).

DESCRIBE answers with one ``m=`` section per track of the stream:

* H.264: ``H264/90000``, ``packetization-mode=1``, ``profile-level-id`` and
  ``sprop-parameter-sets`` (RFC 6184 8.1) from the avcC;
* H.265: ``H265/90000`` with ``sprop-vps/sps/pps`` (RFC 7798 7.1) from the hvcC;
* AAC: ``MPEG4-GENERIC/<rate>/<channels>`` ``mode=AAC-hbr`` with ``config``
  (RFC 3640 4.1) from the AudioSpecificConfig.

ANNOUNCE goes the other way: the publisher's SDP becomes :class:`AnnouncedMedia`
with a :class:`~mediasrv.core.frames.Track` when the codec configuration is
in the SDP (it may also arrive in band, see :mod:`mediasrv.rtsp.ingest`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from mediasrv.codec import aac, h264, h265
from mediasrv.codec.bits import CodecError
from mediasrv.codec.sdp import MediaDescription, SdpError, SessionDescription
from mediasrv.core import flvmux
from mediasrv.core.frames import Codec, Track, TrackKind

VIDEO_PAYLOAD_TYPE = 96
AUDIO_PAYLOAD_TYPE = 97
VIDEO_CLOCK_RATE = 90000

# Our control names: ZLMediaKit's, which clients and NVRs are used to.
CONTROL = {TrackKind.VIDEO: "trackID=0", TrackKind.AUDIO: "trackID=1"}


def clock_rate(track: Track) -> int:
    if track.kind is TrackKind.VIDEO:
        return VIDEO_CLOCK_RATE
    if track.sample_rate:
        return track.sample_rate
    try:
        return aac.parse_asc(track.config).sample_rate
    except CodecError:
        return 44100


def payload_type(kind: TrackKind) -> int:
    return VIDEO_PAYLOAD_TYPE if kind is TrackKind.VIDEO else AUDIO_PAYLOAD_TYPE


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def media_for_track(track: Track, control: str) -> MediaDescription:
    """The ``m=`` section that describes ``track``."""
    pt = payload_type(track.kind)
    if track.codec is Codec.H264:
        m = MediaDescription("video", 0, "RTP/AVP", [str(pt)])
        fmtp = ["packetization-mode=1"]
        try:
            cfg = h264.parse_avc_config(track.config)
            if cfg.sps:
                fmtp.append("profile-level-id=" + cfg.sps[0][1:4].hex().upper())
                fmtp.append("sprop-parameter-sets=" + ",".join(_b64(n) for n in cfg.sps + cfg.pps))
        except CodecError:
            pass
        m.attributes += [("rtpmap", f"{pt} H264/{VIDEO_CLOCK_RATE}"), ("fmtp", f"{pt} " + "; ".join(fmtp))]
    elif track.codec is Codec.H265:
        m = MediaDescription("video", 0, "RTP/AVP", [str(pt)])
        m.attributes.append(("rtpmap", f"{pt} H265/{VIDEO_CLOCK_RATE}"))
        try:
            hcfg = h265.parse_hevc_config(track.config)
            parts = []
            for name, nals in (("vps", hcfg.vps), ("sps", hcfg.sps), ("pps", hcfg.pps)):
                if nals:
                    parts.append(f"sprop-{name}=" + ",".join(_b64(n) for n in nals))
            if parts:
                m.attributes.append(("fmtp", f"{pt} " + "; ".join(parts)))
        except CodecError:
            pass
    else:
        rate = clock_rate(track)
        channels = track.channels
        if not channels:
            try:
                channels = aac.parse_asc(track.config).channels
            except CodecError:
                channels = 2
        m = MediaDescription("audio", 0, "RTP/AVP", [str(pt)])
        m.attributes += [
            ("rtpmap", f"{pt} MPEG4-GENERIC/{rate}/{channels or 2}"),
            ("fmtp", f"{pt} streamtype=5; profile-level-id=1; mode=AAC-hbr; sizelength=13; indexlength=3; "
                     f"indexdeltalength=3; config={track.config.hex().upper()}"),
        ]
    if track.kind is TrackKind.VIDEO and track.fps:
        m.attributes.append(("framerate", f"{track.fps:g}"))
    m.attributes.append(("control", control))
    return m


def describe(tracks: dict[TrackKind, Track], server_ip: str, session_id: int, name: str = "mediasrv") -> str:
    """The SDP body of a DESCRIBE reply for a live stream."""
    family = "IP6" if ":" in server_ip else "IP4"
    sd = SessionDescription(
        origin=f"- {session_id} 1 IN {family} {server_ip or '127.0.0.1'}",
        name=name,
        connection=f"IN {family} {'::' if family == 'IP6' else '0.0.0.0'}",
        timing="0 0",
        attributes=[("tool", "mediasrv"), ("range", "npt=now-"), ("control", "*")],
    )
    for kind in (TrackKind.VIDEO, TrackKind.AUDIO):
        track = tracks.get(kind)
        if track is not None:
            sd.media.append(media_for_track(track, CONTROL[kind]))
    return sd.serialize()


# ---------------------------------------------------------------------------
# ANNOUNCE
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class AnnouncedMedia:
    """One media section of a publisher's SDP."""

    index: int
    kind: TrackKind | None  # None: a codec we do not ingest
    codec: Codec | None
    payload_type: int
    clock_rate: int
    control: str
    encoding: str
    fmtp: dict[str, str] = field(default_factory=dict)
    track: Track | None = None  # when the SDP carries the codec configuration

    @property
    def supported(self) -> bool:
        return self.codec is not None


def _b64decode(value: str) -> bytes:
    value = value.strip()
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise SdpError(f"bad base64 parameter set {value[:30]!r}") from None


def _h264_track(fmtp: dict[str, str]) -> Track | None:
    sprop = fmtp.get("sprop-parameter-sets", "")
    if not sprop:
        return None
    nals = [_b64decode(p) for p in sprop.split(",") if p.strip()]
    sps = [n for n in nals if n and n[0] & 0x1F == h264.NAL_SPS]
    pps = [n for n in nals if n and n[0] & 0x1F == h264.NAL_PPS]
    if not sps or not pps:
        return None
    try:
        return flvmux.track_from_config(Codec.H264, h264.build_avc_config(sps, pps))
    except CodecError:
        return None


def _h265_track(fmtp: dict[str, str]) -> Track | None:
    sets: dict[str, list[bytes]] = {}
    for name in ("vps", "sps", "pps"):
        value = fmtp.get(f"sprop-{name}", "")
        sets[name] = [_b64decode(p) for p in value.split(",") if p.strip()]
    if not sets["sps"] or not sets["pps"]:
        return None
    try:
        return flvmux.track_from_config(Codec.H265, h265.build_hevc_config(sets["vps"], sets["sps"], sets["pps"]))
    except CodecError:
        return None


def _aac_track(fmtp: dict[str, str]) -> Track | None:
    config = fmtp.get("config", "")
    if not config:
        return None
    try:
        asc = bytes.fromhex(config)
    except ValueError:
        raise SdpError(f"bad AAC config {config[:30]!r}") from None
    return flvmux.track_from_config(Codec.AAC, asc)


def announced_media(sd: SessionDescription) -> list[AnnouncedMedia]:
    """Interpret a publisher's SDP.

    :raises SdpError: a media section we should understand but cannot (bad
        base64, a non-AAC ``mpeg4-generic`` mode...).
    """
    out: list[AnnouncedMedia] = []
    for index, m in enumerate(sd.media):
        pt_text = m.formats[0] if m.formats else ""
        pt = int(pt_text) if pt_text.isdigit() else -1
        rtpmap = m.rtpmap(pt_text) if pt_text else None
        encoding, rate, _channels = rtpmap if rtpmap is not None else ("", 0, 0)
        enc = encoding.upper()
        fmtp = m.fmtp(pt_text) if pt_text else {}
        control = m.control or f"streamid={index}"
        item = AnnouncedMedia(index, None, None, pt, rate, control, encoding, fmtp)
        if m.media == "video" and enc == "H264":
            item.kind, item.codec = TrackKind.VIDEO, Codec.H264
            item.clock_rate = rate or VIDEO_CLOCK_RATE
            if fmtp.get("packetization-mode", "0") not in ("0", "1"):
                raise SdpError("H.264 packetization-mode 2 (interleaved) is not supported")
            item.track = _h264_track(fmtp)
        elif m.media == "video" and enc in ("H265", "HEVC"):
            item.kind, item.codec = TrackKind.VIDEO, Codec.H265
            item.clock_rate = rate or VIDEO_CLOCK_RATE
            item.track = _h265_track(fmtp)
        elif m.media == "audio" and enc == "MPEG4-GENERIC":
            mode = fmtp.get("mode", "").lower()
            if mode not in ("aac-hbr", "aac-lbr"):
                raise SdpError(f"mpeg4-generic mode {mode!r} is not AAC")
            item.kind, item.codec = TrackKind.AUDIO, Codec.AAC
            item.track = _aac_track(fmtp)
            if not rate and item.track is not None:
                rate = item.track.sample_rate
            item.clock_rate = rate or 44100
        out.append(item)
    # one track per kind: a second video (or audio) section is not ingested
    seen: set[TrackKind] = set()
    for item in out:
        if item.kind is not None:
            if item.kind in seen:
                item.kind, item.codec = None, None
            else:
                seen.add(item.kind)
    return out
