"""The client for a URL: scheme → client, ZLMediaKit's rtp_type, what is refused."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from mediasrv.relay.errors import UnsupportedUrl
from mediasrv.relay.factory import pull_client, push_client
from mediasrv.relay.httpflv import HttpFlvPullClient
from mediasrv.relay.rtmp import RtmpPullClient, RtmpPushClient
from mediasrv.relay.rtsp import RtspPullClient
from mediasrv.relay.rtsp_session import RtspTransport
from mediasrv.relay.source import IteratorSource
from tests.relay.support import Recorder


@pytest.mark.parametrize(("url", "cls"), [
    ("rtmp://h/live/s", RtmpPullClient), ("rtmps://h/live/s", RtmpPullClient), ("rtsp://h/x", RtspPullClient),
    ("rtsps://h/x", RtspPullClient), ("http://h/live/s.live.flv", HttpFlvPullClient),
    ("https://h/live/s.flv?token=1", HttpFlvPullClient),
])
def test_pull_client_by_scheme(url: str, cls: type) -> None:
    assert type(pull_client(url, Recorder(), MemoryReactorClock())) is cls


def test_rtp_type_picks_the_rtsp_transport() -> None:
    reactor = MemoryReactorClock()
    tcp = pull_client("rtsp://h/x", Recorder(), reactor, rtp_type=0)
    udp = pull_client("rtsp://h/x", Recorder(), reactor, rtp_type=1)
    assert isinstance(tcp, RtspPullClient) and tcp.session.transport is RtspTransport.TCP
    assert isinstance(udp, RtspPullClient) and udp.session.transport is RtspTransport.UDP
    with pytest.raises(UnsupportedUrl, match="rtp_type 2"):
        pull_client("rtsp://h/x", Recorder(), reactor, rtp_type=2)


@pytest.mark.parametrize("url", ["http://h/live/s/hls.m3u8", "http://h/live/s.live.ts", "https://h/v.mp4",
                                 "file:///tmp/x.flv"])
def test_what_is_not_pulled(url: str) -> None:
    with pytest.raises(UnsupportedUrl):
        pull_client(url, Recorder(), MemoryReactorClock())


def test_push_goes_to_rtmp_only() -> None:
    reactor = MemoryReactorClock()
    source = IteratorSource([], [], reactor)
    assert type(push_client("rtmps://h/live/s", source, reactor)) is RtmpPushClient
    for url in ("rtsp://h/live/s", "http://h/live/s.flv"):
        with pytest.raises(UnsupportedUrl, match="pushes go to rtmp"):
            push_client(url, source, reactor)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        pull_client("rtmp://h/live/s", Recorder(), MemoryReactorClock(), timeout_sec=0)
