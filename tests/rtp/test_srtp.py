from __future__ import annotations

import contextlib
import os
import struct

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.errors import LocalProtocolError, ProtocolError
from trackmesh.rtp.packet import RtpError, RtpHeader
from trackmesh.rtp.srtp import (
    GcmBackend,
    GcmSrtpCipher,
    SrtpAuthenticationError,
    SrtpError,
    SrtpMalformedError,
    SrtpProfile,
    SrtpReplayError,
    SrtpSession,
)

GCM_KEY = bytes(range(28))
CM_KEY = bytes(range(100, 130))


def rtp(seq: int, ssrc: int = 0x11223344, payload: bytes = b"\xab" * 100, csrcs: int = 0, ext: bytes = b"") -> bytes:
    first = 0x80 | csrcs | (0x10 if ext else 0)
    header = struct.pack("!BBHII", first, 96, seq, seq * 960 & 0xFFFFFFFF, ssrc)
    header += b"".join(struct.pack("!I", 0xC0 + i) for i in range(csrcs))
    if ext:
        header += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    return header + payload


def libsrtp_gcm(key: bytes, outbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    )
    return pylibsrtp.Session(policy)


# -- the two GCM implementations against each other ------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(min_size=0, max_size=1300),
    seq=st.integers(0, 0xFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    csrcs=st.integers(0, 15),
    ext_words=st.integers(0, 4),
)
def test_gcm_libsrtp_protects_python_unprotects(
    payload: bytes, seq: int, ssrc: int, csrcs: int, ext_words: int
) -> None:
    packet = rtp(seq, ssrc, payload, csrcs, b"\x10\x01\x02\x03" * ext_words)
    protected = libsrtp_gcm(GCM_KEY, outbound=True).protect(packet)
    assert len(protected) == len(packet) + 16
    python = GcmSrtpCipher(GCM_KEY)
    assert python.protect(packet) == protected  # deterministic AEAD: identical ciphertext
    assert GcmSrtpCipher(GCM_KEY).unprotect(protected) == packet


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(min_size=1, max_size=1300), seq=st.integers(0, 0xFFFF))
def test_gcm_python_protects_libsrtp_unprotects(payload: bytes, seq: int) -> None:
    packet = rtp(seq, payload=payload)
    protected = GcmSrtpCipher(GCM_KEY).protect(packet)
    assert libsrtp_gcm(GCM_KEY, outbound=False).unprotect(protected) == packet


def test_gcm_roc_rollover_matches_libsrtp_both_ways() -> None:
    # 2 x 65536 + a bit: the ROC must reach 2 on both sides (RFC 3711 s3.3.1).
    seqs = [(60000 + i) & 0xFFFF for i in range(2 * 65536 + 200)]
    lib_tx, lib_rx = libsrtp_gcm(GCM_KEY, True), libsrtp_gcm(GCM_KEY, False)
    py_tx, py_rx = GcmSrtpCipher(GCM_KEY), GcmSrtpCipher(GCM_KEY)
    for i, seq in enumerate(seqs):
        packet = rtp(seq, payload=i.to_bytes(4, "big"))
        a = lib_tx.protect(packet)
        b = py_tx.protect(packet)
        assert a == b, f"ciphertext diverged at packet {i} (seq {seq})"
        if i % 97 == 0 or i > len(seqs) - 300:  # keep the run quick; sample the middle
            assert py_rx.unprotect(a) == packet
            assert lib_rx.unprotect(b) == packet
    assert py_rx._rx[0x11223344].highest >> 16 == 2


def test_gcm_reordering_across_wrap_and_replay() -> None:
    tx, rx = GcmSrtpCipher(GCM_KEY), GcmSrtpCipher(GCM_KEY)
    protected = {seq: tx.protect(rtp(seq)) for seq in [65533, 65534, 65535, 0, 1, 2]}
    for seq in [65533, 0, 65535, 2, 65534, 1]:  # out of order across the wrap
        assert rx.unprotect(protected[seq]) == rtp(seq)
    with pytest.raises(SrtpReplayError):
        rx.unprotect(protected[0])
    assert rx.replay_failures == 1


