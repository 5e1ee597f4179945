"""G.711 PCMU (mu-law) and PCMA (A-law) over RTP (RFC 3551 s4.5.14) and their conversions.

One octet per sample at 8 kHz, payload types 0 (PCMU) and 8 (PCMA); a packet holds any whole
number of samples (the packetizer cuts at ``ptime`` and the MTU). The companding follows
ITU-T G.711: mu-law with bias 33 on a 14-bit magnitude, A-law 13-bit with even bits inverted;
linear samples are signed 16-bit little-endian (the upper bits of G.711's 14/13-bit range).
The tables are computed once at import from those formulas.
"""

from __future__ import annotations

import sys
from array import array
from typing import Final

from trackmesh.codecs.payload import AudioDepacketizer, Buffer, PayloadError, check_mtu
from trackmesh.errors import LocalProtocolError

__all__ = [
    "G711Depacketizer",
    "G711Packetizer",
    "alaw_decode",
    "alaw_encode",
    "alaw_to_linear",
    "linear_to_alaw",
    "linear_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_linear",
]

_ULAW_BIAS: Final = 0x84  # 33 << 2: the bias on the 16-bit scale
_ULAW_CLIP: Final = 32635


def ulaw_to_linear(code: int) -> int:
    """One mu-law octet -> a 16-bit linear sample (G.711 table 2a)."""
    u = ~code & 0xFF
    mag = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u >> 4) & 0x07)
    mag -= _ULAW_BIAS
    return -mag if u & 0x80 else mag


def linear_to_ulaw(sample: int) -> int:
    """A 16-bit linear sample -> its mu-law octet (segment = position of the top bit above bias)."""
    sign = 0x80 if sample < 0 else 0
    mag = min(-sample if sample < 0 else sample, _ULAW_CLIP) + _ULAW_BIAS
    exponent = max(mag.bit_length() - 8, 0)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def alaw_to_linear(code: int) -> int:
    """One A-law octet -> a 16-bit linear sample (G.711 table 1a)."""
    a = code ^ 0x55
    seg = (a >> 4) & 0x07
    mag = ((a & 0x0F) << 4) + 8
    if seg:
        mag = (mag + 0x100) << (seg - 1)
    return mag if a & 0x80 else -mag


def linear_to_alaw(sample: int) -> int:
    """A 16-bit linear sample -> its A-law octet (13-bit magnitude, 8 segments)."""
    pcm = sample >> 3
    if pcm >= 0:
        mask = 0xD5  # sign bit 1 for positive, then even bits inverted
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = max(pcm.bit_length() - 5, 0)  # segment ends 0x1F, 0x3F, 0x7F, ... 0xFFF
    if seg >= 8:
        return 0x7F ^ mask
    mantissa = (pcm >> 1 if seg < 2 else pcm >> seg) & 0x0F
    return ((seg << 4) | mantissa) ^ mask


_ULAW_DECODE: Final = array("h", [ulaw_to_linear(c) for c in range(256)])
_ALAW_DECODE: Final = array("h", [alaw_to_linear(c) for c in range(256)])
# Encoders indexed by the sample's upper 14 bits (mu-law, 2 LSBs below its resolution) or
# upper 13 bits (A-law), unsigned: index = (sample >> shift) & mask.
_ULAW_ENCODE: Final = bytes(linear_to_ulaw(((i ^ 0x2000) - 0x2000) << 2) for i in range(1 << 14))
_ALAW_ENCODE: Final = bytes(linear_to_alaw(((i ^ 0x1000) - 0x1000) << 3) for i in range(1 << 13))


def _decode(data: Buffer, table: array[int]) -> bytes:
    out = array("h", [table[c] for c in bytes(data)])
    if sys.byteorder == "big":  # pragma: no cover
        out.byteswap()
    return out.tobytes()


def _encode(pcm: Buffer, table: bytes, shift: int, mask: int) -> bytes:
    if len(pcm) % 2:
        raise LocalProtocolError("16-bit PCM of an odd number of bytes")
    samples = array("h")
    samples.frombytes(bytes(pcm))
    if sys.byteorder == "big":  # pragma: no cover
        samples.byteswap()
    return bytes(table[(s >> shift) & mask] for s in samples)


def ulaw_decode(data: Buffer) -> bytes:
    """PCMU octets -> signed 16-bit little-endian PCM."""
    return _decode(data, _ULAW_DECODE)


def alaw_decode(data: Buffer) -> bytes:
    """PCMA octets -> signed 16-bit little-endian PCM."""
    return _decode(data, _ALAW_DECODE)


def ulaw_encode(pcm: Buffer) -> bytes:
    """Signed 16-bit little-endian PCM -> PCMU octets."""
    return _encode(pcm, _ULAW_ENCODE, 2, 0x3FFF)


def alaw_encode(pcm: Buffer) -> bytes:
    """Signed 16-bit little-endian PCM -> PCMA octets."""
    return _encode(pcm, _ALAW_ENCODE, 3, 0x1FFF)


class G711Packetizer:
    """Encoded samples -> payloads of ``ptime`` ms (RFC 3551 s4.5.14: 20 ms by default) within the MTU."""

    __slots__ = ("samples_per_packet",)

    def __init__(self, ptime_ms: int = 20) -> None:
        if ptime_ms <= 0:
            raise LocalProtocolError(f"ptime {ptime_ms} ms is not positive")
        self.samples_per_packet = 8 * ptime_ms

    def packetize(self, frame: Buffer, mtu: int) -> list[bytes]:
        check_mtu(mtu, 1)
        if not frame:
            raise PayloadError("no G.711 samples")
        step = min(self.samples_per_packet, mtu)
        view = memoryview(frame)
        return [bytes(view[pos : pos + step]) for pos in range(0, len(view), step)]


class G711Depacketizer(AudioDepacketizer):
    """Payload -> its samples (PCMU or PCMA octets); empty payloads are counted as bad."""

    __slots__ = ()
