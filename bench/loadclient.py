"""RTMP / HTTP-FLV load client: N simulated players in one process, light enough that the server is the bottleneck.

One process, one loop over two raw ``select.epoll`` sets, non-blocking sockets; no asyncio, no threads.

Per RTMP connection (``--url rtmp://host:port/app/stream``):

1. TCP connect (non-blocking), then the plain RTMP handshake (C0+C1, S0+S1+S2, C2) with
   :class:`mediasrv.rtmp.handshake.ClientHandshake`.
2. ``connect(app=live)`` -> ``createStream`` -> ``play(stream)`` + SetBufferLength, parsing the server's
   replies with :class:`mediasrv.rtmp.chunks.ChunkReader`.

Per HTTP-FLV connection (``--url http://host:port/app/stream.live.flv``): TCP connect, ``GET`` with HTTP/1.1
(as flv.js and ffmpeg do), the response head parsed, the body de-chunked (``Transfer-Encoding: chunked``)
and split into FLV tags by :class:`FlvReader`.

Then, for both:

3. The stream is parsed only until the first *coded frame* arrives (an audio/video message that is
   not a sequence header / decoder config). That moment is the player's time to first media, measured from
   the start of its TCP connect.
4. From then on the connection is in *counting* mode: ``recv_into`` one shared buffer and add the length to
   a per-connection counter. Nothing is parsed. An RTMP player writes an Acknowledgement (a 16-byte
   message) each time the server's Window Acknowledgement Size (2,500,000 bytes) is crossed, as real
   players do.

To keep the client's own CPU low, counting connections sit in their own epoll set, drained once per
``--tick-ms`` (default 20 ms): one ``recv_into`` per socket per tick, however many frames or writes the
server made, instead of one wake-up per write per player. Connections still setting up sit in a second
epoll set that the loop waits on between ticks and serves at once, so the time to first media is not
inflated by the tick. Loopback socket buffers hold far more than one tick of a 2 Mbit/s stream (~5 KB),
so the server never sees back-pressure caused by the tick. Player 0 also parses its whole stream
(``--no-verify`` turns that off) and reports video/audio frames per second, as a sanity check that the
counted bytes are a real, well-formed stream.

*Late joiners* (``--late-joiners K``, issue 12 item 4): K more players join one by one, evenly spread over
the measuring window, while the N others are playing. Each parses its stream until its first coded frame
(time to first media under load) and on to its first video *keyframe* (time to first keyframe: when a
player can show a picture; a server without a GOP cache sends the stream from wherever it is), then
closes. They are not counted in the window's bytes.

Measurement: connections are opened at ``--rate`` per second; once every connection has reached counting
mode (or failed, or ``--setup-timeout`` passed), the client waits ``--settle`` seconds, then measures a
window of ``--window`` seconds: bytes per player, and, with ``--server-pid``, the server's CPU time
(user+sys) and RSS at both ends of the window (psutil, i.e. /proc/PID/stat and /proc/PID/statm). Its own
CPU time is reported too, so a reader can see whether the client was the bottleneck. Results go to stdout
(or ``--json FILE``) as one JSON document; timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC,
comparable across processes on Linux).

Standalone use (server and publisher already running)::

    PYTHONPATH=. python bench/loadclient.py --url rtmp://127.0.0.1:1935/live/bench -n 100 --window 20
    PYTHONPATH=. python bench/loadclient.py --url http://127.0.0.1:8080/live/bench.live.flv -n 100
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import select
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediasrv.rtmp import messages as m  # noqa: E402
from mediasrv.rtmp.chunks import DEFAULT_CHUNK_SIZE, ChunkReader, RtmpMessage  # noqa: E402
from mediasrv.rtmp.handshake import ClientHandshake, HandshakeError  # noqa: E402

HANDSHAKE_BYTES = 1 + 1536 + 1536  # S0+S1+S2
DEFAULT_WINDOW_ACK = 2_500_000
RECV_SIZE = 256 * 1024
CSID_PLAY = 8  # ffmpeg sends play on chunk stream 8

CONNECTING, HANDSHAKE, CONTROL, MEDIA, CLOSED = range(5)

_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_EPOLLERR = select.EPOLLERR | select.EPOLLHUP


MediaItem = tuple[int, int, bytes]  # (RTMP/FLV message type, timestamp ms, payload)


def is_coded_frame(type_id: int, p: bytes) -> bool:
    """True for an audio/video message that carries a frame, not a sequence header (decoder config)."""
    if len(p) < 2:
        return False
    if type_id == m.VIDEO:
        if p[0] & 0x80:  # enhanced RTMP: low nibble is the packet type; 1 = coded frames, 3 = coded frames X
            return (p[0] & 0x0F) in (1, 3)
        return (p[0] & 0x0F) != 7 or p[1] == 1  # AVC: AVCPacketType 1 = NALUs (0 = config, 2 = end of seq)
    if type_id == m.AUDIO:
        return (p[0] >> 4) != 10 or p[1] == 1  # AAC: AACPacketType 1 = raw (0 = AudioSpecificConfig)
    return False


def is_keyframe(type_id: int, p: bytes) -> bool:
    """A coded video frame whose FLV frame type is 1 (keyframe)."""
    return type_id == m.VIDEO and is_coded_frame(type_id, p) and ((p[0] >> 4) & 0x07) == 1


class FlvReader:
    """Incremental parser of an HTTP-FLV response: status line and headers, ``chunked`` framing (or a plain
    body), the FLV file header, then tags. ``feed`` returns the complete tags as :data:`MediaItem`."""

    def __init__(self) -> None:
        self.raw = bytearray()  # bytes not yet de-chunked
        self.body = bytearray()  # de-chunked FLV bytes not yet parsed
        self.head_done = False
        self.chunked = False
        self.chunk_left = 0  # body bytes left in the current chunk
        self.need_crlf = False  # the CRLF after a chunk's data
        self.flv_header_done = False

    def feed(self, data: bytes) -> list[MediaItem]:
        self.raw += data
        if not self.head_done:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                if len(self.raw) > 16384:
                    raise ValueError("HTTP response head too long")
                return []
            head = bytes(self.raw[:end]).decode("latin-1").split("\r\n")
            del self.raw[: end + 4]
            status = head[0].split(" ", 2)
            if len(status) < 2 or status[1] != "200":
                raise ValueError(f"HTTP status {head[0]!r}")
            headers = {k.strip().lower(): v.strip().lower() for k, _, v in (h.partition(":") for h in head[1:])}
            self.chunked = "chunked" in headers.get("transfer-encoding", "")
            self.head_done = True
        if not self.chunked:
            self.body += self.raw
            self.raw.clear()
        else:
            self.dechunk()
        return self.tags()

    def dechunk(self) -> None:
        raw = self.raw
        while raw:
            if self.chunk_left:
                k = min(self.chunk_left, len(raw))
                self.body += raw[:k]
                del raw[:k]
                self.chunk_left -= k
                if not self.chunk_left:
                    self.need_crlf = True
                continue
            if self.need_crlf:
                if len(raw) < 2:
                    return
                if raw[:2] != b"\r\n":
                    raise ValueError("bad chunk framing")
                del raw[:2]
                self.need_crlf = False
                continue
            end = raw.find(b"\r\n")
            if end < 0:
                if len(raw) > 1024:
                    raise ValueError("bad chunk size line")
                return
            size = int(bytes(raw[:end]).split(b";")[0], 16)
            del raw[: end + 2]
            if size == 0:
                raise ValueError("the response ended")
            self.chunk_left = size

    def tags(self) -> list[MediaItem]:
        b = self.body
        out: list[MediaItem] = []
        pos = 0
        if not self.flv_header_done:
            if len(b) < 13:
                return out
            if b[:3] != b"FLV":
                raise ValueError("not FLV")
            pos = 13  # 9-byte header + PreviousTagSize0
            self.flv_header_done = True
        while len(b) - pos >= 11:
            size = int.from_bytes(b[pos + 1: pos + 4], "big")
            if len(b) - pos < 11 + size + 4:
                break
            ts = int.from_bytes(b[pos + 4: pos + 7], "big") | (b[pos + 7] << 24)
            out.append((b[pos] & 0x1F, ts, bytes(b[pos + 11: pos + 11 + size])))
            pos += 11 + size + 4
        del b[:pos]
        return out


class Conn:
    __slots__ = ("idx", "sock", "fd", "state", "hs", "reader", "flv", "t_start", "t_first_media", "t_first_key",
                 "rx", "last_ack", "window", "out", "error", "stream_id", "late")

    def __init__(self, idx: int, late: bool = False) -> None:
        self.idx = idx
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = CONNECTING
        self.hs: ClientHandshake | None = None
        self.reader: ChunkReader | None = None
        self.flv: FlvReader | None = None
        self.t_start = 0.0
        self.t_first_media = 0.0
        self.t_first_key = 0.0
        self.rx = 0  # bytes received on the socket, handshake / HTTP head included
        self.last_ack = 0  # chunk-stream bytes acknowledged so far
        self.window = DEFAULT_WINDOW_ACK
        self.out = b""  # unsent control bytes (practically always empty)
        self.error = ""
        self.stream_id = 0
        self.late = late  # a late joiner: parses until its first keyframe, then closes


class LoadClient:
    def __init__(self, host: str, port: int, app: str, stream: str, n: int, rate: float, tick: float,
                 setup_timeout: float, http_path: str | None = None) -> None:
        self.host, self.port, self.app, self.stream = host, port, app, stream
        self.tc_url = f"rtmp://{host}:{port}/{app}"
        self.http_path = http_path  # HTTP-FLV mode when set
        self.n = n
        self.rate = rate
        self.tick = tick
        self.setup_timeout = setup_timeout
        self.ep = select.epoll(n + 16)  # connections still setting up: polled continuously
        self.ep_media = select.epoll(n + 16)  # counting connections: drained once per tick
        self.conns = [Conn(i) for i in range(n)]
        self.by_fd: dict[int, Conn] = {}
        self.opened = 0
        self.in_setup = 0  # connections opened and not yet counting / closed
        self.buf = bytearray(RECV_SIZE)
        self.t_ramp0 = 0.0
        self.verify: dict[str, Any] | None = None  # set to a dict to parse player 0's whole stream
        self.late: list[Conn] = []  # late joiners, opened at late_times
        self.late_times: list[float] = []
        self.late_timeout = 10.0

    def schedule_late(self, t0: float, window: float, k: int) -> None:
        """Open ``k`` late joiners evenly spread over [t0, t0 + window)."""
        self.late = [Conn(-1 - i, late=True) for i in range(k)]
        self.late_times = [t0 + (i + 0.5) * window / k for i in range(k)]

    def verify_count(self, items: list[MediaItem]) -> None:
        v = self.verify
        assert v is not None
        for type_id, ts, payload in items:
            if type_id == m.VIDEO:
                v["video_frames"] += is_coded_frame(type_id, payload)
                v["video_keyframes"] += is_keyframe(type_id, payload)
                v["video_bytes"] += len(payload)
                v["last_video_ts"] = ts
            elif type_id == m.AUDIO:
                v["audio_frames"] += is_coded_frame(type_id, payload)
                v["audio_bytes"] += len(payload)
            else:
                v["other_messages"] += 1

    # -- connection life cycle --------------------------------------------------
    def open(self, c: Conn) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        c.t_start = time.monotonic()
        err = s.connect_ex((self.host, self.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            c.state, c.error = CLOSED, f"connect: {os.strerror(err)}"
            return
        c.sock, c.fd = s, s.fileno()
        self.by_fd[c.fd] = c
        self.in_setup += 1
        self.ep.register(c.fd, _EPOLLOUT)

    def close(self, c: Conn, why: str) -> None:
        if c.state == CLOSED:
            return
        if c.state != MEDIA:
            self.in_setup -= 1
        if c.sock is not None:
            try:
                (self.ep_media if c.state == MEDIA else self.ep).unregister(c.fd)
            except OSError:
                pass
        c.state = CLOSED
        c.error = c.error or why
        if c.sock is not None:
            self.by_fd.pop(c.fd, None)
            c.sock.close()
            c.sock = None

    def send(self, c: Conn, data: bytes) -> None:
        data = c.out + data
        try:
            sent = c.sock.send(data)  # type: ignore[union-attr]
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self.close(c, f"send: {e}")
            return
        c.out = data[sent:]
        if c.out:
            self.ep.modify(c.fd, _EPOLLIN | _EPOLLOUT)

    def command(self, c: Conn, name: str, txn: float, obj: Any, *args: Any, stream_id: int = 0,
                csid: int = m.CSID_COMMAND) -> bytes:
        return m.command(name, txn, obj, *args, stream_id=stream_id, chunk_size=DEFAULT_CHUNK_SIZE, csid=csid)

    # -- events during set-up ------------------------------------------------------
    def on_setup_event(self, c: Conn, ev: int, now: float) -> None:
        if c.state == CONNECTING:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]
            if err:
                self.close(c, f"connect: {os.strerror(err)}")
                return
            self.ep.modify(c.fd, _EPOLLIN)
            if self.http_path is not None:
                c.state = CONTROL
                c.flv = FlvReader()
                self.send(c, (f"GET {self.http_path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                              f"User-Agent: mediasrv-bench\r\nAccept: */*\r\n\r\n").encode())
                return
            c.state = HANDSHAKE
            c.hs = ClientHandshake()
            self.send(c, c.hs.initial_bytes())
            return
        if ev & _EPOLLOUT and c.out:
            self.send(c, b"")
            if not c.out and c.state != CLOSED:
                self.ep.modify(c.fd, _EPOLLIN)
        if not ev & (_EPOLLIN | _EPOLLERR):
            return
        try:
            data = c.sock.recv(RECV_SIZE)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError as e:
            self.close(c, f"recv: {e}")
            return
        if not data:
            self.close(c, "closed by server during set-up")
            return
        c.rx += len(data)
        try:
            if c.flv is not None:
                self.on_media_items(c, c.flv.feed(data), now)
                return
            if c.state == HANDSHAKE:
                hs = c.hs
                assert hs is not None
                hs.receive_data(data)
                out = hs.data_to_send()
                if not hs.complete:
                    if out:
                        self.send(c, out)
                    return
                connect = self.command(c, "connect", 1, {
                    "app": self.app, "flashVer": "LNX 9,0,124,2", "tcUrl": self.tc_url, "fpad": False,
                    "capabilities": 15.0, "audioCodecs": 4071.0, "videoCodecs": 252.0, "videoFunction": 1.0})
                self.send(c, out + connect)
                c.state = CONTROL
                c.hs = None
                c.reader = ChunkReader()
                data = hs.leftover
                if not data:
                    return
            self.on_messages(c, c.reader.feed(data), now)  # type: ignore[union-attr]
        except (HandshakeError, ValueError) as e:
            self.close(c, f"{type(e).__name__}: {e}")

    def on_media_items(self, c: Conn, items: list[MediaItem], now: float) -> None:
        """Audio/video messages while setting up: time to first media (and first keyframe for a late
        joiner); at the first coded frame an ordinary player switches to counting."""
        for i, (type_id, _ts, payload) in enumerate(items):
            if c.state == CLOSED or c.state == MEDIA:
                return
            if not is_coded_frame(type_id, payload):
                continue
            if not c.t_first_media:
                c.t_first_media = now
            if c.late:
                if is_keyframe(type_id, payload):
                    c.t_first_key = now
                    self.close(c, "")  # done: not an error
                continue
            self.to_counting(c)
            if c.idx == 0 and self.verify is not None:
                self.verify_count(items[i:])  # player 0 keeps parsing everything
            else:
                c.reader = None  # from here on: count bytes only
                c.flv = None
            return

    def to_counting(self, c: Conn) -> None:
        c.state = MEDIA
        c.last_ack = 0
        self.in_setup -= 1
        self.ep.unregister(c.fd)
        self.ep_media.register(c.fd, _EPOLLIN)
        if c.reader is not None:
            self.ack_if_due(c)

    def on_messages(self, c: Conn, msgs: list[RtmpMessage], now: float) -> None:
        for i, msg in enumerate(msgs):
            if c.state == CLOSED or c.state == MEDIA:
                return
            t = msg.type_id
            if t == m.VIDEO or t == m.AUDIO:
                if is_coded_frame(t, msg.payload):
                    self.on_media_items(c, [(x.type_id, x.timestamp, x.payload) for x in msgs[i:]
                                            if x.type_id in (m.VIDEO, m.AUDIO)], now)
                    return
            elif t == m.WINDOW_ACK_SIZE:
                c.window = m.parse_u32(msg.payload) or DEFAULT_WINDOW_ACK
            elif t == m.COMMAND_AMF0:
                cmd = m.parse_command(msg)
                if cmd.name == "_result" and cmd.transaction_id == 1:
                    self.send(c, self.command(c, "createStream", 2, None))
                elif cmd.name == "_result" and cmd.transaction_id == 2:
                    c.stream_id = int(cmd.args[0]) if cmd.args else 1
                    self.send(c, m.set_buffer_length(c.stream_id, 3000)
                              + self.command(c, "play", 0, None, self.stream, -2000.0, stream_id=c.stream_id,
                                             csid=CSID_PLAY))
                elif cmd.name == "_error" or (cmd.name == "onStatus" and cmd.args and isinstance(cmd.args[0], dict)
                                              and cmd.args[0].get("level") == "error"):
                    info = cmd.args[0] if cmd.args else {}
                    code = info.get("code", "") if isinstance(info, dict) else ""
                    self.close(c, f"{cmd.name} {code}".strip())
                    return
            elif t == m.USER_CONTROL:
                event, values = m.parse_user_control(msg.payload)
                if event == m.PING_REQUEST and values:
                    self.send(c, m.ping_response(values[0]))
        if c.late and c.t_first_media and c.state != CLOSED:
            self.ack_if_due(c)

    def ack_if_due(self, c: Conn) -> None:
        if self.http_path is not None:
            return
        seq = c.rx - HANDSHAKE_BYTES  # bytes of the chunk stream, as the server's own ChunkReader counts
        if seq - c.last_ack >= c.window:
            c.last_ack = seq
            try:
                c.sock.send(m.acknowledgement(seq))  # type: ignore[union-attr]  # 16 bytes; never partial
            except BlockingIOError:
                pass
            except OSError as e:
                self.close(c, f"send: {e}")

    # -- the loop -------------------------------------------------------------------
    def run_until(self, deadline: float, stop_when_ready: bool = False) -> None:
        """Run the loop until ``deadline`` (monotonic), opening connections at ``rate`` and late joiners at
        their times.

        Connections that are setting up live in ``self.ep`` and are served as soon as they have data, so
        the time to first media is measured without the tick's delay. Counting connections live in
        ``self.ep_media``, drained once per tick: one ``recv_into`` per socket per tick however many frames
        the server wrote, so the client's cost does not grow with the number of frames or writes.
        """
        tick = self.tick
        next_tick = time.monotonic() + tick
        next_timeout_check = time.monotonic() + 0.5
        late_opened = sum(1 for c in self.late if c.state != CONNECTING or c.sock is not None)
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            # open connections at the configured rate
            while self.opened < self.n and now >= self.t_ramp0 + self.opened / self.rate:
                self.open(self.conns[self.opened])
                self.opened += 1
            while late_opened < len(self.late) and now >= self.late_times[late_opened]:
                self.open(self.late[late_opened])
                late_opened += 1
            if stop_when_ready and self.opened == self.n and self.in_setup == 0:
                return
            if now >= next_tick:
                self.drain_media()
                next_tick += tick
                if next_tick <= now:
                    next_tick = now + tick
                continue
            if self.in_setup and now >= next_timeout_check:
                next_timeout_check = now + 0.5
                for c in self.conns[: self.opened]:
                    if c.state not in (MEDIA, CLOSED) and now - c.t_start > self.setup_timeout:
                        self.close(c, "set-up timeout")
                for c in self.late[:late_opened]:
                    if c.state != CLOSED and now - c.t_start > self.late_timeout:
                        self.close(c, "late joiner: no keyframe in time" if c.t_first_media else "set-up timeout")
            wake = min(next_tick, deadline)
            if self.opened < self.n:
                wake = min(wake, self.t_ramp0 + self.opened / self.rate)
            if late_opened < len(self.late):
                wake = min(wake, self.late_times[late_opened])
            wait = max(wake - now, 0.0)
            if not self.in_setup:
                time.sleep(wait)
                continue
            for fd, ev in self.ep.poll(wait):
                ready = self.by_fd.get(fd)
                if ready is not None:
                    self.on_setup_event(ready, ev, time.monotonic())

    def drain_media(self) -> None:
        buf = self.buf
        by_fd = self.by_fd
        for fd, _ev in self.ep_media.poll(0):
            c = by_fd.get(fd)
            if c is None:
                continue
            try:
                n = c.sock.recv_into(buf)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            except OSError as e:
                self.close(c, f"recv: {e}")
                continue
            if n == 0:
                self.close(c, "closed by server")
                continue
            c.rx += n
            if c.reader is not None or c.flv is not None:  # the verifying player
                try:
                    if c.reader is not None:
                        self.verify_count([(x.type_id, x.timestamp, x.payload) for x in c.reader.feed(bytes(buf[:n]))])
                    else:
                        self.verify_count(c.flv.feed(bytes(buf[:n])))  # type: ignore[union-attr]
                except ValueError as e:
                    self.verify["error"] = f"{type(e).__name__}: {e}"  # type: ignore[index]
                    c.reader = c.flv = None
            if self.http_path is None and c.rx - HANDSHAKE_BYTES - c.last_ack >= c.window:
                self.ack_if_due(c)


def sample_process(pid: int | None) -> dict[str, float] | None:
    if pid is None:
        return None
    import psutil

    p = psutil.Process(pid)
    with p.oneshot():
        ct = p.cpu_times()
        mi = p.memory_info()
        return {"cpu": ct.user + ct.system, "user": ct.user, "sys": ct.system, "rss": mi.rss,
                "fds": p.num_fds(), "t": time.monotonic()}


def sample_system() -> dict[str, Any]:
    """Machine-wide CPU seconds (all cores) by kind, and every process's CPU seconds, to see what else ran
    during the window (other jobs on a shared machine, kernel softirq work of the loopback traffic)."""
    import psutil

    ct = psutil.cpu_times()
    idle = ct.idle + getattr(ct, "iowait", 0.0)
    total = sum(ct)
    procs: dict[int, tuple[str, float]] = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is not None:
            procs[p.pid] = (p.info["name"] or "?", t.user + t.system)
    return {"busy": total - idle, "total": total, "kinds": ct._asdict(), "procs": procs, "t": time.monotonic()}


def top_procs(a: dict[str, Any], b: dict[str, Any], skip: set[int], k: int = 6) -> list[tuple[int, str, float]]:
    """The ``k`` processes (other than ``skip``) that used the most CPU between two samples."""
    out = []
    for pid, (name, cpu) in b["procs"].items():
        if pid in skip:
            continue
        before = a["procs"].get(pid, (name, 0.0))[1]
        if cpu - before > 0.05:
            out.append((pid, name, round(cpu - before, 2)))
    return sorted(out, key=lambda x: -x[2])[:k]


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def own_cpu_split() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        raise SystemExit(f"loadclient: RLIMIT_NOFILE is {soft}, need at least {n + 64} for {n} players")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="rtmp://127.0.0.1:1935/live/bench",
                    help="rtmp://host:port/app/stream, or http://host:port/app/stream.live.flv (HTTP-FLV)")
    ap.add_argument("-n", "--players", type=int, default=100)
    ap.add_argument("--rate", type=float, default=200.0, help="new connections per second (default 200)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds between all-connected and the window")
    ap.add_argument("--window", type=float, default=20.0, help="measuring window, seconds")
    ap.add_argument("--tick-ms", type=float, default=20.0, help="poll period once all players count bytes")
    ap.add_argument("--setup-timeout", type=float, default=30.0, help="seconds a player may take to first media")
    ap.add_argument("--server-pid", type=int, help="sample this pid's CPU time and RSS at the window's ends")
    ap.add_argument("--publisher-pid", type=int, help="sample this pid's CPU time at the window's ends")
    ap.add_argument("--no-verify", dest="verify", action="store_false",
                    help="do not parse player 0's whole stream (by default it is, as a sanity check)")
    ap.add_argument("--expect-mbps", type=float, default=0.0,
                    help="the stream's rate: after --settle, wait until the players' mean rate over 2 s is "
                         "<= 105 %% of it (backlog drained), at most --max-settle s after the ramp")
    ap.add_argument("--max-settle", type=float, default=40.0, help="see --expect-mbps (default 40)")
    ap.add_argument("--late-joiners", type=int, default=0, metavar="K",
                    help="K players joining one by one during the window (time to first media under load)")
    ap.add_argument("--json", help="write the result here instead of stdout")
    args = ap.parse_args(argv)

    u = urlsplit(args.url)
    parts = u.path.strip("/").split("/")
    if u.scheme not in ("rtmp", "http") or len(parts) != 2 or not u.hostname:
        ap.error("--url must be rtmp://host:port/app/stream or http://host:port/app/stream.live.flv")
    raise_nofile(args.players + args.late_joiners)

    http_path = None
    if u.scheme == "http":
        http_path = u.path + (f"?{u.query}" if u.query else "")
    lc = LoadClient(u.hostname, u.port or (80 if http_path else 1935), parts[0], parts[1],
                    args.players, args.rate, args.tick_ms / 1000, args.setup_timeout, http_path=http_path)
    if args.verify:
        lc.verify = {"video_frames": 0, "video_keyframes": 0, "video_bytes": 0, "audio_frames": 0,
                     "audio_bytes": 0, "other_messages": 0, "last_video_ts": 0, "error": ""}
    cpu_start = own_cpu()
    lc.t_ramp0 = t_ramp0 = time.monotonic()
    ramp_deadline = t_ramp0 + args.players / args.rate + args.setup_timeout + 1
    lc.run_until(ramp_deadline, stop_when_ready=True)
    t_ready = time.monotonic()
    for c in lc.conns:  # whoever is still not counting has failed
        if c.sock is None and c.state == CONNECTING:
            c.state, c.error = CLOSED, "never opened"
        elif c.state not in (MEDIA, CLOSED):
            lc.close(c, "set-up timeout")
    lc.run_until(t_ready + args.settle)
    # catch-up: players that joined while the server was busy may hold a backlog the server is still
    # draining; counting that in the window would make a server that fell behind look fast. Wait until the
    # players' aggregate rate over two seconds is no more than 5 % above the stream's (or --max-settle).
    catchup_rates: list[float] = []
    if args.expect_mbps:
        deadline = t_ready + args.max_settle
        while time.monotonic() < deadline:
            media = [c for c in lc.conns if c.state == MEDIA]
            lc.drain_media()
            ta, ra = time.monotonic(), sum(c.rx for c in media)
            lc.run_until(ta + 2.0)  # one GOP of the test stream: a keyframe per sample
            lc.drain_media()
            tb, rb = time.monotonic(), sum(c.rx for c in media)
            alive = sum(1 for c in media if c.state == MEDIA)
            rate = (rb - ra) * 8 / (tb - ta) / 1e6 / max(alive, 1)
            catchup_rates.append(round(rate, 4))
            if rate <= 1.05 * args.expect_mbps:
                break
    t_settled = time.monotonic()

    # -- measuring window --------------------------------------------------------
    srv0 = sample_process(args.server_pid)
    pub0 = sample_process(args.publisher_pid)
    sys0 = sample_system() if args.server_pid else None
    cpu0 = own_cpu()
    split0 = own_cpu_split()
    lc.drain_media()
    t0 = time.monotonic()
    if args.late_joiners:
        lc.schedule_late(t0, args.window, args.late_joiners)
    rx0 = [c.rx for c in lc.conns]
    v0 = dict(lc.verify) if lc.verify else None
    lc.run_until(t0 + args.window)
    lc.drain_media()
    t1 = time.monotonic()
    rx1 = [c.rx for c in lc.conns]
    v1 = dict(lc.verify) if lc.verify else None
    verify = None
    if v0 and v1:
        verify = {k: (v1[k] - v0[k]) / (t1 - t0) for k in ("video_frames", "video_keyframes", "video_bytes",
                                                             "audio_frames", "audio_bytes")}
        verify.update(error=v1["error"], other_messages=v1["other_messages"], player0_alive=lc.conns[0].state == MEDIA)
        verify["media_payload_mbps"] = (verify["video_bytes"] + verify["audio_bytes"]) * 8 / 1e6
    cpu1 = own_cpu()
    split1 = own_cpu_split()
    srv1 = sample_process(args.server_pid)
    pub1 = sample_process(args.publisher_pid)
    sys1 = sample_system() if args.server_pid else None
    alive_end = sum(1 for c in lc.conns if c.state == MEDIA)
    # late joiners still waiting for their keyframe finish (or time out) after the window
    late_deadline = time.monotonic() + lc.late_timeout + 1
    while any(c.state != CLOSED for c in lc.late) and time.monotonic() < late_deadline:
        lc.run_until(min(time.monotonic() + 0.2, late_deadline))
    late_ttfm = [(c.t_first_media - c.t_start) * 1000 for c in lc.late if c.t_first_media]
    late_ttfk = [(c.t_first_key - c.t_start) * 1000 for c in lc.late if c.t_first_key]
    late_errors: dict[str, int] = {}
    for c in lc.late:
        if c.error:
            late_errors[c.error] = late_errors.get(c.error, 0) + 1

    ttfm = [(c.t_first_media - c.t_start) * 1000 for c in lc.conns if c.t_first_media]
    errors: dict[str, int] = {}
    for c in lc.conns:
        if c.error:
            errors[c.error] = errors.get(c.error, 0) + 1
    window_bytes = [b - a for a, b in zip(rx0, rx1, strict=True)]
    result = {
        "url": args.url,
        "players": args.players,
        "rate": args.rate,
        "tick_ms": args.tick_ms,
        "ramp_s": t_ready - t_ramp0,
        "settle_s": t_settled - t_ready,
        "catchup_mbps_per_player": catchup_rates,
        "reached_media": len(ttfm),
        "alive_at_end": alive_end,
        "errors": errors,
        "ttfm_ms": {"median": percentile(ttfm, 0.5), "p95": percentile(ttfm, 0.95), "max": max(ttfm, default=None),
                    "min": min(ttfm, default=None), "all": [round(x, 2) for x in ttfm]},
        "late_joiners": {"n": len(lc.late), "errors": late_errors,
                         "ttfm_ms": {"median": percentile(late_ttfm, 0.5), "p95": percentile(late_ttfm, 0.95),
                                     "all": [round(x, 2) for x in late_ttfm]},
                         "ttfk_ms": {"median": percentile(late_ttfk, 0.5), "p95": percentile(late_ttfk, 0.95),
                                     "all": [round(x, 2) for x in late_ttfk]}},
        "window": {"t0": t0, "t1": t1, "seconds": t1 - t0, "bytes": window_bytes,
                   "total_bytes": sum(window_bytes)},
        "server": {"start": srv0, "end": srv1},
        "publisher": {"start": pub0, "end": pub1},
        "system": {
            "busy_s": sys1["busy"] - sys0["busy"] if sys0 and sys1 else None,
            "kinds_s": {k: round(v - sys0["kinds"][k], 2) for k, v in sys1["kinds"].items()} if sys0 and sys1 else None,
            "top_other_procs": top_procs(sys0, sys1, {os.getpid(), args.server_pid or -1, args.publisher_pid or -1})
            if sys0 and sys1 else None,
        },
        "verify_player0_per_s": verify,
        "client": {"cpu_window_s": cpu1 - cpu0, "user_window_s": split1[0] - split0[0],
                   "sys_window_s": split1[1] - split0[1], "cpu_total_s": cpu1 - cpu_start},
    }
    text = json.dumps(result)
    if args.json:
        Path(args.json).write_text(text)
    else:
        sys.stdout.write(text + "\n")
    rates = [b * 8 / (t1 - t0) / 1e6 for b in window_bytes]
    print(f"loadclient: {len(ttfm)}/{args.players} reached media, {alive_end} alive at end; "
          f"median rate {statistics.median(rates) if rates else 0:.3f} Mbit/s; "
          f"ttfm median {result['ttfm_ms']['median']} ms; client cpu in window {cpu1 - cpu0:.2f} s; "
          f"errors {errors}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
