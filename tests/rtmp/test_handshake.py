"""Tests for the sans-IO RTMP handshake (mediasrv.rtmp.handshake).

The digest-form checks do not reuse the module's helpers. This file has its
own small implementation of the digest layout, built from the description in
librtmp ``handshake.h``, nginx-rtmp ``ngx_rtmp_handshake.c`` and SRS
``srs_protocol_handshake.cpp``. A misreading in the module then shows up as a
disagreement instead of being tested against itself. Real captured packets
anchor both implementations to what Flash Player and FMS put on the wire
(see the fixtures below).
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasrv.rtmp.handshake import ClientHandshake, DigestLayout, HandshakeError, ServerHandshake

# --- Independent reference implementation -----------------------------------

# The 32 bytes after the ASCII names in both keys, written out from the list
# in nginx-rtmp's ngx_rtmp_server_key (same bytes in librtmp's GenuineFMSKey).
KEY_TAIL = bytes(
    [
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
        0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
    ]
)  # fmt: skip
FMS_KEY_68 = b"Genuine Adobe Flash Media Server 001" + KEY_TAIL
FP_KEY_62 = b"Genuine Adobe Flash Player 001" + KEY_TAIL
BASES = {"digest_first": 8, "key_first": 772}  # first byte of the 764-byte digest block


def ref_digest_pos(packet: bytes, base: int) -> int:
    return sum(packet[base : base + 4]) % 728 + base + 4


def ref_hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def ref_sign(packet: bytes, base: int, key: bytes) -> bytes:
    pos = ref_digest_pos(packet, base)
    digest = ref_hmac(key, packet[:pos] + packet[pos + 32 :])
    return packet[:pos] + digest + packet[pos + 32 :]


def ref_digest_at(packet: bytes, base: int, key: bytes) -> bytes | None:
    """The packet's digest if it is valid for this base, else None."""
    pos = ref_digest_pos(packet, base)
    if ref_hmac(key, packet[:pos] + packet[pos + 32 :]) == packet[pos : pos + 32]:
        return packet[pos : pos + 32]
    return None


def ref_response_ok(response: bytes, peer_digest: bytes, full_key: bytes) -> bool:
    return ref_hmac(ref_hmac(full_key, peer_digest), response[:1504]) == response[1504:]


# --- Helpers -------------------------------------------------------------------


def rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def feed(machine: ServerHandshake | ClientHandshake, data: bytes, chunk: int | None) -> None:
    """Feed ``data`` whole (``chunk=None``) or in pieces of ``chunk`` bytes."""
    if chunk is None:
        machine.receive_data(data)
        return
    for i in range(0, len(data), chunk):
        machine.receive_data(data[i : i + chunk])


def loopback(client: ClientHandshake, server: ServerHandshake, chunk: int | None) -> tuple[bytes, bytes, bytes]:
    """Run a whole handshake. Return (C0+C1, S0+S1+S2, C2)."""
    c0c1 = client.initial_bytes()
    feed(server, c0c1, chunk)
    s012 = server.data_to_send()
    feed(client, s012, chunk)
    c2 = client.data_to_send()
    feed(server, c2, chunk)
    return c0c1, s012, c2


def plain_c0c1(seed: int = 1, time: bytes = b"\x00\x00\x00\x00") -> bytes:
    return b"\x03" + time + b"\x00\x00\x00\x00" + random.Random(seed).randbytes(1528)


def digest_c0c1(base: int, seed: int = 2) -> bytes:
    """A Flash-style C0+C1 signed by the reference implementation."""
    unsigned = b"\x00\x00\x12\x34" + bytes([128, 0, 7, 2]) + random.Random(seed).randbytes(1528)
    return b"\x03" + ref_sign(unsigned, base, FP_KEY_62[:30])


CHUNKS = [None, 1, 7, 1537]
CHUNK_IDS = ["whole", "byte-by-byte", "7-byte", "1537-byte"]


# --- Loopback -------------------------------------------------------------------


@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
@pytest.mark.parametrize("digest", [False, True], ids=["plain", "digest"])
def test_loopback(digest: bool, chunk: int | None) -> None:
    client = ClientHandshake(rng(1), digest=digest)
    server = ServerHandshake(rng(2))

    c0c1, s012, c2 = loopback(client, server, chunk)

    assert len(c0c1) == 1537 and c0c1[0] == 3
    assert len(s012) == 3073 and s012[0] == 3
    assert len(c2) == 1536
    assert client.complete and server.complete
    assert server.digest_used is digest
    assert client.leftover == b"" and server.leftover == b""
    assert server.data_to_send() == b"" and client.data_to_send() == b""


