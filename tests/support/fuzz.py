"""A seeded generator of malformed and abusive inputs for RTMP, RTSP, HTTP,
WebSocket and the telnet shell, and a blocking runner that throws them at a
real server.

Every :class:`Attack` is one connection: the bytes to send (in pieces, with
a short read after each so the server's answers do not block it) and how
many malformed or abusive inputs it carries (a garbage handshake is one, 50
pipelined junk requests are 50).  The same seed gives the same attacks.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mediasrv.codec import amf0
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import encode_message
from tests.support.hostile import amf_reference_bomb

# names that must never escape a root or reach a terminal raw; used only
# where they cannot write to disk yet (plays, describes, lookups), see the TODO
# list of tests/interop/test_hostile.py
HOSTILE_NAMES = ["../../x", "..%2f..%2fx", "%2e%2e/%2e%2e/etc", "/etc/passwd", "live/./soak", "a\\..\\b",
                 "evil\x1b]0;owned\x07", "x\ny", "\uff0e\uff0e/x", "x" * 5000, "\x00", "", "."]


@dataclass
class Attack:
    proto: str  # "rtmp", "rtsp", "http", "ws", "shell"
    kind: str
    pieces: list[bytes]
    inputs: int = 1
    read: float = 0.15  # seconds to read after each piece


# -- RTMP ----------------------------------------------------------------------------------------------
def _c0c1c2(rng: random.Random) -> bytes:
    c1 = struct.pack(">II", 0, 0) + rng.randbytes(1528)
    return b"\x03" + c1 + rng.randbytes(1536)


def _cmd(name: str, txn: float, obj: object, *args: object, stream_id: int = 0, csid: int = 3) -> bytes:
    return m.command(name, txn, obj, *args, stream_id=stream_id, chunk_size=128, csid=csid)


def _connect(app: str = "live") -> bytes:
    return _cmd("connect", 1.0, {"app": app, "type": "nonprivate", "tcUrl": f"rtmp://127.0.0.1/{app}"})


def _fmt0(csid: int, type_id: int, length: int, stream_id: int = 1) -> bytes:
    hdr = bytearray(encode_message(csid, type_id, stream_id, 0, b"", 128))
    basic = 1 if csid < 64 else (2 if csid < 320 else 3)
    hdr[basic + 3:basic + 6] = length.to_bytes(3, "big")
    return bytes(hdr)


def _random_amf(rng: random.Random, n: int) -> bytes:
    markers = bytes(range(0x12)) + b"\xff\x07\x08\x0a\x03"
    out = bytearray()
    while len(out) < n:
        out.append(rng.choice(markers))
        out += rng.randbytes(rng.randint(0, 12))
    return bytes(out)


def rtmp_attacks(rng: random.Random, name: Callable[[], str]) -> list[Callable[[], Attack]]:
    def garbage_handshake() -> Attack:
        return Attack("rtmp", "garbage handshake", [rng.randbytes(rng.randint(1, 4000))])

    def truncated_handshake() -> Attack:
        return Attack("rtmp", "truncated handshake", [b"\x03" + rng.randbytes(rng.randint(0, 3000))])

    def bad_version() -> Attack:
        return Attack("rtmp", "bad version", [bytes([rng.choice([0, 6, 0x16, 0x47, 0xff])]) + rng.randbytes(1536)])

    def junk_chunks() -> Attack:
        return Attack("rtmp", "junk chunks", [_c0c1c2(rng), rng.randbytes(rng.randint(1, 3000))])

    def absurd_chunk_header() -> Attack:
        csid = rng.choice([2, 3, 5, 63, 64, 319, 320, 65599])
        return Attack("rtmp", "absurd chunk header",
                      [_c0c1c2(rng), _fmt0(csid, rng.randint(0, 255), rng.choice([0xFFFFFF, 0x800000, 9_999_999 & 0xFFFFFF]))
                       + rng.randbytes(rng.randint(0, 512))])

    def bad_chunk_size() -> Attack:
        size = rng.choice([0, 0x80000000, 0xFFFFFFFF, 0x80000001])
        return Attack("rtmp", "bad chunk size", [_c0c1c2(rng), encode_message(2, 1, 0, 0, struct.pack(">I", size), 128)])

    def fmt3_first() -> Attack:
        return Attack("rtmp", "fmt3 without header", [_c0c1c2(rng), bytes([0xC0 | rng.randint(2, 63)]) + rng.randbytes(64)])

    def amf_garbage() -> Attack:
        payload = _random_amf(rng, rng.randint(1, 600))
        return Attack("rtmp", "AMF garbage", [_c0c1c2(rng), encode_message(3, rng.choice([20, 18, 17, 15]), 0, 0,
                                                                               payload, 128)])

    def connect_bomb() -> Attack:
        body = amf0.encode("connect", 1.0) + amf_reference_bomb(rng.randint(14, 40))[29:]
        return Attack("rtmp", "AMF bomb in connect", [_c0c1c2(rng), encode_message(3, 20, 0, 0, body, 128)])

    def metadata_bomb() -> Attack:
        n = name()
        setup = _connect() + _cmd("createStream", 2.0, None) + _cmd("publish", 0.0, None, n, "live", stream_id=1, csid=5)
        return Attack("rtmp", "AMF bomb in onMetaData",
                      [_c0c1c2(rng), setup, encode_message(5, 18, 1, 0, amf_reference_bomb(rng.randint(14, 40)), 128)])

    def chunk_flood() -> Attack:
        streams = rng.randint(2, 6)
        size = rng.choice([1 << 20, 4 << 20, 8 << 20])
        body = [encode_message(2, 1, 0, 0, struct.pack(">I", 65536), 128)]
        for i in range(streams):
            body.append(_fmt0(6 + i, 9, size) + bytes(65536))
        pieces = [_c0c1c2(rng), _connect()]
        if rng.random() < 0.5:  # after publishing too (anyone may publish by default)
            pieces.append(_cmd("createStream", 2.0, None) + _cmd("publish", 0.0, None, name(), "live", stream_id=1,
                                                                 csid=5))
        return Attack("rtmp", "chunk stream flood", pieces + [b"".join(body)], inputs=streams)

    def junk_commands() -> Attack:
        n = rng.randint(10, 60)
        cmds = b"".join(_cmd(f"x{rng.randbytes(3).hex()}", float(i + 2), None, rng.random()) for i in range(n))
        return Attack("rtmp", "unknown commands", [_c0c1c2(rng), _connect(), cmds], inputs=n)

    def hostile_play() -> Attack:
        target = rng.choice(HOSTILE_NAMES)
        return Attack("rtmp", "hostile play name", [_c0c1c2(rng), _connect(rng.choice(["live", "../..", "a\x1b[2J"])),
                                                    _cmd("createStream", 2.0, None)
                                                    + _cmd("play", 0.0, None, target, stream_id=1, csid=5)])

    def aggregate_junk() -> Attack:
        return Attack("rtmp", "aggregate junk", [_c0c1c2(rng), encode_message(6, 22, 1, 0, rng.randbytes(rng.randint(1, 300)),
                                                                                128)])

    def control_junk() -> Attack:
        n = rng.randint(5, 40)
        msgs = b"".join(encode_message(2, rng.choice([3, 4, 5, 6]), 0, 0, rng.randbytes(rng.randint(0, 9)), 128)
                        for _ in range(n))
        return Attack("rtmp", "control junk", [_c0c1c2(rng), msgs], inputs=n)

    return [garbage_handshake, truncated_handshake, bad_version, junk_chunks, absurd_chunk_header, bad_chunk_size,
            fmt3_first, amf_garbage, connect_bomb, metadata_bomb, chunk_flood, junk_commands, hostile_play,
            aggregate_junk, control_junk]


# -- RTSP ----------------------------------------------------------------------------------------------
def rtsp_attacks(rng: random.Random) -> list[Callable[[], Attack]]:
    url = "rtsp://127.0.0.1/live/soak"

    def garbage() -> Attack:
        return Attack("rtsp", "garbage", [rng.randbytes(rng.randint(1, 2000))])

    def huge_header() -> Attack:
        return Attack("rtsp", "huge header", [f"OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\nX-Big: ".encode()
                                              + b"a" * rng.randint(17_000, 80_000) + b"\r\n\r\n"])

    def many_headers() -> Attack:
        lines = "".join(f"X-{i}: {i}\r\n" for i in range(rng.randint(65, 400)))
        return Attack("rtsp", "many headers", [f"OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n{lines}\r\n".encode()])

    def bad_request_line() -> Attack:
        line = rng.choice(["options * rtsp/1.0", "GET / HTTP/1.1", "OPTIONS", "DESCRIBE rtsp://x RTSP/9.9",
                           "PLAY\x00 rtsp://h/ RTSP/1.0", "SETUP rtsp://h/live/soak/trackID=999999 RTSP/1.0",
                           "OPTIONS " + "x" * 9000 + " RTSP/1.0"])
        return Attack("rtsp", "bad request line", [f"{line}\r\nCSeq: {rng.choice(['1', 'x', '-1', ''])}\r\n\r\n".encode()])

    def interleaved_junk() -> Attack:
        frames = b"".join(b"$" + bytes([rng.randint(0, 255)]) + struct.pack(">H", rng.randint(0, 65535))
                          + rng.randbytes(rng.randint(0, 200)) for _ in range(rng.randint(1, 20)))
        return Attack("rtsp", "interleaved junk", [frames])

    def hostile_describe() -> Attack:
        target = rng.choice(["%2e%2e/%2e%2e/etc/passwd", "live/%00x", "live/..%2f..%2fx", "live/%1b%5d0%3bx",
                             "live/" + "y" * 3000, "../../x"])
        return Attack("rtsp", "hostile describe",
                      [f"DESCRIBE rtsp://127.0.0.1/{target} RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n"
                       .encode()])

    def bad_content_length() -> Attack:
        cl = rng.choice(["99999999999", "-5", "abc", "300000"])
        return Attack("rtsp", "bad content-length",
                      [f"ANNOUNCE {url}x RTSP/1.0\r\nCSeq: 3\r\nContent-Type: application/sdp\r\nContent-Length: {cl}"
                       "\r\n\r\n".encode() + rng.randbytes(rng.randint(0, 4000))])

    def pipelined() -> Attack:
        n = rng.randint(10, 60)
        reqs = b"".join(f"OPTIONS {url} RTSP/1.0\r\nCSeq: {i}\r\n\r\n".encode() for i in range(n))
        return Attack("rtsp", "pipelined flood", [reqs], inputs=n)

    def junk_announce() -> Attack:
        sdp = rng.choice([rng.randbytes(300), b"v=0\r\nm=video 0 RTP/AVP 96\r\n" * 50,
                          b"v=0\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 sprop-parameter-sets=!!!,@@@\r\n"])
        return Attack("rtsp", "junk ANNOUNCE",
                      [f"ANNOUNCE {url}-fz{rng.randint(0, 1 << 30)} RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp"
                       f"\r\nContent-Length: {len(sdp)}\r\n\r\n".encode() + sdp])

    def bad_auth() -> Attack:
        hdr = rng.choice(['Digest username="a\x1b", realm=, nonce="', "Basic !!!!", "Digest " + "x=" * 3000])
        return Attack("rtsp", "bad Authorization",
                      [f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAuthorization: {hdr}\r\n\r\n".encode()])

    return [garbage, huge_header, many_headers, bad_request_line, interleaved_junk, hostile_describe,
            bad_content_length, pipelined, junk_announce, bad_auth]


# -- HTTP and WebSocket ----------------------------------------------------------------------------------
def http_attacks(rng: random.Random) -> list[Callable[[], Attack]]:
    def junk() -> Attack:
        return Attack("http", "junk", [rng.randbytes(rng.randint(1, 3000))])

    def bad_request_line() -> Attack:
        line = rng.choice(["GET", "GET / HTTP/9.9", "G\x00T / HTTP/1.1", "GET " + "/a" * 20000 + " HTTP/1.1",
                           "BREW /pot HTCPCP/1.0", "GET / HTTP/1.1 extra", "\r\n\r\n\r\n"])
        return Attack("http", "bad request line", [f"{line}\r\nHost: x\r\n\r\n".encode(errors="replace")])

    def huge_headers() -> Attack:
        if rng.random() < 0.5:
            head = b"X-Big: " + b"b" * rng.randint(20_000, 120_000) + b"\r\n"
        else:
            head = b"".join(f"X-{i}: v\r\n".encode() for i in range(rng.randint(200, 2000)))
        return Attack("http", "huge headers", [b"GET / HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n"])

    def huge_body_claim() -> Attack:
        path = rng.choice(["/", "/live/soak.live.flv", "/index.html", "/nothing"])
        return Attack("http", "huge body (claimed)",
                      [f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {rng.choice([10**12, 2**62, 10**9])}\r\n\r\n"
                       .encode(), bytes(rng.randint(1, 65536))])

    def chunked_junk() -> Attack:
        return Attack("http", "chunked junk",
                      [b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + rng.choice([b"zz\r\n", b"FFFFFFFFFFFFFFFF\r\n", b"5\r\nab", b"-1\r\n\r\n"])])

    def traversal() -> Attack:
        path = rng.choice(["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/hostname", "/..%2f..%2fetc",
                           "/live/..%2f..%2fx.live.flv", "/%00", "/live/%1b%5b2J.live.flv", "/live/a%5c..%5cb.flv",
                           "/" + "%2e%2e/" * 50 + "etc/passwd", "/live/soak/hls.m3u8/../../../x"])
        return Attack("http", "traversal", [f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()])

    def api_junk() -> Attack:
        body = rng.choice([b"{", b"[]" * 100, rng.randbytes(200), b'{"secret": 1e999}', b"a=1&" * 500])
        api = rng.choice(["/index/api/getServerConfig", "/index/api/setServerConfig", "/api/v1/streams/",
                          "/metrics", "/manage/server_status"])
        return Attack("http", "API junk", [f"POST {api}?secret=wrong HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                           f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body])

    def pipelined_404() -> Attack:
        n = rng.randint(5, 40)
        reqs = b"".join(f"GET /nope-{rng.randint(0, 1 << 30)}.txt HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                        for _ in range(n))
        return Attack("http", "pipelined 404s", [reqs], inputs=n)

    def hostile_flv() -> Attack:
        target = rng.choice(["live/..%2fx", "live/%00", "live/" + "z" * 4000, "../../x", "live/%1b%5d0%3bowned"])
        return Attack("http", "hostile FLV name", [f"GET /{target}.live.flv HTTP/1.1\r\nHost: x\r\n\r\n".encode()])

    return [junk, bad_request_line, huge_headers, huge_body_claim, chunked_junk, traversal, api_junk, pipelined_404,
            hostile_flv]


def _ws_frame(rng: random.Random, opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, (0x80 if masked else 0) | n])
    elif n < 65536:
        head = bytes([b0, (0x80 if masked else 0) | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, (0x80 if masked else 0) | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    key = rng.randbytes(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_attacks(rng: random.Random, frames_to_live: bool = False) -> list[Callable[[], Attack]]:
    """WebSocket attacks.  Junk *frames* go to a stream that is not live
    unless ``frames_to_live``: a WS-FLV client that breaks the WebSocket
    protocol while media flows can still kill the stream's publisher (see
    the TODO list of tests/interop/test_hostile.py)."""

    def target() -> str:
        return "/live/soak.live.flv" if frames_to_live else f"/live/nolive{rng.randint(0, 999)}.live.flv"

    def upgrade(path: str | None = None, version: str = "13", key: str | None = None) -> bytes:
        path = path if path is not None else target()
        key = key if key is not None else "dGhlIHNhbXBsZSBub25jZQ=="
        return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n").encode()

    def junk_frames() -> Attack:
        n = rng.randint(3, 30)
        frames = b"".join(_ws_frame(rng, rng.choice([0, 1, 2, 3, 7, 9, 10, 11, 15]), rng.randbytes(rng.randint(0, 300)),
                                    fin=rng.random() < 0.7, masked=rng.random() < 0.8) for _ in range(n))
        return Attack("ws", "junk frames", [upgrade(), frames], inputs=n)

    def raw_junk() -> Attack:
        return Attack("ws", "raw junk after upgrade", [upgrade(), rng.randbytes(rng.randint(1, 2000))])

    def bad_lengths() -> Attack:
        head = bytes([0x82, 0xFF]) + struct.pack(">Q", rng.choice([2**63 - 1, 2**40, 10**12])) + rng.randbytes(4)
        return Attack("ws", "absurd frame length", [upgrade(), head + rng.randbytes(100)])

    def fragments() -> Attack:
        n = rng.randint(5, 40)  # a bounded fragmented message (TODO: an endless one, finding 10)
        frames = b"".join(_ws_frame(rng, 2 if i == 0 else 0, rng.randbytes(1024), fin=False) for i in range(n))
        return Attack("ws", "fragmented message", [upgrade(), frames], inputs=n)

    def ping_flood() -> Attack:
        n = rng.randint(20, 100)
        return Attack("ws", "ping flood", [upgrade(), b"".join(_ws_frame(rng, 9, rng.randbytes(125)) for _ in range(n))],
                      inputs=n)

    def bad_upgrade() -> Attack:
        return Attack("ws", "bad upgrade", [upgrade(rng.choice(["/live/soak.live.flv", "/live/none.live.flv", "/"]),
                                                    version=rng.choice(["13", "8", "99", ""]),
                                                    key=rng.choice(["", "short", "!!!!", "a" * 2000]))])

    return [junk_frames, raw_junk, bad_lengths, fragments, ping_flood, bad_upgrade]


# -- the shell -------------------------------------------------------------------------------------------
def shell_attacks(rng: random.Random) -> list[Callable[[], Attack]]:
    IAC, SB = 255, 250

    def junk() -> Attack:
        return Attack("shell", "telnet junk", [rng.randbytes(rng.randint(1, 2000))])

    def long_subnegotiation() -> Attack:
        return Attack("shell", "endless subnegotiation", [bytes([IAC, SB, 31]) + rng.randbytes(rng.randint(5000, 20000))])

    def option_storm() -> Attack:
        n = rng.randint(50, 500)
        return Attack("shell", "option storm",
                      [b"".join(bytes([IAC, rng.choice([251, 252, 253, 254]), rng.randint(0, 255)]) for _ in range(n))],
                      inputs=n // 50 + 1)

    def hostile_login() -> Attack:
        user = rng.choice(["root", "admin\x1b]0;x\x07", "a\r\nforged", "x" * 10000, "\x00\x01\x02"])
        return Attack("shell", "hostile login", [user.encode(errors="replace") + b"\r\n", b"wrong\r\n"], read=0.3)

    def long_line() -> Attack:
        return Attack("shell", "long line", [b"y" * rng.randint(10_000, 100_000) + b"\r\n"])

    return [junk, long_subnegotiation, option_storm, hostile_login, long_line]


# -- mix and run ---------------------------------------------------------------------------------------------
def attack_mix(seed: int) -> Iterator[Attack]:
    """An endless, seeded stream of attacks across the five protocols."""
    rng = random.Random(seed)
    counter = iter(range(1 << 62))

    def name() -> str:
        return f"fz{seed}-{next(counter)}"

    makers = (rtmp_attacks(rng, name) * 2 + rtsp_attacks(rng) + http_attacks(rng) + ws_attacks(rng)
              + shell_attacks(rng))
    while True:
        yield rng.choice(makers)()


def run_attack(attack: Attack, port: int, timeout: float = 2.0) -> str:
    """Send ``attack`` to ``127.0.0.1:port``; return how it ended: "closed"
    (the server closed or reset the connection) or "open" (we gave up)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return "refused"
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        for piece in attack.pieces:
            try:
                sock.sendall(piece)
            except OSError:
                return "closed"
            deadline = time.monotonic() + attack.read
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                try:
                    data = sock.recv(1 << 16)
                except TimeoutError:
                    break
                except OSError:
                    return "closed"
                if not data:
                    return "closed"
        return "open"
    finally:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST: no TIME_WAIT pile
        except OSError:
            pass
        sock.close()


def random_seed() -> int:
    """``MEDIASRV_FUZZ_SEED`` or a fixed default, so a failing run can be replayed."""
    return int(os.environ.get("MEDIASRV_FUZZ_SEED", "20261204"))
