"""Play: one RTSP player's session -- DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN.

DESCRIBE passes RTSP auth (:mod:`mediasrv.rtsp.auth`) or, with no realm, the
play gate (``start_play``), and waits for the stream; the SDP is built from
the stream's tracks.  SETUP binds a track to TCP interleaved channels or to a
UDP server port pair (:mod:`mediasrv.rtsp.transports`); PLAY answers with
``RTP-Info`` and attaches an :class:`RtspPlayer` that starts at the GOP
cache's keyframe.  RTP packets are built once per frame for all players
(:mod:`mediasrv.rtsp.muxer`); RTCP sender reports follow every
:data:`SENDER_REPORT_INTERVAL` seconds, and a BYE when the stream ends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from mediasrv.codec import rtp
from mediasrv.core.context import Core, start_play
from mediasrv.core.frames import MediaFrame, TrackKind
from mediasrv.core.reader import StreamReader
from mediasrv.core.stream import Stream
from mediasrv.hooks.model import AccessRequest, Action
from mediasrv.rtsp import media
from mediasrv.rtsp.auth import RtspAuthenticator
from mediasrv.rtsp.muxer import StreamRtp, TrackMuxer
from mediasrv.rtsp.parser import RtspRequest, TransportSpec, encode_interleaved, format_transport
from mediasrv.rtsp.reply import Reply, RtspError, refused
from mediasrv.rtsp.udp import UdpPair
from mediasrv.rtsp.urls import base_url, track_control

if TYPE_CHECKING:
    from mediasrv.rtsp.protocol import RtspServerProtocol

log = Logger()

SENDER_REPORT_INTERVAL = 5.0


def authorize_play(core: Core, auth: RtspAuthenticator, req: RtspRequest,
                   request: AccessRequest) -> defer.Deferred[Stream]:
    """Realm auth (or, with no realm, the play gate), then wait for the stream.
    Fails with :class:`RtspError` (401/403/404)."""

    def play(user: str) -> defer.Deferred[Stream]:
        # A verified RTSP user travels in the request: the hook layer skips
        # ZLMediaKit's on_play for it, as ZLMediaKit does after on_rtsp_auth.
        return start_play(core, replace(request, user=user) if user else request)

    d = auth.authenticate(req, request)
    return d.addCallback(play).addErrback(refused, Action.PLAY)


def check_offered(core: Core, stream: Stream) -> None:
    """``enable_rtsp`` from the on_publish reply (or ``[protocol]``) may keep a stream off RTSP."""
    value = stream.options.get("enable_rtsp")
    enabled = core.config.protocol.enable_rtsp if value is None else str(value) not in ("0", "false")
    if not enabled:
        raise RtspError(404, f"{stream.key} is not offered over RTSP (enable_rtsp=0)")


@dataclass
class PlayTrack:
    """One SETUP'd track of a player."""

    kind: TrackKind
    url: str
    muxer: TrackMuxer
    channel: int | None = None  # TCP: RTP channel (RTCP on rtcp_channel)
    rtcp_channel: int | None = None
    udp: UdpPair | None = None
    packets: int = 0
    octets: int = 0


class RtspPlayer(StreamReader):
    """Sends a stream to one RTSP player over its SETUP'd tracks."""

    schema = "rtsp"

    def __init__(self, play: PlaySession, stream_rtp: StreamRtp, tracks: dict[TrackKind, PlayTrack],
                 max_queue_bytes: int) -> None:
        super().__init__(max_queue_bytes, play.conn.session)
        self.play = play
        self.stream_rtp = stream_rtp
        self.tracks = tracks

    def send_headers(self, stream: Stream) -> None:
        # The SDP cannot change mid-session; a new codec configuration reaches
        # the player in band (parameter sets ahead of every keyframe).
        pass

    def send_frame(self, frame: MediaFrame) -> None:
        pt = self.tracks.get(frame.kind)
        if pt is None:
            return
        stream = self.stream
        track = stream.tracks.get(frame.kind) if stream is not None else None
        if pt.muxer.key not in frame.muxed:
            self.stream_rtp.saw_frame(frame, self.play.conn.core.clock.seconds())
        if pt.channel is not None:
            data, fp = pt.muxer.interleaved(frame, track, pt.channel)
            self.play.conn.write(data)
        else:
            fp = pt.muxer.packetize(frame, track)
            if pt.udp is not None:
                for packet in fp.packets:
                    pt.udp.send_rtp(packet)
                if self.session is not None:
                    self.session.bytes_out += sum(len(p) for p in fp.packets)
        pt.packets += len(fp.packets)
        pt.octets += fp.payload_bytes

    def stream_ended(self, reason: str) -> None:
        self.play.ended(self, reason)


