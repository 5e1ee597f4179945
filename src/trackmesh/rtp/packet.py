"""RTP fixed header (RFC 3550 s5.1) and header extensions (RFC 8285), parsed without copying.

The SFU never decodes media: per packet it needs the fixed header fields, the payload
offset/length and, occasionally, one or two negotiated header extensions. :class:`RtpHeader`
is the only object allocated per packet; extensions are located lazily by offset so the
common forwarding path touches no more bytes than it must.
"""

from __future__ import annotations

import struct
from typing import Final

from trackmesh.errors import RemoteProtocolError

__all__ = [
    "RtpError",
    "RtpHeader",
    "build_rtp_packet",
    "find_extension",
    "get_payload_type",
    "parse_extensions",
    "read_abs_send_time",
    "read_audio_level",
    "read_mid",
    "read_rid",
    "read_transport_cc_seq",
    "rewrite_header",
    "set_marker",
    "set_payload_type",
    "set_transport_cc_seq",
]

_FIXED: Final = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, seq, timestamp, ssrc (RFC 3550 s5.1)
_SEQ_TS_SSRC: Final = struct.Struct("!HII")  # the rewritable part of the fixed header, at offset 2
_EXT_HDR: Final = struct.Struct("!HH")  # defined-by-profile, length in 32-bit words (s5.3.1)
_U16: Final = struct.Struct("!H")
_U24_HI: Final = struct.Struct("!HB")

FIXED_HEADER_LENGTH: Final = 12
ONE_BYTE_PROFILE: Final = 0xBEDE  # RFC 8285 s4.2
TWO_BYTE_PROFILE_MASK: Final = 0xFFF0  # RFC 8285 s4.3: 0x100 + 4 "appbits"
TWO_BYTE_PROFILE: Final = 0x1000


class RtpError(RemoteProtocolError):
    """A malformed RTP packet or header extension."""


