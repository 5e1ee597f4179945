"""SRTP/SRTCP protection (RFC 3711, RFC 7714), keyed by a profile and key material as bytes.

The keys come from DTLS-SRTP (RFC 5764, :mod:`trackmesh.transports.webrtc.dtls.keying`) or
any other keying (SDES for SIP); this module knows nothing of where they came from.

:class:`SrtpSession` holds one outbound and one inbound context on pylibsrtp (libsrtp via
cffi): one libsrtp session with an ``SSRC_ANY_OUTBOUND`` template for what we send and one with
``SSRC_ANY_INBOUND`` for what we receive, so streams are created on first use of each SSRC.

Outgoing RTP goes through one sender per SSRC (:meth:`SrtpSession.rtp_sender`), which takes the
header and the payload apart so the forwarding path never builds a plaintext packet:

- AEAD_AES_128_GCM: :class:`GcmRtpSender`, RFC 7714 on ``cryptography``'s AESGCM with the key
  derived once (RFC 3711 s4.3 KDF, RFC 7714 s11) and the RTP header as AAD. Every RTP packet of
  a GCM session is protected this way (also :meth:`SrtpSession.protect_rtp`), so one rollover
  counter per SSRC exists; libsrtp's receivers accept it (tests: byte-identical to libsrtp).
- AES_CM_128_HMAC_SHA1_80: :class:`LibsrtpRtpSender`, libsrtp through a reusable buffer.

``python bench/srtp_profiles.py`` (docs/benchmarks.md has the table) measured protect of a
1,200-byte packet at about 1.3 us through :class:`GcmRtpSender` against 2.2 us through
pylibsrtp's ``Session.protect`` (which copies in and out and allocates per call).

Incoming GCM RTP goes through one :class:`GcmRtpReceiver` per SSRC (``gcm_backend="python"``, the
default): :meth:`SrtpSession.unprotect_rtp_parsed` parses the header once, before decryption (it
is in the clear, RFC 3711 s3.1), and hands back the decrypted payload alone, so the receive path
neither copies the packet into a buffer and out again (pylibsrtp) nor joins header and payload.
Compiled, unprotect + parse of a 1,042-byte packet measured 1.5 us against 1.9 us through
pylibsrtp and a second parse (issue 19, docs/benchmarks.md). ``gcm_backend="libsrtp"`` keeps
libsrtp for it; RTCP always uses libsrtp.

:class:`GcmSrtpCipher` is the whole-packet RFC 7714 implementation (IV per s8.1, 16-byte tag,
RFC 3711 s3.3.1 rollover counter and s3.3.2 replay window), the reference the tests and
``bench/srtp_profiles.py`` compare with; the session uses its key derivation.

Everything here is sans-IO and allocation-light: per packet we create only the output
``bytes``; failures are counted in integer attributes and raised as :class:`SrtpError`.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal

import pylibsrtp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trackmesh.errors import LocalProtocolError, RemoteProtocolError
from trackmesh.rtp.packet import RtpError, RtpHeader

__all__ = [
    "GcmRtpReceiver",
    "GcmRtpSender",
    "GcmSrtpCipher",
    "LibsrtpRtpSender",
    "RtpSender",
    "SrtpAuthenticationError",
    "SrtpError",
    "SrtpMalformedError",
    "SrtpProfile",
    "SrtpReplayError",
    "SrtpSession",
]

GcmBackend = Literal["libsrtp", "python"]
#: The GCM RTP receive backend used unless asked otherwise (see the module docstring for why).
DEFAULT_GCM_BACKEND: Final[GcmBackend] = "python"


class SrtpProfile(enum.Enum):
    """DTLS-SRTP protection profiles we negotiate; values are the OpenSSL profile names."""

    AES128_CM_SHA1_80 = "SRTP_AES128_CM_SHA1_80"
    AEAD_AES_128_GCM = "SRTP_AEAD_AES_128_GCM"

    @property
    def key_length(self) -> int:
        """Master key length in bytes (RFC 5764 s4.1.2, RFC 7714 s12)."""
        return 16

    @property
    def salt_length(self) -> int:
        """Master salt length in bytes: 112 bits for AES-CM, 96 bits for GCM (RFC 7714 s12)."""
        return 14 if self is SrtpProfile.AES128_CM_SHA1_80 else 12

    @property
    def libsrtp_profile(self) -> int:
        if self is SrtpProfile.AES128_CM_SHA1_80:
            return int(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
        return int(pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM)

    @classmethod
    def from_openssl_name(cls, name: str) -> SrtpProfile:
        return cls(name)


class SrtpError(RemoteProtocolError):
    """An SRTP/SRTCP packet could not be protected or unprotected."""


class SrtpAuthenticationError(SrtpError):
    """The authentication tag did not verify (forged, corrupted or wrong key)."""


class SrtpReplayError(SrtpError):
    """The packet index was already seen or is older than the replay window (RFC 3711 s3.3.2)."""


class SrtpMalformedError(SrtpError):
    """The packet is too short or its RTP header does not parse."""


# ---------------------------------------------------------------------------------------------
# Pure-cryptography RFC 7714 AES-128-GCM for RTP.
# ---------------------------------------------------------------------------------------------

_TAG_LEN: Final = 16  # RFC 7714 s12: AEAD_AES_128_GCM uses a 16-octet tag.
_REPLAY_WINDOW: Final = 128  # Same default as libsrtp; RFC 3711 s3.3.2 requires at least 64.
_MAX_INDEX_JUMP: Final = 1 << 15  # Half the sequence space, RFC 3711 Appendix A.
_LIBSRTP_BUFFER: Final = 2048  # LibsrtpRtpSender's reusable packet buffer
_WINDOW_MASK: Final = (1 << _REPLAY_WINDOW) - 1


def _aes_cm_kdf(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 s4.3.1/s4.3.3 AES-CM key derivation with key_derivation_rate 0.

    x = (label || r) XOR master_salt, with r = 0, where the 56-bit key_id lines up with the
    low bits of the 112-bit salt; IV = x * 2^16. RFC 7714 s11 reuses this KDF with a 96-bit
    salt, which (as in libsrtp) is zero-padded on the right to 112 bits.
    """
    salt = bytearray(master_salt.ljust(14, b"\0"))
    salt[7] ^= label
    encryptor = Cipher(algorithms.AES(master_key), modes.CTR(bytes(salt) + b"\0\0")).encryptor()
    return encryptor.update(b"\0" * length) + encryptor.finalize()


