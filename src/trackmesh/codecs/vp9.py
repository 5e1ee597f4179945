"""VP9 over RTP (RFC 9628): the payload descriptor, key frames, packetizer and depacketizer.

An SFU forwarding VP9 SVC (all spatial layers on one SSRC) reads, per packet, which spatial
and temporal layer it belongs to (SID, TID), where a layer frame begins and ends (B, E),
whether it is predicted from earlier pictures (P) and whether it is a temporal switching-up
point (U). The first octet is I|P|L|F|B|E|V|Z; then, in order and each only when flagged:
the picture id (I; 7 bits, or 15 with M=1), the layer indices TID(3)|U|SID(3)|D (L), then
TL0PICIDX in non-flexible mode (L, F=0) or up to three P_DIFF octets in flexible mode (F, P;
each with an N bit saying another follows), then the scalability structure (V, s4.2.1).

The packetizer writes non-flexible mode without layer indices (one spatial and temporal layer,
s4.2: L=0 is allowed then) and a 15-bit picture id; P comes from the frame header's frame_type,
and a key frame's first packet carries the scalability structure with its resolution (V, s4.2.1
"SHOULD").
The depacketizer takes either mode and concatenates the layer frames of one picture.
"""

from __future__ import annotations

from typing import Final

from trackmesh.codecs.payload import Buffer, Depacketizer, PayloadError, check_mtu

__all__ = [
    "Vp9Depacketizer",
    "Vp9Descriptor",
    "Vp9Packetizer",
    "is_vp9_keyframe",
    "parse_vp9_descriptor",
    "vp9_frame_is_key",
    "vp9_frame_size",
]

_MAX_P_DIFF: Final = 3


class Vp9Descriptor:
    """One packet's VP9 payload descriptor; absent optional fields are -1 (SID/TID are 0
    without layer indices, as for a stream with a single layer)."""

    __slots__ = (
        "begin",
        "end",
        "flexible",
        "inter_layer",
        "inter_picture",
        "not_upper_ref",
        "picture_id",
        "picture_id_long",
        "picture_id_offset",
        "size",
        "spatial_id",
        "ss_layers",
        "switch_up",
        "temporal_id",
        "tl0picidx",
        "tl0picidx_offset",
    )

    begin: bool
    end: bool
    flexible: bool
    inter_layer: bool
    inter_picture: bool
    not_upper_ref: bool
    picture_id: int
    picture_id_long: bool
    picture_id_offset: int
    size: int
    spatial_id: int
    ss_layers: int
    switch_up: bool
    temporal_id: int
    tl0picidx: int
    tl0picidx_offset: int


def parse_vp9_descriptor(data: bytes | bytearray | memoryview, offset: int = 0) -> Vp9Descriptor:
    """Parse the descriptor at ``offset``; raises :class:`PayloadError` on truncation."""
    end = len(data)
    if offset >= end:
        raise PayloadError("empty VP9 payload")
    b0 = data[offset]
    d = Vp9Descriptor.__new__(Vp9Descriptor)
    d.inter_picture = bool(b0 & 0x40)
    d.flexible = bool(b0 & 0x10)
    d.begin = bool(b0 & 0x08)
    d.end = bool(b0 & 0x04)
    d.not_upper_ref = bool(b0 & 0x01)
    d.picture_id = d.tl0picidx = d.picture_id_offset = d.tl0picidx_offset = -1
    d.picture_id_long = False
    d.spatial_id = d.temporal_id = 0
    d.switch_up = d.inter_layer = False
    d.ss_layers = 0
    pos = offset + 1
    if b0 & 0x80:
        if pos >= end:
            raise PayloadError("VP9 descriptor truncated at picture id")
        d.picture_id_offset = pos
        if data[pos] & 0x80:
            if pos + 2 > end:
                raise PayloadError("VP9 descriptor truncated in 15-bit picture id")
            d.picture_id = ((data[pos] & 0x7F) << 8) | data[pos + 1]
            d.picture_id_long = True
            pos += 2
        else:
            d.picture_id = data[pos]
            pos += 1
    if b0 & 0x20:
        if pos >= end:
            raise PayloadError("VP9 descriptor truncated at layer indices")
        b = data[pos]
        pos += 1
        d.temporal_id = b >> 5
        d.switch_up = bool(b & 0x10)
        d.spatial_id = (b >> 1) & 0x07
        d.inter_layer = bool(b & 0x01)
        if not d.flexible:
            if pos >= end:
                raise PayloadError("VP9 descriptor truncated at TL0PICIDX")
            d.tl0picidx_offset = pos
            d.tl0picidx = data[pos]
            pos += 1
    if d.flexible and d.inter_picture:
        for i in range(_MAX_P_DIFF + 1):
            if i == _MAX_P_DIFF:
                raise PayloadError("VP9 descriptor has more than 3 reference indices")
            if pos >= end:
                raise PayloadError("VP9 descriptor truncated at P_DIFF")
            n = data[pos] & 0x01
            pos += 1
            if not n:
                break
    if b0 & 0x02:
        pos = _skip_ss(data, pos, end, d)
    d.size = pos - offset
    return d


