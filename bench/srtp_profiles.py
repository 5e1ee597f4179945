"""Microbenchmark: SRTP protect/unprotect cost per packet for each backend and profile.

Run with ``python bench/srtp_profiles.py``. Prints microseconds per protect and per unprotect
for 1200-byte (video-sized) and 160-byte (Opus-sized) RTP packets, for pylibsrtp
AES_CM_128_HMAC_SHA1_80, pylibsrtp AEAD_AES_128_GCM, the pure-``cryptography``
:class:`~trackmesh.rtp.srtp.GcmSrtpCipher` and (protect only) the forwarding
path's :class:`~trackmesh.rtp.srtp.GcmRtpSender`.

Unprotect needs a fresh sequence number per packet (the replay window rejects repeats), so
each measurement pre-protects N distinct packets and then unprotects them in order.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable

import pylibsrtp

from trackmesh.rtp.srtp import GcmSrtpCipher, SrtpProfile, SrtpSession

N = 20_000
SIZES = (1200, 160)


def _packets(size: int, n: int) -> list[bytes]:
    payload = os.urandom(size - 12)
    return [struct.pack("!BBHII", 0x80, 96, i & 0xFFFF, i * 960, 0x1234ABCD) + payload for i in range(n)]


def _time(fn: Callable[[bytes], bytes], packets: list[bytes]) -> float:
    start = time.perf_counter()
    for p in packets:
        fn(p)
    return (time.perf_counter() - start) / len(packets) * 1e6


def _measure(
    name: str,
    make: Callable[[bytes], tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]],
    key_len: int,
) -> None:
    cells = []
    for size in SIZES:
        key = os.urandom(key_len)
        protect, _ = make(key)
        _, unprotect = make(key)
        # Wrap-free run of N fresh sequence numbers (N < 65536).
        plain = _packets(size, N)
        protect_us = _time(protect, plain)
        # Protect again with a fresh sender so the receiver sees each index once.
        sender, _ = make(key)
        protected = [sender(p) for p in plain]
        unprotect_us = _time(unprotect, protected)
        cells.append(f"{protect_us:6.2f} / {unprotect_us:6.2f}")
    print(f"{name:<38}" + "   ".join(f"{c:>17}" for c in cells))


def _libsrtp(
    profile: SrtpProfile,
) -> Callable[[bytes], tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    def make(key: bytes) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
        session = SrtpSession(profile, key, key, gcm_backend="libsrtp")
        if profile is SrtpProfile.AEAD_AES_128_GCM:
            # SrtpSession protects GCM RTP with cryptography now; time libsrtp itself.
            policy = pylibsrtp.Policy(
                key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile.libsrtp_profile
            )
            return pylibsrtp.Session(policy).protect, session.unprotect_rtp
        return session.protect_rtp, session.unprotect_rtp

    return make


def _python_gcm(key: bytes) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    cipher = GcmSrtpCipher(key)
    return cipher.protect, cipher.unprotect


def _split_sender(name: str, profile: SrtpProfile, key_len: int) -> None:
    """Protect only: the forwarding path's per-SSRC sender (SrtpSession.rtp_sender), header
    and payload passed apart as OutboundTrack does."""
    cells = []
    for size_ in SIZES:
        session = SrtpSession(profile, os.urandom(key_len), os.urandom(key_len))
        sender = session.rtp_sender(0x1234ABCD)
        parts = [(p[:12], memoryview(p)[12:], (p[2] << 8) | p[3]) for p in _packets(size_, N)]
        start = time.perf_counter()
        for header, payload, seq in parts:
            sender.protect(header, payload, seq)
        cells.append(f"{(time.perf_counter() - start) / N * 1e6:6.2f} /    -  ")
    print(f"{name:<38}" + "   ".join(f"{c:>17}" for c in cells))


def main() -> None:
    print(f"us per packet, protect / unprotect, {N} packets each")
    print(f"{'backend':<38}" + "   ".join(f"{f'{s} B':>17}" for s in SIZES))
    _measure("pylibsrtp AES_CM_128_HMAC_SHA1_80", _libsrtp(SrtpProfile.AES128_CM_SHA1_80), 30)
    _measure("pylibsrtp AEAD_AES_128_GCM", _libsrtp(SrtpProfile.AEAD_AES_128_GCM), 28)
    _measure("cryptography GcmSrtpCipher (RFC 7714)", _python_gcm, 28)
    _split_sender("rtp_sender GCM (GcmRtpSender)", SrtpProfile.AEAD_AES_128_GCM, 28)
    _split_sender("rtp_sender AES-CM (LibsrtpRtpSender)", SrtpProfile.AES128_CM_SHA1_80, 30)


if __name__ == "__main__":
    main()