class _StreamState:
    """Per-SSRC RFC 3711 s3.3.1 state: highest packet index seen and the replay bitmap."""

    __slots__ = ("highest", "window")

    def __init__(self, index: int) -> None:
        self.highest = index  # ROC << 16 | SEQ of the highest authenticated packet
        self.window = 1  # bit i set: index (highest - i) has been received


def _estimate_index(state: _StreamState, seq: int) -> int:
    """RFC 3711 Appendix A: guess the ROC for ``seq`` from the highest index seen."""
    roc = state.highest >> 16
    s_l = state.highest & 0xFFFF
    if s_l < _MAX_INDEX_JUMP:
        if seq - s_l > _MAX_INDEX_JUMP:
            roc -= 1
    elif s_l - _MAX_INDEX_JUMP > seq:
        roc += 1
    return (roc << 16) | seq


def _rtp_header_length(packet: bytes) -> int:
    """Length of the RTP header including CSRCs and extension (RFC 3550 s5.1, s5.3.1)."""
    n = len(packet)
    if n < 12 or packet[0] >> 6 != 2:
        raise SrtpMalformedError(f"not an RTP packet ({n} bytes)")
    length = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if n < length + 4:
            raise SrtpMalformedError("RTP header extension truncated")
        length += 4 + 4 * ((packet[length + 2] << 8) | packet[length + 3])
    if n < length:
        raise SrtpMalformedError("RTP header longer than packet")
    return length