class PlaySession:
    """The play side of one RTSP session: the described stream, its SETUP'd
    tracks and, once PLAY came, the player attached to the stream."""

    def __init__(self, conn: RtspServerProtocol, stream: Stream) -> None:
        self.conn = conn
        self.stream = stream
        self.tracks: dict[TrackKind, PlayTrack] = {}
        self.player: RtspPlayer | None = None
        self._sr_timer: IDelayedCall | None = None

    @property
    def tcp(self) -> bool:
        """Whether the tracks go interleaved on the RTSP connection."""
        return any(pt.channel is not None for pt in self.tracks.values())

    def owns_channel(self, channel: int) -> bool:
        """An interleaved channel of ours: receiver reports from the player."""
        return any(channel in (pt.channel, pt.rtcp_channel) for pt in self.tracks.values())

    # -- DESCRIBE ---------------------------------------------------------------------------------
    def describe(self, req: RtspRequest, server_ip: str) -> Reply:
        stream = self.stream
        sdp = media.describe(stream.tracks, server_ip, int(stream.created * 1000))
        return Reply(200, [("Content-Base", base_url(req.uri)), ("Content-Type", "application/sdp")], sdp.encode())

    # -- SETUP ------------------------------------------------------------------------------------
    def setup(self, req: RtspRequest, specs: list[TransportSpec]) -> Reply:
        stream = self.stream
        if stream.closed:
            raise RtspError(404, "the stream has ended")
        if self.player is not None:
            raise RtspError(455, "SETUP while playing")
        last = track_control(req.uri)
        kind = next((k for k, c in media.CONTROL.items() if c.lower() == last.lower()), None)
        if kind is None:
            if len(stream.tracks) == 1:
                kind = next(iter(stream.tracks))
            else:
                raise RtspError(404, f"no track {last[:40]!r} in this stream")
        track = stream.tracks.get(kind)
        if track is None:
            raise RtspError(404, f"the stream has no {kind.value} track")
        conn = self.conn
        spec = conn.transports.choose(specs)
        old = self.tracks.pop(kind, None)
        if old is not None:
            self._release(old)
        muxer = conn.factory.stream_rtp(stream).muxer(track)
        if spec.tcp:
            channels = conn.transports.take_channels(spec.interleaved)
            pt = PlayTrack(kind, req.uri, muxer, channel=channels[0], rtcp_channel=channels[1])
            answer = TransportSpec("RTP/AVP/TCP", interleaved=channels, ssrc=muxer.ssrc)
        else:
            assert spec.client_port is not None
            client = (conn.session.peer_ip, *spec.client_port)
            pair = conn.transports.bind_udp(conn.local_host(), client, self._datagram, self._datagram)
            pt = PlayTrack(kind, req.uri, muxer, udp=pair)
            answer = TransportSpec("RTP/AVP", client_port=spec.client_port, server_port=pair.ports, ssrc=muxer.ssrc)
        self.tracks[kind] = pt
        conn.ensure_session()
        conn.touch()
        return Reply(200, [("Transport", format_transport(answer))])

    def _release(self, pt: PlayTrack) -> None:
        if pt.udp is not None:
            self.conn.transports.release_udp(pt.udp)
        self.conn.transports.release_channels(pt.channel, pt.rtcp_channel)

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] == self.conn.session.peer_ip:
            self.conn.touch()  # receiver reports (and NAT keep-alives) keep a UDP session alive

    # -- PLAY / PAUSE -----------------------------------------------------------------------------
    def play(self, req: RtspRequest) -> Reply:
        stream = self.stream
        if not self.tracks:
            raise RtspError(455, "PLAY before SETUP")
        if stream.closed:
            raise RtspError(404, "the stream has ended")
        conn = self.conn
        conn.touch()
        requested = (req.header("Range") or "").strip()
        range_value = requested if requested.startswith("npt=") else "npt=0.000-"
        if self.player is not None:
            return Reply(200, [("Range", range_value)])
        player = RtspPlayer(self, conn.factory.stream_rtp(stream), dict(self.tracks),
                            conn.core.config.general.maxPlayerQueueBytes)
        headers = [("Range", range_value)]
        rtp_info = self._rtp_info(stream, player)
        if rtp_info:
            headers.append(("RTP-Info", rtp_info))
        return Reply(200, headers, after=lambda: self._start(stream, player))

    def pause(self) -> Reply:
        if not self.tracks:
            raise RtspError(455, "PAUSE before SETUP")
        self.conn.touch()
        self.stop()
        return Reply(200)

    def _rtp_info(self, stream: Stream, player: RtspPlayer) -> str:
        """Build the packets of the GOP the player starts with, so ``RTP-Info``
        names the exact first packet of each track."""
        now = self.conn.core.clock.seconds()
        first: dict[TrackKind, tuple[int, int]] = {}
        started = TrackKind.VIDEO not in stream.tracks
        gop = stream.gop.frames
        if gop and not all(pt.muxer.key in gop[-1].muxed for pt in self.tracks.values()):
            player.stream_rtp.saw_frame(gop[-1], now)  # the newest frame arrived about now
        for frame in gop:
            if not started:
                if frame.kind is not TrackKind.VIDEO or not frame.keyframe:
                    continue
                started = True
            pt = self.tracks.get(frame.kind)
            if pt is None:
                continue
            fp = pt.muxer.packetize(frame, stream.tracks.get(frame.kind))
            if frame.kind not in first and fp.packets:
                first[frame.kind] = (fp.first_sequence, fp.timestamp)
        parts = []
        media_now = player.stream_rtp.media_time(now)
        for kind, pt in self.tracks.items():
            if kind in first:
                seq, ts = first[kind]
                parts.append(f"url={pt.url};seq={seq};rtptime={ts}")
            elif media_now is not None:
                parts.append(f"url={pt.url};seq={pt.muxer.sequence};rtptime={pt.muxer.rtp_time(media_now)}")
            else:
                parts.append(f"url={pt.url};seq={pt.muxer.sequence}")
        return ",".join(parts)

    def _start(self, stream: Stream, player: RtspPlayer) -> None:
        conn = self.conn
        if conn.closing or stream.closed:
            return
        self.player = player
        if self.tcp:
            conn.attach_producer(player)
        # A sender report for every track before the first RTP packet (as ffmpeg's sender does):
        # receivers then time the very first packets with it instead of re-timing them later.
        self._send_reports()
        stream.add_reader(player)
        log.info("rtsp session {sid} plays {key} over {transport} ({tracks})", sid=conn.session.id,
                 key=str(stream.key), transport="tcp" if self.tcp else "udp",
                 tracks=", ".join(k.value for k in player.tracks))

    # -- RTCP ---------------------------------------------------------------------------------------
    def _send_reports(self) -> None:
        self._sr_timer = None
        player = self.player
        conn = self.conn
        if player is None or conn.closing:
            return
        now = conn.core.clock.seconds()
        media_now = player.stream_rtp.media_time(now)
        if media_now is not None:
            ntp = rtp.ntp_from_unix(now)
            for pt in player.tracks.values():
                report = (rtp.build_sender_report(pt.muxer.ssrc, ntp, pt.muxer.rtp_time(media_now), pt.packets,
                                                  pt.octets)
                          + rtp.build_sdes_cname(pt.muxer.ssrc, "mediasrv"))
                self._send_rtcp(pt, report)
        self._sr_timer = conn.core.clock.callLater(SENDER_REPORT_INTERVAL, self._send_reports)

    def _send_rtcp(self, pt: PlayTrack, data: bytes) -> None:
        if pt.rtcp_channel is not None:
            self.conn.write(encode_interleaved(pt.rtcp_channel, data))
        elif pt.udp is not None:
            pt.udp.send_rtcp(data)

    # -- the end ------------------------------------------------------------------------------------
    def ended(self, player: RtspPlayer, reason: str) -> None:
        """The stream went away under a player: RTCP BYE, then close."""
        if player is not self.player or self.conn.closing:
            return
        for pt in player.tracks.values():
            self._send_rtcp(pt, rtp.build_bye(pt.muxer.ssrc))
        self.stop()
        self.conn.refuse(f"stream ended ({reason}); closing")

    def stop(self, connected: bool = True) -> None:
        """Leave the stream (PAUSE, TEARDOWN, the end); the tracks stay set up."""
        if self._sr_timer is not None and self._sr_timer.active():
            self._sr_timer.cancel()
        self._sr_timer = None
        player, self.player = self.player, None
        if player is not None:
            player.detach()
            self.conn.detach_producer(player, connected)
