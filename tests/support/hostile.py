"""Hostile inputs from the security audit (shared/research/security-audit.md),
rebuilt byte for byte, and a blocking raw RTMP client to send them.

The raw client is made of the server's own sans-IO pieces (client
handshake, chunk encoder and reader, AMF0 commands) over a real socket, so
an attack test drives the real server exactly as a hostile peer would.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from mediasrv.codec import amf0
from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import MAX_MESSAGE_LENGTH, ChunkReader, RtmpMessage, encode_message
from mediasrv.rtmp.handshake import ClientHandshake


def _ref(index: int) -> bytes:
    return b"\x07" + struct.pack(">H", index)


def _key(name: str) -> bytes:
    raw = name.encode()
    return struct.pack(">H", len(raw)) + raw


def amf_reference_bomb(k: int) -> bytes:
    """Audit finding 1: ``@setDataFrame``, ``onMetaData``, then an ECMA array
    whose member ``o0`` is ``{x: "y"}`` and each ``o_i`` (i = 1..k) is
    ``{a: ref(o_{i-1}), b: ref(o_{i-1})}``.  Reference index 0 is the ECMA
    array, 1 is ``o0``, i + 1 is ``o_i``.  k = 21 is the audit's 484-byte
    message (2^21 leaves when re-encoded)."""
    out = bytearray(amf0.encode("@setDataFrame", "onMetaData"))
    out += b"\x08" + struct.pack(">I", k + 1)
    out += _key("o0") + b"\x03" + _key("x") + amf0.encode("y") + b"\x00\x00\x09"
    for i in range(1, k + 1):
        out += _key(f"o{i}") + b"\x03" + _key("a") + _ref(i) + _key("b") + _ref(i) + b"\x00\x00\x09"
    out += b"\x00\x00\x09"
    return bytes(out)


def chunk_flood_message(csid: int, length: int, chunk_size: int) -> bytes:
    """Audit finding 5, one chunk stream: a fmt-0 header announcing a
    ``length``-byte message, then one full chunk of ``chunk_size`` bytes of
    it (the message stays incomplete while ``chunk_size < length``)."""
    body = b"\x00" * min(chunk_size, length)
    header = encode_message(csid, m.VIDEO, 1, 0, b"", 128)  # fmt 0 with length 0
    # rewrite the 3-byte length field of the fmt-0 header (offset 4 after a 1-byte basic header)
    basic = 1 if csid < 64 else (2 if csid < 320 else 3)
    hdr = bytearray(header)
    hdr[basic + 3:basic + 6] = length.to_bytes(3, "big")
    return bytes(hdr) + body


class RawRtmpClient:
    """A blocking RTMP client over a real socket, for attack scripts."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.handshake = ClientHandshake()
        self.reader = ChunkReader(max_message_size=MAX_MESSAGE_LENGTH)
        self.messages: list[RtmpMessage] = []
        self.chunk_size = 128
        self.closed = False
        self._txn = 1.0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, seconds: float) -> bool:
        """Read what arrives within ``seconds``; False once the server closed."""
        if self.closed:
            return False
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                return True
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return False
            if not self.handshake.complete:
                self.handshake.receive_data(data)
                out = self.handshake.data_to_send()
                if out:
                    self.send(out)
                if not self.handshake.complete:
                    continue
                data = self.handshake.leftover
            self.messages += self.reader.feed(data)

    def do_handshake(self) -> None:
        self.send(self.handshake.initial_bytes())
        deadline = time.monotonic() + 10
        while not self.handshake.complete and time.monotonic() < deadline:
            if not self.recv(0.2):
                raise ConnectionError("closed during the handshake")
        if not self.handshake.complete:
            raise TimeoutError("no RTMP handshake")

    def command(self, name: str, *args: Any, obj: Any = None, stream_id: int = 0, txn: float | None = None,
                csid: int = m.CSID_COMMAND) -> None:
        if txn is None:
            txn, self._txn = self._txn, self._txn + 1
        self.send(m.command(name, txn, obj, *args, stream_id=stream_id, chunk_size=self.chunk_size, csid=csid))

    def statuses(self) -> list[str]:
        out = []
        for msg in self.messages:
            if msg.type_id == m.COMMAND_AMF0:
                cmd = m.parse_command(msg)
                if cmd.name == "onStatus" and cmd.args and isinstance(cmd.args[0], dict):
                    out.append(str(cmd.args[0].get("code")))
        return out

    def wait_status(self, code: str, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while code not in self.statuses():
            if time.monotonic() > deadline or not self.recv(0.2):
                return code in self.statuses()
        return True

    def connect(self, app: str = "live") -> None:
        self.command("connect", obj={"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0",
                                     "tcUrl": f"rtmp://127.0.0.1/{app}"})

    def publish(self, name: str) -> bool:
        """releaseStream/FCPublish/createStream/publish; True once Publish.Start came."""
        self.command("releaseStream", name)
        self.command("FCPublish", name)
        self.command("createStream")
        self.command("publish", name, "live", stream_id=1, txn=0, csid=m.CSID_DATA)
        return self.wait_status("NetStream.Publish.Start")

    def message(self, type_id: int, payload: bytes, stream_id: int = 1, csid: int = m.CSID_DATA) -> None:
        self.send(encode_message(csid, type_id, stream_id, 0, payload, self.chunk_size))

    def set_chunk_size(self, n: int) -> None:
        self.send(m.set_chunk_size(n, chunk_size=self.chunk_size))
        self.chunk_size = n

    def wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.recv(0.2):
                    return True
            except ValueError:  # garbage from a server we are attacking does not matter
                continue
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
