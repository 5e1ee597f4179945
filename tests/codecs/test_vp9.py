"""The VP9 payload descriptor parser (RFC 9628 s4.2)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.codecs.roundtrip import ROUNDTRIP, TestFrame, check, garbage_run, lost_packets, transmit
from trackmesh.codecs.payload import PayloadError
from trackmesh.codecs.registry import is_keyframe
from trackmesh.codecs.vp9 import (
    Vp9Depacketizer,
    Vp9Packetizer,
    is_vp9_keyframe,
    parse_vp9_descriptor,
    vp9_frame_is_key,
    vp9_frame_size,
)
from trackmesh.errors import ProtocolError


def test_non_flexible_with_layers_and_scalability_structure() -> None:
    # I P L F B E V Z = 1 0 1 0 1 0 1 0; 15-bit pid 0x1234; TID 2 U SID 1 D; TL0PICIDX 9;
    # SS: N_S=2 Y=1 G=1, 3 x (w, h), N_G=2: (TID 0, R=1, P_DIFF), (TID 1 U, R=0).
    data = bytes([0xAA, 0x92, 0x34, (2 << 5) | 0x10 | (1 << 1) | 1, 9, (2 << 5) | 0x18]) + bytes(12)
    data += bytes([2, 0x04, 0x01, (1 << 5) | 0x10]) + b"frame"
    d = parse_vp9_descriptor(data)
    assert (d.picture_id, d.picture_id_long, d.picture_id_offset) == (0x1234, True, 1)
    assert (d.temporal_id, d.switch_up, d.spatial_id, d.inter_layer) == (2, True, 1, True)
    assert (d.tl0picidx, d.tl0picidx_offset) == (9, 4)
    assert d.begin and not d.end and not d.inter_picture and not d.flexible
    assert d.ss_layers == 3
    assert data[d.size :] == b"frame"


def test_flexible_mode_reference_indices() -> None:
    # I P L F B E = 1 1 1 1 0 1; 7-bit pid 5; TID 0 SID 2; two P_DIFF (N=1 then N=0).
    data = bytes([0xF4, 0x05, 2 << 1, 0x03, 0x02]) + b"x"
    d = parse_vp9_descriptor(data)
    assert (d.picture_id, d.picture_id_long, d.spatial_id, d.tl0picidx) == (5, False, 2, -1)
    assert d.inter_picture and d.flexible and d.end and not d.begin
    assert d.size == 5
    with pytest.raises(PayloadError):
        parse_vp9_descriptor(bytes([0xF4, 0x05, 0, 0x03, 0x03, 0x03, 0x02]))  # 4 references


def test_minimal_descriptor() -> None:
    d = parse_vp9_descriptor(b"\x0c\xaa")
    assert d.begin and d.end and d.size == 1 and d.picture_id == -1 and d.spatial_id == 0


@pytest.mark.parametrize("data", [b"", b"\x80", b"\x80\x80", b"\x20", b"\xa0\x01\x00", b"\x02", b"\x02\x10\x00"])
def test_truncated(data: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_vp9_descriptor(data)


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    try:
        d = parse_vp9_descriptor(data)
    except ProtocolError:
        return
    assert 1 <= d.size <= len(data)
    assert 0 <= d.spatial_id <= 7 and 0 <= d.temporal_id <= 7


@given(st.binary(max_size=64), st.integers(0, 8))
def test_random_bytes_at_an_offset(data: bytes, offset: int) -> None:
    try:
        d = parse_vp9_descriptor(data, offset)
    except ProtocolError:
        return
    assert offset + d.size <= len(data)


def test_vp9_keyframe() -> None:
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


def key_header(width: int, height: int, profile: int = 0, color_space: int = 2) -> bytes:
    """A key frame's uncompressed header up to frame_size (VP9 bitstream spec s6.2)."""
    bits = [1, 0, profile & 1, profile >> 1] + ([0] if profile == 3 else [])
    bits += [0, 0, 1, 0]  # show_existing_frame, frame_type KEY, show_frame, error_resilient_mode
    bits += [int(b) for b in f"{0x498342:024b}"]
    bits += [1] if profile >= 2 else []
    bits += [int(b) for b in f"{color_space:03b}"]
    if color_space != 7:
        bits += [0] + ([0, 0, 0] if profile in (1, 3) else [])
    elif profile in (1, 3):
        bits += [0]
    bits += [int(b) for b in f"{width - 1:016b}{height - 1:016b}"]
    bits += [0] * (-len(bits) % 8)
    return int("".join(map(str, bits)), 2).to_bytes(len(bits) // 8, "big")


@st.composite
def vp9_frames(draw: st.DrawFn) -> TestFrame:
    key = draw(st.booleans())
    # frame_marker 2, profile 0, show_existing_frame 0, frame_type (0 = key, 1 = inter).
    head = key_header(draw(st.integers(1, 4096)), draw(st.integers(1, 4096))) if key else b"\x84"
    frame = head + draw(st.binary(min_size=0, max_size=4000))
    return frame, frame, key, True


@given(st.integers(0, 3), st.integers(1, 65536), st.integers(1, 65536), st.integers(0, 7))
def test_frame_size(profile: int, width: int, height: int, color_space: int) -> None:
    header = key_header(width, height, profile, color_space)
    assert vp9_frame_size(header) == (width, height)
    assert vp9_frame_size(bytes([0x84])) is None
    with pytest.raises(PayloadError):
        vp9_frame_size(header[:-2])


@given(st.binary(max_size=16))
def test_frame_header_random_only_payload_error(data: bytes) -> None:
    with contextlib.suppress(PayloadError):
        vp9_frame_size(data)


@ROUNDTRIP
@given(st.lists(vp9_frames(), min_size=1, max_size=8), st.integers(9, 1400), lost_packets())
def test_roundtrip(frames: list[TestFrame], mtu: int, lost: set[int]) -> None:
    depack = Vp9Depacketizer()
    sent, out = transmit(Vp9Packetizer(), depack, frames, mtu, lost)
    check(sent, out, depack)


def test_packetizer_descriptor() -> None:
    payloads = Vp9Packetizer(picture_id=300).packetize(b"\x84" + bytes(15), 9)
    ds = [parse_vp9_descriptor(p) for p in payloads]
    assert [(d.begin, d.end) for d in ds] == [(True, False), (False, False), (False, True)]
    assert all(d.inter_picture and d.picture_id == 300 and d.picture_id_long and not d.flexible for d in ds)
    (key,) = Vp9Packetizer().packetize(key_header(640, 360) + b"\x00", 100)
    d = parse_vp9_descriptor(key)
    assert is_vp9_keyframe(key) and d.ss_layers == 1 and key[3:8] == bytes([0x10, 2, 128, 1, 104])
    assert key[d.size :] == key_header(640, 360) + b"\x00"


def test_frame_header_key_flag() -> None:
    assert vp9_frame_is_key(b"\x80") and not vp9_frame_is_key(b"\x84")
    assert vp9_frame_is_key(bytes([0xB0]))  # profile 3: reserved bit, then show_existing 0, type 0
    assert not vp9_frame_is_key(bytes([0x88]))  # show_existing_frame
    with pytest.raises(PayloadError):
        vp9_frame_is_key(b"\x00")


def test_flexible_mode_svc_picture() -> None:
    """Two spatial layers of one picture in flexible mode (as libwebrtc sends SVC)."""
    d = Vp9Depacketizer()
    # I|P|L|F|B|E: layer 0 key (P=0), then layer 1 predicted from layer 0 (D=1, P=0).
    d.push(bytes([0xB8, 0x81, 0x00, 0x00]) + b"L0a", 7, 900, False)
    d.push(bytes([0xB4, 0x81, 0x00, 0x00]) + b"L0b", 8, 900, False)
    d.push(bytes([0xBC, 0x81, 0x00, 0x03]) + b"L1", 9, 900, True)
    frame = d.poll_frame()
    assert frame is not None and frame.keyframe and frame.data == b"L0aL0bL1"


@given(st.lists(st.binary(max_size=30), max_size=30), st.lists(st.booleans(), max_size=5))
def test_garbage_never_raises(payloads: list[bytes], markers: list[bool]) -> None:
    garbage_run(Vp9Depacketizer(), payloads, markers)
