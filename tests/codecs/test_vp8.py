from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.codecs.roundtrip import ROUNDTRIP, TestFrame, check, garbage_run, lost_packets, transmit
from trackmesh.codecs.payload import PayloadError
from trackmesh.codecs.registry import is_keyframe
from trackmesh.codecs.vp8 import (
    Vp8Depacketizer,
    Vp8Packetizer,
    is_vp8_keyframe,
    parse_vp8_descriptor,
    rewrite_vp8_picture_id,
    rewrite_vp8_tl0picidx,
)
from trackmesh.errors import LocalProtocolError, ProtocolError

# VP8 frame header first byte: bit 0 is P (0 = key frame, RFC 7741 s4.3 / RFC 6386 s9.1).
VP8_KEY_HDR = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A])
VP8_DELTA_HDR = bytes([0x11, 0x02, 0x00])


def vp8_descriptor(
    *,
    s: bool = True,
    pid: int = 0,
    picture_id: int | None = None,
    long_pid: bool = True,
    tl0: int | None = None,
    tid: int | None = None,
    y: bool = False,
    keyidx: int | None = None,
    n: bool = False,
) -> bytes:
    x = 0
    ext = bytearray()
    if picture_id is not None:
        x |= 0x80
        ext += struct.pack("!H", 0x8000 | picture_id) if long_pid else bytes([picture_id])
    if tl0 is not None:
        x |= 0x40
        ext.append(tl0)
    if tid is not None or keyidx is not None:
        x |= (0x20 if tid is not None else 0) | (0x10 if keyidx is not None else 0)
        ext.append(((tid or 0) << 6) | (0x20 if y else 0) | (keyidx or 0))
    b0 = (0x80 if x else 0) | (0x20 if n else 0) | (0x10 if s else 0) | pid
    return bytes([b0]) + (bytes([x]) + bytes(ext) if x else b"")


def test_vp8_minimal_descriptor_keyframe() -> None:
    assert is_vp8_keyframe(bytes([0x10]) + VP8_KEY_HDR)
    assert not is_vp8_keyframe(bytes([0x10]) + VP8_DELTA_HDR)
    assert not is_vp8_keyframe(bytes([0x00]) + VP8_KEY_HDR)  # S=0: not a partition start
    assert not is_vp8_keyframe(bytes([0x11]) + VP8_KEY_HDR)  # partition 1


def test_vp8_extended_descriptor_fields() -> None:
    # X=1, I|L|T|K all set, M=1 picture id 0x1234, TL0PICIDX 7, TID=2 Y=1 KEYIDX=5.
    payload = bytes([0x90, 0xF0, 0x92, 0x34, 0x07, (2 << 6) | 0x20 | 5]) + VP8_KEY_HDR
    d = parse_vp8_descriptor(payload)
    assert (d.picture_id, d.picture_id_long, d.tl0picidx, d.temporal_id, d.layer_sync, d.key_idx) == (
        0x1234,
        True,
        7,
        2,
        True,
        5,
    )
    assert d.size == 6 and d.start_of_partition and d.partition_id == 0
    assert is_keyframe("vp8", payload)
    assert is_keyframe("VP8", payload)


def test_vp8_short_picture_id_and_offset() -> None:
    pkt = b"\xff" * 12 + vp8_descriptor(picture_id=0x55, long_pid=False, tl0=9) + VP8_DELTA_HDR
    d = parse_vp8_descriptor(pkt, 12)
    assert d.picture_id == 0x55 and not d.picture_id_long
    assert d.picture_id_offset == 14 and d.tl0picidx_offset == 15
    assert d.temporal_id == -1 and d.key_idx == -1


def test_vp8_rewrite_in_place() -> None:
    buf = bytearray(vp8_descriptor(picture_id=0x7FFF, tl0=255, tid=1) + VP8_KEY_HDR)
    d = parse_vp8_descriptor(buf)
    rewrite_vp8_picture_id(buf, d, 0x8000 + 3)  # wraps within 15 bits
    rewrite_vp8_tl0picidx(buf, d, 256)
    d2 = parse_vp8_descriptor(buf)
    assert (d2.picture_id, d2.picture_id_long, d2.tl0picidx, d2.temporal_id) == (3, True, 0, 1)
    assert bytes(buf[d2.size :]) == VP8_KEY_HDR
    short = bytearray(vp8_descriptor(picture_id=1, long_pid=False))
    ds = parse_vp8_descriptor(short)
    rewrite_vp8_picture_id(short, ds, 200)
    assert parse_vp8_descriptor(short).picture_id == 200 & 0x7F
    bare = bytearray(vp8_descriptor())
    with pytest.raises(LocalProtocolError):
        rewrite_vp8_picture_id(bare, parse_vp8_descriptor(bare), 1)