def test_gcm_too_old_and_tampered() -> None:
    tx, rx = GcmSrtpCipher(GCM_KEY), GcmSrtpCipher(GCM_KEY)
    old = tx.protect(rtp(1))
    for seq in range(2, 300):
        rx.unprotect(tx.protect(rtp(seq)))
    with pytest.raises(SrtpReplayError, match="too old"):
        rx.unprotect(old)
    tampered = bytearray(tx.protect(rtp(300)))
    tampered[20] ^= 1
    with pytest.raises(SrtpAuthenticationError):
        rx.unprotect(bytes(tampered))
    assert (rx.auth_failures, rx.replay_failures) == (1, 1)
    # A forged packet must not advance the replay state: the genuine one still decrypts.
    assert rx.unprotect(tx.protect(rtp(300))) == rtp(300)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_gcm_unprotect_garbage_raises_only_srtp_errors(data: bytes) -> None:
    rx = GcmSrtpCipher(GCM_KEY)
    with pytest.raises(SrtpError):
        rx.unprotect(data)
    assert rx.auth_failures + rx.malformed + rx.replay_failures == 1


def test_gcm_rejects_bad_key_length() -> None:
    with pytest.raises(LocalProtocolError):
        GcmSrtpCipher(b"\0" * 30)


# -- SrtpSession ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "key", "backend"),
    [
        (SrtpProfile.AES128_CM_SHA1_80, CM_KEY, "libsrtp"),
        (SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, "libsrtp"),
        (SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, "python"),
    ],
)
def test_session_roundtrip_rtp_and_rtcp(profile: SrtpProfile, key: bytes, backend: GcmBackend) -> None:
    other = bytes(reversed(key))
    a = SrtpSession(profile, key, other, gcm_backend=backend)
    b = SrtpSession(profile, other, key, gcm_backend="libsrtp")
    for seq in range(10):
        assert b.unprotect_rtp(a.protect_rtp(rtp(seq))) == rtp(seq)
        assert a.unprotect_rtp(b.protect_rtp(rtp(seq, ssrc=7))) == rtp(seq, ssrc=7)
    sr = struct.pack("!BBHI", 0x80, 200, 6, 0x11223344) + os.urandom(20)
    assert b.unprotect_rtcp(a.protect_rtcp(sr)) == sr
    assert a.unprotect_rtcp(b.protect_rtcp(sr)) == sr


@pytest.mark.parametrize(
    ("profile", "key"), [(SrtpProfile.AES128_CM_SHA1_80, CM_KEY), (SrtpProfile.AEAD_AES_128_GCM, GCM_KEY)]
)
def test_session_counts_auth_replay_and_malformed(profile: SrtpProfile, key: bytes) -> None:
    tx = SrtpSession(profile, key, key)
    rx = SrtpSession(profile, key, key)
    good = tx.protect_rtp(rtp(5))
    assert rx.unprotect_rtp(good) == rtp(5)
    with pytest.raises(SrtpReplayError):
        rx.unprotect_rtp(good)
    bad = bytearray(tx.protect_rtp(rtp(6)))
    bad[-1] ^= 0xFF
    with pytest.raises(SrtpAuthenticationError):
        rx.unprotect_rtp(bytes(bad))
    with pytest.raises(SrtpMalformedError):
        rx.unprotect_rtp(b"\x80\x00")
    with pytest.raises(SrtpMalformedError):
        rx.unprotect_rtcp(b"\x80")
    assert (rx.auth_failures, rx.replay_failures, rx.malformed) == (1, 1, 2)
    assert issubclass(SrtpError, ProtocolError)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=120))
def test_session_unprotect_garbage_never_crashes(data: bytes) -> None:
    rx = SrtpSession(SrtpProfile.AES128_CM_SHA1_80, CM_KEY, CM_KEY)
    for fn in (rx.unprotect_rtp, rx.unprotect_rtcp):
        with contextlib.suppress(SrtpError):
            fn(data)
    assert rx.auth_failures + rx.replay_failures + rx.malformed >= 1


def test_session_rejects_wrong_key_length() -> None:
    with pytest.raises(LocalProtocolError):
        SrtpSession(SrtpProfile.AEAD_AES_128_GCM, CM_KEY, CM_KEY)


