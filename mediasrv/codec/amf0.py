"""AMF0 encoding and decoding (Adobe "Action Message Format -- AMF 0", 2007).

RTMP carries its commands (``connect``, ``publish``, ``onStatus`` ...) and its
metadata (``@setDataFrame``/``onMetaData``) as a sequence of AMF0 values, see
RTMP spec 1.0 section 7.1.1/7.1.2.  Everything in this module is sans-IO: bytes
in, Python values out, and back.

Type mapping (AMF0 spec section 2):

==========================  =============================================
AMF0 type (marker)          Python
==========================  =============================================
number (0x00)               ``float``
boolean (0x01)              ``bool``
string (0x02)               ``str``
object (0x03)               ``dict[str, Any]``
null (0x05)                 ``None``
undefined (0x06)            :data:`UNDEFINED` (a distinct singleton, so a
                            re-encoded message keeps undefined vs. null)
reference (0x07)            the *same* Python object decoded earlier
ecma-array (0x08)           :class:`EcmaArray` (a ``dict`` subclass, so
                            ``onMetaData`` re-encodes as an ECMA array)
strict-array (0x0A)         ``list``
date (0x0B)                 :class:`AmfDate`
long-string (0x0C)          ``str``
xml-document (0x0F)         ``str`` (no RTMP peer sends XML; we do not
                            round-trip the distinction)
typed-object (0x10)         :class:`TypedObject` (a ``dict`` subclass
                            carrying ``class_name``)
avmplus-object (0x11)       only the AMF3 scalar types (AMF3 spec 3.2-3.8):
                            undefined, null, false, true, integer (``int``),
                            double (``float``) and inline string (``str``)
==========================  =============================================

Robustness rules, because every byte here comes from an untrusted peer:

* Any malformed or truncated input raises :class:`AmfError` (a
  ``ValueError``) with the offset, never ``IndexError``/``struct.error``.
* The decoder is iterative with an explicit stack, and nesting deeper than
  ``max_depth`` raises :class:`AmfError`, so a "depth bomb" can never reach
  ``RecursionError``.
* Strings are decoded as UTF-8 with ``errors="replace"``: a peer that sends
  Latin-1 in a stream name still gets a well-formed ``str`` (usable in JSON
  hooks and logs) instead of a dropped connection.
* A reference (0x07) may only point at an object whose decoding has
  *finished*; pointing at one still being decoded would build a cyclic
  structure, which we reject.
* References resolve to the *same* Python object (no copy), so decoding
  stays linear in the input, but a value with references is a DAG that an
  encoder (or a JSON dump) expands back into a tree: k objects each
  referring twice to the previous one are 21·k bytes on the wire and 2^k
  leaves when re-encoded (a "billion laughs").  Each message therefore has an
  expansion budget: the decoder tracks the encoded size of every finished
  container, charges each reference with the size it stands for, and raises
  :class:`AmfExpansionError` once references would make the message's
  values more than ``max_expansion`` bytes larger than the message itself
  (:data:`DEFAULT_MAX_EXPANSION`).  Re-encoding what was decoded thus costs
  at most ``len(data) + max_expansion`` bytes.  ffmpeg, librtmp, OBS and
  GStreamer never send references; Flash-era clients use them for a few
  small objects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "DEFAULT_MAX_EXPANSION",
    "AmfDate",
    "AmfError",
    "AmfExpansionError",
    "EcmaArray",
    "TypedObject",
    "UNDEFINED",
    "Undefined",
    "decode_all",
    "decode_one",
    "encode",
]

# AMF0 spec section 2.1 markers.
NUMBER: Final = 0x00
BOOLEAN: Final = 0x01
STRING: Final = 0x02
OBJECT: Final = 0x03
MOVIECLIP: Final = 0x04  # reserved, not supported
NULL: Final = 0x05
UNDEFINED_MARKER: Final = 0x06
REFERENCE: Final = 0x07
ECMA_ARRAY: Final = 0x08
OBJECT_END: Final = 0x09
STRICT_ARRAY: Final = 0x0A
DATE: Final = 0x0B
LONG_STRING: Final = 0x0C
UNSUPPORTED: Final = 0x0D
RECORDSET: Final = 0x0E  # reserved, not supported
XML_DOCUMENT: Final = 0x0F
TYPED_OBJECT: Final = 0x10
AVMPLUS_OBJECT: Final = 0x11

DEFAULT_MAX_DEPTH: Final = 32
DEFAULT_MAX_EXPANSION: Final = 64 * 1024
"""Bytes by which references may enlarge one message's values (see above)."""

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")
_OBJECT_END_BYTES: Final = b"\x00\x00\x09"