class GcmSrtpCipher:
    """RFC 7714 AEAD_AES_128_GCM SRTP for RTP, built on ``cryptography``'s AESGCM.

    ``key_salt`` is the 16-byte master key followed by the 12-byte master salt. One object
    keeps separate per-SSRC state for what it protects and what it unprotects.
    """

    __slots__ = (
        "_aead",
        "_rx",
        "_salt",
        "_tx",
        "auth_failures",
        "malformed",
        "replay_failures",
    )

    def __init__(self, key_salt: bytes) -> None:
        if len(key_salt) != 28:
            raise LocalProtocolError(f"AES-128-GCM key+salt must be 28 bytes, got {len(key_salt)}")
        master_key, master_salt = key_salt[:16], key_salt[16:]
        # RFC 3711 s4.3.2 labels: 0x00 SRTP encryption key, 0x02 SRTP salt.
        self._aead = AESGCM(_aes_cm_kdf(master_key, master_salt, 0x00, 16))
        self._salt = int.from_bytes(_aes_cm_kdf(master_key, master_salt, 0x02, 12), "big")
        self._tx: dict[int, _StreamState] = {}
        self._rx: dict[int, _StreamState] = {}
        self.auth_failures = 0
        self.replay_failures = 0
        self.malformed = 0

    def _nonce(self, ssrc: int, index: int) -> bytes:
        # RFC 7714 s8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt; ROC || SEQ is the index.
        return (((ssrc << 48) | index) ^ self._salt).to_bytes(12, "big")

    def protect(self, packet: bytes) -> bytes:
        """Encrypt and authenticate an RTP packet (RFC 7714 s7.1)."""
        try:
            hlen = _rtp_header_length(packet)
        except SrtpMalformedError:
            self.malformed += 1
            raise
        seq = (packet[2] << 8) | packet[3]
        ssrc = int.from_bytes(packet[8:12], "big")
        state = self._tx.get(ssrc)
        if state is None:
            index = seq
            self._tx[ssrc] = _StreamState(index)
        else:
            # A sender tracks its own ROC the same way a receiver estimates it, which also
            # copes with an SFU re-sending an older sequence number (retransmission).
            index = _estimate_index(state, seq)
            if index > state.highest:
                state.highest = index
        view = memoryview(packet)
        return packet[:hlen] + self._aead.encrypt(self._nonce(ssrc, index), view[hlen:], view[:hlen])

    def unprotect(self, packet: bytes) -> bytes:
        """Verify and decrypt an SRTP packet, enforcing the replay window (RFC 3711 s3.3)."""
        try:
            hlen = _rtp_header_length(packet)
            if len(packet) < hlen + _TAG_LEN:
                raise SrtpMalformedError("SRTP packet shorter than header plus GCM tag")
        except SrtpMalformedError:
            self.malformed += 1
            raise
        seq = (packet[2] << 8) | packet[3]
        ssrc = int.from_bytes(packet[8:12], "big")
        state = self._rx.get(ssrc)
        if state is None:
            index = seq  # RFC 3711 s3.3.1: the first packet seen sets s_l, with ROC 0.
        else:
            index = _estimate_index(state, seq)
            if index < 0:
                self.replay_failures += 1
                raise SrtpReplayError("SRTP index before the start of the stream")
            if index <= state.highest:
                delta = state.highest - index
                if delta >= _REPLAY_WINDOW:
                    self.replay_failures += 1
                    raise SrtpReplayError("SRTP index too old for the replay window")
                if (state.window >> delta) & 1:
                    self.replay_failures += 1
                    raise SrtpReplayError("SRTP packet replayed")
        view = memoryview(packet)
        try:
            plain = self._aead.decrypt(self._nonce(ssrc, index), view[hlen:], view[:hlen])
        except Exception as exc:  # cryptography raises InvalidTag
            self.auth_failures += 1
            raise SrtpAuthenticationError("SRTP GCM authentication failed") from exc
        # Only authenticated packets move the ROC and replay state (RFC 3711 s3.3.1).
        if state is None:
            self._rx[ssrc] = _StreamState(index)
        elif index > state.highest:
            shift = index - state.highest
            state.window = ((state.window << shift) | 1) & ((1 << _REPLAY_WINDOW) - 1)
            state.highest = index
        else:
            state.window |= 1 << (state.highest - index)
        return packet[:hlen] + plain