@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
def test_plain_s1_s2_follow_the_spec_fields(chunk: int | None) -> None:
    """§5.2.3/§5.2.4: S1 = time, zero, random. S2 = C1 time, time2, C1 random."""
    server = ServerHandshake(rng(3), server_time=0x01020304)
    c0c1 = plain_c0c1(seed=4, time=b"\xaa\xbb\xcc\xdd")
    feed(server, c0c1, chunk)
    out = server.data_to_send()
    s1, s2 = out[1:1537], out[1537:]

    assert not server.digest_used
    assert s1[:4] == b"\x01\x02\x03\x04"
    assert s1[4:8] == b"\x00\x00\x00\x00"
    assert s2[:4] == b"\xaa\xbb\xcc\xdd"  # C1's time
    assert s2[4:8] == b"\x01\x02\x03\x04"  # when C1 was read, on our clock
    assert s2[8:] == c0c1[9:]  # random echo


def test_plain_s2_is_a_verbatim_echo_with_default_time() -> None:
    """What nginx-rtmp/SRS send and librtmp compares against (memcmp of all 1536 bytes)."""
    server = ServerHandshake(rng(5))
    c0c1 = plain_c0c1(seed=6, time=b"\x00\x00\x27\x10")
    server.receive_data(c0c1)
    assert server.data_to_send()[1537:] == c0c1[1:]


def test_nothing_is_sent_before_c1_is_complete_and_nothing_twice() -> None:
    server = ServerHandshake(rng(7))
    c0c1 = plain_c0c1()
    server.receive_data(c0c1[:1])
    assert server.data_to_send() == b""
    server.receive_data(c0c1[1:1536])
    assert server.data_to_send() == b""
    server.receive_data(c0c1[1536:])
    assert len(server.data_to_send()) == 3073
    assert server.data_to_send() == b""
    server.receive_data(bytes(1535))
    assert not server.complete
    server.receive_data(b"\x00")
    assert server.complete
    assert server.data_to_send() == b""


# --- Leftover / bounded buffering ------------------------------------------------


@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
@pytest.mark.parametrize("digest", [False, True], ids=["plain", "digest"])
def test_bytes_after_c2_are_left_over_for_the_chunk_reader(digest: bool, chunk: int | None) -> None:
    client = ClientHandshake(rng(8), digest=digest)
    server = ServerHandshake(rng(9))
    feed(server, client.initial_bytes(), chunk)
    feed(client, server.data_to_send(), chunk)
    # A typical client pipelines its first chunk (connect) right behind C2.
    first_chunks = b"\x03\x00\x00\x00\x00\x00\xb4\x14\x00\x00\x00\x00" + bytes(range(256)) * 3
    feed(server, client.data_to_send() + first_chunks, chunk)

    assert server.complete
    assert server.leftover == first_chunks


def test_server_leftover_when_everything_arrives_in_one_read() -> None:
    """C0+C1+C2+1 MiB at once: the tail goes to leftover intact."""
    server = ServerHandshake(rng(10))
    tail = random.Random(11).randbytes(1 << 20)
    server.receive_data(plain_c0c1() + bytes(1536) + tail)
    assert server.complete
    assert server.leftover == tail


@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
def test_client_leftover_after_s2(chunk: int | None) -> None:
    client = ClientHandshake(rng(12))
    server = ServerHandshake(rng(13))
    server.receive_data(client.initial_bytes())
    feed(client, server.data_to_send() + b"\x02window-ack", chunk)
    assert client.complete
    assert client.leftover == b"\x02window-ack"


