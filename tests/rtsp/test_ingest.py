"""Publisher side: SDP → tracks (rtsp/media.py), RTP → MediaFrames (rtsp/ingest.py)."""

from __future__ import annotations

import base64

import pytest

from mediasrv.codec import h264, h265, rtp
from mediasrv.codec.sdp import SdpError, parse_sdp
from mediasrv.core.frames import Codec, MediaFrame, Track, TrackKind
from mediasrv.rtsp import media
from mediasrv.rtsp.ingest import DtsGenerator, RtspIngest
from mediasrv.rtsp.muxer import TrackMuxer
from tests.codec.test_sdp import FFMPEG_ANNOUNCE
from tests.rtsp.support import AUDIO_TRACK, FRAMES, VIDEO_TRACK, fresh

# -- DTS from PTS ----------------------------------------------------------------------------------------


def run(gen: DtsGenerator[int], ptss: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in ptss:
        out += gen.push(p, p)
    return out


def test_dts_without_reordering_is_pts() -> None:
    assert run(DtsGenerator(0), [0, 40, 80, 120]) == [(0, 0), (40, 40), (80, 80), (120, 120)]


def test_dts_with_b_pyramid_is_exact_when_the_depth_is_known() -> None:
    # decode order of x264's default GOP (b-pyramid), pts in frames of 40 ms
    order = [2, 4, 3, 6, 5, 8, 7, 10, 9, 13, 11, 12]
    out = run(DtsGenerator(2), [p * 40 for p in order])
    assert [pts for _, pts in out] == [p * 40 for p in order]
    dts = [d for d, _ in out]
    assert dts[3:] == [p * 40 for p in sorted(order)][1 : len(order) - 2]
    assert all(d <= p for d, p in out) and dts == sorted(set(dts))


def test_dts_learns_a_deeper_reordering() -> None:
    out = run(DtsGenerator(0), [0, 120, 40, 80, 240, 160, 200])
    assert all(a < b for (a, _), (b, _) in zip(out, out[1:], strict=False))
    assert out[-2:] == [(160, 160), (200, 200)]


# -- SDP → tracks ------------------------------------------------------------------------------------------


def test_ffmpeg_announce_gives_tracks_with_configs() -> None:
    video, audio = media.announced_media(parse_sdp(FFMPEG_ANNOUNCE))
    assert (video.kind, video.codec, video.payload_type, video.clock_rate, video.control) == (
        TrackKind.VIDEO, Codec.H264, 96, 90000, "streamid=0")
    assert video.track is not None and (video.track.width, video.track.height) == (1280, 720)
    assert audio.codec is Codec.AAC and audio.clock_rate == 44100 and audio.track is not None
    assert audio.track.config == bytes.fromhex("120856E500") and audio.track.sample_rate == 44100


def test_our_describe_sdp_round_trips() -> None:
    sdp = media.describe({TrackKind.VIDEO: VIDEO_TRACK, TrackKind.AUDIO: AUDIO_TRACK}, "127.0.0.1", 1)
    video, audio = media.announced_media(parse_sdp(sdp))
    assert video.track == VIDEO_TRACK and audio.track == AUDIO_TRACK
    assert video.control == "trackID=0" and audio.control == "trackID=1"


def test_h265_sdp_round_trips() -> None:
    from tests.rtmp.test_protocol import HVCC

    track = Track(Codec.H265, HVCC)
    m = media.media_for_track(track, "trackID=0")
    fmtp = m.fmtp(96)
    cfg = h265.parse_hevc_config(HVCC)
    assert base64.b64decode(fmtp["sprop-vps"]) == cfg.vps[0] and base64.b64decode(fmtp["sprop-pps"]) == cfg.pps[0]
    sd = parse_sdp("v=0\r\n" + "\r\n".join(m.lines()) + "\r\n")
    (item,) = media.announced_media(sd)
    assert item.codec is Codec.H265 and item.track is not None
    assert h265.parse_hevc_config(item.track.config).sps == cfg.sps


def test_unsupported_and_duplicate_media_are_not_ingested() -> None:
    sd = parse_sdp("v=0\r\nm=audio 0 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
                   "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                   "m=video 0 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n")
    pcmu, first, second = media.announced_media(sd)
    assert not pcmu.supported and first.supported and not second.supported
    assert first.track is None  # no sprop-parameter-sets: the configuration will come in band
    assert first.control == "streamid=1"


@pytest.mark.parametrize("lines, message", [
    ("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=2", "interleaved"),
    ("m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000\r\na=fmtp:97 mode=CELP-cbr", "is not AAC"),
    ("m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000\r\na=fmtp:97 mode=AAC-hbr;config=zz", "bad AAC"),
])
def test_bad_announced_media(lines: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        media.announced_media(parse_sdp("v=0\r\n" + lines + "\r\n"))


# -- RTP → frames ----------------------------------------------------------------------------------------


def announced() -> list[media.AnnouncedMedia]:
    sdp = media.describe({TrackKind.VIDEO: VIDEO_TRACK, TrackKind.AUDIO: AUDIO_TRACK}, "127.0.0.1", 1)
    return media.announced_media(parse_sdp(sdp))


def packets(frames: list[MediaFrame]) -> tuple[list[tuple[int, bytes]], dict[TrackKind, TrackMuxer]]:
    muxers = {TrackKind.VIDEO: TrackMuxer(VIDEO_TRACK), TrackKind.AUDIO: TrackMuxer(AUDIO_TRACK)}
    out = []
    for f in frames:
        index = 0 if f.kind is TrackKind.VIDEO else 1
        out += [(index, p) for p in muxers[f.kind].packetize(fresh(f), VIDEO_TRACK).packets]
    return out, muxers


def test_sender_reports_align_the_tracks() -> None:
    ingest = RtspIngest(announced())
    vm, am = TrackMuxer(VIDEO_TRACK), TrackMuxer(AUDIO_TRACK)
    # both tracks' SRs say: media time 0 ms is at unix time 1000.0
    ingest.rtcp(0, rtp.build_sender_report(vm.ssrc, rtp.ntp_from_unix(1000.0), vm.rtp_time(0), 0, 0))
    ingest.rtcp(1, rtp.build_sender_report(am.ssrc, rtp.ntp_from_unix(1000.0), am.rtp_time(0), 0, 0))
    out: list[Track | MediaFrame] = []
    for p in am.packetize(MediaFrame(Codec.AAC, 500, 500, True, b"\x21" * 20), None).packets:
        out += ingest.rtp(1, p, now=5.0)  # the session's origin: media time 500 ms
    videos = [fresh(f, 1000) for f in FRAMES[:20] if f.codec is Codec.H264][:4]
    for i, v in enumerate(videos):
        for p in vm.packetize(v, VIDEO_TRACK).packets:
            out += ingest.rtp(0, p, now=99.0 + i)  # arrival times do not matter once SRs are known
    frames = [e for e in out if isinstance(e, MediaFrame)]
    assert frames[0].codec is Codec.AAC and frames[0].pts == 0
    got = [f.pts for f in frames if f.codec is Codec.H264]
    assert got == [v.pts - 500 for v in videos][: len(got)] and len(got) >= 2


def test_without_sender_reports_arrival_anchors_each_track() -> None:
    ingest = RtspIngest(announced())
    pkts, _ = packets(FRAMES[:40])
    out: list[Track | MediaFrame] = []
    for index, p in pkts:
        out += ingest.rtp(index, p, now=10.0)
    frames = [e for e in out if isinstance(e, MediaFrame)]
    video = [f for f in frames if f.codec is Codec.H264]
    audio = [f for f in frames if f.codec is Codec.AAC]
    sent_video = [f for f in FRAMES[:40] if f.codec is Codec.H264]
    assert [f.pts for f in video] == [f.pts - sent_video[0].pts for f in sent_video][: len(video)]
    assert audio[0].pts == 0 and all(b.pts - a.pts in (23, 24) for a, b in zip(audio, audio[1:], strict=False))


def test_in_band_parameter_sets_make_the_track() -> None:
    sd = parse_sdp("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n")
    ingest = RtspIngest(media.announced_media(sd))
    assert ingest.initial_tracks() == []
    pkts, _ = packets([f for f in FRAMES[:20] if f.codec is Codec.H264])
    out: list[Track | MediaFrame] = []
    for _, p in pkts:
        out += ingest.rtp(0, p, now=0.0)
    assert isinstance(out[0], Track) and out[0].config == h264.build_avc_config(
        h264.parse_avc_config(VIDEO_TRACK.config).sps, h264.parse_avc_config(VIDEO_TRACK.config).pps)
    assert isinstance(out[1], MediaFrame) and out[1].keyframe


def test_audio_waits_for_the_video_configuration_then_gives_up() -> None:
    sd = parse_sdp("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                   "m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n"
                   f"a=fmtp:97 mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config="
                   f"{AUDIO_TRACK.config.hex()}\r\n")
    ingest = RtspIngest(media.announced_media(sd))
    am = TrackMuxer(AUDIO_TRACK)
    out: list[Track | MediaFrame] = []
    for i in range(300):
        for p in am.packetize(MediaFrame(Codec.AAC, i * 23, i * 23, True, b"\x21\x10"), None).packets:
            out += ingest.rtp(1, p, now=0.0)
    assert 0 < len(out) < 60  # dropped while waiting, then published alone


def test_garbage_rtp_raises() -> None:
    ingest = RtspIngest(announced())
    with pytest.raises(rtp.RtpError):
        ingest.rtp(0, b"\x00" * 20, now=0.0)
    with pytest.raises(rtp.RtpError):
        ingest.rtcp(0, b"\x80\xc8\x00\x06")
