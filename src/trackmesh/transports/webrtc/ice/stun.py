"""STUN message codec (RFC 8489) with the ICE attributes of RFC 8445 s16.1.

Sans-IO: this module turns bytes into :class:`StunMessage` objects and builds the few
messages an ICE-lite server (and a minimal ICE client) needs. It never touches a socket.

Only short-term credentials are supported (RFC 8489 s9.1), which is all ICE uses: the key
for MESSAGE-INTEGRITY is the UTF-8 encoding of the ICE password. ICE passwords are made of
ice-chars (RFC 8839 s5.4), so OpaqueString preparation (RFC 8265) is the identity.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from struct import Struct

from trackmesh.errors import LocalProtocolError, RemoteProtocolError
from trackmesh.net import Address

__all__ = [
    "ATTR_ERROR_CODE",
    "ATTR_FINGERPRINT",
    "ATTR_ICE_CONTROLLED",
    "ATTR_ICE_CONTROLLING",
    "ATTR_MESSAGE_INTEGRITY",
    "ATTR_PRIORITY",
    "ATTR_SOFTWARE",
    "ATTR_UNKNOWN_ATTRIBUTES",
    "ATTR_USERNAME",
    "ATTR_USE_CANDIDATE",
    "ATTR_XOR_MAPPED_ADDRESS",
    "HEADER_LENGTH",
    "MAGIC_COOKIE",
    "METHOD_BINDING",
    "Buffer",
    "StunClass",
    "StunMessage",
    "StunProtocolError",
    "build_binding_error",
    "build_binding_request",
    "build_binding_success",
    "build_message",
    "decode_message_type",
    "encode_message_type",
    "is_stun",
    "new_transaction_id",
    "parse",
    "verify_fingerprint",
    "verify_integrity",
]

Buffer = bytes | bytearray | memoryview


class StunProtocolError(RemoteProtocolError):
    """A datagram that claims to be STUN but violates RFC 8489."""


# RFC 8489 s5: fixed value that distinguishes RFC 5389+ STUN from RFC 3489 and other protocols.
MAGIC_COOKIE = 0x2112A442
_MAGIC_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_LENGTH = 20
_FINGERPRINT_XOR = 0x5354554E  # RFC 8489 s14.7: "STUN" in ASCII.

METHOD_BINDING = 0x001


class StunClass(enum.IntEnum):
    """The two class bits C1C0 of the message type (RFC 8489 s5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


# Attribute types (RFC 8489 s18.3, RFC 8445 s16.1).
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_UNKNOWN_ATTRIBUTES = 0x000A
ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001C
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_PRIORITY = 0x0024
ATTR_USE_CANDIDATE = 0x0025
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
ATTR_ICE_CONTROLLED = 0x8029
ATTR_ICE_CONTROLLING = 0x802A

# Attributes this module understands; anything else in 0x0000-0x7FFF is
# comprehension-required and must be reported (RFC 8489 s14, s6.3.1.1 -> 420).
_KNOWN_ATTRIBUTES = frozenset(
    {
        ATTR_MAPPED_ADDRESS,
        ATTR_USERNAME,
        ATTR_MESSAGE_INTEGRITY,
        ATTR_ERROR_CODE,
        ATTR_UNKNOWN_ATTRIBUTES,
        ATTR_MESSAGE_INTEGRITY_SHA256,
        ATTR_XOR_MAPPED_ADDRESS,
        ATTR_PRIORITY,
        ATTR_USE_CANDIDATE,
        ATTR_SOFTWARE,
        ATTR_FINGERPRINT,
        ATTR_ICE_CONTROLLED,
        ATTR_ICE_CONTROLLING,
    }
)

_HEADER = Struct("!HHI12s")
_ATTR_HEADER = Struct("!HH")
_U16 = Struct("!H")
_U32 = Struct("!I")
_U64 = Struct("!Q")
_XOR_ADDR_HEAD = Struct("!xBH")  # reserved byte, family, x-port (RFC 8489 s14.2)

_HMAC_SHA1_LENGTH = 20
_INTEGRITY_ATTR_LENGTH = 4 + _HMAC_SHA1_LENGTH
_FINGERPRINT_ATTR_LENGTH = 8
# RFC 8489 s14.3 says fewer than 509 bytes; RFC 5389 allowed 512. Accept the older, larger
# bound so legacy peers are not rejected on a cosmetic limit.
_MAX_USERNAME_BYTES = 512
_MAX_REASON_BYTES = 763  # RFC 8489 s14.8

_DEFAULT_REASONS = {
    400: "Bad Request",
    401: "Unauthenticated",
    420: "Unknown Attribute",
    487: "Role Conflict",
    500: "Server Error",
}


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def encode_message_type(method: int, message_class: int) -> int:
    """Interleave the 12 method bits and 2 class bits (RFC 8489 s5, figure 3)."""
    if not 0 <= method <= 0xFFF:
        raise LocalProtocolError(f"STUN method {method:#x} does not fit in 12 bits")
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((message_class & 0b01) << 4)
        | ((message_class & 0b10) << 7)
    )