class GcmRtpSender:
    """The sending side of one outgoing RTP stream (one SSRC), RFC 7714 AEAD_AES_128_GCM.

    The forwarding hot path already has the header and the payload as separate buffers, so
    :meth:`protect` takes them apart: the header is the AAD (RFC 7714 s7.1) and the payload is
    encrypted straight from the (shared) source buffer, with one concatenation for the output.
    The IV's SSRC half is XORed into the salt once (RFC 7714 s8.1), so per packet only the
    packet index is. The index follows RFC 3711 Appendix A from the highest index sent, like
    libsrtp's sender, which also copes with re-sending an older sequence number (a NACK
    answered without RTX).
    """

    __slots__ = ("_encrypt", "_highest", "_iv_base")

    def __init__(self, aead: AESGCM, salt: int, ssrc: int) -> None:
        self._encrypt = aead.encrypt
        self._iv_base = (ssrc << 48) ^ salt
        self._highest = -1  # ROC << 16 | SEQ of the highest index protected so far

    def protect(self, header: bytes, payload: bytes | memoryview, seq: int) -> bytes:
        """``header`` (the whole RTP header, extensions included) then the encrypted payload
        and the 16-byte tag. ``seq`` must be the sequence number written in ``header``."""
        hi = self._highest
        if hi < 0:
            index = self._highest = seq  # RFC 3711 s3.3.1: the first packet has ROC 0
        else:
            roc = hi >> 16
            s_l = hi & 0xFFFF
            if s_l < _MAX_INDEX_JUMP:
                if seq - s_l > _MAX_INDEX_JUMP:
                    roc -= 1
            elif s_l - _MAX_INDEX_JUMP > seq:
                roc += 1
            if roc < 0:
                raise SrtpError("RTP sequence number before the start of the stream")
            index = (roc << 16) | seq
            if index > hi:
                self._highest = index
        return header + self._encrypt((self._iv_base ^ index).to_bytes(12, "big"), payload, header)


class LibsrtpRtpSender:
    """The :class:`GcmRtpSender` interface over the session's libsrtp context (AES-CM-SHA1-80:
    libsrtp keeps the per-SSRC rollover counter itself).

    It calls ``srtp_protect`` through pylibsrtp's cffi binding with a buffer and length cell
    of its own, reused for every packet: ``pylibsrtp.Session.protect`` copies the packet into
    its buffer too but also allocates an ``int *`` per call and goes through more Python
    (``python bench/srtp_profiles.py``: ~1.0 us against ~1.7 us per 1,042-byte packet). If
    the binding is not what we expect (another pylibsrtp version), it falls back to
    ``Session.protect``. Packets up to 1,904 bytes fit (pylibsrtp's own buffer holds 1,500).
    """

    __slots__ = ("_buf", "_cdata", "_fallback", "_len", "_max", "_protect", "_session", "_srtp")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # keeps the libsrtp context below alive
        self._fallback = session.protect
        self._protect: Any = None
        self._max = 0
        try:
            from pylibsrtp._binding import ffi, lib

            self._srtp = session._srtp[0]
            self._protect = lib.srtp_protect
        except (ImportError, AttributeError):
            return
        self._cdata = ffi.new("char[]", _LIBSRTP_BUFFER)
        self._buf = ffi.buffer(self._cdata)
        self._len = ffi.new("int *")
        self._max = _LIBSRTP_BUFFER - pylibsrtp.SRTP_MAX_TRAILER_LEN

    def protect(self, header: bytes, payload: bytes | memoryview, seq: int) -> bytes:
        hlen = len(header)
        n = hlen + len(payload)
        if n > self._max:
            if self._max:
                raise SrtpError(f"cannot protect RTP: {n} bytes is more than the buffer holds")
            try:
                return self._fallback(header + payload)
            except (pylibsrtp.Error, ValueError) as exc:  # ValueError: longer than its buffer
                raise SrtpError(f"cannot protect RTP: {exc}") from exc
        buf = self._buf
        buf[0:hlen] = header
        buf[hlen:n] = payload
        length = self._len
        length[0] = n
        rc = self._protect(self._srtp, self._cdata, length)
        if rc:
            raise SrtpError(f"cannot protect RTP: libsrtp error {rc}")
        return bytes(buf[0 : length[0]])