def _skip_ss(data: bytes | bytearray | memoryview, pos: int, end: int, d: Vp9Descriptor) -> int:
    """Step over the scalability structure (s4.2.1): N_S(3)|Y|G|-, then N_S+1 resolutions
    (4 octets each) when Y, then when G a picture group of N_G entries TID(3)|U|R(2)|-
    each followed by R P_DIFF octets."""
    if pos >= end:
        raise PayloadError("VP9 scalability structure truncated")
    b = data[pos]
    pos += 1
    layers = (b >> 5) + 1
    d.ss_layers = layers
    if b & 0x10:
        pos += 4 * layers
    if b & 0x08:
        if pos >= end:
            raise PayloadError("VP9 scalability structure truncated at N_G")
        groups = data[pos]
        pos += 1
        for _ in range(groups):
            if pos >= end:
                raise PayloadError("VP9 picture group truncated")
            pos += 1 + ((data[pos] >> 2) & 0x03)
    if pos > end:
        raise PayloadError("VP9 scalability structure overruns the payload")
    return pos


def is_vp9_keyframe(payload: Buffer) -> bool:
    """RFC 9628 s4.2: not inter-predicted (P=0), beginning of a frame (B=1), spatial layer 0.

    The first descriptor octet is I|P|L|F|B|E|V|Z; the layer octet (present when L=1) after
    the picture id carries TID(3)|U|SID(3)|D.
    """
    end = len(payload)
    if end == 0:
        raise PayloadError("empty VP9 payload")
    b0 = payload[0]
    if b0 & 0x40 or not b0 & 0x08:
        return False
    pos = 1
    if b0 & 0x80:
        if pos >= end:
            raise PayloadError("VP9 descriptor truncated at picture id")
        pos += 2 if payload[pos] & 0x80 else 1
    if b0 & 0x20:
        if pos >= end:
            raise PayloadError("VP9 descriptor truncated at layer indices")
        if (payload[pos] >> 1) & 0x07 != 0:
            return False
    return True


def vp9_frame_is_key(frame: Buffer) -> bool:
    """Whether a VP9 frame (or superframe: its first frame) is a key frame, from the start of the
    uncompressed header (VP9 bitstream spec s6.2): frame_marker(2)=2, profile_low_bit,
    profile_high_bit, reserved_zero when profile 3, show_existing_frame, frame_type (0 = KEY)."""
    if not frame:
        raise PayloadError("empty VP9 frame")
    b = frame[0]
    if b >> 6 != 2:
        raise PayloadError("VP9 frame marker is not 2")
    profile = ((b >> 5) & 1) | (((b >> 4) & 1) << 1)
    bit = 3 if profile < 3 else 2  # the bit index of show_existing_frame
    if (b >> bit) & 1:
        return False  # shows an earlier frame: never a key frame
    return not (b >> (bit - 1)) & 1


_SYNC_CODE: Final = 0x498342  # VP9 bitstream spec s6.2 frame_sync_code
_CS_RGB: Final = 7