def decode_message_type(message_type: int) -> tuple[int, StunClass]:
    """Inverse of :func:`encode_message_type`."""
    method = (message_type & 0x000F) | ((message_type >> 1) & 0x0070) | ((message_type >> 2) & 0x0F80)
    message_class = ((message_type >> 4) & 0b01) | ((message_type >> 7) & 0b10)
    return method, StunClass(message_class)


def new_transaction_id() -> bytes:
    """96 random bits (RFC 8489 s5: "uniformly and randomly chosen ... cryptographically random")."""
    return secrets.token_bytes(12)


def is_stun(data: Buffer) -> bool:
    """Cheap demultiplexing check (RFC 8489 s5, RFC 7983 s7): top two bits zero, magic cookie.

    This does not validate the message; :func:`parse` does.
    """
    return len(data) >= HEADER_LENGTH and data[0] < 0x40 and data[4:8] == _MAGIC_COOKIE_BYTES


@dataclass(slots=True)
class StunMessage:
    """A parsed STUN message.

    ``attributes`` holds every attribute in wire order as ``(type, value)`` with padding
    removed; the typed fields below are decoded from the *first* occurrence of each known
    attribute (RFC 8489 s14: only the first occurrence needs to be processed). Attributes
    after MESSAGE-INTEGRITY other than FINGERPRINT/MESSAGE-INTEGRITY-SHA256 are ignored
    (RFC 8489 s14.5) and not listed.
    """

    method: int
    message_class: StunClass
    transaction_id: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    username: str | None = None
    priority: int | None = None
    use_candidate: bool = False
    ice_controlling: int | None = None
    ice_controlled: int | None = None
    xor_mapped_address: Address | None = None
    error_code: int | None = None
    error_reason: str | None = None
    software: str | None = None
    #: Comprehension-required attribute types we do not understand (RFC 8489 s6.3.1.1).
    unknown_required: tuple[int, ...] = ()
    #: Byte offset of the MESSAGE-INTEGRITY attribute header, if present.
    integrity_offset: int | None = None
    #: Byte offset of the FINGERPRINT attribute header, if present.
    fingerprint_offset: int | None = None

    def get(self, attr_type: int) -> bytes | None:
        """Value of the first attribute of ``attr_type``, or None."""
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None


def _decode_xor_address(value: bytes, transaction_id: bytes) -> Address:
    # RFC 8489 s14.2: port XOR top 16 bits of the cookie; IPv4 XOR cookie; IPv6 XOR cookie||txid.
    if len(value) < 4:
        raise StunProtocolError(f"XOR-MAPPED-ADDRESS too short ({len(value)} bytes)")
    family, xport = _XOR_ADDR_HEAD.unpack_from(value, 0)
    port = xport ^ (MAGIC_COOKIE >> 16)
    if family == 0x01:
        if len(value) != 8:
            raise StunProtocolError(f"XOR-MAPPED-ADDRESS IPv4 value must be 8 bytes, got {len(value)}")
        raw = (_U32.unpack_from(value, 4)[0] ^ MAGIC_COOKIE).to_bytes(4, "big")
        return str(ipaddress.IPv4Address(raw)), port
    if family == 0x02:
        if len(value) != 20:
            raise StunProtocolError(f"XOR-MAPPED-ADDRESS IPv6 value must be 20 bytes, got {len(value)}")
        mask = _MAGIC_COOKIE_BYTES + transaction_id
        raw = bytes(a ^ b for a, b in zip(value[4:20], mask, strict=True))
        return str(ipaddress.IPv6Address(raw)), port
    raise StunProtocolError(f"XOR-MAPPED-ADDRESS has unknown address family {family:#x}")


