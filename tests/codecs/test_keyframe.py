from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.codecs.keyframe import (
    PayloadError,
    is_h264_keyframe,
    is_keyframe,
    is_vp8_keyframe,
    is_vp9_keyframe,
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


def test_vp9() -> None:
    # I|P|L|F|B|E|V|Z: B=1, P=0, no optional fields -> keyframe.
    assert is_vp9_keyframe(bytes([0x08, 0x00]))
    assert not is_vp9_keyframe(bytes([0x48, 0x00]))  # P=1 inter-predicted
    assert not is_vp9_keyframe(bytes([0x00, 0x00]))  # B=0 not the start of a frame
    # I=1 with 15-bit picture id, L=1, layer octet SID=0 -> keyframe; SID=1 -> not.
    assert is_vp9_keyframe(bytes([0xA8, 0x81, 0x02, 0x00, 0x05]))
    assert not is_vp9_keyframe(bytes([0xA8, 0x81, 0x02, 0x02, 0x05]))
    assert is_keyframe("VP9", bytes([0x8A, 0x12]))
    with pytest.raises(PayloadError):
        is_vp9_keyframe(b"")
    with pytest.raises(PayloadError):
        is_vp9_keyframe(bytes([0x88]))
    with pytest.raises(PayloadError):
        is_vp9_keyframe(bytes([0x28]))


def test_h264() -> None:
    assert is_h264_keyframe(bytes([0x65, 0x88]))  # IDR slice (nal_ref_idc 3, type 5)
    assert is_h264_keyframe(bytes([0x67, 0x42]))  # SPS
    assert not is_h264_keyframe(bytes([0x41, 0x9A]))  # non-IDR slice
    # STAP-A (RFC 6184 s5.7.1): [SPS 3 bytes][PPS 2 bytes] -> keyframe; only SEI -> not.
    assert is_h264_keyframe(bytes([0x78, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 1]))
    assert not is_h264_keyframe(bytes([0x78, 0, 2, 0x06, 1]))
    # FU-A (s5.8): S bit + type 5 -> keyframe; continuation or non-IDR -> not.
    assert is_h264_keyframe(bytes([0x7C, 0x85, 0xAA]))
    assert not is_h264_keyframe(bytes([0x7C, 0x05, 0xAA]))
    assert not is_h264_keyframe(bytes([0x7C, 0x81, 0xAA]))
    assert is_keyframe("H264", bytes([0x65]))
    for bad in (b"", bytes([0x7C]), bytes([0x78, 0]), bytes([0x78, 0, 9, 0x65]), bytes([0x78, 0, 0])):
        with pytest.raises(PayloadError):
            is_h264_keyframe(bad)


def test_unknown_codec_is_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        is_keyframe("opus", b"\x00")


@given(st.sampled_from(["vp8", "vp9", "h264"]), st.binary(max_size=40))
def test_random_payloads_only_protocol_error(codec: str, payload: bytes) -> None:
    try:
        result = is_keyframe(codec, payload)
    except ProtocolError:
        return
    assert isinstance(result, bool)


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
