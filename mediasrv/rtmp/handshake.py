"""The RTMP handshake (C0/C1/C2 and S0/S1/S2) as a sans-IO state machine.

Bytes go in through ``receive_data`` and come out of ``data_to_send``. This
module does no I/O, reads no clock and does not import Twisted (DESIGN.md §4,
principle 1), so tests can feed a handshake one byte at a time and the protocol
adapter stays thin.

Two forms of the handshake are used in the wild:

* **Plain**, as Adobe's RTMP specification 1.0 (2012-12-21) §5.2 describes it.
  C0/S0 is one version byte (3). C1/S1 is 1536 bytes: time (4), zero (4),
  random (1528). C2/S2 is time (the peer's C1/S1 time), time2 (when that
  packet was read) and an echo of the peer's 1528 random bytes (§5.2.4).
* **Digest** (also called "complex"), used by Flash Player, FMLE and anything
  built on librtmp or FFmpeg's ``rtmpproto.c``. Adobe never published it; the
  layout below is what librtmp ``handshake.h``, nginx-rtmp
  ``ngx_rtmp_handshake.c``, SRS ``srs_protocol_handshake.cpp`` and FFmpeg
  ``rtmpproto.c`` agree on. After the 8-byte time/version header, C1 and S1
  hold two 764-byte blocks, a *key* block and a *digest* block, in either
  order:

  - digest-first: digest block at bytes 8..771 (SRS "schema1", librtmp
    ``GetDigestOffset1``, base 8 in nginx and FFmpeg);
  - key-first: digest block at bytes 772..1535 (SRS "schema0", librtmp
    ``GetDigestOffset2``, base 772 in nginx and FFmpeg).

  The digest block starts with 4 offset bytes. The 32-byte digest sits at
  ``base + 4 + (sum of those 4 bytes) % 728``. It is HMAC-SHA256 over the
  other 1504 bytes of the packet, keyed with the first 30 bytes of the Flash
  Player key for C1 and the first 36 bytes of the FMS key for S1. The last
  32 bytes of S2 (or C2) are HMAC-SHA256 over its first 1504 bytes, keyed with
  HMAC-SHA256(full peer key, the peer's C1/S1 digest). The full keys are the
  ASCII names followed by the same 32 constant bytes.

The server answers in the form the client used. It checks C1 for a valid
digest in both layouts (key-first first, as nginx and SRS do). If neither
layout has one, it answers plain.

Choices that differ from what a reader might expect:

* Only version 3 is accepted, and the version byte is checked as soon as it
  arrives. §5.2.2 says a server SHOULD answer 3 to a version it does not
  know. We refuse instead, like nginx-rtmp, SRS and FFmpeg's listener. 0-2
  are deprecated, 6/8/9 are RTMPE (encrypted RTMP, which expects an encrypted
  session we would not provide), and 32-255 mean a text protocol (HTTP on
  the RTMP port), which §5.2.2 reserves those values to detect.
* S0+S1+S2 go out together once C1 is in, without waiting for C2. §5.2.1
  allows this (S0/S1 may wait for C1; S2 must). We must see C1 anyway to
  choose the form.
* C2's content is not checked; only its 1536-byte length counts. SRS skips
  the check ("never verify c2, for ffmpeg will failed"), nginx-rtmp never
  looks, and FFmpeg's own listener only warns. Checking it would drop real
  encoders and gain nothing, since the handshake authenticates nobody.
* In the digest form, S1's digest always uses the digest-first layout,
  whichever layout C1 used. A real FMS 5.0.1.1 answered a Flash Player's
  key-first C1 this way (the capture in ``tests/rtmp/test_handshake.py``), and
  nginx-rtmp does the same (``ngx_rtmp_write_digest`` at base 0). Clients
  look in both places (librtmp ``HandShake`` retries the other layout, FFmpeg
  tries 772 then 8).
* S1's version field in the digest form is 5.0.1.1, the value that FMS sent in
  that capture. It must be non-zero: librtmp drops to the plain form when
  ``serversig[4] == 0``, and FFmpeg checks S1's digest only when that byte
  is >= 3.

Memory is bounded. The handshake buffers at most one 1536-byte packet at a
time (3073 bytes across C0+C1+C2). Whatever arrives after the last handshake
packet is the start of the chunk stream. It goes to ``leftover`` untouched,
for the caller to pass to the chunk reader.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Final

__all__ = [
    "FMS_KEY",
    "FP_KEY",
    "PACKET_SIZE",
    "RTMP_VERSION",
    "ClientHandshake",
    "DigestLayout",
    "HandshakeError",
    "ServerHandshake",
]

RTMP_VERSION: Final = 3
"""The only C0/S0 version defined by the spec (§5.2.2) and the only one we speak."""

PACKET_SIZE: Final = 1536
"""Size of C1, C2, S1 and S2 (§5.2.3, §5.2.4)."""

_RANDOM_SIZE: Final = PACKET_SIZE - 8
_DIGEST_SIZE: Final = 32  # SHA-256
_SIGNED_SIZE: Final = PACKET_SIZE - _DIGEST_SIZE  # 1504 bytes covered by a digest
_DIGEST_OFFSET_MODULUS: Final = 728  # 764-byte block - 4 offset bytes - 32 digest bytes

_KEY_TAIL: Final = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")

FMS_KEY: Final = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
"""The 68-byte server key (librtmp ``GenuineFMSKey``, nginx ``ngx_rtmp_server_key``).