def test_c2_content_is_not_validated() -> None:
    """Only C2's length matters (SRS: "never verify c2, for ffmpeg will failed")."""
    for c0c1 in (plain_c0c1(), digest_c0c1(BASES["digest_first"])):
        server = ServerHandshake(rng(14))
        server.receive_data(c0c1)
        server.receive_data(b"\xff" * 1536)
        assert server.complete


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=3073 + 40), max_size=12), digest=st.booleans())
def test_any_split_of_the_input_gives_the_same_result(cuts: list[int], digest: bool) -> None:
    client = ClientHandshake(rng(15), digest=digest)
    server = ServerHandshake(rng(16))
    server.receive_data(client.initial_bytes())
    client.receive_data(server.data_to_send())
    stream = client.initial_bytes() + client.data_to_send() + b"after-c2" * 5

    split = ServerHandshake(rng(16))
    edges = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    for start, end in zip(edges, edges[1:], strict=False):
        split.receive_data(stream[start:end])

    assert split.complete
    assert split.digest_used is digest
    assert split.leftover == b"after-c2" * 5


# --- C0 version --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "text"),
    [
        (b"\x06", "unsupported RTMP version 6 in C0 (RTMPE"),
        (b"GET / HTTP/1.1\r\n", "unsupported RTMP version 71 in C0 (0x47 'G'"),
        (b"A", "unsupported RTMP version 65 in C0 (0x41 'A'"),
        (b"\x00", "unsupported RTMP version 0 in C0"),
        (b"\x04", "unsupported RTMP version 4 in C0"),
    ],
)
def test_wrong_c0_version_fails_at_once(first: bytes, text: str) -> None:
    """Refused on the first byte, without waiting for a C1 that an HTTP client never sends."""
    server = ServerHandshake(rng(17))
    with pytest.raises(HandshakeError) as info:
        server.receive_data(first)
    assert str(info.value).startswith(text)
    assert server.data_to_send() == b""
    with pytest.raises(HandshakeError, match="already failed"):
        server.receive_data(bytes(1536))


def test_handshake_error_is_a_value_error() -> None:
    assert issubclass(HandshakeError, ValueError)


# --- Digest form against the reference implementation ------------------------------


@pytest.mark.parametrize("layout", ["digest_first", "key_first"])
@pytest.mark.parametrize("chunk", [None, 1], ids=["whole", "byte-by-byte"])
def test_golden_digest_c1_is_answered_in_digest_form(layout: str, chunk: int | None) -> None:
    base = BASES[layout]
    c0c1 = digest_c0c1(base)
    c1_digest = ref_digest_at(c0c1[1:], base, FP_KEY_62[:30])
    assert c1_digest is not None  # the reference signed it

    server = ServerHandshake(rng(18), server_time=77)
    feed(server, c0c1, chunk)
    out = server.data_to_send()
    s1, s2 = out[1:1537], out[1537:]

    assert server.digest_used
    assert server.digest_layout is DigestLayout(base)
    # S1: time, non-zero version (librtmp needs s1[4] != 0, FFmpeg s1[4] >= 3), FMS digest.
    assert s1[:4] == (77).to_bytes(4, "big")
    assert s1[4] >= 3
    assert ref_digest_at(s1, BASES["digest_first"], FMS_KEY_68[:36]) is not None
    # S2: signed with HMAC(full FMS key, C1 digest).
    assert ref_response_ok(s2, c1_digest, FMS_KEY_68)


def test_c1_with_a_broken_digest_is_answered_plain() -> None:
    c0c1 = bytearray(digest_c0c1(BASES["digest_first"]))
    pos = 1 + ref_digest_pos(bytes(c0c1[1:]), BASES["digest_first"])
    c0c1[pos] ^= 0x01
    server = ServerHandshake(rng(19))
    server.receive_data(bytes(c0c1))
    out = server.data_to_send()
    assert not server.digest_used
    assert out[5:9] == b"\x00\x00\x00\x00"  # S1 zero field: plain form
    assert out[1537 + 8 :] == bytes(c0c1[9:])  # S2 echoes C1


def test_c1_signed_with_the_server_key_is_not_a_client_digest() -> None:
    unsigned = plain_c0c1()[1:]
    c1 = ref_sign(unsigned, BASES["digest_first"], FMS_KEY_68[:36])
    server = ServerHandshake(rng(20))
    server.receive_data(b"\x03" + c1)
    assert not server.digest_used


def test_client_c1_is_signed_digest_first_with_the_player_key() -> None:
    c1 = ClientHandshake(rng(21), digest=True).initial_bytes()[1:]
    assert ref_digest_at(c1, BASES["digest_first"], FP_KEY_62[:30]) is not None
    assert c1[4:8] != b"\x00\x00\x00\x00"


