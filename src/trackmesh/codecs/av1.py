"""AV1 over RTP (AOMedia "RTP Payload Format For AV1", v1.0) and OBU helpers.

An RTP payload is an aggregation header Z|Y|W(2)|N|-(3) (s4.4) and OBU elements: each is a
LEB128 length then the OBU, except that with W = 1-3 the last of W elements has no length
(s4.3). Z: the first element continues an OBU from the previous packet; Y: the last element
continues in the next one; N: the first packet of a coded video sequence. Temporal delimiters
and tile lists are not sent (s5); OBUs travel without obu_size (s4.3, "SHOULD").

- :class:`Av1Packetizer`: a temporal unit (low-overhead OBU stream, AV1 spec s5.2) -> payloads
  with W=0, fragmenting OBUs across packets with Y/Z.
- :class:`Av1Depacketizer`: payloads -> temporal units as a low-overhead OBU stream: a temporal
  delimiter, then every OBU with its size field (what decoders and MP4/WebM muxers take).
- :func:`split_obus`, :func:`find_sequence_header`: OBU walking and sequence-header detection
  (AV1 spec s5.3, obu_type 1): a key frame of a new coded video sequence carries one.
"""

from __future__ import annotations

from typing import Final

from trackmesh.codecs.payload import Buffer, Depacketizer, PayloadError, check_mtu

__all__ = [
    "OBU_FRAME",
    "OBU_FRAME_HEADER",
    "OBU_PADDING",
    "OBU_SEQUENCE_HEADER",
    "OBU_TEMPORAL_DELIMITER",
    "OBU_TILE_LIST",
    "Av1Depacketizer",
    "Av1Packetizer",
    "av1_layer_ids",
    "find_sequence_header",
    "is_av1_keyframe",
    "leb128",
    "read_leb128",
    "split_obus",
]

OBU_SEQUENCE_HEADER: Final = 1
OBU_TEMPORAL_DELIMITER: Final = 2
OBU_FRAME_HEADER: Final = 3
OBU_FRAME: Final = 6
OBU_TILE_LIST: Final = 8
OBU_PADDING: Final = 15
_TEMPORAL_DELIMITER: Final = b"\x12\x00"  # type 2, has_size, size 0
_MAX_LEB128: Final = 8


def leb128(value: int) -> bytes:
    """Unsigned LEB128 (AV1 spec s4.10.5)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_leb128(data: Buffer, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it); at most 8 octets (s4.10.5); PayloadError when truncated."""
    value = 0
    for i in range(_MAX_LEB128):
        if pos >= end:
            raise PayloadError("LEB128 truncated")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, pos
    raise PayloadError("LEB128 longer than 8 octets")


def _header_size(b0: int) -> int:
    return 2 if b0 & 0x04 else 1  # obu_extension_flag adds temporal_id|spatial_id


def split_obus(data: Buffer) -> list[tuple[int, memoryview, memoryview]]:
    """(obu_type, header octets, payload) per OBU of a low-overhead stream (s5.3.1). An OBU
    without obu_has_size_field runs to the end (allowed only last). PayloadError if malformed."""
    view = memoryview(bytes(data))
    end = len(view)
    out = []
    pos = 0
    while pos < end:
        b0 = view[pos]
        if b0 & 0x80:
            raise PayloadError("OBU forbidden bit set")
        hsize = _header_size(b0)
        if pos + hsize > end:
            raise PayloadError("OBU header truncated")
        header = view[pos : pos + hsize]
        pos += hsize
        if b0 & 0x02:
            size, pos = read_leb128(view, pos, end)
            if pos + size > end:
                raise PayloadError(f"OBU of {size} bytes overruns the temporal unit")
        else:
            size = end - pos
        out.append(((b0 >> 3) & 0x0F, header, view[pos : pos + size]))
        pos += size
    return out


def find_sequence_header(data: Buffer) -> memoryview | None:
    """The first sequence header OBU's payload in a low-overhead OBU stream, or None."""
    for obu_type, _, payload in split_obus(data):
        if obu_type == OBU_SEQUENCE_HEADER:
            return payload
    return None


def is_av1_keyframe(payload: Buffer) -> bool:
    """Whether this RTP payload starts a new coded video sequence: N=1 (s4.4), or its first
    element begins (Z=0) with a sequence header OBU."""
    end = len(payload)
    if end < 2:
        raise PayloadError("AV1 payload shorter than aggregation header and one OBU octet")
    agg = payload[0]
    if agg & 0x08:
        return True
    if agg & 0x80:
        return False
    pos = 1
    if (agg >> 4) & 0x03 != 1:  # with W=1 the only element has no length field
        _, pos = read_leb128(payload, pos, end)
        if pos >= end:
            raise PayloadError("AV1 OBU element truncated")
    return (payload[pos] >> 3) & 0x0F == OBU_SEQUENCE_HEADER


def av1_layer_ids(payload: Buffer) -> tuple[int, int]:
    """(temporal_id, spatial_id) of the first OBU that begins in this RTP payload, from its
    extension header (AV1 spec s5.3.3); (0, 0) when it has none, as for a single-layer stream.
    The Dependency Descriptor header extension, when negotiated, says more than this."""
    end = len(payload)
    if end < 2:
        raise PayloadError("AV1 payload shorter than aggregation header and one OBU octet")
    agg = payload[0]
    w = (agg >> 4) & 0x03
    pos, count = 1, 0
    while pos < end:
        count += 1
        if w and count == w:
            size = end - pos
        else:
            size, pos = read_leb128(payload, pos, end)
            if size == 0 or pos + size > end:
                raise PayloadError(f"AV1 OBU element of {size} bytes overruns the payload")
        if count > 1 or not agg & 0x80:  # Z: the first element continues an earlier OBU
            b0 = payload[pos]
            if not b0 & 0x04:
                return 0, 0
            if size < 2:
                raise PayloadError("AV1 OBU extension header truncated")
            ext = payload[pos + 1]
            return ext >> 5, (ext >> 3) & 0x03
        pos += size
    return 0, 0