@pytest.mark.parametrize("payload", [b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\x80\x40", b"\x80\x20", b"\x10"])
def test_vp8_truncated(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        is_vp8_keyframe(payload)


@given(st.binary(max_size=20), st.integers(0, 10))
def test_random_vp8_descriptor(data: bytes, offset: int) -> None:
    try:
        d = parse_vp8_descriptor(data, offset)
    except ProtocolError:
        return
    assert offset + d.size <= len(data)


@given(
    picture_id=st.one_of(st.none(), st.integers(0, 0x7F)),
    long_pid=st.booleans(),
    tl0=st.one_of(st.none(), st.integers(0, 255)),
    tid=st.one_of(st.none(), st.integers(0, 3)),
    y=st.booleans(),
    keyidx=st.one_of(st.none(), st.integers(0, 31)),
    s=st.booleans(),
    pid=st.integers(0, 7),
    key=st.booleans(),
)
def test_vp8_build_parse_roundtrip(
    picture_id: int | None,
    long_pid: bool,
    tl0: int | None,
    tid: int | None,
    y: bool,
    keyidx: int | None,
    s: bool,
    pid: int,
    key: bool,
) -> None:
    desc = vp8_descriptor(s=s, pid=pid, picture_id=picture_id, long_pid=long_pid, tl0=tl0, tid=tid, y=y, keyidx=keyidx)
    payload = desc + (VP8_KEY_HDR if key else VP8_DELTA_HDR)
    d = parse_vp8_descriptor(payload)
    assert d.size == len(desc)
    assert d.picture_id == (-1 if picture_id is None else picture_id)
    assert d.tl0picidx == (-1 if tl0 is None else tl0)
    assert d.temporal_id == (-1 if tid is None else tid)
    assert d.layer_sync == (tid is not None and y)
    assert d.key_idx == (-1 if keyidx is None else keyidx)
    assert is_vp8_keyframe(payload) == (s and pid == 0 and key)


@st.composite
def vp8_frames(draw: st.DrawFn) -> TestFrame:
    key = draw(st.booleans())
    frame = bytes([0x10 if key else 0x11]) + draw(st.binary(min_size=0, max_size=4000))
    return frame, frame, key, True


@ROUNDTRIP
@given(st.lists(vp8_frames(), min_size=1, max_size=8), st.integers(5, 1400), lost_packets())
def test_roundtrip(frames: list[TestFrame], mtu: int, lost: set[int]) -> None:
    depack = Vp8Depacketizer()
    sent, out = transmit(Vp8Packetizer(picture_id=0x7FFE), depack, frames, mtu, lost)
    check(sent, out, depack)


def test_packetizer_descriptor() -> None:
    pk = Vp8Packetizer(picture_id=0x7FFF)
    first = pk.packetize(b"\x10" + bytes(10), 8)
    assert len(first) == 3 and all(len(p) <= 8 for p in first)
    d0, d1 = parse_vp8_descriptor(first[0]), parse_vp8_descriptor(first[1])
    assert d0.start_of_partition and not d1.start_of_partition and d0.partition_id == 0
    assert d0.picture_id == d1.picture_id == 0x7FFF and d0.picture_id_long
    assert is_vp8_keyframe(first[0])
    assert parse_vp8_descriptor(pk.packetize(b"\x11", 8)[0]).picture_id == 0  # wraps at 15 bits
    with pytest.raises(LocalProtocolError):
        pk.packetize(b"\x10", 4)


@given(st.lists(st.binary(max_size=30), max_size=30), st.lists(st.booleans(), max_size=5))
def test_garbage_never_raises(payloads: list[bytes], markers: list[bool]) -> None:
    garbage_run(Vp8Depacketizer(), payloads, markers)