def test_client_c2_is_signed_with_the_player_key() -> None:
    client = ClientHandshake(rng(22), digest=True)
    server = ServerHandshake(rng(23))
    server.receive_data(client.initial_bytes())
    s012 = server.data_to_send()
    client.receive_data(s012)
    s1_digest = ref_digest_at(s012[1:1537], BASES["digest_first"], FMS_KEY_68[:36])
    assert s1_digest is not None
    assert ref_response_ok(client.data_to_send(), s1_digest, FP_KEY_62)


# --- Client-side checks ------------------------------------------------------------------


def test_digest_client_rejects_a_plain_s1() -> None:
    client = ClientHandshake(rng(24), digest=True)
    s0s1 = b"\x03" + bytes(8) + random.Random(25).randbytes(1528)
    with pytest.raises(HandshakeError, match="S1 carries no valid FMS digest"):
        client.receive_data(s0s1)


def test_digest_client_rejects_a_tampered_s2() -> None:
    client = ClientHandshake(rng(26), digest=True)
    server = ServerHandshake(rng(27))
    server.receive_data(client.initial_bytes())
    s012 = bytearray(server.data_to_send())
    s012[-1] ^= 0x80
    with pytest.raises(HandshakeError, match="S2 signature does not match"):
        client.receive_data(bytes(s012))


def test_plain_client_rejects_an_s2_that_does_not_echo_c1() -> None:
    client = ClientHandshake(rng(28))
    server = ServerHandshake(rng(29))
    server.receive_data(client.initial_bytes())
    s012 = bytearray(server.data_to_send())
    s012[1537 + 100] ^= 0x01
    with pytest.raises(HandshakeError, match="first difference at byte 100"):
        client.receive_data(bytes(s012))


def test_client_rejects_a_wrong_s0() -> None:
    with pytest.raises(HandshakeError, match="unsupported RTMP version 6 in S0"):
        ClientHandshake(rng(30)).receive_data(b"\x06")


def test_plain_client_c2_echoes_s1() -> None:
    client = ClientHandshake(rng(31))
    server = ServerHandshake(rng(32), server_time=5000)
    server.receive_data(client.initial_bytes())
    s012 = server.data_to_send()
    client.receive_data(s012[:1537])
    c2 = client.data_to_send()
    assert c2[:4] == s012[1:5]
    assert c2[8:] == s012[9:1537]
    assert not client.complete


def test_short_random_source_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match=r"random_bytes\(1528\) returned 10 bytes"):
        ClientHandshake(lambda n: bytes(10))


# --- Real captures -------------------------------------------------------------------------
#
# One handshake between a Flash Player (C1 version 128.0.7.2) and FMS 5.0.1.1
# (S1 version 5.0.1.1), from zhangpeihao/gortmp fp_test_bytes.go (MIT,
# (c) 2013 zhang peihao), fp_c1 / fp_s1 / fp_c2, as used by its
# handshake_test.go. Converted from Go byte literals to hex, not altered. A
# single wrong byte would break the HMAC checks below.
#
# What the capture shows: Flash Player signs C1 key-first (base 772). FMS
# signs S1 digest-first (base 8), whichever layout C1 used, and Flash Player
# accepts that. It keys C2 from S1's digest.