class RtpHeader:
    """A parsed view of an RTP fixed header; it holds offsets, not copies of the packet."""

    __slots__ = (
        "csrc_count",
        "extension_length",
        "extension_offset",
        "extension_profile",
        "header_length",
        "marker",
        "padding_length",
        "payload_length",
        "payload_offset",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    csrc_count: int
    extension_length: int
    extension_offset: int
    extension_profile: int
    header_length: int
    marker: bool
    padding_length: int
    payload_length: int
    payload_offset: int
    payload_type: int
    sequence_number: int
    ssrc: int
    timestamp: int

    def __init__(
        self,
        marker: bool,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        csrc_count: int,
        extension_profile: int,
        extension_offset: int,
        extension_length: int,
        header_length: int,
        padding_length: int,
        payload_length: int,
    ) -> None:
        self.marker = marker
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.csrc_count = csrc_count
        self.extension_profile = extension_profile
        self.extension_offset = extension_offset
        self.extension_length = extension_length
        self.header_length = header_length
        self.padding_length = padding_length
        self.payload_offset = header_length  # the payload starts where the header ends
        self.payload_length = payload_length

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpHeader:
        """Parse the fixed header, CSRC list and extension block boundaries of ``data``."""
        return cls._parse(data, 0, True)

    @classmethod
    def parse_protected(cls, data: bytes | bytearray | memoryview, trailer: int) -> RtpHeader:
        """Parse the header of an SRTP packet whose last ``trailer`` bytes are not RTP (the
        authentication tag). RFC 3711 s3.1 sends the header in the clear, so it is parsed once,
        before decryption, and serves both the SRTP index and everything after; the payload is
        still encrypted, so the padding (counted by the payload's last octet, RFC 3550 s5.1)
        is not read: call :meth:`locate_payload` with the decrypted payload."""
        return cls._parse(data, trailer, False)

    def locate_payload(self, body: bytes | bytearray | memoryview, offset: int, padded: bool) -> None:
        """The payload is now at ``offset`` of ``body`` (a decrypted copy, padding included, up to its
        end): :attr:`payload_offset` and :attr:`payload_length` refer to ``body`` from here on, and
        the padding is read from its last octet when ``padded`` (the P bit, RFC 3550 s5.1)."""
        size = len(body)
        padding = 0
        if padded:
            padding = body[size - 1] if size > offset else 0
            if padding == 0 or offset + padding > size:
                raise RtpError(f"invalid RTP padding length {padding} for a {size - offset}-byte payload")
        self.padding_length = padding
        self.payload_offset = offset
        self.payload_length = size - offset - padding

    @classmethod
    def _parse(cls, data: bytes | bytearray | memoryview, trailer: int, read_padding: bool) -> RtpHeader:
        size = len(data) - trailer
        if size < FIXED_HEADER_LENGTH:
            raise RtpError(f"RTP packet too short: {size} bytes, the fixed header needs 12")
        b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data, 0)
        if b0 >> 6 != 2:
            raise RtpError(f"unsupported RTP version {b0 >> 6} (RFC 3550 s5.1 requires 2)")
        cc = b0 & 0x0F
        offset = FIXED_HEADER_LENGTH + 4 * cc
        profile = 0
        ext_offset = 0
        ext_length = 0
        if b0 & 0x10:
            if size < offset + 4:
                raise RtpError("RTP header extension flag set but the extension header is truncated")
            profile, words = _EXT_HDR.unpack_from(data, offset)
            ext_offset = offset + 4
            ext_length = 4 * words
            offset = ext_offset + ext_length
        if offset > size:
            raise RtpError(f"RTP header claims {offset} bytes but the packet has {size}")
        padding = 0
        if b0 & 0x20 and read_padding:
            # s5.1: the last octet counts the padding octets, itself included, so 0 is invalid.
            padding = data[size - 1]
            if padding == 0 or offset + padding > size:
                raise RtpError(f"invalid RTP padding length {padding} for a {size}-byte packet")
        return cls(
            bool(b1 & 0x80),
            b1 & 0x7F,
            seq,
            ts,
            ssrc,
            cc,
            profile,
            ext_offset,
            ext_length,
            offset,
            padding,
            size - offset - padding,
        )

    def csrcs(self, data: bytes | bytearray | memoryview) -> list[int]:
        """The contributing sources (RFC 3550 s5.1), read only when asked."""
        return [int.from_bytes(data[12 + 4 * i : 16 + 4 * i], "big") for i in range(self.csrc_count)]

    def __repr__(self) -> str:
        return (
            f"RtpHeader(pt={self.payload_type}, seq={self.sequence_number}, ts={self.timestamp}, "
            f"ssrc={self.ssrc:#010x}, marker={self.marker}, payload_length={self.payload_length})"
        )


def _walk_extensions(
    data: bytes | bytearray | memoryview, header: RtpHeader, wanted: int
) -> tuple[int, int] | dict[int, tuple[int, int]] | None:
    """Walk the RFC 8285 elements; return (offset, length) of ``wanted`` or, if wanted < 0, all."""
    start = header.extension_offset
    end = start + header.extension_length
    profile = header.extension_profile
    found: dict[int, tuple[int, int]] = {}
    pos = start
    if profile == ONE_BYTE_PROFILE:
        # s4.2: ID(4) L(4), L+1 data bytes; ID 0 is a padding byte, ID 15 stops processing.
        while pos < end:
            b = data[pos]
            ext_id = b >> 4
            if ext_id == 0:
                pos += 1
                continue
            if ext_id == 15:
                break
            length = (b & 0x0F) + 1
            pos += 1
            if pos + length > end:
                raise RtpError(f"one-byte header extension id {ext_id} overruns the extension block")
            if ext_id == wanted:
                return (pos, length)
            if wanted < 0:
                found.setdefault(ext_id, (pos, length))  # first occurrence wins, as in find_extension
            pos += length
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        # s4.3: ID(8) L(8), L data bytes (L may be 0); ID 0 is a padding byte.
        while pos < end:
            ext_id = data[pos]
            if ext_id == 0:
                pos += 1
                continue
            if pos + 2 > end:
                raise RtpError("two-byte header extension element truncated")
            length = data[pos + 1]
            pos += 2
            if pos + length > end:
                raise RtpError(f"two-byte header extension id {ext_id} overruns the extension block")
            if ext_id == wanted:
                return (pos, length)
            if wanted < 0:
                found.setdefault(ext_id, (pos, length))  # first occurrence wins, as in find_extension
            pos += length
    # Other profiles are not RFC 8285 elements: there is nothing we can index (s4.1).
    return found if wanted < 0 else None