def vp9_frame_size(frame: Buffer) -> tuple[int, int] | None:
    """A key frame's (width, height) from its uncompressed header (VP9 bitstream spec s6.2:
    frame_sync_code, color_config, frame_size); None for any other frame."""
    if not vp9_frame_is_key(frame):
        return None
    bits = int.from_bytes(bytes(frame[:12]), "big")
    total = 8 * min(len(frame), 12)
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > total:
            raise PayloadError("VP9 key frame header truncated")
        pos += n
        return (bits >> (total - pos)) & ((1 << n) - 1)

    read(2)
    profile = read(1) | (read(1) << 1)
    if profile == 3:
        read(1)
    read(4)  # show_existing_frame, frame_type, show_frame, error_resilient_mode
    if read(24) != _SYNC_CODE:
        raise PayloadError("VP9 key frame without its sync code")
    if profile >= 2:
        read(1)  # ten_or_twelve_bit
    color_space = read(3)
    if color_space != _CS_RGB:
        read(1)  # color_range
        if profile in (1, 3):
            read(3)  # subsampling_x, subsampling_y, reserved_zero
    elif profile in (1, 3):
        read(1)
    return read(16) + 1, read(16) + 1


class Vp9Packetizer:
    """Frame -> payloads in non-flexible mode: I=1 (15-bit picture id), P, B, E (RFC 9628 s4.2)."""

    __slots__ = ("picture_id",)

    def __init__(self, picture_id: int = 0) -> None:
        self.picture_id = picture_id & 0x7FFF

    def packetize(self, frame: Buffer, mtu: int) -> list[bytes]:
        check_mtu(mtu, 9)  # a key frame's first packet: descriptor, SS and one media byte
        key = vp9_frame_is_key(frame)  # PayloadError: not a VP9 frame (the sender's fault)
        try:
            size = vp9_frame_size(frame) if key else None
        except PayloadError:
            size = None  # the SS is a SHOULD: without a readable size, send none
        pid = 0x8000 | self.picture_id
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        b0 = 0x80 if key else 0xC0  # I, P when inter-predicted
        # s4.2.1: N_S=0 (one layer), Y=1 with WIDTH, HEIGHT; G=0 (no picture group).
        ss = b"" if size is None else bytes([0x10, size[0] >> 8, size[0] & 0xFF, size[1] >> 8, size[1] & 0xFF])
        view = memoryview(frame)
        n = len(view)
        out = []
        pos = 0
        while pos < n:
            room = mtu - 3 - (len(ss) if pos == 0 else 0)
            flags = b0 | (0x0A if pos == 0 and ss else 0x08 if pos == 0 else 0) | (0x04 if pos + room >= n else 0)
            prefix = bytes([flags, pid >> 8, pid & 0xFF]) + (ss if pos == 0 else b"")
            out.append(prefix + view[pos : pos + room])
            pos += room
        return out


class Vp9Depacketizer(Depacketizer):
    """Payloads -> VP9 pictures (all layer frames of one timestamp, concatenated): a picture
    starts with B=1 on spatial layer 0, each layer frame ends with E=1 (RFC 9628 s4.2, s4.4)."""

    __slots__ = ("_in_layer",)

    def __init__(self) -> None:
        super().__init__()
        self._in_layer = False

    def _reset(self) -> None:
        self._in_layer = False

    def _starts_frame(self, payload: Buffer, after_loss: bool) -> bool:
        d = parse_vp9_descriptor(payload)
        return d.begin and d.spatial_id == 0

    def _append(self, payload: Buffer) -> None:
        d = parse_vp9_descriptor(payload)
        if d.begin:
            if self._in_layer:
                raise PayloadError("VP9 layer frame begins before the previous one ended")
            if not self._buf:
                if d.spatial_id != 0 and d.inter_layer:
                    raise PayloadError("VP9 picture begins on an inter-layer predicted layer")
                self._keyframe = not d.inter_picture
            self._in_layer = True
        elif not self._in_layer:
            raise PayloadError("VP9 payload continues a layer frame that did not begin")
        self._buf += memoryview(payload)[d.size :]
        if d.end:
            self._in_layer = False

    def _complete(self) -> bool:
        return not self._in_layer
