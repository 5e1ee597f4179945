"""AV1: OBU walking, LEB128, the AOM RTP payload round trip (aggregation header, fragmentation)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.codecs.roundtrip import ROUNDTRIP, TestFrame, check, garbage_run, lost_packets, transmit
from trackmesh.codecs.av1 import (
    Av1Depacketizer,
    Av1Packetizer,
    av1_layer_ids,
    find_sequence_header,
    is_av1_keyframe,
    leb128,
    read_leb128,
    split_obus,
)
from trackmesh.codecs.payload import PayloadError
from trackmesh.errors import LocalProtocolError, ProtocolError

TD = b"\x12\x00"


def obu(obu_type: int, payload: bytes, extension: int | None = None) -> bytes:
    """A low-overhead OBU: header (has_size), optional extension octet, LEB128 size, payload."""
    header = bytes([(obu_type << 3) | 0x02 | (0x04 if extension is not None else 0)])
    if extension is not None:
        header += bytes([extension])
    return header + leb128(len(payload)) + payload


@st.composite
def temporal_units(draw: st.DrawFn) -> TestFrame:
    key = draw(st.booleans())
    body = b""
    if key:
        body += obu(1, draw(st.binary(min_size=1, max_size=20)))
    if draw(st.booleans()):
        body += obu(5, draw(st.binary(max_size=10)))  # metadata
    ext = draw(st.one_of(st.none(), st.integers(0, 255).map(lambda e: e & 0xF8)))
    for _ in range(draw(st.integers(1, 2))):
        body += obu(6, draw(st.binary(min_size=0, max_size=3000)), ext)
    padding = obu(15, b"\x00" * draw(st.integers(0, 3))) if draw(st.booleans()) else b""
    # What a decoder gets back: a temporal delimiter and the OBUs, padding and tile lists gone.
    return TD + body + padding, TD + body, key, key


@ROUNDTRIP
@given(st.lists(temporal_units(), min_size=1, max_size=8), st.integers(4, 1400), lost_packets())
def test_roundtrip(frames: list[TestFrame], mtu: int, lost: set[int]) -> None:
    depack = Av1Depacketizer()
    sent, out = transmit(Av1Packetizer(), depack, frames, mtu, lost)
    check(sent, out, depack)


def test_aggregation_header() -> None:
    tu = TD + obu(1, b"\x00" * 10) + obu(6, bytes(range(1, 101)))
    payloads = Av1Packetizer().packetize(tu, 50)
    assert payloads[0][0] & 0x08  # N: a new coded video sequence
    assert payloads[0][0] & 0x40 and payloads[1][0] & 0x80  # Y then Z: the frame OBU is split
    assert is_av1_keyframe(payloads[0]) and not is_av1_keyframe(payloads[1])
    # OBUs travel without obu_size (AV1 RTP spec s4.3): the first element is 1 + 10 bytes.
    assert payloads[0][1] == 11 and payloads[0][2] == 0x08
    assert all(len(p) <= 50 for p in payloads)
    with pytest.raises(PayloadError):
        Av1Packetizer().packetize(TD, 50)
    with pytest.raises(LocalProtocolError):
        Av1Packetizer().packetize(tu, 3)


def test_w_field_elements_without_length() -> None:
    """A sender using W=2: the second (last) element has no length field (s4.3)."""
    d = Av1Depacketizer()
    d.push(bytes([0x28, 3, 0x08, 0xAA, 0xBB, 0x30, 1, 2, 3]), 1, 0, True)
    frame = d.poll_frame()
    assert frame is not None and frame.keyframe
    assert frame.data == TD + obu(1, b"\xaa\xbb") + obu(6, b"\x01\x02\x03")


@given(st.integers(0, 2**56 - 1))
def test_leb128_roundtrip(value: int) -> None:
    data = leb128(value) + b"x"
    assert read_leb128(data, 0, len(data)) == (value, len(data) - 1)


@given(st.binary(max_size=40))
def test_parsers_random_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        for obu_type, header, payload in split_obus(data):
            assert 0 <= obu_type < 16 and len(header) in (1, 2) and len(payload) <= len(data)
    with contextlib.suppress(ProtocolError):
        find_sequence_header(data)
    with contextlib.suppress(ProtocolError):
        assert isinstance(is_av1_keyframe(data), bool)


def test_sequence_header_detection() -> None:
    assert find_sequence_header(TD + obu(6, b"\x01")) is None
    found = find_sequence_header(TD + obu(1, b"\x00\x01"))
    assert found is not None and bytes(found) == b"\x00\x01"
    with pytest.raises(PayloadError):
        split_obus(b"\x0a\x05\x00")  # size overruns


@given(st.lists(st.binary(max_size=30), max_size=30), st.lists(st.booleans(), max_size=5))
def test_garbage_never_raises(payloads: list[bytes], markers: list[bool]) -> None:
    garbage_run(Av1Depacketizer(), payloads, markers)


@given(st.integers(0, 7), st.integers(0, 3), st.integers(8, 200))
def test_layer_ids_from_obu_extension(tid: int, sid: int, mtu: int) -> None:
    tu = TD + obu(6, bytes(300), (tid << 5) | (sid << 3))
    payloads = Av1Packetizer().packetize(tu, mtu)
    assert av1_layer_ids(payloads[0]) == (tid, sid)
    assert av1_layer_ids(Av1Packetizer().packetize(TD + obu(6, b"\x01"), mtu)[0]) == (0, 0)
    for p in payloads[1:]:  # continuation packets hold no OBU start: no layer to read
        assert av1_layer_ids(p) == (0, 0)


@given(st.binary(max_size=40))
def test_layer_ids_random_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        t, s = av1_layer_ids(data)
        assert 0 <= t < 8 and 0 <= s < 4
