"""The VP9 payload descriptor parser (RFC 9628 s4.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.codecs.keyframe import PayloadError
from trackmesh.codecs.vp9 import parse_vp9_descriptor
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
