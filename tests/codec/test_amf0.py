"""Tests for mediasrv.codec.amf0 (AMF0 spec; RTMP spec 1.0 section 7.1.1)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasrv.codec.amf0 import (
    UNDEFINED,
    AmfDate,
    AmfError,
    EcmaArray,
    TypedObject,
    decode_all,
    decode_one,
    encode,
)

# ffmpeg's (Lavf59) connect command when publishing, written out by hand from
# the AMF0 spec: string "connect", number 1.0, object {...} with its keys in
# ffmpeg's order, terminated by 00 00 09.
CONNECT = (
    b"\x02\x00\x07connect"
    b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
    b"\x03"
    b"\x00\x03app\x02\x00\x04live"
    b"\x00\x04type\x02\x00\x0anonprivate"
    b"\x00\x08flashVer\x02\x00\x24FMLE/3.0 (compatible; Lavf59.27.100)"
    b"\x00\x05tcUrl\x02\x00\x1artmp://127.0.0.1:1935/live"
    b"\x00\x00\x09"
)
CONNECT_VALUES = [
    "connect",
    1.0,
    {
        "app": "live",
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; Lavf59.27.100)",
        "tcUrl": "rtmp://127.0.0.1:1935/live",
    },
]

# "@setDataFrame", "onMetaData", ECMA array {duration: 0, width: 1280} as
# ffmpeg's flv muxer writes it (count hint, then pairs, then 00 00 09).
SET_DATA_FRAME = (
    b"\x02\x00\x0d@setDataFrame"
    b"\x02\x00\x0aonMetaData"
    b"\x08\x00\x00\x00\x02"
    b"\x00\x08duration\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\x05width\x00\x40\x94\x00\x00\x00\x00\x00\x00"
    b"\x00\x00\x09"
)


# -- golden bytes -----------------------------------------------------------


def test_connect_golden_decode() -> None:
    assert decode_all(CONNECT) == CONNECT_VALUES


def test_connect_golden_encode() -> None:
    assert encode(*CONNECT_VALUES) == CONNECT


def test_set_data_frame_golden() -> None:
    values = decode_all(SET_DATA_FRAME)
    assert values == ["@setDataFrame", "onMetaData", {"duration": 0.0, "width": 1280.0}]
    assert type(values[2]) is EcmaArray
    assert encode(*values) == SET_DATA_FRAME


def test_decode_one_returns_offset_after_value() -> None:
    value, offset = decode_one(CONNECT, 0)
    assert (value, offset) == ("connect", 10)
    value, offset = decode_one(CONNECT, offset)
    assert (value, offset) == (1.0, 19)


# -- individual types -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x40\x09\x21\xfb\x54\x44\x2d\x18", math.pi),
        (b"\x01\x00", False),
        (b"\x01\x01", True),
        (b"\x01\x07", True),
        (b"\x02\x00\x00", ""),
        (b"\x02\x00\x03h\xc3\xa9", "h\u00e9"),
        (b"\x05", None),
        (b"\x06", UNDEFINED),
        (b"\x0a\x00\x00\x00\x02\x05\x01\x01", [None, True]),
        (b"\x0c\x00\x00\x00\x02hi", "hi"),
        (b"\x0f\x00\x00\x00\x04<a/>", "<a/>"),
        (b"\x0b\x42\x77\x48\x76\xe8\x00\x00\x00\x00\x00", AmfDate(1.6e12)),
        (b"\x03\x00\x00\x09", {}),
        # ECMA array whose count hint is wrong: the end marker wins.
        (b"\x08\x00\x00\x00\x63\x00\x01a\x05\x00\x00\x09", {"a": None}),
        # AMF3 scalars behind the avmplus switch (0x11).
        (b"\x11\x00", UNDEFINED),
        (b"\x11\x01", None),
        (b"\x11\x02", False),
        (b"\x11\x03", True),
        (b"\x11\x04\x05", 5),
        (b"\x11\x04\x81\x00", 128),
        (b"\x11\x04\xff\xff\xff\xff", -1),
        (b"\x11\x04\xbf\xff\xff\xff", 0x0FFFFFFF),
        (b"\x11\x05\x3f\xf8\x00\x00\x00\x00\x00\x00", 1.5),
        (b"\x11\x06\x01", ""),
        (b"\x11\x06\x07abc", "abc"),
    ],
)
def test_decode_types(data: bytes, expected: Any) -> None:
    assert decode_all(data) == [expected]


def test_typed_object() -> None:
    data = b"\x10\x00\x03Foo\x00\x01x\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x00\x00\x09"
    (value,) = decode_all(data)
    assert isinstance(value, TypedObject)
    assert value.class_name == "Foo"
    assert value == {"x": 1.0}
    assert encode(value) == data


def test_undefined_is_a_falsy_singleton() -> None:
    (value,) = decode_all(b"\x06")
    assert value is UNDEFINED
    assert not value
    assert encode(UNDEFINED) == b"\x06"


def test_invalid_utf8_is_replaced() -> None:
    assert decode_all(b"\x02\x00\x02\xff\xfe") == ["\ufffd\ufffd"]
    assert decode_all(b"\x03\x00\x01\xff\x05\x00\x00\x09") == [{"\ufffd": None}]


def test_reference_resolves_to_completed_object() -> None:
    # [ {a: null}, ref 1 ] : index 0 is the array, index 1 the object.
    data = b"\x0a\x00\x00\x00\x02\x03\x00\x01a\x05\x00\x00\x09\x07\x00\x01"
    (value,) = decode_all(data)
    assert value == [{"a": None}, {"a": None}]
    assert value[0] is value[1]


def test_cyclic_reference_raises() -> None:
    # {a: ref 0} -- object 0 is still being decoded.
    with pytest.raises(AmfError, match="AMF0 reference 0 is cyclic"):
        decode_all(b"\x03\x00\x01a\x07\x00\x00\x00\x00\x09")
    # [ [ ref 0 ] ]
    with pytest.raises(AmfError, match="cyclic"):
        decode_all(b"\x0a\x00\x00\x00\x01\x0a\x00\x00\x00\x01\x07\x00\x00")


def test_reference_out_of_range_raises() -> None:
    with pytest.raises(AmfError, match="reference 3 at offset 0 out of range"):
        decode_all(b"\x07\x00\x03")


def test_references_span_the_values_of_one_decode_all() -> None:
    # One message body shares one reference table; decode_one starts afresh.
    data = b"\x03\x00\x00\x09\x07\x00\x00"
    first, second = decode_all(data)
    assert first == {} and first is second
    with pytest.raises(AmfError, match="out of range"):
        decode_one(data, 4)


# -- malformed input --------------------------------------------------------


@pytest.mark.parametrize("marker", [0x04, 0x0D, 0x0E, 0x12, 0x7F, 0xFF])
def test_unknown_marker(marker: int) -> None:
    with pytest.raises(AmfError, match=f"unknown AMF0 marker 0x{marker:02x} at offset 5"):
        decode_all(b"\x05" * 5 + bytes([marker]))


def test_object_end_marker_out_of_place() -> None:
    with pytest.raises(AmfError, match="unexpected AMF0 object-end marker at offset 0"):
        decode_all(b"\x09")


def test_empty_key_without_end_marker() -> None:
    with pytest.raises(AmfError, match="not followed by the object-end marker"):
        decode_all(b"\x03\x00\x00\x05")


def test_string_truncated_message() -> None:
    with pytest.raises(AmfError, match="AMF0 string truncated at offset 12"):
        decode_all(b"\x05" * 12 + b"\x02\x00\x05abc")


def test_strict_array_count_larger_than_data() -> None:
    with pytest.raises(AmfError, match="claims 4294967295 elements"):
        decode_all(b"\x0a\xff\xff\xff\xff\x05")


@pytest.mark.parametrize(
    "data",
    [
        b"\x11\x06\x00",  # AMF3 string reference
        b"\x11\x09\x01",  # AMF3 array
        b"\x11\x0a\x0b\x01",  # AMF3 object
        b"\x11",
        b"\x11\x04\x80",
        b"\x11\x06\x07ab",
    ],
)
def test_amf3_unsupported_or_truncated(data: bytes) -> None:
    with pytest.raises(AmfError):
        decode_all(data)


COMPOSITE = encode(
    {
        "s": "text",
        "n": 2.5,
        "b": True,
        "z": None,
        "u": UNDEFINED,
        "l": ["x", 1.0, [None]],
        "e": EcmaArray(k="v"),
        "d": AmfDate(3.0),
        "t": TypedObject("T", q=False),
        "long": "y" * 300,
    }
)


@pytest.mark.parametrize(
    "blob",
    [CONNECT[19:], COMPOSITE, SET_DATA_FRAME[29:], encode("z" * 70000)[:80]],
    ids=["connect-object", "composite", "ecma-array", "long-string-head"],
)
def test_every_truncation_raises(blob: bytes) -> None:
    # Each blob is exactly one value (or the head of one), so every proper
    # prefix is truncated.
    for n in range(len(blob)):
        with pytest.raises(AmfError):
            decode_one(blob[:n])
        if n:
            with pytest.raises(AmfError):
                decode_all(blob[:n])


def test_depth_bomb_raises_amf_error() -> None:
    with pytest.raises(AmfError, match="AMF0 nesting deeper than 32"):
        decode_all(b"\x0a\x00\x00\x00\x01" * 10000)
    with pytest.raises(AmfError, match="nesting deeper than 32"):
        decode_all(b"\x03\x00\x01a" * 10000)


def test_depth_limit_is_exact() -> None:
    ok = b"\x0a\x00\x00\x00\x01" * 32 + b"\x05"
    value = decode_all(ok)[0]
    for _ in range(32):
        value = value[0]
    assert value is None
    with pytest.raises(AmfError, match="deeper than 32"):
        decode_all(b"\x0a\x00\x00\x00\x01" * 33 + b"\x05")
    with pytest.raises(AmfError, match="deeper than 2"):
        decode_all(b"\x0a\x00\x00\x00\x01" * 3 + b"\x05", max_depth=2)


def test_huge_max_depth_never_recursion_error() -> None:
    depth = 100_000
    data = b"\x0a\x00\x00\x00\x01" * depth + b"\x05"
    value = decode_all(data, max_depth=depth)[0]
    assert isinstance(value, list)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_only_amf_error(data: bytes) -> None:
    try:
        decode_all(data)
    except AmfError:
        pass


# -- encoding ---------------------------------------------------------------


def test_encode_scalars() -> None:
    assert encode(1) == b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
    assert encode(True, False) == b"\x01\x01\x01\x00"
    assert encode(None) == b"\x05"
    assert encode((1.0,)) == b"\x0a\x00\x00\x00\x01\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
    assert encode(AmfDate(0.0)) == b"\x0b" + bytes(10)


def test_encode_long_string_switch() -> None:
    assert encode("a" * 0xFFFF)[:3] == b"\x02\xff\xff"
    data = encode("a" * 0x10000)
    assert data[:5] == b"\x0c\x00\x01\x00\x00"
    assert decode_all(data) == ["a" * 0x10000]
    # The limit is in UTF-8 bytes, not characters.
    assert encode("\u00e9" * 40000)[:1] == b"\x0c"


def test_encode_ecma_array() -> None:
    assert encode(EcmaArray(a=None)) == b"\x08\x00\x00\x00\x01\x00\x01a\x05\x00\x00\x09"


@pytest.mark.parametrize(
    ("value", "exc", "match"),
    [
        (object(), TypeError, "cannot encode object"),
        (b"bytes", TypeError, "cannot encode bytes"),
        ({1: 2}, AmfError, "keys must be str"),
        ({"": 2}, AmfError, "must not be empty"),
        ({"k" * 70000: 1}, AmfError, "exceeds 65535"),
    ],
)
def test_encode_errors(value: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        encode(value)


def test_encode_too_deep_and_cyclic() -> None:
    nested: list[Any] = []
    inner = nested
    for _ in range(40):
        inner.append([])
        inner = inner[0]
    with pytest.raises(AmfError, match="nesting deeper than 32"):
        encode(nested)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(AmfError):
        encode(cyclic)


# -- round trip -------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.floats(allow_nan=False) | st.text() | st.just(UNDEFINED)
_keys = st.text(min_size=1, max_size=10)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(_keys, children, max_size=5)
        | st.dictionaries(_keys, children, max_size=5).map(EcmaArray)
    ),
    max_leaves=25,
)


@settings(max_examples=200)
@given(st.lists(_values, max_size=5))
def test_round_trip(values: list[Any]) -> None:
    data = encode(*values)
    decoded = decode_all(data)
    assert decoded == values
    assert encode(*decoded) == data


# -- the reference bomb (security audit finding 1) ----------------------------


def test_the_audit_reference_bomb_is_refused_at_once() -> None:
    import time

    from mediasrv.codec.amf0 import DEFAULT_MAX_EXPANSION, AmfExpansionError
    from tests.support.hostile import amf_reference_bomb

    data = amf_reference_bomb(21)
    assert len(data) == 484  # the audit's message, byte for byte in size
    t0 = time.perf_counter()
    with pytest.raises(AmfExpansionError, match=f"more than {DEFAULT_MAX_EXPANSION} bytes"):
        decode_all(data)
    assert time.perf_counter() - t0 < 0.05
    # every extra 21 bytes doubled the cost before; now the cost is flat
    t0 = time.perf_counter()
    with pytest.raises(AmfExpansionError):
        decode_all(amf_reference_bomb(400))
    assert time.perf_counter() - t0 < 0.05


@pytest.mark.parametrize("k", range(0, 24))
def test_what_decodes_re_encodes_within_the_budget(k: int) -> None:
    from mediasrv.codec.amf0 import DEFAULT_MAX_EXPANSION, AmfExpansionError
    from tests.support.hostile import amf_reference_bomb

    data = amf_reference_bomb(k)
    try:
        values = decode_all(data)
    except AmfExpansionError:
        if k <= 14:  # refused only when it really blows up (measured without a budget)
            full = encode(*decode_all(data, max_expansion=1 << 40))
            assert len(full) - len(data) > DEFAULT_MAX_EXPANSION
        return
    assert len(encode(*values)) <= len(data) + DEFAULT_MAX_EXPANSION
    assert values[:2] == ["@setDataFrame", "onMetaData"]
    meta = values[2]
    assert meta["o0"] == {"x": "y"}
    if k:
        assert meta[f"o{k}"]["a"] is meta[f"o{k}"]["b"] is meta[f"o{k - 1}"]  # no copies


def test_the_expansion_accounting_is_exact_and_per_message() -> None:
    from mediasrv.codec.amf0 import AmfExpansionError

    # [ {a: "xyz"}, ref 1, ref 1 ]: object 1 is 13 bytes, each 3-byte ref adds 10
    obj = b"\x03\x00\x01a\x02\x00\x03xyz\x00\x00\x09"
    data = b"\x0a\x00\x00\x00\x03" + obj + b"\x07\x00\x01\x07\x00\x01"
    values = decode_all(data, max_expansion=20)
    assert len(encode(*values)) == len(data) + 20
    with pytest.raises(AmfExpansionError):
        decode_all(data, max_expansion=19)
    # nested: a container holding references carries their expansion when referred to
    outer = b"\x0a\x00\x00\x00\x02" + b"\x0a\x00\x00\x00\x02" + obj + b"\x07\x00\x02" + b"\x07\x00\x01"
    values = decode_all(outer, max_expansion=1000)
    # [ [obj, ref 2], ref 1 ]: ref 2 adds 10; the inner array (21 bytes + 10) then adds 31 - 3
    assert len(encode(*values)) == len(outer) + 10 + 28
    # one budget per decode_all call: the same message decodes again
    assert decode_all(data, max_expansion=20) == decode_all(data, max_expansion=20)
    with pytest.raises(ValueError):
        decode_all(data, max_expansion=-1)