def find_extension(
    data: bytes | bytearray | memoryview, header: RtpHeader, ext_id: int
) -> tuple[int, int] | None:
    """Return (offset, length) of extension ``ext_id``'s data in ``data``, or None."""
    if header.extension_length == 0 or ext_id <= 0:
        return None
    if header.extension_profile == ONE_BYTE_PROFILE:
        # Fast path for the profile browsers use: same rules as _walk_extensions (s4.2).
        pos = header.extension_offset
        end = pos + header.extension_length
        while pos < end:
            b = data[pos]
            found_id = b >> 4
            if found_id == 0:
                pos += 1
                continue
            if found_id == 15:
                return None
            length = (b & 0x0F) + 1
            pos += 1
            if pos + length > end:
                raise RtpError(f"one-byte header extension id {found_id} overruns the extension block")
            if found_id == ext_id:
                return (pos, length)
            pos += length
        return None
    found = _walk_extensions(data, header, ext_id)
    assert found is None or isinstance(found, tuple)
    return found


def parse_extensions(data: bytes | bytearray | memoryview, header: RtpHeader) -> dict[int, memoryview]:
    """All RFC 8285 extension elements as id -> zero-copy view of their data."""
    if header.extension_length == 0:
        return {}
    found = _walk_extensions(data, header, -1)
    assert isinstance(found, dict)
    view = memoryview(data)
    return {ext_id: view[off : off + length] for ext_id, (off, length) in found.items()}


def _read_string(data: bytes | bytearray | memoryview, header: RtpHeader, ext_id: int) -> str | None:
    loc = find_extension(data, header, ext_id)
    if loc is None:
        return None
    off, length = loc
    raw = bytes(data[off : off + length])
    try:
        # RFC 8843 s15 (mid) and RFC 8852 s3.3 (rid) carry SDES-style strings; trailing NULs
        # appear when senders pad the element.
        return raw.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RtpError(f"header extension {ext_id} is not valid UTF-8") from exc


def read_mid(data: bytes | bytearray | memoryview, header: RtpHeader, ext_id: int) -> str | None:
    """The BUNDLE media id (RFC 8843 s15, urn:ietf:params:rtp-hdrext:sdes:mid)."""
    return _read_string(data, header, ext_id)


def read_rid(data: bytes | bytearray | memoryview, header: RtpHeader, ext_id: int) -> str | None:
    """The RTP stream id (RFC 8852, urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id)."""
    return _read_string(data, header, ext_id)


def read_abs_send_time(data: bytes | bytearray | memoryview, header: RtpHeader, ext_id: int) -> int | None:
    """abs-send-time: 24-bit 6.18 fixed-point seconds (webrtc.org abs-send-time spec)."""
    loc = find_extension(data, header, ext_id)
    if loc is None:
        return None
    off, length = loc
    if length != 3:
        raise RtpError(f"abs-send-time extension must be 3 bytes, got {length}")
    hi, lo = _U24_HI.unpack_from(data, off)
    return int((hi << 8) | lo)


def read_transport_cc_seq(
    data: bytes | bytearray | memoryview, header: RtpHeader, ext_id: int
) -> int | None:
    """Transport-wide sequence number (draft-holmer-rmcat-transport-wide-cc-extensions-01 s2)."""
    loc = find_extension(data, header, ext_id)
    if loc is None:
        return None
    off, length = loc
    if length < 2:
        raise RtpError(f"transport-wide-cc extension must be at least 2 bytes, got {length}")
    return int(_U16.unpack_from(data, off)[0])