def test_profile_lengths() -> None:
    # RFC 5764 s4.1.2 and RFC 7714 s12.
    assert (SrtpProfile.AES128_CM_SHA1_80.key_length, SrtpProfile.AES128_CM_SHA1_80.salt_length) == (16, 14)
    assert (SrtpProfile.AEAD_AES_128_GCM.key_length, SrtpProfile.AEAD_AES_128_GCM.salt_length) == (16, 12)


# -- the per-SSRC senders of the forwarding path -------------------------------------------------


def _split(packet: bytes) -> tuple[bytes, bytes, int]:
    hlen = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        hlen += 4 + 4 * int.from_bytes(packet[hlen + 2 : hlen + 4], "big")
    return packet[:hlen], packet[hlen:], (packet[2] << 8) | packet[3]


def libsrtp_tx(key: bytes, profile: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy)


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=1300), min_size=1, max_size=8),
    start=st.integers(0, 0xFFFF),
    steps=st.lists(st.integers(-40, 40), min_size=8, max_size=8),
    ssrc=st.integers(0, 0xFFFFFFFF),
    csrcs=st.integers(0, 15),
    ext_words=st.integers(0, 4),
)
def test_gcm_sender_matches_libsrtp_and_interoperates_both_ways(
    payloads: list[bytes], start: int, steps: list[int], ssrc: int, csrcs: int, ext_words: int
) -> None:
    """Random headers, payloads and sequence walks (forwards, backwards as for a NACK answered
    without RTX, across the wrap): the split-buffer sender's output is byte-identical to
    libsrtp's sender, libsrtp's receiver accepts it, and what libsrtp protects our receiver accepts."""
    ours = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY).rtp_sender(ssrc)
    lib_tx = libsrtp_tx(GCM_KEY, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM)
    lib_rx = libsrtp_gcm(GCM_KEY, outbound=False)
    py_rx = GcmSrtpCipher(GCM_KEY)
    seq = ext = start
    received: set[int] = set()
    for i, payload in enumerate(payloads):
        packet = rtp(seq, ssrc, payload, csrcs, b"\x10\x01\x02\x03" * ext_words)
        header, body, s = _split(packet)
        protected = ours.protect(header, memoryview(body), s)
        assert protected == lib_tx.protect(packet), f"packet {i} seq {seq}"
        if seq not in received:  # a repeat would be (rightly) a replay for the receivers
            received.add(seq)
            assert lib_rx.unprotect(protected) == packet
            assert py_rx.unprotect(protected) == packet
        # Never before the first number sent (the viewer path cannot do that: the rewriter
        # drops such packets; the sender refuses them, see the test below).
        ext += steps[i] if ext + steps[i] >= start else -steps[i]
        seq = ext & 0xFFFF


def test_gcm_sender_roc_rollover_against_libsrtp_both_ways() -> None:
    # Past two wraps (RFC 3711 s3.3.1): the ROC reaches 2 on both sides, with a late re-send
    # of a pre-wrap number right after each wrap.
    session = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY)
    ours = session.rtp_sender(0x11223344)
    lib_tx = libsrtp_tx(GCM_KEY, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM)
    lib_rx = libsrtp_gcm(GCM_KEY, outbound=False)
    for i in range(2 * 65536 + 300):
        seq = (65000 + i) & 0xFFFF
        packet = rtp(seq, payload=i.to_bytes(4, "big"))
        header, body, _ = _split(packet)
        a = ours.protect(header, body, seq)
        assert a == lib_tx.protect(packet), f"diverged at packet {i} (seq {seq})"
        if i % 101 == 0 or seq < 20:
            assert lib_rx.unprotect(a) == packet
        if seq == 5:
            old = rtp(65530, payload=b"late")
            h, b, _ = _split(old)
            assert ours.protect(h, b, 65530) == lib_tx.protect(old)
    # protect_rtp on the same SSRC shares the sender, so its rollover counter is the same.
    packet = rtp((65000 + 2 * 65536 + 300) & 0xFFFF)
    assert session.protect_rtp(packet) == lib_tx.protect(packet)


def test_gcm_sender_refuses_a_number_before_the_first_one_sent() -> None:
    sender = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY).rtp_sender(1)
    header, body, _ = _split(rtp(3, ssrc=1))
    sender.protect(header, body, 3)
    header, body, _ = _split(rtp(65535, ssrc=1))
    with pytest.raises(SrtpError):
        sender.protect(header, body, 65535)  # would need rollover counter -1


