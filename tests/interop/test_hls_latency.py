"""HLS latency with the embedded defaults (segDur 2, segNum 3), measured.

Method (all clocks are this machine's ``time.monotonic``):

* ffmpeg publishes testsrc2 over RTMP in real time (``-re``, x264 zerolatency,
  2 s GOP, no B-frames, so a frame's timestamp is both its DTS and PTS);
* a raw HTTP-FLV reader (the server's near-zero-latency path) notes when each
  video frame arrives: ``ingest(t)``, the moment frame ``t`` reached the
  server, give or take a few ms;
* a poller fetches the playlist every 50 ms and notes when each segment is
  listed: ``listed(seg)``; it downloads the segment and reads the DTS of its
  first and last video frame (TS PTS/DTS are ``(ms + 100) * 90``);
* a real-time HLS player (``ffmpeg -re -copyts -i hls.m3u8 -vf showinfo``)
  starts where players start (three segments from the end, RFC 8216 6.3.3)
  and prints each frame as it is shown: ``shown(t)``;
* the "glass": with ``-re`` the publisher reads frame ``t`` at ``start + t``;
  ``start`` is taken from the frame that reached the server fastest
  (``min(ingest(t) - t)``), so glass-to-glass ``shown(t) - (start + t)``
  includes encoding and uplink jitter but not the fastest frame's encode time
  (a few ms with x264 ultrafast/zerolatency), nor camera or display hardware.

Reported: ``listed(seg) - ingest(first frame)`` (how old a segment's first
picture is when the segment appears), ``listed(seg) - ingest(last frame)`` (the
server's own delay: the segment closes when the next keyframe arrives), and
``shown(t) - ingest(t)`` (what a viewer sees, minus the encoder's own delay,
which is the same for every output protocol).
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mediasrv.codec.mpegts import TS_OFFSET_MS, VIDEO_PID
from tests.support.clients import FFMPEG, needs_ffmpeg, start_publisher, stop
from tests.support.media import parse_ts
from tests.support.server import running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

RUN_SECONDS = 24.0


def flv_arrivals(port: int, path: str, out: dict[int, float], stop_at: float) -> None:
    """Read HTTP-FLV; record the arrival time of every video tag by its timestamp."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    data = bytearray(buf.split(b"\r\n\r\n", 1)[1])
    flv = bytearray()
    header_done = False
    while time.monotonic() < stop_at:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        now = time.monotonic()
        data += chunk
        # de-chunk (Transfer-Encoding: chunked)
        while True:
            eol = data.find(b"\r\n")
            if eol < 0:
                break
            size = int(data[:eol].split(b";")[0] or b"0", 16)
            if len(data) < eol + 2 + size + 2:
                break
            flv += data[eol + 2:eol + 2 + size]
            del data[:eol + 2 + size + 2]
        if not header_done and len(flv) >= 13:
            del flv[:13]
            header_done = True
        while header_done and len(flv) >= 11:
            size = int.from_bytes(flv[1:4], "big")
            if len(flv) < 11 + size + 4:
                break
            if flv[0] == 9 and size > 5 and flv[12] == 1:  # AVC NALU, not the sequence header
                ts = int.from_bytes(flv[4:7], "big") | (flv[7] << 24)
                out.setdefault(ts, now)
            del flv[:11 + size + 4]
    sock.close()


def poll_playlist(base: str, listed: dict[str, tuple[float, int, int]], stop_at: float) -> None:
    op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    while time.monotonic() < stop_at:
        with op.open(f"{base}/hls.m3u8", timeout=10) as r:
            now = time.monotonic()
            uris = [line for line in r.read().decode().splitlines() if line and not line.startswith("#")]
        for uri in uris:
            if uri not in listed:
                with op.open(f"{base}/{uri}", timeout=10) as s:
                    ts = parse_ts(s.read())
                dts = [(p.dts or p.pts) // 90 - TS_OFFSET_MS for p in ts.pes if p.pid == VIDEO_PID]
                listed[uri] = (now, dts[0], dts[-1])
        time.sleep(0.05)


def player(url: str, shown: list[tuple[int, float]], stop_at: float) -> None:
    proc = subprocess.Popen([FFMPEG or "ffmpeg", "-hide_banner", "-nostdin", "-re", "-copyts", "-i", url,
                             "-map", "0:v", "-vf", "showinfo", "-f", "null", "-"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    pattern = re.compile(rb"pts_time:([\d.]+)")
    try:
        for line in proc.stderr:
            now = time.monotonic()
            m = pattern.search(line)
            if m:
                shown.append((round(float(m.group(1)) * 1000) - TS_OFFSET_MS, now))
            if now > stop_at:
                break
    finally:
        proc.kill()
        proc.wait()


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def test_hls_latency_with_embedded_defaults(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        pub = start_publisher(f"{srv.rtmp}/live/lat", size="640x360", bitrate="800k")
        try:
            time.sleep(1.5)
            stop_at = time.monotonic() + RUN_SECONDS
            arrivals: dict[int, float] = {}
            listed: dict[str, tuple[float, int, int]] = {}
            shown: list[tuple[int, float]] = []
            threads = [
                threading.Thread(target=flv_arrivals, args=(srv.http_port, "/live/lat.live.flv", arrivals, stop_at)),
                threading.Thread(target=poll_playlist, args=(f"{srv.http}/live/lat", listed, stop_at)),
            ]
            for t in threads:
                t.start()
            time.sleep(7)  # the player joins a filled window, like a viewer arriving mid-stream
            p = threading.Thread(target=player, args=(f"{srv.http}/live/lat/hls.m3u8", shown, stop_at))
            p.start()
            for t in [*threads, p]:
                t.join(RUN_SECONDS + 30)
        finally:
            stop(pub)
    # only frames that arrived live (not the GOP cache burst of the first instant)
    live_from = min(arrivals.values()) + 2.5
    live = {ts: t for ts, t in arrivals.items() if t >= live_from}
    first_age, server_delay = [], []
    for _uri, (when, first, last) in sorted(listed.items(), key=lambda kv: kv[1][0]):
        if first in live and last in live:
            first_age.append(when - live[first])
            server_delay.append(when - live[last])
    viewer = [t - live[ts] for ts, t in shown if ts in live]
    # "glass": the publisher reads frame t at start + t (-re); the best-case arrival
    # of any frame fixes start + (encode and uplink at their fastest)
    start = min(t - ts / 1000 for ts, t in live.items())
    uplink = [t - (start + ts / 1000) for ts, t in live.items()]
    glass = [t - (start + ts / 1000) for ts, t in shown if ts in live]
    result = {"segment_listed_after_its_first_frame_s": summary(first_age),
              "segment_listed_after_its_last_frame_s": summary(server_delay),
              "player_shows_frame_after_ingest_s": summary(viewer),
              "ingest_after_capture_jitter_s": summary(uplink),
              "glass_to_glass_s": summary(glass)}
    print("\nHLS latency (segDur 2, segNum 3):", json.dumps(result, indent=2))
    assert len(first_age) >= 4 and len(viewer) >= 100
    # a segment is listed about one segment duration after its first frame came in...
    assert 1.8 < statistics.median(first_age) < 2.8
    # ...because it closes on the next keyframe; the server adds little on top
    assert statistics.median(server_delay) < 0.6
    # a real-time player starting three segments back: three segments behind, plus the newest segment's age
    assert 5.0 < statistics.median(viewer) < 10.5