FLASH_PLAYER_C1 = bytes.fromhex(
    "00e741d480000702bbabec56378770670402f18b3655d92d596bf466d7bedc4affc24fdc33120643657b1f86680ffd5e"
    "37130ef26e83c3410a7654300a7b8d8671a23f5042cf2775d5f75e74f762a1edf9f7f853decf0efa60d9b1965f2febb0"
    "5c5000085bc661692e6954e06437a0ece1d4a3ca1fd53b7cdf24e474f7953ba6d9c038b6a898cf6f1f5c93366e6f0cc6"
    "471293b7a1221b7f98ad43b5c7e364fe1631b7417ff86c2225027d53f67fb57c858b1895881dbcf31827491a7bdbac21"
    "6b092f4b3c0feb951e0d34e23e24feb4ca7bf6b8dca38e97a8c20607230c7de24d725d40818e6a17bc70bff588426d74"
    "c7aa777f0da2944c16e86d8fc139c4f809389290f39882a62ebc52a214ed16282dc143cfa2f4d2dea31aca5378521844"
    "fc34214c2ac6a4966f1ef68567651729240c40060133bb067e76136ff862fa5348bcec79ac3e26380920721130eed4dd"
    "50bed33a22ba281698c454431f9ea7d7a972d8d0877ec4052d9be3dc37872c040198420b19d7ee740e0c96a0e818405c"
    "c38473851a7bcc2a340273b3793dffec1542d90785288dea64ae9cd80a786bfb8bb6387e59002e645b787bec9c06bc77"
    "dbae5921c3c00ac838a9ad722fe6e0144d1a6cd61905a53d69d4f2cf7c8867494f99bc1ed9d63b42921ac96958ba9038"
    "2b5f1b6ad54e86efef3c3cfb08459dd78d014ab24529ab23274b588d1b9d183c0fab41fdf6f477e124910cbda96abdba"
    "f28de2024cf34028366ffb2ffba9410e858226e1bca9d22195f2277a30efd57cdac38305f745418aa8f7b3209cb83ea5"
    "7a7a66981536aec4a8315c7b038b7e78095243e2e04d4931c3183c63778a5d2d3a5c6ce9de1c9d48f4bca7501d753b4e"
    "bdb62d0f642a796b9ea7e91dd62295d8d228b2dc8f60f2e877c3869bf4c67ec4ea58cc74f1324e179a2f310318105caf"
    "f3cfc0e2897ffc191b8bc30b898659b4824ab9a1e1e052cf8c9b5d14424b96cb4673bf01528b03eedd8423d127a18e32"
    "805ebd91697f081875b4f87f49c9c3aefa13f9d3c7bd78a7fd72d9b4a66bcb6dddeaa1245d9951ad6e2723228a685e03"
    "9df434d2f43fdb171d636ea922bedaf745918162b9afeb96279a87075da89a603d1c8429f948502ecda8fef4db6d23b6"
    "ebefcd2372d5b3e48e0a743007bc22c604cbfac7b952d54d8bbea3ad5b09764f193f78de2bacac127f1e6a9c78eb13bd"
    "520964f24628247678d962979854861d2950db42086178f4f9fccf01a215625fb1b9bb44b1b7d7990a457ae4e4d838a6"
    "3df36f54449b57eb6592bda51d86fb97001bf0ae3facba7472d5597c20f34e9211a0f3dcbfbd197dd6b12fb3fde75c9b"
    "720af820c9910ba6f1ae3256066855003fa0659a15c72ebc074c2148fd86d277c584a5af8306e2c41685447e928f358a"
    "4548e6aed46ef90170a8af4cba53ad09778faeaa5c26407bf725840bab400db25a99115bd5285848f91fd4cfbc9b15ea"
    "f397ed771b15bceb9df609d20ad083a85963857789311c0064b6b7d5a321e438ecbdf99f2c1dfbefee28da7598e9743f"
    "98d8670882126d11ef75748969aa718d46dbd199d9e1e54aa44fbb6e400186430203c5a0166ff96cb1e2f8cc9a4e27b3"
    "80586f597e58e94abeb20e3840fd8d605f975299589d9cd092ef986d8d7bc78845fc42fac6ad6d8b30af9ad86ce123de"
    "512ec8f6a7a21a92ebb4491a1889478d238e94741c37ffb83d4e95400370f0cdeda5878d809c5c035425e565536d3eab"
    "e406628c2bcf6446d94c241625ed1f945f48f1480ed2727142ce97284833d840e5280e074b0885fa5d481f20f78e916d"
    "30393d307b96d4261a9cab91169100e469af8ff88c613943ba0f6cbe7bd7720492b61762be6d756f6b9b57f67abd48da"
    "27faa9f36c9568735c15cbef97021fbb76030d700d0ba8b4c4f83c61cea986c41cb6674883f64e824486fb55ab22f301"
    "912a1e9e5ff6640218822bb3457d4548119c83c3d368cf35a9d55ac2fdbaa754693aa9c71c0794e1fa92e78592852727"
    "33ea4da9aa17aca9f97f5ac63e920ee3ba7ae58d5d2a85cf82cc21d094348bcec20768980d694a3bc8bb32e4a719f66c"
    "f0a6ae4d676fe635d64bb360402f9c412a8ff83f6a7dbbb0671e3524a13bac53b41718b8025c31d1fccffe417b39c63a"
)

