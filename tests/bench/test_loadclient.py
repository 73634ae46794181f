"""The benchmark's load client parses what the servers send: HTTP-FLV responses (head, chunked framing,
FLV tags) whole and byte at a time, and tells coded frames and keyframes from sequence headers. Also
catches a refactor that moves the mediasrv modules the load client imports."""

from __future__ import annotations

import importlib.util
import random
import struct
from types import ModuleType

import pytest

from tests.conftest import ROOT


def load_client_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_loadclient", ROOT / "bench" / "loadclient.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


lc = load_client_module()

AVC_CONFIG = bytes([0x17, 0x00, 0, 0, 0]) + b"\x01\x64\x00\x1f"  # keyframe, AVCPacketType 0
AVC_KEY = bytes([0x17, 0x01, 0, 0, 0]) + b"\x00\x00\x00\x02\x65\x88"
AVC_INTER = bytes([0x27, 0x01, 0, 0, 0]) + b"\x00\x00\x00\x02\x41\x9a"
AAC_CONFIG = bytes([0xAF, 0x00, 0x11, 0x90])
AAC_RAW = bytes([0xAF, 0x01]) + b"\x21\x10\x04"
SCRIPT = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"


def flv_tag(tag_type: int, ts: int, payload: bytes) -> bytes:
    head = bytes([tag_type]) + len(payload).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
    head += bytes([ts >> 24]) + b"\x00\x00\x00"
    return head + payload + struct.pack(">I", 11 + len(payload))


TAGS = [(18, 0, SCRIPT), (9, 0, AVC_CONFIG), (8, 0, AAC_CONFIG), (9, 0, AVC_KEY), (8, 21, AAC_RAW),
        (9, 40, AVC_INTER), (9, 0x1234567, AVC_INTER)]
FLV = b"FLV\x01\x05\x00\x00\x00\x09" + b"\x00\x00\x00\x00" + b"".join(flv_tag(*t) for t in TAGS)


def chunked(body: bytes, rng: random.Random) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(body):
        n = rng.randint(1, 40)
        out += b"%x;ext=1\r\n" % len(body[pos: pos + n]) + body[pos: pos + n] + b"\r\n"
        pos += n
    return bytes(out)


HEAD_CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: keep-alive\r\n\r\n")
HEAD_PLAIN = b"HTTP/1.0 200 OK\r\nContent-Type: video/x-flv\r\n\r\n"


@pytest.mark.parametrize("response", [HEAD_CHUNKED + chunked(FLV, random.Random(7)), HEAD_PLAIN + FLV],
                         ids=["chunked", "plain"])
@pytest.mark.parametrize("step", [None, 1, 3], ids=["whole", "byte-at-a-time", "3-bytes"])
def test_flv_reader_yields_every_tag(response: bytes, step: int | None) -> None:
    reader = lc.FlvReader()
    got: list[tuple[int, int, bytes]] = []
    if step is None:
        got = reader.feed(response)
    else:
        for i in range(0, len(response), step):
            got += reader.feed(response[i: i + step])
    assert got == TAGS


@pytest.mark.parametrize("response", [b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                                      b"HTTP/1.1 200 OK\r\n\r\nnot an flv file"])
def test_flv_reader_rejects_errors_and_non_flv(response: bytes) -> None:
    with pytest.raises(ValueError):
        lc.FlvReader().feed(response)


def test_flv_reader_reports_the_end_of_a_chunked_response() -> None:
    reader = lc.FlvReader()
    reader.feed(HEAD_CHUNKED + chunked(FLV, random.Random(1)))
    with pytest.raises(ValueError, match="ended"):
        reader.feed(b"0\r\n\r\n")


def test_coded_frames_and_keyframes() -> None:
    coded = {name: lc.is_coded_frame(t, p) for name, (t, p) in
             {"avc config": (9, AVC_CONFIG), "avc key": (9, AVC_KEY), "avc inter": (9, AVC_INTER),
              "aac config": (8, AAC_CONFIG), "aac raw": (8, AAC_RAW), "script": (18, SCRIPT)}.items()}
    assert coded == {"avc config": False, "avc key": True, "avc inter": True, "aac config": False,
                     "aac raw": True, "script": False}
    assert lc.is_keyframe(9, AVC_KEY)
    assert not lc.is_keyframe(9, AVC_INTER) and not lc.is_keyframe(9, AVC_CONFIG) and not lc.is_keyframe(8, AAC_RAW)
    # enhanced RTMP (HEVC): frame type in bits 4-6, packet type 1 = coded frames
    assert lc.is_keyframe(9, bytes([0x80 | 0x10 | 1]) + b"hvc1" + b"\x00\x00\x00")
    assert not lc.is_coded_frame(9, bytes([0x80 | 0x10 | 0]) + b"hvc1")  # sequence start