class Av1Packetizer:
    """Temporal unit -> RTP payloads (W=0: every element length-prefixed; N on key sequences)."""

    __slots__ = ()

    def packetize(self, frame: Buffer, mtu: int) -> list[bytes]:
        check_mtu(mtu, 4)
        obus = split_obus(frame)  # PayloadError: not a temporal unit (the sender's fault)
        elements: list[bytes] = []
        new_sequence = False
        for obu_type, header, payload in obus:
            if obu_type in (OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST, OBU_PADDING):
                continue  # s5: not transmitted
            if obu_type == OBU_SEQUENCE_HEADER:
                new_sequence = True
            elements.append(bytes([header[0] & ~0x02 & 0xFF]) + header[1:] + payload)
        if not elements:
            raise PayloadError("AV1 temporal unit without OBUs to send")
        out: list[bytes] = []
        packet = bytearray([0])
        room = mtu
        for element in elements:
            pos, size = 0, len(element)
            while pos < size:
                left = size - pos
                free = room - len(packet)
                if len(leb128(left)) + left <= free:
                    packet += leb128(left) + element[pos:]
                    pos = size
                    break
                # Fragment: the largest piece whose length prefix still fits.
                piece = free - len(leb128(free))
                if piece > 0 and len(leb128(piece)) + piece <= free:
                    packet += leb128(piece) + element[pos : pos + piece]
                    pos += piece
                    packet[0] |= 0x40  # Y: continues in the next packet
                out.append(bytes(packet))
                packet = bytearray([0x80 if packet[0] & 0x40 else 0])  # Z when we split an OBU
        if len(packet) > 1:
            out.append(bytes(packet))
        if new_sequence:
            out[0] = bytes([out[0][0] | 0x08]) + out[0][1:]
        return out


class Av1Depacketizer(Depacketizer):
    """RTP payloads -> temporal units (low-overhead OBU stream with a leading temporal delimiter);
    key frame = the first packet has N=1 or the unit holds a sequence header. After loss only a
    new coded video sequence (N=1, or a leading sequence header) can start a unit: the payload
    has no other proof that a packet is a temporal unit's first."""

    __slots__ = ("_obu", "_open_obu")

    def __init__(self) -> None:
        super().__init__()
        self._obu = bytearray()  # the OBU element being reassembled across packets
        self._open_obu = False

    def _reset(self) -> None:
        self._obu.clear()
        self._open_obu = False

    def _starts_frame(self, payload: Buffer, after_loss: bool) -> bool:
        if not payload or payload[0] & 0x80:
            return False  # Z: continues an OBU
        return is_av1_keyframe(payload) if after_loss else True

    def _emit_obu(self, element: Buffer) -> None:
        if len(element) < 1:
            raise PayloadError("empty AV1 OBU element")
        b0 = element[0]
        if b0 & 0x80:
            raise PayloadError("OBU forbidden bit set")
        hsize = _header_size(b0)
        if len(element) < hsize:
            raise PayloadError("OBU header truncated")
        body = memoryview(element)[hsize:]
        if b0 & 0x02:  # the sender kept obu_size: drop it and check it
            size, pos = read_leb128(body, 0, len(body))
            if pos + size != len(body):
                raise PayloadError("OBU size field disagrees with its element length")
            body = body[pos:]
        obu_type = (b0 >> 3) & 0x0F
        if obu_type in (OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST):
            return
        if obu_type == OBU_SEQUENCE_HEADER:
            self._keyframe = True
        if not self._buf:
            self._buf += _TEMPORAL_DELIMITER
        self._buf.append(b0 | 0x02)
        self._buf += memoryview(element)[1:hsize]
        self._buf += leb128(len(body))
        self._buf += body

    def _append(self, payload: Buffer) -> None:
        end = len(payload)
        if end < 2:
            raise PayloadError("AV1 payload shorter than aggregation header and one OBU octet")
        agg = payload[0]
        z, y, w = agg & 0x80, agg & 0x40, (agg >> 4) & 0x03
        if agg & 0x08:
            self._keyframe = True
        if z and not self._open_obu:
            raise PayloadError("AV1 payload continues an OBU that did not start")
        if not z and self._open_obu:
            raise PayloadError("AV1 OBU fragment not continued")
        pos = 1
        count = 0
        while pos < end:
            count += 1
            if w and count == w:
                size = end - pos
            else:
                size, pos = read_leb128(payload, pos, end)
                if size == 0 or pos + size > end:
                    raise PayloadError(f"AV1 OBU element of {size} bytes overruns the payload")
            element = memoryview(payload)[pos : pos + size]
            pos += size
            last = pos >= end
            if count == 1 and z:
                self._obu += element
                if not (last and y):
                    self._open_obu = False
                    self._emit_obu(self._obu)
                    self._obu.clear()
            elif last and y:
                self._obu += element
            else:
                self._emit_obu(element)
            if w and count == w and pos < end:
                raise PayloadError("AV1 payload has more OBU elements than W says")
        if y:
            self._open_obu = True

    def _complete(self) -> bool:
        return not self._open_obu