FMS_S1 = bytes.fromhex(
    "215e73ff050001019af987c1ddcfd598d1e2b487f68215c4477df8190a675f1c1ff6c3c3bda86217c0aacc5ab9b4abd0"
    "e2084259a586e3f2f4300c188475f07c50889db61383bd3d90ea76787a4ec4fcc30845001a44bae78c7545bc9a5c7b50"
    "33fa9b1404cbc6bf3178977edc16b5d4005e6604e928cf03ddb503c6a2fb1f70f45813f7731f95b33a904ee6e2d8f629"
    "cecb2af1795e5f28695ea30619a5fe97fb81272050764098b3d815601c569603df6487bd55eb558eaf4145011345ba72"
    "6f04f5d603015245adb297e2436a89ae02a073a1506061ec57bf2b799edcb3fbb6fd281039f7ff465b8a3628fc198369"
    "6d22b8cede588a493bad06a6432d05ac3ef6c430193f1e816068b2f922a0df67bf592522b6faa8279b6c416f7343f0a8"
    "77b811e0129b13357cc62906aa3e2e68e92eb94ffa0cadfd96feb9b4edc60fa528b234339589d08f484ee63051eb0099"
    "303f6e68ce3a84586700f80e67a70b97fa1e4477746d0910edc0bdb36d4764013df39a5f77a710d53b8e4101adc4d11a"
    "2c3044e6aba945d7d304031c052cc9c79eb297b73f7c19d504fc9f38ecee7090b07fff1b80b084f107590df3d409d7e0"
    "2473224eee35fcbd0cd65dda3121bebfc81276f74e2ac79fc73a3672cd7a15fe73c58b819406ca2597109e2bb113f43c"
    "7f43fa63f4630256491c6031dd7f20ff0918e3fd7b115bf9d405b31125240abf8e2febb2ca3bdb6f343c24aec189f9a6"
    "e03ef3124762245a29676a2db94e220b133465c7bcfe5be5877cc55afe008102047b2ca1219cc9e3a68132a9d8b48ce1"
    "a74de2e6db9c3b1d8360813aa80013eaf6b1b9f8fe609990701f9cfa47f1b3c448a77460eaca4a97dd1efd12132232b9"
    "d1fdde4180e88329542c9f58b03c34a603fa0fece6f9c73448de135db9a2487d4643de3bd21124bdf5a575c83453ea2a"
    "95bc316c29020dba21e154e622227ac4bd62272ecd88b1ef64752c5e6aa17f40b53fd5ac6a8ed56afca0328b26de1598"
    "0a914007f12555adb034a8ad733857f065b023e562788bd6a809ea96fefb4282589222647eb88e2b5ff90f08a3788a9d"
    "44ea665e1460b980f564cd3cc6a59bcd8d1a0f4ba0048180958c04eb00360bb4dffa07e2251c55af93fd93cf56dc71f3"
    "265eb019d688b2b58b1c8fccd6cd8fd1193978f5b458007dd7da746a71de8b217da3b653daa1125d8f9c78253674e660"
    "46d97bae7a02113d39f8d349b9a00937f15aa3545f154c34259126023bc8377be6fc0e5bef1defa3eb63b0d99e29cae9"
    "4cac94fff83a653255908f078becb262a6773fa4b40c2880e28d812aa05111f547431ff7e1113c53cde9767f20e55886"
    "df15aad3e5cc254147e65639574928d7ce53192d0fc0f5521802c35ecfff5c0d86b0f4e2797fef793f5cdad1b397b5a7"
    "7bf111a09e1619d076a892182b883bd972b0169be0b4524ce0025615310cd6884a1ef95f4223646eb1e981eeacdab3f7"
    "31399330f3a05f598e15cd853c3c226d97b56a7ac93cfd162d4dbea1d260a2b0155d04a00c66d03dca1f2de76a32c0db"
    "8a45469616f57cb13fb2fea89b5ce89fc2524f5d0249101ccf7b74af78daf25132b1ae2cdcbb397889e8a0025b8b2de1"
    "b4ba69015685c7c48c917ece28448924ab441b8c298dbb602ab631ea051588948bdd644c397966b6b5a055f0772d7d19"
    "294d1dc00943b6293dbfab0a2c0107a163ca5f91344002a52a136e84011d2687eabd527a6b619f99e033e5643413e4dc"
    "e18e98be98a15dac1b3704ef943e6b8b8ac9d35634db5fe11561463d873d0692d55e838030f7e34bd88fceb0fe05bfe9"
    "aedd50cdf26daefbdc1b02d09b2603edfde34e4bb9b3483079732890fa532f946b8d3d01a1e6f99355b19525a3b4d1c7"
    "cf4f98404efe846dcebfa56c384672b316a8111887e5da7838d2e9c1b9dc6576db03e6629b9707a7541cf9a47c9d4b4b"
    "6c89b7e58e7d815ecf2adab05233696f84cae91caf7b2fcb1114050da067b1fe3af0cba2e48e7f63e086b363a87969bb"
    "1193a2b0cb0c0b1a23c0563c7d4c2fcaffd3bf68aeb05a7caca267178c05f4fb094806d029e992ec11b035167423bbbd"
    "00b282270c6ddf6578db2b49c394c332a797d552da568b24475cdde73daa173839abe101a4b78f9b1f457c0f720c75d2"
)