class AmfError(ValueError):
    """Malformed, truncated or unsupported AMF data (or an unencodable value)."""


class AmfExpansionError(AmfError):
    """References in one message stand for more data than the expansion budget allows."""


class Undefined:
    """The type of :data:`UNDEFINED`, AMF0's ``undefined`` (marker 0x06)."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()


class EcmaArray(dict[str, Any]):
    """A ``dict`` that encodes as an AMF0 ECMA array (marker 0x08).

    FLV/RTMP metadata (``onMetaData``) is conventionally an ECMA array, and
    some players only accept it in that form, so the distinction from a plain
    object must survive a decode/encode round trip.
    """

    __slots__ = ()


class TypedObject(dict[str, Any]):
    """A ``dict`` decoded from an AMF0 typed object (marker 0x10)."""

    __slots__ = ("class_name",)

    def __init__(self, class_name: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_name = class_name

    def __repr__(self) -> str:
        return f"TypedObject({self.class_name!r}, {dict.__repr__(self)})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TypedObject) and other.class_name != self.class_name:
            return False
        return dict.__eq__(self, other)

    __hash__ = None


@dataclass(frozen=True, slots=True)
class AmfDate:
    """An AMF0 date (marker 0x0B): milliseconds since the Unix epoch, UTC.

    ``timezone`` is the reserved S16 field (AMF0 spec 2.13 says it should be
    0); it is kept only so that a re-encode is byte-exact.
    """

    milliseconds: float
    timezone: int = 0


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

# Container kinds on the decoder's explicit stack.
_K_OBJECT: Final = 0  # object, ecma array, typed object: key/value pairs
_K_ARRAY: Final = 1  # strict array: counted values


class _Frame:
    __slots__ = ("kind", "container", "remaining", "key", "ref_index", "start", "extra0")

    def __init__(self, kind: int, container: Any, remaining: int, ref_index: int, start: int, extra0: int) -> None:
        self.kind = kind
        self.container = container
        self.remaining = remaining
        self.key = ""
        self.ref_index = ref_index
        self.start = start  # offset of the container's marker
        self.extra0 = extra0  # the message's expansion when the container started


class _Refs:
    """One message's reference table, with the encoded size each entry
    stands for and the expansion its references have used so far."""

    __slots__ = ("objects", "sizes", "extra", "max_expansion")

    def __init__(self, max_expansion: int) -> None:
        if max_expansion < 0:
            raise ValueError(f"max_expansion must be >= 0, not {max_expansion}")
        self.objects: list[Any] = []
        self.sizes: list[int] = []
        self.extra = 0
        self.max_expansion = max_expansion

    def finish(self, frame: _Frame, end: int) -> None:
        self.objects[frame.ref_index] = frame.container
        self.sizes[frame.ref_index] = end - frame.start + self.extra - frame.extra0


class _InProgress:
    """Reference-table placeholder for an object whose decoding has not ended."""

    __slots__ = ()


_IN_PROGRESS: Final = _InProgress()


def decode_all(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH,
               max_expansion: int = DEFAULT_MAX_EXPANSION) -> list[Any]:
    """Decode the consecutive AMF0 values that make up ``data``.

    This is the shape of an RTMP command or data message body (RTMP spec 1.0
    section 7.1.1/7.1.2).  The values share one reference table, so a later
    argument may refer to an object in an earlier one (the table is reset per
    message, as for an AMF packet body); ffmpeg, librtmp and OBS never send
    references, so this only matters for Flash-era clients.  The expansion
    budget (``max_expansion``, see the module docstring) is per call too.
    """
    values: list[Any] = []
    refs = _Refs(max_expansion)
    offset = 0
    end = len(data)
    while offset < end:
        value, offset = _decode(data, offset, max_depth, refs)
        values.append(value)
    return values


def decode_one(data: bytes, offset: int = 0, max_depth: int = DEFAULT_MAX_DEPTH,
               max_expansion: int = DEFAULT_MAX_EXPANSION) -> tuple[Any, int]:
    """Decode one AMF0 value at ``offset``; return it and the offset after it.

    Containers are decoded with an explicit stack rather than recursion, so
    no input can raise ``RecursionError`` and nesting deeper than
    ``max_depth`` raises :class:`AmfError`.  Containers are registered in the
    reference table (AMF0 spec 2.9) when they *start*, in encounter order, as
    the spec requires; a reference to one that has not yet ended is a cycle.
    """
    return _decode(data, offset, max_depth, _Refs(max_expansion))


def _decode(data: bytes, offset: int, max_depth: int, refs: _Refs) -> tuple[Any, int]:
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, not {max_depth}")
    end = len(data)
    if offset < 0 or offset > end:
        raise AmfError(f"AMF0 offset {offset} outside data of {end} bytes")
    stack: list[_Frame] = []
    pos = offset

    while True:
        # 1. Decide what comes next: a close of the current container, a key,
        #    or (always, unless closing) one value.
        value: Any
        if stack:
            top = stack[-1]
            if top.kind == _K_ARRAY:
                if top.remaining == 0:
                    stack.pop()
                    refs.finish(top, pos)
                    value = top.container
                    if not stack:
                        return value, pos
                    _store(stack[-1], value)
                    continue
                top.remaining -= 1
            else:
                if end - pos < 2:
                    raise AmfError(f"AMF0 object key truncated at offset {pos}")
                key_len = (data[pos] << 8) | data[pos + 1]
                if key_len == 0:
                    if pos + 2 >= end:
                        raise AmfError(f"AMF0 object-end marker truncated at offset {pos + 2}")
                    if data[pos + 2] != OBJECT_END:
                        raise AmfError(
                            f"AMF0 empty object key at offset {pos} not followed"
                            f" by the object-end marker (got 0x{data[pos + 2]:02x})"
                        )
                    pos += 3
                    stack.pop()
                    refs.finish(top, pos)
                    value = top.container
                    if not stack:
                        return value, pos
                    _store(stack[-1], value)
                    continue
                top.key, pos = _read_utf8(data, pos + 2, key_len, "object key")

        # 2. One value.
        if pos >= end:
            raise AmfError(f"AMF0 value truncated at offset {pos}")
        marker = data[pos]
        start = pos
        pos += 1

        if marker == STRING:
            if end - pos < 2:
                raise AmfError(f"AMF0 string truncated at offset {start}")
            n = (data[pos] << 8) | data[pos + 1]
            value, pos = _read_utf8(data, pos + 2, n, "string", start)
        elif marker == NUMBER:
            if end - pos < 8:
                raise AmfError(f"AMF0 number truncated at offset {start}")
            value = _DOUBLE.unpack_from(data, pos)[0]
            pos += 8
        elif marker == BOOLEAN:
            if pos >= end:
                raise AmfError(f"AMF0 boolean truncated at offset {start}")
            value = data[pos] != 0
            pos += 1
        elif marker == NULL:
            value = None
        elif marker == UNDEFINED_MARKER:
            value = UNDEFINED
        elif marker in (OBJECT, ECMA_ARRAY, TYPED_OBJECT, STRICT_ARRAY):
            if len(stack) >= max_depth:
                raise AmfError(f"AMF0 nesting deeper than {max_depth}")
            container: Any
            if marker == OBJECT:
                container = {}
                frame = _Frame(_K_OBJECT, container, 0, len(refs.objects), start, refs.extra)
            elif marker == ECMA_ARRAY:
                # The count is only a hint (encoders get it wrong); the
                # object-end marker terminates, and every pair consumes
                # at least 3 bytes, so work stays bounded by len(data).
                if end - pos < 4:
                    raise AmfError(f"AMF0 ecma-array truncated at offset {start}")
                pos += 4
                container = EcmaArray()
                frame = _Frame(_K_OBJECT, container, 0, len(refs.objects), start, refs.extra)
            elif marker == TYPED_OBJECT:
                if end - pos < 2:
                    raise AmfError(f"AMF0 typed-object truncated at offset {start}")
                n = (data[pos] << 8) | data[pos + 1]
                class_name, pos = _read_utf8(data, pos + 2, n, "typed-object", start)
                container = TypedObject(class_name)
                frame = _Frame(_K_OBJECT, container, 0, len(refs.objects), start, refs.extra)
            else:
                if end - pos < 4:
                    raise AmfError(f"AMF0 strict-array truncated at offset {start}")
                count = _U32.unpack_from(data, pos)[0]
                pos += 4
                # Each element takes at least one byte: a larger count is a
                # lie that would otherwise make us loop (or allocate) for it.
                if count > end - pos:
                    raise AmfError(
                        f"AMF0 strict-array at offset {start} claims {count} elements but only {end - pos} bytes remain"
                    )
                container = []
                frame = _Frame(_K_ARRAY, container, count, len(refs.objects), start, refs.extra)
            refs.objects.append(_IN_PROGRESS)
            refs.sizes.append(0)
            stack.append(frame)
            continue
        elif marker == REFERENCE:
            if end - pos < 2:
                raise AmfError(f"AMF0 reference truncated at offset {start}")
            index = (data[pos] << 8) | data[pos + 1]
            pos += 2
            if index >= len(refs.objects):
                raise AmfError(
                    f"AMF0 reference {index} at offset {start} out of range ({len(refs.objects)} objects decoded)"
                )
            value = refs.objects[index]
            if value is _IN_PROGRESS:
                raise AmfError(f"AMF0 reference {index} is cyclic")
            # The reference (3 bytes here) stands for the whole object.
            refs.extra += refs.sizes[index] - 3
            if refs.extra > refs.max_expansion:
                raise AmfExpansionError(
                    f"AMF0 references at offset {start} expand the message by more than"
                    f" {refs.max_expansion} bytes (reference bomb?)"
                )
        elif marker == LONG_STRING or marker == XML_DOCUMENT:
            if end - pos < 4:
                raise AmfError(f"AMF0 long-string truncated at offset {start}")
            n = _U32.unpack_from(data, pos)[0]
            what = "long-string" if marker == LONG_STRING else "xml-document"
            value, pos = _read_utf8(data, pos + 4, n, what, start)
        elif marker == DATE:
            if end - pos < 10:
                raise AmfError(f"AMF0 date truncated at offset {start}")
            ms, tz = _DATE.unpack_from(data, pos)
            value = AmfDate(ms, tz)
            pos += 10
        elif marker == AVMPLUS_OBJECT:
            value, pos = _decode_amf3_scalar(data, pos, start)
        elif marker == OBJECT_END:
            raise AmfError(f"unexpected AMF0 object-end marker at offset {start}")
        else:
            raise AmfError(f"unknown AMF0 marker 0x{marker:02x} at offset {start}")

        # 3. Deliver the value.
        if not stack:
            return value, pos
        _store(stack[-1], value)


def _store(frame: _Frame, value: Any) -> None:
    if frame.kind == _K_ARRAY:
        frame.container.append(value)
    else:
        frame.container[frame.key] = value


def _read_utf8(data: bytes, pos: int, n: int, what: str, start: int | None = None) -> tuple[str, int]:
    stop = pos + n
    if stop > len(data):
        raise AmfError(f"AMF0 {what} truncated at offset {pos - 2 if start is None else start}")
    return data[pos:stop].decode("utf-8", "replace"), stop


# AMF3 (AMF3 spec section 3.1) markers we accept after an avmplus switch.
_AMF3_UNDEFINED: Final = 0x00
_AMF3_NULL: Final = 0x01
_AMF3_FALSE: Final = 0x02
_AMF3_TRUE: Final = 0x03
_AMF3_INTEGER: Final = 0x04
_AMF3_DOUBLE: Final = 0x05
_AMF3_STRING: Final = 0x06


def _decode_amf3_scalar(data: bytes, pos: int, start: int) -> tuple[Any, int]:
    """Decode the AMF3 value following an AMF0 avmplus-object marker (0x11).

    Flash Player and some encoders switch to AMF3 for single values inside
    type 17/15 messages.  RTMP publishers in practice only send scalars that
    way, so complex AMF3 types (with their three reference tables) are
    refused rather than half-supported.
    """
    end = len(data)
    if pos >= end:
        raise AmfError(f"AMF3 value truncated at offset {start}")
    marker = data[pos]
    pos += 1
    if marker == _AMF3_UNDEFINED:
        return UNDEFINED, pos
    if marker == _AMF3_NULL:
        return None, pos
    if marker == _AMF3_FALSE:
        return False, pos
    if marker == _AMF3_TRUE:
        return True, pos
    if marker == _AMF3_INTEGER:
        n, pos = _read_u29(data, pos, start)
        if n & 0x10000000:  # 29-bit two's complement
            n -= 0x20000000
        return n, pos
    if marker == _AMF3_DOUBLE:
        if end - pos < 8:
            raise AmfError(f"AMF3 double truncated at offset {start}")
        return _DOUBLE.unpack_from(data, pos)[0], pos + 8
    if marker == _AMF3_STRING:
        header, pos = _read_u29(data, pos, start)
        if not header & 1:
            raise AmfError(f"AMF3 string reference at offset {start} is not supported")
        n = header >> 1
        if n > end - pos:
            raise AmfError(f"AMF3 string truncated at offset {start}")
        return data[pos : pos + n].decode("utf-8", "replace"), pos + n
    raise AmfError(f"unsupported AMF3 marker 0x{marker:02x} at offset {pos - 1} (only scalar AMF3 values are accepted)")


def _read_u29(data: bytes, pos: int, start: int) -> tuple[int, int]:
    """AMF3 spec 1.3.1 U29: 7 bits per byte with a continuation bit, the
    fourth byte contributing all 8 bits."""
    end = len(data)
    result = 0
    for i in range(4):
        if pos >= end:
            raise AmfError(f"AMF3 U29 truncated at offset {start}")
        b = data[pos]
        pos += 1
        if i == 3:
            return (result << 8) | b, pos
        result = (result << 7) | (b & 0x7F)
        if not b & 0x80:
            return result, pos
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def encode(*values: Any) -> bytes:
    """Encode ``values`` as consecutive AMF0 values.

    ``bool`` -> boolean, ``int``/``float`` -> number, ``str`` -> string (or
    long-string above 65535 UTF-8 bytes), ``None`` -> null,
    :data:`UNDEFINED` -> undefined, :class:`EcmaArray` -> ECMA array,
    :class:`TypedObject` -> typed object, other ``dict`` -> object,
    ``list``/``tuple`` -> strict array, :class:`AmfDate` -> date.

    Raises ``TypeError`` for other types and :class:`AmfError` for values the
    format cannot express (non-``str`` or empty keys -- an empty key is the
    object terminator -- over-long keys, nesting deeper than
    ``DEFAULT_MAX_DEPTH``, which the decoder would refuse anyway).
    """
    out = bytearray()
    for value in values:
        _encode_value(out, value, 0)
    return bytes(out)


def _encode_value(out: bytearray, value: Any, depth: int) -> None:
    # Order matters: bool is an int, EcmaArray/TypedObject are dicts.
    if value is None:
        out.append(NULL)
    elif value is True or value is False:
        out += b"\x01\x01" if value else b"\x01\x00"
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        else:
            out.append(STRING)
            out += _U16.pack(len(raw))
        out += raw
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, dict):
        if depth >= DEFAULT_MAX_DEPTH:
            raise AmfError(f"AMF0 nesting deeper than {DEFAULT_MAX_DEPTH}")
        if isinstance(value, EcmaArray):
            out.append(ECMA_ARRAY)
            out += _U32.pack(len(value))
        elif isinstance(value, TypedObject):
            out.append(TYPED_OBJECT)
            _encode_key(out, value.class_name, allow_empty=True)
        else:
            out.append(OBJECT)
        for key, item in value.items():
            _encode_key(out, key, allow_empty=False)
            _encode_value(out, item, depth + 1)
        out += _OBJECT_END_BYTES
    elif isinstance(value, (list, tuple)):
        if depth >= DEFAULT_MAX_DEPTH:
            raise AmfError(f"AMF0 nesting deeper than {DEFAULT_MAX_DEPTH}")
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_value(out, item, depth + 1)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, AmfDate):
        out.append(DATE)
        out += _DATE.pack(value.milliseconds, value.timezone)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def _encode_key(out: bytearray, key: object, *, allow_empty: bool) -> None:
    if not isinstance(key, str):
        raise AmfError(f"AMF0 object keys must be str, not {type(key).__name__}")
    raw = key.encode("utf-8")
    if not raw and not allow_empty:
        raise AmfError("AMF0 object keys must not be empty (that is the end marker)")
    if len(raw) > 0xFFFF:
        raise AmfError(f"AMF0 object key of {len(raw)} bytes exceeds 65535")
    out += _U16.pack(len(raw))
    out += raw