def test_aes_cm_sender_matches_libsrtp_across_the_wrap_and_bounds_its_buffer() -> None:
    """The AES-CM sender drives libsrtp through a reusable buffer of its own: its output is
    byte-identical to pylibsrtp's Session.protect (same key, same rollover counter), a re-sent
    older number included; a packet too large for its buffer is refused, never overrun."""
    a = SrtpSession(SrtpProfile.AES128_CM_SHA1_80, CM_KEY, CM_KEY)
    b = SrtpSession(SrtpProfile.AES128_CM_SHA1_80, CM_KEY, CM_KEY)
    reference = libsrtp_tx(CM_KEY, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    sender = a.rtp_sender(0x11223344)
    seqs = [(65530 + i) & 0xFFFF for i in range(12)] + [65534]  # across the wrap, then a re-send
    for i, seq in enumerate(seqs):
        packet = rtp(seq, payload=bytes([i]) * (100 + i))
        header, body, _ = _split(packet)
        protected = sender.protect(header, memoryview(body), seq)
        assert protected == reference.protect(packet)
        if i < 12:
            assert b.unprotect_rtp(protected) == packet
    big = rtp(6, payload=b"\x5a" * 1800)  # more than pylibsrtp's own 1500-byte buffer
    header, body, _ = _split(big)
    protected = sender.protect(header, body, 6)
    assert len(protected) == len(big) + 10
    too_big = rtp(7, payload=b"\x5a" * 1900)  # with the 144-byte trailer room, over 2048
    header, body, _ = _split(too_big)
    with pytest.raises(SrtpError):
        sender.protect(header, body, 7)
    assert a.rtp_sender(0x11223344) is sender


# -- the receive path: parse once, decrypt the payload alone ------------------------------------


def _padded(packet: bytes, padding: int) -> bytes:
    """``packet`` with the P bit set and ``padding`` octets (the last one counting them)."""
    if not padding:
        return packet
    return bytes([packet[0] | 0x20]) + packet[1:] + bytes(padding - 1) + bytes([padding])


@settings(max_examples=40, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=10),
    start=st.integers(0, 0xFFFF),
    steps=st.lists(st.integers(-200, 40), min_size=10, max_size=10),
    ssrc=st.integers(0, 0xFFFFFFFF),
    csrcs=st.integers(0, 3),
    ext_words=st.integers(0, 2),
    padding=st.integers(0, 9),
)
def test_parsed_unprotect_agrees_with_libsrtp_and_the_whole_packet_parse(
    payloads: list[bytes], start: int, steps: list[int], ssrc: int, csrcs: int, ext_words: int, padding: int
) -> None:
    """Random headers (CSRCs, extensions, padding) on a random walk of sequence numbers (late,
    repeated, across the wrap): the "python" backend's parse-once unprotect accepts and refuses
    exactly the packets libsrtp's receiver does (replay window, RFC 3711 s3.3.2), and what it
    returns (header parsed before decryption, payload decrypted alone) is what parsing the whole
    unprotected packet gives."""
    # Our sender (byte-identical to libsrtp's, tests above): libsrtp's refuses numbers far back.
    tx = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY)
    lib_rx = libsrtp_gcm(GCM_KEY, outbound=False)
    ours = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY, gcm_backend="python")
    seq = ext = start
    for i in range(10):
        payload = payloads[i % len(payloads)]
        packet = _padded(rtp(seq, ssrc, payload, csrcs, b"\x10\x01\x02\x03" * ext_words), padding)
        protected = tx.protect_rtp(packet)
        try:
            lib_rx.unprotect(protected)
            accepted = True
        except pylibsrtp.Error:
            accepted = False
        if not accepted:
            with pytest.raises(SrtpReplayError):
                ours.unprotect_rtp_parsed(protected)
        else:
            h, head, body = ours.unprotect_rtp_parsed(protected)
            ref = RtpHeader.parse(packet)
            assert head is protected
            for field in ("marker", "payload_type", "sequence_number", "timestamp", "ssrc", "csrc_count",
                          "extension_profile", "extension_offset", "extension_length", "header_length",
                          "padding_length", "payload_length"):  # fmt: skip
                assert getattr(h, field) == getattr(ref, field), field
            assert body[h.payload_offset : h.payload_offset + h.payload_length] == payload
            assert h.payload_offset == 0 and len(body) == len(payload) + padding
        ext += steps[i] if ext + steps[i] >= start else -steps[i]
        seq = ext & 0xFFFF
    assert ours.malformed == ours.auth_failures == 0