FLASH_PLAYER_C2 = bytes.fromhex(
    "246259fd3ec2b0e683bda0ba8d9c5e2f4ebc05cd9524475e502f17fc73fd8a5c203a3bc93326de51fd468b95fe715f95"
    "7e3173d37388e149268cb397d55c99f0e2d109173ab7101b61369927d7ed7b1ea1ad46f545a4bcc9a612be6d08388801"
    "9dfc0e40e19d5aa312208f21ea10b5e4bca9fedec71afd379dff0b74c90f19e229e76e1aff18ec4a8f50e1043b9e9bab"
    "848583038d7bec514b5152bb42327858929b224327c68b4e4f7a75eabf6ba1490b9ad0e814716aedd39bd6b4a2afdb40"
    "d2eb24202a35f65b68a12ce8b4f653ccb44ace4edd0914d8569ff9873f01d309efa713f19449937f6616df1211f396aa"
    "f64f12fd52b4938f400f52f21f1605b24a889b4097a71c860268b650ca2f27da0ce8cd7e0023eb4a131ba5824ce6c1e0"
    "3863e23c4a4f67aab044dd88b8e481876be2c0d35aa36180da7828e555dcba199d499062a0c1e7aa6a6c444530d9be18"
    "6994def5af0f63bf54bb44b8013c2710e521ccccb711e90783bbd1ba7b06a568decbfcd1a5316e67c7a7ddebb66b17f8"
    "cb3c6ba60c012dd06b9ff899d08c27be1f7316b3a7262f4bdd0c73b69c462349202f813388a3f7e657af2887b7fdfaff"
    "440cbeecfe112d46705640642feea2e94edd26bce6963990fe69d0d1f0982ff097a62624aed2cdb365f3a145465230c5"
    "2d513b5ca2d39c2c558aecc94d300d7330dff34521e21445858ebd395a6cd3f16eb7b7727af0c841ff7fd1393adf8147"
    "c1180b3cf05875585077e53b96958abcdfd91cf376516da574587b4c9170c5294fb3d46e74575723afcad5e4734e18d6"
    "bb313a204a37c30d2dac2c36c7334666321ea610b599d0cd8794154c7598b7fcf4b4a16428aaa08656de8857a6ba4ec9"
    "e6de099c300bf481ee2d889d45cc785b550c746808bda488c7dc773d3edf94df15f3ee125e3fdf673450119977ed3751"
    "5ac30297f3497d2a39c6a7c178a0a990e0dc7559b9b09c7c302b329a470628ecc657eec5140be1ebf7bf8927f633aeeb"
    "aef12819f65784a14d959ff3e1f2c41bc04121fee873f383414b9c70922022bfc1dc74a2329f9b2c8cab86006bb08b47"
    "beaa3dca1b39cce4b8200a757f369f17bc33edcaa4df273c2fd1b51a4dd98c1298a2929edaf200eae26132c49b8627be"
    "3b3dd63092570257ca1aa6ab3ee220d3e043b0a609e610521bb104ba579f1f5afa5bce39da0380668c2f5b63f00455aa"
    "e9057cefe3089472cc138b15286c1943abd379e515276e309152568ce278cc749aae08d1bdc69205284c22c71a439792"
    "7ec9a06c54246fad07f5e42a4d3e54e00e1f4b924333e44ea551dacfaba15fc12e6cadfdba0a17ce35673cb4fde2a765"
    "fca7d5a3b80284459b2935c39e556f6cafabba6c7050fa2812309d3cf14d4ad648a82a5117a3ee87df253477b7317155"
    "f7fcfb3a54eb5df0b48dbdf8ff76f07357570cb5abfbd1ae1dc8e0c44ab73c805d6cddc93b0191fbc6385285188cbd79"
    "cb746eb04e2c2edc08e4c45ec4833c4a7a5f7c1836eedf44e60dcbfc390eae279330a027478837a4afee3c6963c4b35c"
    "4bbb5f376da1f32af14dae9b69920cf08a0d3f02f8b8443ccd2610f2f457e0f6727ac97aa45c85cb7ad9c6d02d25ff4c"
    "cf2e28c50a48027dddc0b96d26e9f40455379a717bcbeadd57df249e7e346d5e460dd3ce7dee6fd5c271a4ff495a61bc"
    "896c451542776bdb97e88db5bf1680fa814dd5697e69630cb96ffc81bea21338fe87d0146ddcfd597db2f730293b81eb"
    "b10369cd834f0ed799ed84516c1889981bdbd8e4a8c19f5ac4b3d1b414a234d906aa3aa5f5648cfaaacd88832b1fd79a"
    "de4284ee9a2def1aacc28f91664277e14c870615059bf5ecb82f2c7a43c810b77b766a79771852a386f686d2618cc9b8"
    "c4f8aa0a93d3c184af248fd391501647bc8b9e9232730444c128c715aa14778398ac1aed8232ccb743b3c0358cede58b"
    "bd0abbef84ecbc70a6747fc9173641933b4385e893cd0e0e9c21619ccd267b713c2b32c8304ef374ac94e3f355ed905c"
    "1f3a3d0845adcfbee204877cf6c5352c12b193885017c368e36b5e45353fbdb382b93601bfe12469358942b3011148d0"
    "d555ad4693cd4c0525059812f708cc4d85a35ecbce0809a39f21b675d5060c43eec3d6a8f86a3122316ed8ff56e9bea9"
)