def _encode_xor_address(addr: Address, transaction_id: bytes) -> bytes:
    host, port = addr[0], addr[1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise LocalProtocolError(f"not an IP address: {host!r}") from exc
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port out of range: {port}")
    xport = port ^ (MAGIC_COOKIE >> 16)
    if ip.version == 4:
        xaddr = _U32.pack(int(ip) ^ MAGIC_COOKIE)
        return bytes((0, 0x01)) + _U16.pack(xport) + xaddr
    mask = _MAGIC_COOKIE_BYTES + transaction_id
    xaddr = bytes(a ^ b for a, b in zip(ip.packed, mask, strict=True))
    return bytes((0, 0x02)) + _U16.pack(xport) + xaddr


def _decode_text(value: bytes, what: str, limit: int) -> str:
    if len(value) > limit:
        raise StunProtocolError(f"{what} is {len(value)} bytes, limit is {limit}")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunProtocolError(f"{what} is not valid UTF-8") from exc


def _check_length(attr_type: int, value: bytes, expected: int, name: str) -> None:
    if len(value) != expected:
        raise StunProtocolError(f"{name} ({attr_type:#06x}) must be {expected} bytes, got {len(value)}")


def parse(data: Buffer) -> StunMessage:
    """Parse and structurally validate one STUN message occupying all of ``data``.

    Raises :class:`StunProtocolError` for anything malformed. Does not check
    MESSAGE-INTEGRITY or FINGERPRINT values: use :func:`verify_integrity` and
    :func:`verify_fingerprint` (they need the raw bytes and, for integrity, a key).
    """
    size = len(data)
    if size < HEADER_LENGTH:
        raise StunProtocolError(f"STUN message too short: {size} bytes < {HEADER_LENGTH}")
    message_type, length, cookie, transaction_id = _HEADER.unpack_from(data, 0)
    if message_type & 0xC000:
        # RFC 8489 s6: the most significant two bits of every STUN message are zeroes.
        raise StunProtocolError("STUN message type has its top two bits set")
    if cookie != MAGIC_COOKIE:
        raise StunProtocolError(f"bad STUN magic cookie {cookie:#010x}")
    if length & 3:
        # RFC 8489 s5: all attributes are padded, so the length is a multiple of 4.
        raise StunProtocolError(f"STUN length {length} is not a multiple of 4")
    if HEADER_LENGTH + length != size:
        raise StunProtocolError(f"STUN length field {length} does not match datagram size {size}")
    method, message_class = decode_message_type(message_type)
    msg = StunMessage(method=method, message_class=message_class, transaction_id=transaction_id)

    attributes = msg.attributes
    seen: set[int] = set()
    unknown: list[int] = []
    offset = HEADER_LENGTH
    after_integrity = False
    while offset < size:
        if offset + 4 > size:
            raise StunProtocolError(f"truncated attribute header at offset {offset}")
        attr_type, attr_len = _ATTR_HEADER.unpack_from(data, offset)
        value_start = offset + 4
        value_end = value_start + attr_len
        if value_end > size:
            raise StunProtocolError(
                f"attribute {attr_type:#06x} at offset {offset} claims {attr_len} bytes, past the end"
            )
        if msg.fingerprint_offset is not None:
            # RFC 8489 s14.7: FINGERPRINT MUST be the last attribute.
            raise StunProtocolError("attribute found after FINGERPRINT")
        value = bytes(data[value_start:value_end])
        attr_offset = offset
        offset = value_start + _pad4(attr_len)
        if offset > size:
            raise StunProtocolError(f"attribute {attr_type:#06x} padding runs past the end")

        if attr_type == ATTR_FINGERPRINT:
            _check_length(attr_type, value, 4, "FINGERPRINT")
            msg.fingerprint_offset = attr_offset
            attributes.append((attr_type, value))
            continue
        if after_integrity and attr_type != ATTR_MESSAGE_INTEGRITY_SHA256:
            # RFC 8489 s14.5: everything after MESSAGE-INTEGRITY except FINGERPRINT and
            # MESSAGE-INTEGRITY-SHA256 is ignored (it is not covered by the HMAC).
            continue
        attributes.append((attr_type, value))
        if attr_type in seen:
            continue  # RFC 8489 s14: only the first occurrence is processed.
        seen.add(attr_type)
        _decode_attribute(msg, attr_type, value, unknown)
        if attr_type == ATTR_MESSAGE_INTEGRITY:
            msg.integrity_offset = attr_offset
            after_integrity = True
    msg.unknown_required = tuple(unknown)
    return msg


def _decode_attribute(msg: StunMessage, attr_type: int, value: bytes, unknown: list[int]) -> None:
    if attr_type == ATTR_USERNAME:
        msg.username = _decode_text(value, "USERNAME", _MAX_USERNAME_BYTES)
    elif attr_type == ATTR_MESSAGE_INTEGRITY:
        _check_length(attr_type, value, _HMAC_SHA1_LENGTH, "MESSAGE-INTEGRITY")
    elif attr_type == ATTR_PRIORITY:
        _check_length(attr_type, value, 4, "PRIORITY")
        msg.priority = _U32.unpack_from(value, 0)[0]
    elif attr_type == ATTR_USE_CANDIDATE:
        _check_length(attr_type, value, 0, "USE-CANDIDATE")
        msg.use_candidate = True
    elif attr_type == ATTR_ICE_CONTROLLING:
        _check_length(attr_type, value, 8, "ICE-CONTROLLING")
        msg.ice_controlling = _U64.unpack_from(value, 0)[0]
    elif attr_type == ATTR_ICE_CONTROLLED:
        _check_length(attr_type, value, 8, "ICE-CONTROLLED")
        msg.ice_controlled = _U64.unpack_from(value, 0)[0]
    elif attr_type == ATTR_XOR_MAPPED_ADDRESS:
        msg.xor_mapped_address = _decode_xor_address(value, msg.transaction_id)
    elif attr_type == ATTR_ERROR_CODE:
        # RFC 8489 s14.8: 21 reserved bits, 3-bit class (3..6), 8-bit number (0..99), reason.
        if len(value) < 4:
            raise StunProtocolError(f"ERROR-CODE too short ({len(value)} bytes)")
        code_class = value[2] & 0x07
        number = value[3]
        if not 3 <= code_class <= 6 or number > 99:
            raise StunProtocolError(f"ERROR-CODE out of range: class {code_class}, number {number}")
        msg.error_code = code_class * 100 + number
        msg.error_reason = _decode_text(value[4:], "ERROR-CODE reason", _MAX_REASON_BYTES)
    elif attr_type == ATTR_SOFTWARE:
        msg.software = _decode_text(value, "SOFTWARE", _MAX_REASON_BYTES)
    elif attr_type < 0x8000 and attr_type not in _KNOWN_ATTRIBUTES:
        unknown.append(attr_type)


def _integrity_offset(data: Buffer) -> int | None:
    """Offset of the first MESSAGE-INTEGRITY attribute, walking the TLVs without decoding."""
    size = len(data)
    if size < HEADER_LENGTH or HEADER_LENGTH + _U16.unpack_from(data, 2)[0] != size:
        raise StunProtocolError("not a well-formed STUN message")
    offset = HEADER_LENGTH
    while offset + 4 <= size:
        attr_type, attr_len = _ATTR_HEADER.unpack_from(data, offset)
        if attr_type == ATTR_MESSAGE_INTEGRITY:
            return offset
        offset += 4 + _pad4(attr_len)
    return None


def _integrity_digest(data: Buffer, integrity_offset: int, key: bytes) -> bytes:
    # RFC 8489 s14.5: the HMAC covers everything before MESSAGE-INTEGRITY, with the header's
    # length field rewritten as if MESSAGE-INTEGRITY were the last attribute.
    mac = hmac.new(key, digestmod=hashlib.sha1)
    mac.update(data[0:2])
    mac.update(_U16.pack(integrity_offset + _INTEGRITY_ATTR_LENGTH - HEADER_LENGTH))
    mac.update(data[4:integrity_offset])
    return mac.digest()


def verify_integrity(data: Buffer, key: bytes, *, message: StunMessage | None = None) -> bool:
    """True if ``data`` carries a MESSAGE-INTEGRITY that verifies with ``key``.

    Returns False when the attribute is absent or wrong. Pass the already parsed
    ``message`` to avoid walking the attributes a second time. Raises
    :class:`StunProtocolError` if ``data`` is not a well-formed message.
    """
    offset = message.integrity_offset if message is not None else _integrity_offset(data)
    if offset is None or offset + _INTEGRITY_ATTR_LENGTH > len(data):
        return False
    if _U16.unpack_from(data, offset + 2)[0] != _HMAC_SHA1_LENGTH:
        return False
    expected = _integrity_digest(data, offset, key)
    received = bytes(data[offset + 4 : offset + _INTEGRITY_ATTR_LENGTH])
    return hmac.compare_digest(expected, received)


def verify_fingerprint(data: Buffer) -> bool:
    """True if ``data`` ends with a FINGERPRINT attribute whose CRC matches (RFC 8489 s14.7)."""
    size = len(data)
    if size < HEADER_LENGTH + _FINGERPRINT_ATTR_LENGTH:
        return False
    fp_offset = size - _FINGERPRINT_ATTR_LENGTH
    attr_type, attr_len = _ATTR_HEADER.unpack_from(data, fp_offset)
    if attr_type != ATTR_FINGERPRINT or attr_len != 4:
        return False
    expected = (zlib.crc32(data[:fp_offset]) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
    return bool(_U32.unpack_from(data, fp_offset + 4)[0] == expected)


def build_message(
    method: int,
    message_class: StunClass,
    transaction_id: bytes,
    attributes: Iterable[tuple[int, bytes]] = (),
    *,
    integrity_key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """Serialise a message; MESSAGE-INTEGRITY and FINGERPRINT are appended last, in that order.

    ``attributes`` must not contain MESSAGE-INTEGRITY or FINGERPRINT: they are computed here.
    """
    if len(transaction_id) != 12:
        raise LocalProtocolError("STUN transaction id must be 12 bytes")
    buf = bytearray(HEADER_LENGTH)
    for attr_type, value in attributes:
        if attr_type in (ATTR_MESSAGE_INTEGRITY, ATTR_FINGERPRINT):
            raise LocalProtocolError("MESSAGE-INTEGRITY and FINGERPRINT are added by build_message")
        if len(value) > 0xFFFF:
            raise LocalProtocolError(f"attribute {attr_type:#06x} value too long")
        buf += _ATTR_HEADER.pack(attr_type, len(value))
        buf += value
        buf += b"\x00" * (_pad4(len(value)) - len(value))
    _HEADER.pack_into(
        buf,
        0,
        encode_message_type(method, message_class),
        len(buf) - HEADER_LENGTH,
        MAGIC_COOKIE,
        transaction_id,
    )
    if integrity_key is not None:
        offset = len(buf)
        digest = _integrity_digest(buf, offset, integrity_key)
        buf += _ATTR_HEADER.pack(ATTR_MESSAGE_INTEGRITY, _HMAC_SHA1_LENGTH)
        buf += digest
        _U16.pack_into(buf, 2, len(buf) - HEADER_LENGTH)
    if fingerprint:
        fp_offset = len(buf)
        # The CRC covers the header with the length already including FINGERPRINT (s14.7).
        _U16.pack_into(buf, 2, fp_offset + _FINGERPRINT_ATTR_LENGTH - HEADER_LENGTH)
        crc = (zlib.crc32(buf) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
        buf += _ATTR_HEADER.pack(ATTR_FINGERPRINT, 4)
        buf += _U32.pack(crc)
    if len(buf) - HEADER_LENGTH > 0xFFFF:
        raise LocalProtocolError("STUN message too long")
    return bytes(buf)


def build_binding_success(
    transaction_id: bytes,
    mapped_address: Address,
    integrity_key: bytes,
    *,
    software: str | None = None,
) -> bytes:
    """Binding success response: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT.

    RFC 8445 s7.3.1.4: the response carries the source address of the request and is
    integrity-protected with the same short-term key the request used.
    """
    attrs: list[tuple[int, bytes]] = []
    if software is not None:
        attrs.append((ATTR_SOFTWARE, software.encode("utf-8")))
    attrs.append((ATTR_XOR_MAPPED_ADDRESS, _encode_xor_address(mapped_address, transaction_id)))
    return build_message(
        METHOD_BINDING, StunClass.SUCCESS, transaction_id, attrs, integrity_key=integrity_key
    )


def build_binding_error(
    transaction_id: bytes,
    code: int,
    reason: str | None = None,
    *,
    integrity_key: bytes | None = None,
    unknown_attributes: Sequence[int] = (),
) -> bytes:
    """Binding error response with ERROR-CODE (and UNKNOWN-ATTRIBUTES for 420), plus FINGERPRINT.

    Per RFC 8489 s9.1.3, 400 and 401 are sent *without* MESSAGE-INTEGRITY (the request could
    not be authenticated); 487 Role Conflict (RFC 8445 s7.3.1.1) is sent with it.
    """
    if not 300 <= code <= 699:
        raise LocalProtocolError(f"STUN error code {code} out of range 300-699")
    text = reason if reason is not None else _DEFAULT_REASONS.get(code, "Error")
    value = bytes((0, 0, code // 100, code % 100)) + text.encode("utf-8")
    attrs = [(ATTR_ERROR_CODE, value)]
    if unknown_attributes:
        attrs.append((ATTR_UNKNOWN_ATTRIBUTES, b"".join(_U16.pack(t) for t in unknown_attributes)))
    return build_message(METHOD_BINDING, StunClass.ERROR, transaction_id, attrs, integrity_key=integrity_key)


def build_binding_request(
    transaction_id: bytes,
    username: str,
    integrity_key: bytes,
    *,
    priority: int,
    ice_controlling: int | None = None,
    ice_controlled: int | None = None,
    use_candidate: bool = False,
    software: str | None = None,
) -> bytes:
    """ICE connectivity check (RFC 8445 s7.2.2): a Binding request with USERNAME
    ("<remote ufrag>:<local ufrag>"), PRIORITY, the role attribute carrying the tie-breaker,
    optionally USE-CANDIDATE, then MESSAGE-INTEGRITY keyed with the remote password and
    FINGERPRINT.
    """
    if (ice_controlling is None) == (ice_controlled is None):
        raise LocalProtocolError("exactly one of ice_controlling / ice_controlled must be given")
    attrs: list[tuple[int, bytes]] = []
    if software is not None:
        attrs.append((ATTR_SOFTWARE, software.encode("utf-8")))
    attrs.append((ATTR_USERNAME, username.encode("utf-8")))
    attrs.append((ATTR_PRIORITY, _U32.pack(priority)))
    if ice_controlling is not None:
        attrs.append((ATTR_ICE_CONTROLLING, _U64.pack(ice_controlling)))
    if ice_controlled is not None:
        attrs.append((ATTR_ICE_CONTROLLED, _U64.pack(ice_controlled)))
    if use_candidate:
        attrs.append((ATTR_USE_CANDIDATE, b""))
    return build_message(
        METHOD_BINDING, StunClass.REQUEST, transaction_id, attrs, integrity_key=integrity_key
    )
