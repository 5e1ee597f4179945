"""H.265: key frames, RFC 7798 packetization round trips, hvcC."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.codecs.roundtrip import ROUNDTRIP, TestFrame, check, garbage_run, lost_packets, nonzero, transmit
from trackmesh.codecs.h264 import START_CODE
from trackmesh.codecs.hevc import (
    HevcDepacketizer,
    HevcPacketizer,
    hevc_temporal_id,
    is_hevc_keyframe,
    parse_hvcc_config,
)
from trackmesh.codecs.payload import PayloadError
from trackmesh.errors import ProtocolError


def nal(nal_type: int, body: bytes, tid: int = 1) -> bytes:
    return bytes([nal_type << 1, tid]) + body


@st.composite
def access_units(draw: st.DrawFn) -> TestFrame:
    """AUD?, [VPS, SPS, PPS,] slice segments; the first has first_slice_segment_in_pic_flag."""
    key = draw(st.booleans())
    aud = draw(st.booleans())
    units = [nal(35, b"\x50")] if aud else []
    if key:
        units += [nal(32, draw(nonzero(1, 20))), nal(33, draw(nonzero(1, 30))), nal(34, draw(nonzero(1, 8)))]
    for i in range(draw(st.integers(1, 3))):
        body = draw(nonzero(1, 3000))
        first = body[0] | 0x80 if i == 0 else (body[0] & 0x7F or 1)
        units.append(nal(19 if key else 1, bytes([first]) + body[1:]))
    au = b"".join(START_CODE + u for u in units)
    return au, au, key, aud


@ROUNDTRIP
@given(st.lists(access_units(), min_size=1, max_size=8), st.integers(4, 1400), lost_packets())
def test_roundtrip(frames: list[TestFrame], mtu: int, lost: set[int]) -> None:
    depack = HevcDepacketizer()
    sent, out = transmit(HevcPacketizer(), depack, frames, mtu, lost)
    check(sent, out, depack)


def test_packet_kinds() -> None:
    vps, sps, pps = nal(32, b"\x0c"), nal(33, b"\x01\x02"), nal(34, b"\xc1")
    idr = nal(19, b"\xaf" + bytes(range(1, 200)))
    au = b"".join(START_CODE + u for u in (vps, sps, pps, idr))
    payloads = HevcPacketizer().packetize(au, 100)
    assert (payloads[0][0] >> 1) & 0x3F == 48  # VPS, SPS, PPS in one AP
    assert payloads[0][1] & 0x07 == 1  # TID kept
    assert [(p[0] >> 1) & 0x3F for p in payloads[1:]] == [49, 49, 49]
    assert [p[2] & 0xC0 for p in payloads[1:]] == [0x80, 0, 0x40]
    assert all(p[2] & 0x3F == 19 for p in payloads[1:])
    assert is_hevc_keyframe(payloads[0]) and is_hevc_keyframe(payloads[1]) and not is_hevc_keyframe(payloads[2])
    assert not is_hevc_keyframe(nal(1, b"\x80"))


def hvcc(vps: list[bytes], sps: list[bytes], pps: list[bytes], length_size: int) -> bytes:
    fixed = bytes([1, 0x21]) + bytes(4) + bytes(6) + bytes([93]) + b"\xf0\x00\xfc\xfd\xf8\xf8\x00\x00"
    fixed += bytes([0x0C | (length_size - 1)])
    arrays = [(32, vps), (33, sps), (34, pps), (39, [b"\x4e\x01\x05"])]
    out = fixed + bytes([len(arrays)])
    for nal_type, units in arrays:
        out += bytes([0x80 | nal_type]) + struct.pack("!H", len(units))
        for u in units:
            out += struct.pack("!H", len(u)) + u
    return out


@given(
    st.lists(nonzero(2, 30), min_size=1, max_size=2),
    st.lists(nonzero(2, 30), min_size=1, max_size=2),
    st.lists(nonzero(2, 30), min_size=1, max_size=2),
    st.sampled_from([1, 2, 4]),
)
def test_hvcc_parse(vps: list[bytes], sps: list[bytes], pps: list[bytes], length_size: int) -> None:
    record = hvcc(vps, sps, pps, length_size)
    assert len(record) > 23 and record[22] == 4
    config = parse_hvcc_config(record)
    assert (config.vps, config.sps, config.pps, config.length_size) == (vps, sps, pps, length_size)
    assert (config.profile, config.tier, config.level) == (1, 1, 93)
    assert config.parameter_sets_annexb() == b"".join(START_CODE + u for u in [*vps, *sps, *pps])


@given(st.binary(max_size=80))
def test_hvcc_random_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_hvcc_config(data)


@given(st.binary(max_size=40))
def test_keyframe_random_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        assert isinstance(is_hevc_keyframe(data), bool)


@given(st.lists(st.binary(max_size=30), max_size=30), st.lists(st.booleans(), max_size=5))
def test_garbage_never_raises(payloads: list[bytes], markers: list[bool]) -> None:
    garbage_run(HevcDepacketizer(), payloads, markers)


def test_temporal_id() -> None:
    assert hevc_temporal_id(nal(1, b"\x80", tid=1)) == 0
    assert hevc_temporal_id(nal(1, b"\x80", tid=3)) == 2
    with pytest.raises(PayloadError):
        hevc_temporal_id(nal(1, b"\x80", tid=0))
    with pytest.raises(PayloadError):
        hevc_temporal_id(b"\x02")
