"""Record: one RTSP publisher's session -- ANNOUNCE, SETUP, RECORD, and ingest.

ANNOUNCE passes the publish gate (``start_publish``) with the SDP's tracks,
SETUP binds each announced track to interleaved channels or a UDP port pair,
RECORD starts ingest (:mod:`mediasrv.rtsp.ingest`): RTP is depacketized into
MediaFrames written to the stream, so it plays over every other protocol.
Bad RTP over TCP ends the connection; over UDP the datagram is dropped and
counted (a line for the first and every thousandth).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from twisted.logger import Logger

from mediasrv.codec import rtp
from mediasrv.codec.bits import CodecError
from mediasrv.codec.sdp import SdpError, parse_sdp
from mediasrv.core.frames import Track
from mediasrv.core.stream import Stream
from mediasrv.rtsp import media
from mediasrv.rtsp.ingest import RtspIngest
from mediasrv.rtsp.parser import RtspRequest, TransportSpec, format_transport
from mediasrv.rtsp.reply import Reply, RtspError
from mediasrv.rtsp.urls import strip_url

if TYPE_CHECKING:
    from mediasrv.rtsp.protocol import RtspServerProtocol

log = Logger()

MAX_ANNOUNCED_MEDIA = 8  # each SETUP of a UDP track binds two ports: bound what one publisher may ask for


def parse_announce(req: RtspRequest) -> list[media.AnnouncedMedia]:
    """The tracks an ANNOUNCE offers.

    :raises RtspError: 415 for a body that is not SDP or offers nothing we
        ingest, 400 for an unusable SDP or too many media sections.
    """
    content_type = (req.header("Content-Type") or "").lower()
    if "application/sdp" not in content_type:
        raise RtspError(415, f"ANNOUNCE body must be application/sdp, not {content_type[:40]!r}")
    try:
        announced = media.announced_media(parse_sdp(req.body))
    except (SdpError, CodecError) as e:
        raise RtspError(400, f"unusable SDP: {e}") from None
    if len(announced) > MAX_ANNOUNCED_MEDIA:
        raise RtspError(400, f"SDP with {len(announced)} media sections (at most {MAX_ANNOUNCED_MEDIA})")
    if not any(a.supported for a in announced):
        raise RtspError(415, "no supported track in the SDP (H.264, H.265, AAC mpeg4-generic)")
    return announced


class RecordSession:
    """The publish side of one RTSP session: the announced tracks, their
    SETUP'd transports, and the ingest into the published stream."""

    def __init__(self, conn: RtspServerProtocol, stream: Stream, announced: list[media.AnnouncedMedia],
                 uri: str) -> None:
        self.conn = conn
        self.stream: Stream | None = stream  # None once unpublished
        self.announced = announced
        self.base = uri.split("?", 1)[0]
        self.ingest = RtspIngest(announced)
        self.setups: dict[int, TransportSpec] = {}  # track index → its SETUP
        self.channels: dict[int, tuple[int, bool]] = {}  # interleaved channel → (track index, is RTCP)
        self.recording = False
        self.udp_errors = 0
        for track in self.ingest.initial_tracks():
            stream.set_track(track)
        for a in announced:
            if not a.supported:
                log.info("rtsp session {sid}: track {i} ({enc}) is not ingested (only H.264, H.265, AAC)",
                         sid=conn.session.id, i=a.index, enc=a.encoding or a.payload_type)

    # -- SETUP / RECORD -----------------------------------------------------------------------------
    def _announced_index(self, uri: str) -> int:
        target = strip_url(uri)
        base = self.base.rstrip("/") + "/"
        for a in self.announced:
            control = a.control
            url = control if "://" in control else base + control
            if strip_url(url) == target:
                return a.index
        path = urlsplit(uri).path.rstrip("/")
        for a in self.announced:
            if path.endswith("/" + a.control.rsplit("/", 1)[-1]):
                return a.index
        if len(self.announced) == 1:
            return 0
        raise RtspError(404, f"SETUP URL {uri[:80]!r} matches no announced track")

    def setup(self, req: RtspRequest, specs: list[TransportSpec]) -> Reply:
        if self.recording:
            raise RtspError(455, "SETUP after RECORD")
        conn = self.conn
        index = self._announced_index(req.uri)
        spec = conn.transports.choose(specs)
        if index in self.setups:
            raise RtspError(455, f"track {index} is already set up")
        if spec.tcp:
            channels = conn.transports.take_channels(spec.interleaved)
            self.channels[channels[0]] = (index, False)
            self.channels[channels[1]] = (index, True)
            answer = TransportSpec("RTP/AVP/TCP", interleaved=channels, mode="record")
        else:
            assert spec.client_port is not None
            client = (conn.session.peer_ip, *spec.client_port)
            pair = conn.transports.bind_udp(conn.local_host(), client,
                                            lambda d, a: self._datagram(index, False, d, a),
                                            lambda d, a: self._datagram(index, True, d, a))
            answer = TransportSpec("RTP/AVP/UDP", client_port=spec.client_port, server_port=pair.ports,
                                   mode="record")
        self.setups[index] = spec
        conn.ensure_session()
        conn.touch()
        return Reply(200, [("Transport", format_transport(answer))])

    def record(self) -> Reply:
        stream = self.stream
        if stream is None:
            raise RtspError(455, "RECORD before ANNOUNCE")
        if not self.setups:
            raise RtspError(455, "RECORD before SETUP")
        self.conn.touch()
        if not self.recording:
            self.recording = True
            transport = "tcp" if any(s.tcp for s in self.setups.values()) else "udp"
            log.info("rtsp session {sid} publishes {key} over {transport}", sid=self.conn.session.id,
                     key=str(stream.key), transport=transport)
        return Reply(200)

    def stop(self, abrupt: bool) -> None:
        """Unpublish; ``abrupt`` lets the stream wait for the publisher (``continue_push_ms``)."""
        stream, self.stream = self.stream, None
        self.recording = False
        if stream is not None:
            self.conn.core.registry.unpublish(stream, self.conn.session, abrupt=abrupt)

    # -- media in -----------------------------------------------------------------------------------
    def interleaved(self, channel: int, data: bytes) -> str | None:
        """One ``$``-framed packet from the connection; returns why it is bad input."""
        entry = self.channels.get(channel)
        if entry is None:
            return f"interleaved data on channel {channel}, which no SETUP assigned"
        index, is_rtcp = entry
        return self._ingest(index, is_rtcp, data)

    def _datagram(self, index: int, is_rtcp: bool, data: bytes, addr: tuple[str, int]) -> None:
        conn = self.conn
        if conn.closing or addr[0] != conn.session.peer_ip:
            return
        conn.touch()
        conn.session.bytes_in += len(data)
        error = self._ingest(index, is_rtcp, data)
        if error:
            self.udp_errors += 1
            if self.udp_errors == 1 or self.udp_errors % 1000 == 0:
                log.warn("rtsp session {sid}: {error} (UDP; {n} bad datagrams so far, dropped)",
                         sid=conn.session.id, error=error, n=self.udp_errors)

    def _ingest(self, index: int, is_rtcp: bool, data: bytes) -> str | None:
        """Feed one RTP/RTCP packet; returns an error description for bad input."""
        stream = self.stream
        if stream is None:
            return None
        try:
            if is_rtcp:
                self.ingest.rtcp(index, data)
                return None
            if not self.recording:
                return None  # media before RECORD is dropped
            events = self.ingest.rtp(index, data, self.conn.core.clock.seconds())
        except (rtp.RtpError, CodecError) as e:
            kind = "RTCP" if is_rtcp else "RTP"
            return f"bad {kind} on track {index}: {e}"
        for event in events:
            if isinstance(event, Track):
                stream.set_track(event)
            else:
                stream.write(event)
        return None
