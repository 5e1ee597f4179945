"""The RTMP handshake, server side (RTMP spec s5.2), simple and FP9 digest ("complex") forms.

Simple (spec s5.2.3): C0 = version 3; C1 = time(4) zero(4) random(1528); the server answers
S0, S1 (its own time and random) and S2 (an echo of C1), then reads C2 (an echo of S1).

Digest form (Flash Player 9+, not in the published spec, documented by implementers): C1 carries a
non-zero client version in bytes 4..7 and a 32-byte HMAC-SHA256 digest at an offset computed from
four bytes of C1, keyed with the Flash Player key. A server answers with an S1 digested the same
way under the FMS key, and an S2 whose last 32 bytes are HMAC(HMAC(FMS key, client digest), S2[:-32]).
Some clients (old Flash, a few hardware encoders) drop the connection on a simple answer to a
digested C1, so a valid client digest is answered in kind; anything else gets the simple form.
C2 is read and not checked: ffmpeg, OBS and librtmp all vary in what they echo.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from typing import Final

from trackmesh.transports.rtmp.errors import RtmpError

__all__ = ["HANDSHAKE_SIZE", "RTMP_VERSION", "ServerHandshake", "client_digest_offset", "make_c1"]

RTMP_VERSION: Final = 3
HANDSHAKE_SIZE: Final = 1536
_DIGEST_SIZE: Final = 32
_U32: Final = struct.Struct("!I")

# The Flash Player / Flash Media Server keys: the published ASCII prefixes plus a fixed 32-byte tail.
_KEY_TAIL: Final = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FP_KEY: Final = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
FMS_KEY: Final = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
_FP_KEY_SHORT: Final = FP_KEY[:30]
_FMS_KEY_SHORT: Final = FMS_KEY[:36]
# Server version we announce in S1 bytes 4..7 when answering a digested C1 (as FMS 3.5 does).
_SERVER_VERSION: Final = bytes((0x04, 0x05, 0x00, 0x01))


def _digest_offset(block: bytes, scheme: int) -> int:
    """Where the digest sits: scheme 0 reads the offset bytes at 772 (key block first), scheme 1
    at 8 (digest block first); the sum of four bytes mod 728 past the offset field."""
    base = 772 if scheme == 0 else 8
    return sum(block[base : base + 4]) % 728 + base + 4


def client_digest_offset(block: bytes, scheme: int) -> int:
    return _digest_offset(block, scheme)


def _digest(block: bytes, offset: int, key: bytes) -> bytes:
    return hmac.new(key, block[:offset] + block[offset + _DIGEST_SIZE :], hashlib.sha256).digest()


def _find_client_digest(c1: bytes) -> bytes | None:
    for scheme in (1, 0):
        offset = _digest_offset(c1, scheme)
        if hmac.compare_digest(_digest(c1, offset, _FP_KEY_SHORT), c1[offset : offset + _DIGEST_SIZE]):
            return c1[offset : offset + _DIGEST_SIZE]
    return None


def make_c1(random: bytes, digest: bool, scheme: int = 1) -> bytes:
    """A C1 (client side; for tests and a future client): simple, or digested with the FP key."""
    if len(random) != HANDSHAKE_SIZE - 8:
        raise ValueError("C1 random must be 1528 bytes")
    if not digest:
        return b"\x00\x00\x00\x00\x00\x00\x00\x00" + random
    block = bytearray(b"\x00\x00\x00\x00\x09\x00\x7c\x02" + random)
    offset = _digest_offset(bytes(block), scheme)
    block[offset : offset + _DIGEST_SIZE] = _digest(bytes(block), offset, _FP_KEY_SHORT)
    return bytes(block)


class ServerHandshake:
    """Feed bytes; when :attr:`done`, :meth:`take_remainder` yields the bytes that followed C2.

    ``uptime_ms`` goes into S1's time field (the epoch the server's timestamps count from);
    ``random`` supplies the random filler (os.urandom by default, a fixed source in tests).
    """

    __slots__ = ("_buf", "_out", "_random", "_uptime_ms", "digest_used", "done", "s1")

    def __init__(self, uptime_ms: int = 0, random: Callable[[int], bytes] = os.urandom) -> None:
        self._buf = bytearray()
        self._out = bytearray()
        self._random = random
        self._uptime_ms = uptime_ms & 0xFFFFFFFF
        self.done = False
        self.digest_used = False
        self.s1 = b""

    def receive(self, data: bytes) -> None:
        if self.done:
            raise RtmpError("handshake data after the handshake finished")
        self._buf += data
        if not self.s1:
            if not self._buf:
                return
            if self._buf[0] != RTMP_VERSION:
                # 6 is RTMPE (encrypted); 8/9 are other encryption variants. None are supported.
                raise RtmpError(f"C0 asks for RTMP version {self._buf[0]}, only 3 is supported")
            if len(self._buf) < 1 + HANDSHAKE_SIZE:
                return
            c1 = bytes(self._buf[1 : 1 + HANDSHAKE_SIZE])
            del self._buf[: 1 + HANDSHAKE_SIZE]
            self._answer(c1)
        if len(self._buf) >= HANDSHAKE_SIZE:
            del self._buf[:HANDSHAKE_SIZE]  # C2: read, not checked (module docstring)
            self.done = True

    def _answer(self, c1: bytes) -> None:
        client_digest = _find_client_digest(c1) if c1[4:8] != b"\x00\x00\x00\x00" else None
        time_field = _U32.pack(self._uptime_ms)
        if client_digest is None:
            s1 = time_field + b"\x00\x00\x00\x00" + self._random(HANDSHAKE_SIZE - 8)
            s2 = c1
        else:
            self.digest_used = True
            block = bytearray(time_field + _SERVER_VERSION + self._random(HANDSHAKE_SIZE - 8))
            offset = _digest_offset(bytes(block), 1)
            block[offset : offset + _DIGEST_SIZE] = _digest(bytes(block), offset, _FMS_KEY_SHORT)
            s1 = bytes(block)
            body = self._random(HANDSHAKE_SIZE - _DIGEST_SIZE)
            key = hmac.new(FMS_KEY, client_digest, hashlib.sha256).digest()
            s2 = body + hmac.new(key, body, hashlib.sha256).digest()
        self.s1 = s1
        self._out += bytes((RTMP_VERSION,)) + s1 + s2

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def take_remainder(self) -> bytes:
        """Bytes received after C2 (the first chunks, when a client pipelines them)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def verify_server_digest(s1: bytes) -> bool:
    """True when S1 carries a valid FMS digest (scheme 1 or 0): the client-side check."""
    for scheme in (1, 0):
        offset = _digest_offset(s1, scheme)
        if hmac.compare_digest(_digest(s1, offset, _FMS_KEY_SHORT), s1[offset : offset + _DIGEST_SIZE]):
            return True
    return False


def expected_s2_digest(s2: bytes, c1_digest: bytes) -> bool:
    """True when S2's last 32 bytes are the digest answering the client digest ``c1_digest``."""
    key = hmac.new(FMS_KEY, c1_digest, hashlib.sha256).digest()
    body = s2[: HANDSHAKE_SIZE - _DIGEST_SIZE]
    return hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), s2[HANDSHAKE_SIZE - _DIGEST_SIZE :])
