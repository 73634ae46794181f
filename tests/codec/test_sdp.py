"""SDP parse/serialize (codec/sdp.py)."""

from __future__ import annotations

import pytest

from mediasrv.codec.sdp import MediaDescription, SdpError, SessionDescription, parse_fmtp, parse_sdp

# What ffmpeg 5.1 sends in ANNOUNCE for lavfi testsrc2 + sine through libx264 / aac.
FFMPEG_ANNOUNCE = (
    "v=0\r\n"
    "o=- 0 0 IN IP4 127.0.0.1\r\n"
    "s=No Name\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "a=tool:libavformat 59.27.100\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "b=AS:1500\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAH6zZQFAFuhAAAAMAEAAAAwMo8YMZYA==,aOvjyyLA; "
    "profile-level-id=64001F\r\n"
    "a=control:streamid=0\r\n"
    "m=audio 0 RTP/AVP 97\r\n"
    "b=AS:64\r\n"
    "a=rtpmap:97 MPEG4-GENERIC/44100/1\r\n"
    "a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=120856E500\r\n"
    "a=control:streamid=1\r\n"
)


def test_parse_ffmpeg_announce() -> None:
    sd = parse_sdp(FFMPEG_ANNOUNCE.encode())
    assert sd.name == "No Name" and sd.connection == "IN IP4 127.0.0.1"
    assert sd.attribute("tool") == "libavformat 59.27.100"
    video, audio = sd.media
    assert (video.media, video.port, video.proto, video.formats) == ("video", 0, "RTP/AVP", ["96"])
    assert video.rtpmap(96) == ("H264", 90000, 0)
    assert video.fmtp(96)["sprop-parameter-sets"].startswith("Z2QAH6zZ")
    assert video.fmtp("96")["profile-level-id"] == "64001F"
    assert video.control == "streamid=0"
    assert ("b", "AS:1500") in video.other
    assert audio.rtpmap("97") == ("MPEG4-GENERIC", 44100, 1)
    assert audio.fmtp(97)["config"] == "120856E500"
    assert audio.fmtp(98) == {}


def test_serialize_round_trip() -> None:
    sd = SessionDescription(origin="- 1 1 IN IP4 10.0.0.1", name="x", attributes=[("control", "*"), ("recvonly", "")])
    m = MediaDescription("video", 0, "RTP/AVP", ["96"], [("rtpmap", "96 H264/90000"), ("control", "trackID=0")])
    sd.media.append(m)
    text = sd.serialize()
    assert text.startswith("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=x\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n")
    assert "a=recvonly\r\n" in text and text.endswith("a=control:trackID=0\r\n")
    again = parse_sdp(text)
    assert again.media[0].rtpmap(96) == ("H264", 90000, 0) and again.control == "*"


def test_lenient_line_endings_and_fmtp_spacing() -> None:
    sd = parse_sdp("v=0\nm=audio 5000/2 RTP/AVP 0 8\na=sendonly\n")
    assert sd.media[0].port == 5000 and sd.media[0].formats == ["0", "8"]
    assert parse_fmtp(" a=1 ;B = two;; flag") == {"a": "1", "b": "two", "flag": ""}


@pytest.mark.parametrize("text, message", [
    ("m=video 0 RTP/AVP 96\n", "no v= line"),
    ("v=0\nm=video RTP/AVP\n", "malformed media line"),
    ("v=0\nm=video x RTP/AVP 96\n", "malformed port"),
    ("v=0\nthis is not sdp\n", "not an SDP line"),
    ("v=0\nm=video 0 RTP/AVP 96\na=rtpmap:96 H264/abc\n", None),
])
def test_bad_sdp(text: str, message: str | None) -> None:
    if message is None:
        with pytest.raises(SdpError, match="bad rtpmap"):
            parse_sdp(text).media[0].rtpmap(96)
        return
    with pytest.raises(SdpError, match=message):
        parse_sdp(text)


def test_oversized_sdp_is_refused() -> None:
    with pytest.raises(SdpError, match="exceeds"):
        parse_sdp(b"v=0\n" + b"a=x\n" * 20000)