RtpSender = GcmRtpSender | LibsrtpRtpSender


class GcmRtpReceiver:
    """The receiving side of one incoming RTP stream (one SSRC), RFC 7714 AEAD_AES_128_GCM.

    The mirror of :class:`GcmRtpSender` for the receive path: the caller has parsed the header
    already (it is in the clear, RFC 3711 s3.1), so :meth:`unprotect` gets its length and
    sequence number and returns only the decrypted payload. Nothing is copied back together:
    the header stays readable in the received packet, the payload lives in AESGCM's output.
    The IV's SSRC half is XORed into the salt once (RFC 7714 s8.1); the packet index follows
    RFC 3711 Appendix A and s3.3.1 (only authenticated packets move it), with a 128-packet
    replay window (s3.3.2) as libsrtp's.
    """

    __slots__ = ("_decrypt", "_highest", "_iv_base", "_window")

    def __init__(self, aead: AESGCM, salt: int, ssrc: int) -> None:
        self._decrypt = aead.decrypt
        self._iv_base = (ssrc << 48) ^ salt
        self._highest = -1  # ROC << 16 | SEQ of the highest authenticated index
        self._window = 0  # bit i set: index (highest - i) was received

    def unprotect(self, packet: bytes, header_length: int, seq: int) -> bytes:
        """The decrypted payload of ``packet`` (padding included, tag removed): ``header_length``
        bytes of header (the AAD) and ``seq`` are what the caller parsed from it."""
        hi = self._highest
        if hi < 0:
            index = seq  # s3.3.1: the first packet sets s_l, with ROC 0
        else:
            roc = hi >> 16
            s_l = hi & 0xFFFF
            if s_l < _MAX_INDEX_JUMP:
                if seq - s_l > _MAX_INDEX_JUMP:
                    roc -= 1
            elif s_l - _MAX_INDEX_JUMP > seq:
                roc += 1
            index = (roc << 16) | seq
            if index < 0:
                raise SrtpReplayError("SRTP index before the start of the stream")
            if index <= hi:
                delta = hi - index
                if delta >= _REPLAY_WINDOW:
                    raise SrtpReplayError("SRTP index too old for the replay window")
                if (self._window >> delta) & 1:
                    raise SrtpReplayError("SRTP packet replayed")
        if len(packet) < header_length + _TAG_LEN:
            raise SrtpMalformedError("SRTP packet shorter than header plus GCM tag")
        try:
            plain = self._decrypt(
                (self._iv_base ^ index).to_bytes(12, "big"), packet[header_length:], packet[:header_length]
            )
        except InvalidTag as exc:
            raise SrtpAuthenticationError("SRTP GCM authentication failed") from exc
        if hi < 0:
            self._highest = index
            self._window = 1
        elif index > hi:
            shift = index - hi
            self._window = ((self._window << shift) | 1) & _WINDOW_MASK if shift < _REPLAY_WINDOW else 1
            self._highest = index
        else:
            self._window |= 1 << (hi - index)
        return plain


# ---------------------------------------------------------------------------------------------
# The session used by the transport.
# ---------------------------------------------------------------------------------------------


def _classify(exc: pylibsrtp.Error) -> type[SrtpError]:
    message = str(exc)
    if "authentication" in message:
        return SrtpAuthenticationError
    if "replay" in message or "too old" in message:
        return SrtpReplayError
    return SrtpMalformedError


