"""Relay URLs: the schemes allowed, the FFmpeg split of RTMP URLs, password masking."""

from __future__ import annotations

import pytest

from mediasrv.relay.errors import UnsupportedUrl
from mediasrv.relay.url import RelayUrl, masked_url


@pytest.mark.parametrize(("url", "scheme", "port"), [
    ("rtmp://h/live/s", "rtmp", 1935), ("rtmps://h/live/s", "rtmps", 443), ("rtsp://h/cam", "rtsp", 554),
    ("rtsps://h/cam", "rtsps", 322), ("http://h/live/s.flv", "http", 80), ("https://h/live/s.flv", "https", 443),
    ("RTSP://H:8554/cam", "rtsp", 8554),
])
def test_the_six_schemes_with_default_ports(url: str, scheme: str, port: int) -> None:
    u = RelayUrl.parse(url)
    assert (u.scheme, u.port) == (scheme, port)


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "data:text/plain,x", "ftp://h/x", "srt://h:9000", "gopher://h/", "/live/s",
    "rtsp:///cam", "rtmp://h:0/live/s", "rtmp://h:99999/live/s", "rtsp://h/cam id", "rtsp://h/a\r\nX: y",
    "rtmp://h/" + "a" * 5000,
])
def test_other_urls_are_refused_with_a_clear_message(url: str) -> None:
    with pytest.raises(UnsupportedUrl) as e:
        RelayUrl.parse(url)
    assert str(e.value)


def test_scheme_error_names_the_allowed_schemes() -> None:
    with pytest.raises(UnsupportedUrl, match="'file' is not one of rtmp, rtmps, rtsp, rtsps, http, https"):
        RelayUrl.parse("file:///etc/passwd")


def test_credentials_are_unquoted_and_masked_everywhere() -> None:
    u = RelayUrl.parse("rtsp://ad%40min:p%3Ass@cam.local:8554/Streaming/101?token=t")
    assert (u.username, u.password) == ("ad@min", "p:ss")
    assert u.masked() == "rtsp://ad%40min:***@cam.local:8554/Streaming/101?token=t"
    assert str(u) == u.masked()
    assert u.without_credentials() == "rtsp://cam.local:8554/Streaming/101?token=t"
    assert "p:ss" not in repr(u.masked())


def test_user_without_password_keeps_the_user() -> None:
    assert RelayUrl.parse("rtsp://admin@cam/x").masked() == "rtsp://admin@cam:554/x"


def test_errors_never_show_the_password() -> None:
    with pytest.raises(UnsupportedUrl) as e:
        RelayUrl.parse("rtmp://u:secret@h:0/live/s")
    assert "secret" not in str(e.value)


@pytest.mark.parametrize(("url", "masked"), [
    ("rtsp://u:secret@h/x", "rtsp://u:***@h/x"),
    ("rtsp://u:se@cr@et@h/x", "rtsp://u:***@h/x"),
    ("rtsp://u@h/x", "rtsp://u@h/x"),
    ("rtsp://h/x?u=a@b", "rtsp://h/x?u=a@b"),
    ("not a url", "not a url"),
])
def test_masked_url_never_raises_and_hides_passwords(url: str, masked: str) -> None:
    assert masked_url(url) == masked


def test_ipv6_literal() -> None:
    u = RelayUrl.parse("rtsp://[::1]:8554/cam")
    assert u.host == "::1" and u.netloc == "[::1]:8554"
    assert u.without_credentials() == "rtsp://[::1]:8554/cam"


@pytest.mark.parametrize(("url", "app", "stream", "tc_url"), [
    ("rtmp://h/live/cam", "live", "cam", "rtmp://h:1935/live"),
    ("rtmp://h:1936/live/cam?token=a&x=1", "live", "cam?token=a&x=1", "rtmp://h:1936/live"),
    ("rtmp://h/app/inst/cam", "app/inst", "cam", "rtmp://h:1935/app/inst"),
    ("rtmp://h/a/b/c/d", "a/b", "c/d", "rtmp://h:1935/a/b"),
    ("rtmp://h/vod/mp4:dir/file.mp4", "vod", "mp4:dir/file.mp4", "rtmp://h:1935/vod"),
    ("rtmps://h/live/cam", "live", "cam", "rtmps://h:443/live"),
])
def test_rtmp_split_as_ffmpeg(url: str, app: str, stream: str, tc_url: str) -> None:
    assert RelayUrl.parse(url).rtmp_target() == (app, stream, tc_url)


@pytest.mark.parametrize("url", ["rtmp://h/", "rtmp://h/live", "rtmp://h/live/", "rtsp://h/live/cam"])
def test_rtmp_target_needs_app_and_stream(url: str) -> None:
    with pytest.raises(UnsupportedUrl):
        RelayUrl.parse(url).rtmp_target()