def test_captured_flash_player_c1_is_recognised_as_digest_form() -> None:
    assert ref_digest_at(FLASH_PLAYER_C1, BASES["key_first"], FP_KEY_62[:30]) is not None

    server = ServerHandshake(rng(33))
    server.receive_data(b"\x03" + FLASH_PLAYER_C1)
    out = server.data_to_send()

    assert server.digest_used
    assert server.digest_layout is DigestLayout.KEY_FIRST
    c1_digest = ref_digest_at(FLASH_PLAYER_C1, BASES["key_first"], FP_KEY_62[:30])
    assert c1_digest is not None
    assert ref_response_ok(out[1537:], c1_digest, FMS_KEY_68)
    # Same layout for S1 as the real FMS used in this capture.
    assert ref_digest_at(out[1:1537], BASES["digest_first"], FMS_KEY_68[:36]) is not None


def test_captured_fms_s1_is_accepted_and_our_c2_matches_flash_players_byte_for_byte() -> None:
    """Feed the real S1 to our digest client, with the random bytes Flash Player drew.

    C2 must come out identical to the captured one. That checks the S1 digest
    lookup (FMS partial key, both layouts) and the response-signature recipe
    (HMAC with the full Player key) against a real Flash Player.
    """
    draws = [bytes(1528), FLASH_PLAYER_C2[:1504]]  # C1 random (unused here), then C2 body

    def replay(n: int) -> bytes:
        data = draws.pop(0)
        assert len(data) == n
        return data

    client = ClientHandshake(replay, digest=True)
    client.receive_data(b"\x03" + FMS_S1)
    assert client.data_to_send() == FLASH_PLAYER_C2


def test_reference_implementation_agrees_with_the_capture() -> None:
    """Checks the checker: the reference reproduces Flash Player's and FMS's digests."""
    assert ref_digest_at(FLASH_PLAYER_C1, BASES["digest_first"], FP_KEY_62[:30]) is None
    assert ref_digest_at(FMS_S1, BASES["key_first"], FMS_KEY_68[:36]) is None
    s1_digest = ref_digest_at(FMS_S1, BASES["digest_first"], FMS_KEY_68[:36])
    assert s1_digest is not None
    assert ref_response_ok(FLASH_PLAYER_C2, s1_digest, FP_KEY_62)