class SrtpSession:
    """SRTP and SRTCP for one DTLS-SRTP association.

    ``tx_key_salt`` protects what we send, ``rx_key_salt`` unprotects what we receive; each is
    master key || master salt for ``profile``. Counters: ``auth_failures``,
    ``replay_failures``, ``malformed`` (for unprotect) and ``protect_failures``.
    """

    __slots__ = (
        "_gcm_rx",
        "_gcm_tx",
        "_receivers",
        "_rx",
        "_senders",
        "_tx",
        "auth_failures",
        "malformed",
        "profile",
        "protect_failures",
        "replay_failures",
    )

    def __init__(
        self,
        profile: SrtpProfile,
        tx_key_salt: bytes,
        rx_key_salt: bytes,
        *,
        gcm_backend: GcmBackend = DEFAULT_GCM_BACKEND,
    ) -> None:
        expected = profile.key_length + profile.salt_length
        if len(tx_key_salt) != expected or len(rx_key_salt) != expected:
            raise LocalProtocolError(f"{profile.value} needs {expected}-byte key+salt")
        self.profile = profile
        tx_policy = pylibsrtp.Policy(
            key=tx_key_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=profile.libsrtp_profile,
        )
        # An SFU re-sends packets with the same sequence number on NACK (RFC 4585 s6.2.1
        # without RTX); libsrtp would otherwise refuse to protect them twice.
        tx_policy.allow_repeat_tx = True
        rx_policy = pylibsrtp.Policy(
            key=rx_key_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=profile.libsrtp_profile,
        )
        self._tx = pylibsrtp.Session(tx_policy)
        self._rx = pylibsrtp.Session(rx_policy)
        # GCM RTP in: one GcmRtpReceiver per SSRC on the key derived here ("python"), or libsrtp.
        self._gcm_rx: GcmSrtpCipher | None = None
        if profile is SrtpProfile.AEAD_AES_128_GCM and gcm_backend == "python":
            self._gcm_rx = GcmSrtpCipher(rx_key_salt)
        self._receivers: dict[int, GcmRtpReceiver] = {}
        # GCM RTP is always protected with cryptography's AESGCM through one GcmRtpSender per
        # SSRC (python bench/srtp_profiles.py: ~0.9 us against ~2 us through pylibsrtp, whose
        # wrapper copies in and out and allocates per call); every RTP packet of an SSRC must
        # go through the same sender so that its rollover counter is the one the receiver has.
        self._gcm_tx: GcmSrtpCipher | None = None
        if profile is SrtpProfile.AEAD_AES_128_GCM:
            self._gcm_tx = GcmSrtpCipher(tx_key_salt)
        self._senders: dict[int, RtpSender] = {}
        self.auth_failures = 0
        self.replay_failures = 0
        self.malformed = 0
        self.protect_failures = 0

    def _count(self, kind: type[SrtpError]) -> None:
        if kind is SrtpAuthenticationError:
            self.auth_failures += 1
        elif kind is SrtpReplayError:
            self.replay_failures += 1
        else:
            self.malformed += 1

    def rtp_sender(self, ssrc: int) -> RtpSender:
        """The protector for outgoing RTP stream ``ssrc`` (one per SSRC, shared by every
        caller, including :meth:`protect_rtp`). Its failures raise :class:`SrtpError` and are
        not counted in :attr:`protect_failures`."""
        sender = self._senders.get(ssrc)
        if sender is None:
            gcm = self._gcm_tx
            sender = LibsrtpRtpSender(self._tx) if gcm is None else GcmRtpSender(gcm._aead, gcm._salt, ssrc)
            self._senders[ssrc] = sender
        return sender

    def protect_rtp(self, packet: bytes) -> bytes:
        try:
            if self._gcm_tx is not None:
                hlen = _rtp_header_length(packet)
                ssrc = int.from_bytes(packet[8:12], "big")
                return self.rtp_sender(ssrc).protect(
                    packet[:hlen], memoryview(packet)[hlen:], (packet[2] << 8) | packet[3]
                )
            return self._tx.protect(packet)
        except (pylibsrtp.Error, SrtpError) as exc:
            self.protect_failures += 1
            raise SrtpError(f"cannot protect RTP: {exc}") from exc

    def protect_rtcp(self, packet: bytes) -> bytes:
        try:
            return self._tx.protect_rtcp(packet)
        except pylibsrtp.Error as exc:
            self.protect_failures += 1
            raise SrtpError(f"cannot protect RTCP: {exc}") from exc

    def unprotect_rtp_parsed(self, packet: bytes) -> tuple[RtpHeader, bytes, bytes]:
        """Unprotect and parse one SRTP packet: ``(header, head, body)``: the header's extensions
        are read from ``head``, its payload is at ``header.payload_offset`` of ``body``. The
        receive hot path uses this: with the "python" GCM backend the header is parsed once,
        before decryption (it is in the clear), ``head`` is ``packet`` itself and ``body`` the
        decrypted payload alone (offset 0): nothing is copied back together. Otherwise both are
        the whole unprotected packet. SRTP failures raise :class:`SrtpError` (counted here); a header
        that only turns out malformed after decryption (its padding) raises
        :class:`~trackmesh.rtp.packet.RtpError`."""
        if self._gcm_rx is None:
            plain = self.unprotect_rtp(packet)
            return RtpHeader.parse(plain), plain, plain
        try:
            h = RtpHeader.parse_protected(packet, _TAG_LEN)
        except RtpError as parse_exc:
            self.malformed += 1
            raise SrtpMalformedError(f"not an SRTP packet: {parse_exc}") from parse_exc
        body = self._gcm_unprotect(packet, h)
        h.locate_payload(body, 0, bool(packet[0] & 0x20))
        return h, packet, body

    def _gcm_unprotect(self, packet: bytes, h: RtpHeader) -> bytes:
        gcm = self._gcm_rx
        assert gcm is not None
        ssrc = h.ssrc
        receiver = self._receivers.get(ssrc)
        fresh = receiver is None
        if receiver is None:
            receiver = GcmRtpReceiver(gcm._aead, gcm._salt, ssrc)
        try:
            body = receiver.unprotect(packet, h.header_length, h.sequence_number)
        except SrtpError as gcm_exc:  # its own name: mypyc types an except variable once per function
            self._count(type(gcm_exc))
            raise
        if fresh:
            # Kept only once a packet of it authenticated (as libsrtp adds a stream cloned from
            # its template): forged packets with ever new SSRCs must not grow the session.
            self._receivers[ssrc] = receiver
        return body

    @property
    def receive_streams(self) -> int:
        """SSRCs with receive state in the session's own GCM path (0 with libsrtp)."""
        return len(self._receivers)

    def unprotect_rtp(self, packet: bytes) -> bytes:
        if self._gcm_rx is not None:
            try:
                h = RtpHeader.parse_protected(packet, _TAG_LEN)
            except RtpError as parse_exc:
                self.malformed += 1
                raise SrtpMalformedError(f"not an SRTP packet: {parse_exc}") from parse_exc
            return packet[: h.header_length] + self._gcm_unprotect(packet, h)
        if len(packet) < 12:
            # libsrtp would read past a runt header's end of data otherwise reject it; be explicit.
            self.malformed += 1
            raise SrtpMalformedError(f"SRTP packet too short ({len(packet)} bytes)")
        try:
            return self._rx.unprotect(packet)
        except pylibsrtp.Error as exc:
            kind = _classify(exc)
            self._count(kind)
            raise kind(f"SRTP unprotect failed: {exc}") from exc

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        if len(packet) < 8:
            self.malformed += 1
            raise SrtpMalformedError(f"SRTCP packet too short ({len(packet)} bytes)")
        try:
            return self._rx.unprotect_rtcp(packet)
        except pylibsrtp.Error as exc:
            kind = _classify(exc)
            self._count(kind)
            raise kind(f"SRTCP unprotect failed: {exc}") from exc
