"""Real third-party clients (ffmpeg/ffprobe) and a minimal WebSocket reader."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from typing import Any

import pytest

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")

needs_ffmpeg = pytest.mark.skipif(
    not (FFMPEG and FFPROBE) and not os.environ.get("CI"),
    reason="ffmpeg/ffprobe not installed (scripts/test.sh installs them)",
)


def publish_args(url: str, size: str = "1280x720", rate: int = 25, bitrate: str = "1500k",
                 realtime: bool = True, duration: float | None = None) -> list[str]:
    args = [FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        args.append("-re")
    args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    if duration:
        args += ["-t", str(duration)]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(rate * 2),
             "-b:v", bitrate, "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", url]
    return args


def start_publisher(url: str, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(publish_args(url, **kw), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stderr.read().decode(errors="replace") if proc.stderr else ""


def ffprobe_streams(url: str, timeout: float = 30, extra: list[str] | None = None) -> list[dict[str, Any]]:
    r = subprocess.run([FFPROBE or "ffprobe", "-v", "error", *(extra or []), "-show_entries",
                        "stream=codec_type,codec_name,width,height,sample_rate", "-of", "json", url],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"ffprobe {url} failed: {r.stderr}"
    streams: list[dict[str, Any]] = json.loads(r.stdout)["streams"]
    return streams


def decode_seconds(url: str, seconds: float, timeout: float = 60) -> tuple[int, int, str]:
    """Decode ``seconds`` of ``url`` with ffmpeg; return (video frames, audio frames, stderr)."""
    r = subprocess.run([FFMPEG or "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", url, "-t", str(seconds),
                        "-f", "framecrc", "-"], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"ffmpeg decode of {url} failed: {r.stderr}"
    video = audio = 0
    for line in r.stdout.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        idx = line.split(",", 1)[0].strip()
        if idx == "0":
            video += 1
        elif idx == "1":
            audio += 1
    return video, audio, r.stderr


def ws_read_flv(host: str, port: int, path: str, min_bytes: int, timeout: float = 20) -> bytes:
    """Open ``ws://host:port/path``, collect binary messages until ``min_bytes``."""
    sock = socket.create_connection((host, port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.test\r\n\r\n"
                  ).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed during the WebSocket handshake"
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < min_bytes and time.monotonic() < deadline:
        while True:
            if len(buf) >= 2:
                b1 = buf[1] & 0x7F
                hlen = 2 + (2 if b1 == 126 else 8 if b1 == 127 else 0)
                if len(buf) >= hlen:
                    n = b1 if b1 < 126 else struct.unpack(">H" if b1 == 126 else ">Q", buf[2:hlen])[0]
                    if len(buf) >= hlen + n:
                        opcode = buf[0] & 0x0F
                        assert not buf[1] & 0x80, "server frames must not be masked"
                        if opcode in (0, 2):
                            out += buf[hlen:hlen + n]
                        elif opcode == 8:
                            sock.close()
                            return bytes(out)
                        buf = buf[hlen + n:]
                        continue
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    sock.close()
    return bytes(out)