def read_audio_level(
    data: bytes | bytearray | memoryview, header: RtpHeader, ext_id: int
) -> tuple[bool, int] | None:
    """RFC 6464 s3: (voice activity flag, level in -dBov 0..127), or None if absent."""
    loc = find_extension(data, header, ext_id)
    if loc is None:
        return None
    off, length = loc
    if length < 1:
        raise RtpError("audio level extension is empty")
    b = data[off]
    return (bool(b & 0x80), b & 0x7F)


def rewrite_header(buf: bytearray | memoryview, ssrc: int, seq: int, ts: int) -> None:
    """Overwrite SSRC, sequence number and timestamp in place (the SFU's per-viewer rewrite)."""
    _SEQ_TS_SSRC.pack_into(buf, 2, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)


def set_transport_cc_seq(buf: bytearray | memoryview, ext_offset: int, seq: int) -> None:
    """Write a transport-wide sequence number at ``ext_offset`` (from :func:`find_extension`)."""
    _U16.pack_into(buf, ext_offset, seq & 0xFFFF)


def get_payload_type(data: bytes | bytearray | memoryview) -> int:
    """The payload type with the marker bit stripped (RFC 3550 s5.1)."""
    if len(data) < 2:
        raise RtpError("RTP packet too short to hold a payload type")
    return data[1] & 0x7F


def set_payload_type(buf: bytearray | memoryview, payload_type: int) -> None:
    """Set the payload type in place, preserving the marker bit (viewer PTs may differ)."""
    if not 0 <= payload_type <= 127:
        raise ValueError(f"payload type {payload_type} out of range 0..127")
    buf[1] = (buf[1] & 0x80) | payload_type


def set_marker(buf: bytearray | memoryview, marker: bool) -> None:
    """Set or clear the marker bit in place."""
    buf[1] = (buf[1] | 0x80) if marker else (buf[1] & 0x7F)


def build_rtp_packet(
    payload_type: int,
    seq: int,
    timestamp: int,
    ssrc: int,
    payload: bytes = b"",
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extensions: dict[int, bytes] | None = None,
    two_byte: bool = False,
    padding: int = 0,
) -> bytes:
    """Serialise an RTP packet (used by tests, probes and padding generation)."""
    if len(csrcs) > 15:
        raise ValueError("at most 15 CSRCs")
    if not 0 <= padding <= 255:
        raise ValueError("padding must be 0..255")
    b0 = 0x80 | len(csrcs)
    ext_block = b""
    if extensions:
        b0 |= 0x10
        body = bytearray()
        for ext_id, value in extensions.items():
            if two_byte:
                if not 1 <= ext_id <= 255 or len(value) > 255:
                    raise ValueError(f"two-byte extension id {ext_id} / length {len(value)} out of range")
                body += bytes((ext_id, len(value))) + value
            else:
                if not 1 <= ext_id <= 14 or not 1 <= len(value) <= 16:
                    raise ValueError(f"one-byte extension id {ext_id} / length {len(value)} out of range")
                body.append((ext_id << 4) | (len(value) - 1))
                body += value
        body += b"\x00" * (-len(body) % 4)  # pad the block to 32 bits (RFC 8285 s4.2)
        profile = TWO_BYTE_PROFILE if two_byte else ONE_BYTE_PROFILE
        ext_block = _EXT_HDR.pack(profile, len(body) // 4) + bytes(body)
    if padding:
        b0 |= 0x20
    out = bytearray(_FIXED.pack(b0, (0x80 if marker else 0) | payload_type, seq, timestamp, ssrc))
    for csrc in csrcs:
        out += csrc.to_bytes(4, "big")
    out += ext_block
    out += payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes((padding,))
    return bytes(out)