S1 is signed with its first 36 bytes (the ASCII part). S2's key is derived
from all 68.
"""

FP_KEY: Final = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
"""The 62-byte client key (librtmp ``GenuineFPKey``, nginx ``ngx_rtmp_client_key``).

C1 is signed with its first 30 bytes. C2's key is derived from all 62.
"""

_FMS_KEY_PARTIAL: Final = FMS_KEY[:36]
_FP_KEY_PARTIAL: Final = FP_KEY[:30]

_SERVER_DIGEST_VERSION: Final = bytes((5, 0, 1, 1))
"""S1 version field in the digest form: what FMS 5.0.1.1 sent (see module docstring)."""

_CLIENT_DIGEST_VERSION: Final = bytes((128, 0, 7, 2))
"""C1 version field in the digest form: what Flash Player sent in the test capture.

SRS's client uses the same value (``0x80000702``).
"""

_RTMPE_VERSIONS: Final = frozenset((6, 8, 9))  # librtmp handshake.h: "encrypted: 0x06, 0x08, 0x09"


class HandshakeError(ValueError):
    """The peer broke the handshake. The adapter should drop the connection.

    Messages name the packet and the offending value, so that one log line is
    enough to match the error against a capture (DESIGN.md §4, principle 12).
    """


class DigestLayout(enum.IntEnum):
    """Where the digest block sits in C1/S1. The value is the block's first byte.

    SRS and several write-ups number these "schema 0" and "schema 1", and
    other sources use the numbers the other way round, so we name them by
    layout instead.
    """

    KEY_FIRST = 772
    """Key block at 8..771, digest block at 772..1535 (SRS "schema0")."""

    DIGEST_FIRST = 8
    """Digest block at 8..771, key block at 772..1535 (SRS "schema1")."""


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _digest_position(packet: bytes, layout: DigestLayout) -> int:
    """Offset of the 32-byte digest inside a 1536-byte C1/S1.

    Computed as in librtmp ``GetDigestOffset1/2`` and nginx
    ``ngx_rtmp_find_digest``: the sum of the block's 4 leading bytes, modulo
    728, past those 4 bytes. The result always leaves room for the whole
    digest inside the block.
    """
    base = int(layout)
    return base + 4 + sum(packet[base : base + 4]) % _DIGEST_OFFSET_MODULUS


def _packet_digest(packet: bytes, position: int, key: bytes) -> bytes:
    """HMAC-SHA256 over the packet minus the 32 bytes at ``position``.

    This is librtmp's ``CalculateDigest``.
    """
    return _hmac_sha256(key, packet[:position] + packet[position + _DIGEST_SIZE :])


def _find_digest(packet: bytes, key: bytes) -> tuple[DigestLayout, bytes] | None:
    """Return the layout and digest of a C1/S1 signed with ``key``, or ``None``.

    Key-first is tried first, as nginx-rtmp and SRS do. A random packet passes
    either check with probability 2**-256, so the order only decides which
    layout we report.
    """
    for layout in (DigestLayout.KEY_FIRST, DigestLayout.DIGEST_FIRST):
        position = _digest_position(packet, layout)
        found = packet[position : position + _DIGEST_SIZE]
        if hmac.compare_digest(found, _packet_digest(packet, position, key)):
            return layout, found
    return None


def _sign_packet(unsigned: bytes, layout: DigestLayout, key: bytes) -> tuple[bytes, bytes]:
    """Write the digest into a C1/S1. Return the signed packet and the digest.

    The bytes that will hold the digest are ignored by ``_packet_digest``, so
    their value in ``unsigned`` does not matter.
    """
    position = _digest_position(unsigned, layout)
    digest = _packet_digest(unsigned, position, key)
    signed = unsigned[:position] + digest + unsigned[position + _DIGEST_SIZE :]
    return signed, digest


def _response_signature(peer_digest: bytes, full_key: bytes, signed_part: bytes) -> bytes:
    """The last 32 bytes of S2 (or C2) in the digest form.

    HMAC-SHA256(HMAC-SHA256(full key, peer's C1/S1 digest), first 1504
    bytes), as in nginx ``ngx_rtmp_handshake_parse_challenge`` and
    ``create_response``, SRS ``c2s2::s2_create`` and ``c2_create``, and the
    S2 check in librtmp ``HandShake``.
    """
    return _hmac_sha256(_hmac_sha256(full_key, peer_digest), signed_part)


def _random(source: Callable[[int], bytes], size: int) -> bytes:
    """Draw ``size`` bytes from the injected source and check the length.

    A short read would otherwise produce a malformed packet, which the peer
    would report as a handshake failure on its side.
    """
    data = bytes(source(size))
    if len(data) != size:
        raise ValueError(f"random_bytes({size}) returned {len(data)} bytes")
    return data


def _version_error(version: int, packet: str) -> HandshakeError:
    if version in _RTMPE_VERSIONS:
        detail = "RTMPE, the encrypted variant, is not supported"
    elif 32 <= version < 127:
        detail = f"0x{version:02x} {chr(version)!r}: a text protocol such as HTTP, not RTMP"
    elif version >= 32:
        detail = f"0x{version:02x}: values 32-255 are not allowed"
    elif version < RTMP_VERSION:
        detail = "a deprecated pre-RTMP-3 version"
    else:
        detail = "a version reserved for future use"
    return HandshakeError(f"unsupported RTMP version {version} in {packet} ({detail})")


class _HandshakeMachine:
    """What both sides share: three inbound packets of 1, 1536 and 1536 bytes.

    ``receive_data`` accepts any split of the input. Each packet is handed
    to ``_on_packet`` as soon as it is whole. Anything past the third packet
    goes to ``leftover``. An error is final: later calls raise it again, as
    h11 does after a protocol error.
    """

    _STAGE_SIZES: Final = (1, PACKET_SIZE, PACKET_SIZE)

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self._random_bytes = random_bytes
        self._stage = 0
        self._buffer = bytearray()
        self._outgoing = bytearray()
        self._leftover = b""
        self._error: HandshakeError | None = None

    @property
    def complete(self) -> bool:
        """True once the peer's third handshake packet has been received."""
        return self._stage == len(self._STAGE_SIZES)

    @property
    def leftover(self) -> bytes:
        """Bytes received after the handshake: the first bytes of the chunk stream."""
        return self._leftover

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer. Raise :class:`HandshakeError` if they break the handshake."""
        if self._error is not None:
            raise HandshakeError(f"handshake already failed: {self._error}")
        view = memoryview(data)
        while view and not self.complete:
            size = self._STAGE_SIZES[self._stage]
            needed = size - len(self._buffer)
            self._buffer += view[:needed]
            view = view[needed:]
            if len(self._buffer) < size:
                break
            packet = bytes(self._buffer)
            self._buffer.clear()
            try:
                self._on_packet(self._stage, packet)
            except HandshakeError as error:
                self._error = error
                raise
            self._stage += 1
        if view:
            self._leftover += view

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now. Each byte is returned once."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def _on_packet(self, stage: int, packet: bytes) -> None:
        raise NotImplementedError


class ServerHandshake(_HandshakeMachine):
    """The server side: reads C0, C1, C2 and writes S0, S1, S2.

    ``server_time`` goes into S1's time field and S2's time2 field, modulo
    2**32 like every RTMP timestamp. S1's time is the epoch of the server's
    chunk timestamps (§5.2.3), and may be 0. Time2 is "the timestamp at which
    the previous packet (C1) was read" (§5.2.4). We answer the moment C1 is
    read, so it is the same value. With the default 0 and a plain C1 (zero
    field 0), S2 is a byte-exact echo of C1. That is what nginx-rtmp and SRS
    send, and what librtmp compares against.
    """

    def __init__(
        self,
        random_bytes: Callable[[int], bytes] = os.urandom,
        server_time: int = 0,
    ) -> None:
        super().__init__(random_bytes)
        self._time = (server_time & 0xFFFFFFFF).to_bytes(4, "big")
        self._digest_layout: DigestLayout | None = None

    @property
    def digest_used(self) -> bool:
        """True when C1 carried a valid digest and we answered in the digest form."""
        return self._digest_layout is not None

    @property
    def digest_layout(self) -> DigestLayout | None:
        """The layout C1's digest used, for logs. ``None`` for the plain form."""
        return self._digest_layout

    def _on_packet(self, stage: int, packet: bytes) -> None:
        if stage == 0:
            if packet[0] != RTMP_VERSION:
                raise _version_error(packet[0], "C0")
        elif stage == 1:
            self._outgoing += bytes((RTMP_VERSION,)) + self._answer(packet)
        # stage 2 is C2, accepted as is: see the module docstring.

    def _answer(self, c1: bytes) -> bytes:
        """Build S1+S2 for this C1, in the form C1 used."""
        found = _find_digest(c1, _FP_KEY_PARTIAL)
        if found is None:
            s1 = self._time + bytes(4) + _random(self._random_bytes, _RANDOM_SIZE)
            s2 = c1[:4] + self._time + c1[8:]
            return s1 + s2
        self._digest_layout, c1_digest = found
        unsigned = self._time + _SERVER_DIGEST_VERSION + _random(self._random_bytes, _RANDOM_SIZE)
        s1, _ = _sign_packet(unsigned, DigestLayout.DIGEST_FIRST, _FMS_KEY_PARTIAL)
        s2_body = _random(self._random_bytes, _SIGNED_SIZE)
        s2 = s2_body + _response_signature(c1_digest, FMS_KEY, s2_body)
        return s1 + s2


class ClientHandshake(_HandshakeMachine):
    """The client side, for tests and the benchmark load client.

    ``initial_bytes()`` gives C0+C1. Feed the server's bytes to
    ``receive_data``. ``data_to_send()`` gives C2 once S0+S1 are in (§5.2.1:
    C2 waits for S1, not for S2).

    With ``digest=True``, C1 is signed in the digest-first layout, as librtmp
    and FFmpeg do for plain RTMP. SRS notes that "FMS requires the
    schema1(digest-key)". S1 must then carry a valid FMS digest and S2 a
    valid signature, otherwise :class:`HandshakeError` is raised. A server
    that falls back to the plain form also fails this check: a load client
    should notice when the server stops recognising Flash-style clients.
    Without ``digest``, S0 must be 3 and S2 must echo C1's time and random
    bytes (§5.2.4). Time2 is not checked.
    """

    def __init__(
        self,
        random_bytes: Callable[[int], bytes] = os.urandom,
        digest: bool = False,
    ) -> None:
        super().__init__(random_bytes)
        self._digest = digest
        if digest:
            unsigned = bytes(4) + _CLIENT_DIGEST_VERSION + _random(random_bytes, _RANDOM_SIZE)
            self._c1, self._c1_digest = _sign_packet(unsigned, DigestLayout.DIGEST_FIRST, _FP_KEY_PARTIAL)
        else:
            self._c1 = bytes(8) + _random(random_bytes, _RANDOM_SIZE)
            self._c1_digest = b""

    def initial_bytes(self) -> bytes:
        """C0+C1, to write as soon as the connection is up (the same bytes on every call)."""
        return bytes((RTMP_VERSION,)) + self._c1

    def _on_packet(self, stage: int, packet: bytes) -> None:
        if stage == 0:
            if packet[0] != RTMP_VERSION:
                raise _version_error(packet[0], "S0")
        elif stage == 1:
            self._outgoing += self._reply_to_s1(packet)
        else:
            self._check_s2(packet)

    def _reply_to_s1(self, s1: bytes) -> bytes:
        if not self._digest:
            # Time2 is "when S1 was read". The client has no clock, so we send 0.
            return s1[:4] + bytes(4) + s1[8:]
        found = _find_digest(s1, _FMS_KEY_PARTIAL)
        if found is None:
            raise HandshakeError(f"S1 carries no valid FMS digest in either layout (S1 version field {s1[4:8].hex()})")
        _, s1_digest = found
        c2_body = _random(self._random_bytes, _SIGNED_SIZE)
        return c2_body + _response_signature(s1_digest, FP_KEY, c2_body)

    def _check_s2(self, s2: bytes) -> None:
        if self._digest:
            expected = _response_signature(self._c1_digest, FMS_KEY, s2[:_SIGNED_SIZE])
            if not hmac.compare_digest(expected, s2[_SIGNED_SIZE:]):
                raise HandshakeError(
                    "S2 signature does not match C1's digest "
                    f"(got {s2[_SIGNED_SIZE:].hex()}, expected {expected.hex()})"
                )
            return
        if s2[:4] != self._c1[:4]:
            raise HandshakeError(f"S2 time {s2[:4].hex()} does not echo C1 time {self._c1[:4].hex()}")
        if s2[8:] != self._c1[8:]:
            first = next(i for i in range(8, PACKET_SIZE) if s2[i] != self._c1[i])
            raise HandshakeError(f"S2 does not echo C1's random bytes (first difference at byte {first})")
