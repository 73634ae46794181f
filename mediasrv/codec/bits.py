"""Shared primitives for the codec parsers: errors, a bit reader, NAL framing.

Everything here is sans-IO (DESIGN.md §4 principle 1): bytes in, values out.

* :class:`BitReader` reads the ``u(n)``, ``ue(v)`` and ``se(v)`` descriptors of
  ITU-T H.264 / H.265 clause 7.2 (exp-Golomb codes are clause 9.2 of both) and
  the plain bit fields of ISO 14496-3 (AudioSpecificConfig, ADTS).
* :func:`remove_emulation_prevention` turns a NAL unit into its RBSP
  (H.264 7.4.1 / H.265 7.4.2: ``emulation_prevention_three_byte``).
* :func:`split_annexb`, :func:`iter_nal_units` (with :func:`avcc_to_nals`) and
  :func:`nals_to_avcc` convert
  between the Annex B byte stream (H.264 / H.265 Annex B) and the
  length-prefixed layout of ISO 14496-15 (FLV, MP4 and our canonical
  :class:`~mediasrv.core.frames.MediaFrame` payload).  The two codecs frame NAL
  units identically, so both :mod:`.h264` and :mod:`.h265` re-export these.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

__all__ = [
    "BitReader",
    "BitstreamError",
    "CodecError",
    "avcc_to_nals",
    "iter_nal_units",
    "nals_to_avcc",
    "remove_emulation_prevention",
    "split_annexb",
]


class CodecError(ValueError):
    """Base of every error raised by ``mediasrv.codec``.

    The protocol adapters catch this one class and translate it at the edge
    (DESIGN.md §4 principle 12); the subclasses say which parser complained.
    """


class BitstreamError(CodecError):
    """The bits ran out, an exp-Golomb code is malformed, or NAL framing is bad."""


_U32 = struct.Struct(">I")
_START_CODE = b"\x00\x00\x01"
_EMULATION = b"\x00\x00\x03"
_MAX_EXP_GOLOMB_ZEROS = 31  # ue(v) values are at most 2**32 - 2 (H.264 7.4)


class BitReader:
    """MSB-first reader over a byte string (H.264 / H.265 clause 7.2 ``u(n)``).

    The whole buffer is held as one Python integer, so each read is a shift and
    a mask; parameter sets are tens of bytes, which keeps this cheap.  Reading
    past the end raises :class:`BitstreamError` naming the position, never
    ``IndexError``.
    """

    __slots__ = ("_value", "_size", "_pos")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self._pos = 0

    @property
    def position(self) -> int:
        """The number of bits consumed so far."""
        return self._pos

    @property
    def bits_left(self) -> int:
        return self._size - self._pos

    def _overrun(self, wanted: int) -> BitstreamError:
        return BitstreamError(
            f"needed {wanted} bits at bit offset {self._pos}, only {self._size - self._pos} of {self._size} left"
        )

    def read_bits(self, n: int) -> int:
        """``u(n)``: an unsigned ``n``-bit field (``n`` may be 0)."""
        end = self._pos + n
        if end > self._size:
            raise self._overrun(n)
        self._pos = end
        return (self._value >> (self._size - end)) & ((1 << n) - 1)

    def read_flag(self) -> bool:
        """``u(1)`` as a boolean."""
        return bool(self.read_bits(1))

    def skip_bits(self, n: int) -> None:
        end = self._pos + n
        if end > self._size:
            raise self._overrun(n)
        self._pos = end

    def read_ue(self) -> int:
        """``ue(v)``: unsigned exp-Golomb (H.264 / H.265 clause 9.2)."""
        left = self._size - self._pos
        rest = self._value & ((1 << left) - 1)
        if rest == 0:
            raise BitstreamError(f"exp-Golomb code at bit offset {self._pos} runs past the end ({left} zero bits left)")
        zeros = left - rest.bit_length()
        if zeros > _MAX_EXP_GOLOMB_ZEROS:
            raise BitstreamError(
                f"exp-Golomb code at bit offset {self._pos} has {zeros} leading "
                f"zero bits (at most {_MAX_EXP_GOLOMB_ZEROS} allowed)"
            )
        self._pos += zeros
        # The 1-bit marker and the ``zeros`` info bits together are the value + 1.
        return self.read_bits(zeros + 1) - 1

    def read_se(self) -> int:
        """``se(v)``: signed exp-Golomb (clause 9.2.2: 1, -1, 2, -2, ...)."""
        k = self.read_ue()
        return (k + 1) >> 1 if k & 1 else -(k >> 1)


def remove_emulation_prevention(nal: bytes) -> bytes:
    """Return the RBSP of a NAL unit: drop each ``0x03`` of a ``00 00 03`` run.

    H.264 7.4.1 / H.265 7.4.2: an encoder inserts
    ``emulation_prevention_three_byte`` after two zero bytes so that no start
    code appears inside a NAL unit; the syntax of 7.3 is defined on the bytes
    without them.
    """
    if _EMULATION not in nal:
        return nal
    out: list[bytes] = []
    start = 0
    while True:
        i = nal.find(_EMULATION, start)
        if i < 0:
            out.append(nal[start:])
            return b"".join(out)
        out.append(nal[start : i + 2])
        start = i + 3  # the zero run restarts after the removed byte


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream into NAL units (H.264 / H.265 Annex B).

    Accepts 3- and 4-byte start codes; the zero bytes in front of a start code
    (``zero_byte`` / ``trailing_zero_8bits``) are not part of the preceding NAL
    unit (a NAL unit never ends in ``0x00``, 7.4.1), so they are stripped.
    Bytes before the first start code and empty NAL units are dropped.

    :raises BitstreamError: ``data`` is not empty but has no start code.
    """
    first = data.find(_START_CODE)
    if first < 0:
        if data.strip(b"\x00"):
            raise BitstreamError(f"no Annex B start code in {len(data)} bytes (starts with {data[:8].hex()})")
        return []
    nals: list[bytes] = []
    start = first + 3
    while True:
        nxt = data.find(_START_CODE, start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        if nxt < 0:
            return nals
        start = nxt + 3


def iter_nal_units(data: bytes, length_size: int = 4) -> Iterator[tuple[int, int]]:
    """Walk length-prefixed NAL units (ISO 14496-15 5.3.2 / 8.3.2 sample format).

    Yields ``(start, end)``: the slice of each non-empty NAL unit in ``data``
    (header byte at ``data[start]``), without copying it.  ``length_size`` is
    the record's ``lengthSizeMinusOne + 1``.  The walk is lazy: a caller that
    stops early (a keyframe test that found its slice) never reads the rest.

    :raises BitstreamError: ``length_size`` is not 1..4, or a length field or
        a NAL unit is truncated (raised when the walk reaches it).
    """
    if length_size not in (1, 2, 3, 4):
        raise BitstreamError(f"NAL length size must be 1, 2, 3 or 4, not {length_size}")
    pos = 0
    total = len(data)
    while pos < total:
        body = pos + length_size
        if body > total:
            raise BitstreamError(f"truncated NAL length field at offset {pos}: {total - pos} of {length_size} bytes")
        size = int.from_bytes(data[pos:body], "big")
        end = body + size
        if end > total:
            raise BitstreamError(f"NAL unit at offset {pos} declares {size} bytes, only {total - body} remain")
        if size:
            yield body, end
        pos = end


def avcc_to_nals(data: bytes, length_size: int = 4) -> list[bytes]:
    """Split length-prefixed NAL units into a list (see :func:`iter_nal_units`);
    zero-length entries are dropped.

    :raises BitstreamError: a bad ``length_size``, or truncated framing.
    """
    return [data[start:end] for start, end in iter_nal_units(data, length_size)]


def nals_to_avcc(nals: Iterable[bytes]) -> bytes:
    """Join NAL units with 4-byte big-endian length prefixes (our canonical form)."""
    pack = _U32.pack
    parts: list[bytes] = []
    for nal in nals:
        parts.append(pack(len(nal)))
        parts.append(nal)
    return b"".join(parts)