def test_parsed_unprotect_across_two_wraps_and_per_ssrc_state() -> None:
    """The rollover counter (RFC 3711 s3.3.1) reaches 2 on the receiver as on libsrtp's sender;
    a second SSRC keeps its own index (RFC 7714 s8.1 IV per SSRC); the whole-packet
    unprotect_rtp shares the same per-SSRC receivers."""
    tx = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY)  # its sender matches libsrtp's (above)
    rx = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY, gcm_backend="python")
    for i in range(2 * 65536 + 50):
        seq = (65000 + i) & 0xFFFF
        packet = rtp(seq, payload=i.to_bytes(4, "big"))
        h, _, body = rx.unprotect_rtp_parsed(tx.protect_rtp(packet))
        assert body == i.to_bytes(4, "big") and h.sequence_number == seq
        if i % 1000 == 0:
            other = rtp(i & 0xFFFF, ssrc=7, payload=b"x")
            assert rx.unprotect_rtp(tx.protect_rtp(other)) == other
    assert seq == 65049  # with rollover counter 2
    late = tx.protect_rtp(rtp(64000, payload=b"late"))  # 1,049 behind: outside the 128-packet window
    with pytest.raises(SrtpReplayError):
        rx.unprotect_rtp_parsed(late)
    assert rx.replay_failures == 1


def test_parsed_unprotect_counts_forged_runt_and_bad_padding() -> None:
    tx = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY)
    rx = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY, gcm_backend="python")
    forged = bytearray(tx.protect_rtp(rtp(1)))
    forged[20] ^= 1
    with pytest.raises(SrtpAuthenticationError):
        rx.unprotect_rtp_parsed(bytes(forged))
    with pytest.raises(SrtpMalformedError):
        rx.unprotect_rtp_parsed(rtp(2)[:12] + bytes(15))  # shorter than header + tag
    with pytest.raises(SrtpMalformedError):
        rx.unprotect_rtp_parsed(b"\x40" + bytes(40))  # RTP version 1
    # Authentic, but its (encrypted) padding count is 0: only decryption can tell, as RtpError.
    bad_padding = rtp(3, payload=b"\x01\x02\x00")
    bad_padding = bytes([bad_padding[0] | 0x20]) + bad_padding[1:]
    with pytest.raises(RtpError):
        rx.unprotect_rtp_parsed(tx.protect_rtp(bad_padding))
    assert (rx.auth_failures, rx.replay_failures, rx.malformed) == (1, 0, 2)
    # The forged packet did not move the replay state: the real one is still accepted.
    assert rx.unprotect_rtp(tx.protect_rtp(rtp(1))) == rtp(1)


def test_parsed_unprotect_keeps_no_state_for_ssrcs_that_never_authenticate() -> None:
    """Forged packets under ever new SSRCs are counted and dropped without growing the session
    (a receiver is kept once a packet of its SSRC authenticated, as libsrtp adds a stream)."""
    tx = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY)
    rx = SrtpSession(SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, GCM_KEY, gcm_backend="python")
    for ssrc in range(1000, 1500):
        forged = bytearray(tx.protect_rtp(rtp(ssrc, ssrc=ssrc)))
        forged[-1] ^= 1  # the tag
        with pytest.raises(SrtpAuthenticationError):
            rx.unprotect_rtp_parsed(bytes(forged))
    assert (rx.auth_failures, rx.receive_streams) == (500, 0)
    # A real stream after a forged packet of its SSRC: accepted, its state kept from then on.
    assert rx.unprotect_rtp(tx.protect_rtp(rtp(7, ssrc=1000))) == rtp(7, ssrc=1000)
    assert rx.receive_streams == 1
    with pytest.raises(SrtpReplayError):
        rx.unprotect_rtp(tx.protect_rtp(rtp(7, ssrc=1000)))
