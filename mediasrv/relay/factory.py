"""Pick the client for a URL: the one entry point the proxy objects of the integration need."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

from mediasrv.relay.client import DEFAULT_TIMEOUT_SEC, RelayClient
from mediasrv.relay.errors import UnsupportedUrl
from mediasrv.relay.httpflv import HttpFlvPullClient
from mediasrv.relay.interfaces import FrameSource, RelaySink
from mediasrv.relay.rtmp import RtmpPullClient, RtmpPushClient
from mediasrv.relay.rtsp import RtspPullClient
from mediasrv.relay.rtsp_session import RtspTransport
from mediasrv.relay.url import RelayUrl

__all__ = ["pull_client", "push_client"]

_NOT_FLV = (".m3u8", ".ts", ".mp4")


def pull_client(url: str | RelayUrl, sink: RelaySink, reactor: Any, *, rtp_type: int = 0,
                timeout_sec: float = DEFAULT_TIMEOUT_SEC,
                tls: IOpenSSLClientConnectionCreator | None = None) -> RelayClient:
    """A pull client for ``url`` (rtmp/rtmps, rtsp/rtsps, http/https FLV), not started yet.

    ``rtp_type`` is ZLMediaKit's: 0 RTP over the RTSP connection, 1 over UDP.

    :raises UnsupportedUrl: another scheme, an HLS/TS/MP4 URL, or a bad ``rtp_type``.
    """
    parsed = url if isinstance(url, RelayUrl) else RelayUrl.parse(url)
    if parsed.scheme in ("rtmp", "rtmps"):
        return RtmpPullClient(parsed, sink, reactor, timeout_sec=timeout_sec, tls=tls)
    if parsed.scheme in ("rtsp", "rtsps"):
        if rtp_type not in (0, 1):
            raise UnsupportedUrl(f"rtp_type {rtp_type} is not supported (0: TCP, 1: UDP)")
        transport = RtspTransport.UDP if rtp_type == 1 else RtspTransport.TCP
        return RtspPullClient(parsed, sink, reactor, transport=transport, timeout_sec=timeout_sec, tls=tls)
    if parsed.path.lower().endswith(_NOT_FLV):
        raise UnsupportedUrl(f"{parsed.masked()}: only HTTP-FLV is pulled over http(s), not HLS, TS or MP4")
    return HttpFlvPullClient(parsed, sink, reactor, timeout_sec=timeout_sec, tls=tls)


def push_client(url: str | RelayUrl, source: FrameSource, reactor: Any, *,
                timeout_sec: float = DEFAULT_TIMEOUT_SEC,
                tls: IOpenSSLClientConnectionCreator | None = None) -> RelayClient:
    """A push client for ``url`` (rtmp/rtmps), not started yet.

    :raises UnsupportedUrl: any other scheme (RTSP ANNOUNCE/RECORD pushes are not implemented).
    """
    parsed = url if isinstance(url, RelayUrl) else RelayUrl.parse(url)
    if parsed.scheme not in ("rtmp", "rtmps"):
        raise UnsupportedUrl(f"{parsed.masked()}: pushes go to rtmp:// or rtmps:// targets only")
    return RtmpPushClient(parsed, source, reactor, timeout_sec=timeout_sec, tls=tls)
