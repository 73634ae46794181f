"""Reference encoders the codec tests build synthetic bitstreams with: the
inverse of :class:`mediasrv.codec.bits.BitReader` and of
:func:`mediasrv.codec.bits.remove_emulation_prevention`."""

from __future__ import annotations


class BitWriter:
    """MSB-first writer: ``u(n)``, ``ue(v)``, ``se(v)`` (H.264 / H.265 clause 9.2)."""

    def __init__(self) -> None:
        self.value = 0
        self.size = 0

    def bits(self, n: int, v: int) -> BitWriter:
        self.value = (self.value << n) | v
        self.size += n
        return self

    def ue(self, v: int) -> BitWriter:
        code = v + 1
        return self.bits(2 * code.bit_length() - 1, code)

    def se(self, v: int) -> BitWriter:
        return self.ue(2 * v - 1 if v > 0 else -2 * v)

    def rbsp(self) -> bytes:
        """Append rbsp_trailing_bits and return the bytes."""
        self.bits(1, 1)
        pad = -self.size % 8
        return (self.value << pad).to_bytes((self.size + pad) // 8, "big")


def add_emulation_prevention(rbsp: bytes) -> bytes:
    """Insert ``emulation_prevention_three_byte`` where H.264 7.4.1 / H.265 7.4.2 require it."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)
