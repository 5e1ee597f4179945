"""H.264: key frames, RFC 6184 packetization round trips, Annex B / AVCC, avcC."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.codecs.roundtrip import ROUNDTRIP, TestFrame, check, garbage_run, lost_packets, nonzero, transmit
from trackmesh.codecs.h264 import (
    START_CODE,
    H264Depacketizer,
    H264Packetizer,
    annexb_to_avcc,
    avcc_to_annexb,
    build_avcc_config,
    is_h264_keyframe,
    parse_avcc_config,
    split_annexb,
)
from trackmesh.codecs.payload import PayloadError
from trackmesh.codecs.registry import is_keyframe
from trackmesh.errors import LocalProtocolError, ProtocolError

SPS = bytes([0x67, 0x42, 0xC0, 0x1F, 0xDA, 0x01, 0x40, 0x16])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])


@st.composite
def access_units(draw: st.DrawFn) -> TestFrame:
    """An AU of AUD?, [SPS, PPS,] SEI?, slices; the first slice has first_mb_in_slice = 0."""
    key = draw(st.booleans())
    aud = draw(st.booleans())
    units: list[bytes] = [b"\x09\x10"] if aud else []
    units += [SPS, PPS] if key else []
    if draw(st.booleans()):
        units.append(b"\x06" + draw(nonzero(1, 20)))
    for i in range(draw(st.integers(1, 3))):
        body = draw(nonzero(1, 3000))
        first = bytes([body[0] | 0x80 if i == 0 else body[0] & 0x7F or 1])
        units.append(bytes([0x65 if key else 0x41]) + first + body[1:])
    au = b"".join(START_CODE + u for u in units)
    return au, au, key, aud


@ROUNDTRIP
@given(st.lists(access_units(), min_size=1, max_size=8), st.integers(3, 1400), lost_packets())
def test_roundtrip(frames: list[TestFrame], mtu: int, lost: set[int]) -> None:
    depack = H264Depacketizer()
    sent, out = transmit(H264Packetizer(), depack, frames, mtu, lost)
    check(sent, out, depack)


def test_packet_kinds() -> None:
    au = START_CODE + SPS + START_CODE + PPS + START_CODE + b"\x65\x88" + bytes(range(1, 200))
    payloads = H264Packetizer().packetize(au, 100)
    assert payloads[0][0] & 0x1F == 24  # SPS and PPS share a STAP-A
    assert payloads[0][0] & 0x60 == 0x60  # NRI is the largest aggregated one
    assert [p[0] & 0x1F for p in payloads[1:]] == [28, 28, 28]
    assert [p[1] & 0xC0 for p in payloads[1:]] == [0x80, 0, 0x40]
    assert all(len(p) <= 100 for p in payloads)
    assert H264Packetizer().packetize(START_CODE + b"\x41\x9a", 100) == [b"\x41\x9a"]


def test_keyframe() -> None:
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


def test_depacketizer_rejects_interleaved_mode_and_orphan_fragments() -> None:
    d = H264Depacketizer()
    d.push(bytes([0x65, 0x88]), 1, 0, True)
    d.push(bytes([0x7C, 0x05, 1, 2]), 2, 90, True)  # FU-A continuation without a start
    d.push(bytes([0x79, 0, 1, 0x65]), 3, 180, True)  # STAP-B (interleaved mode only)
    d.push(bytes([0x41, 0x9A]), 4, 270, True)
    assert (d.bad_payloads, d.dropped_frames, d.frames) == (2, 2, 2)
    first, second = d.poll_frame(), d.poll_frame()
    assert first is not None and first.keyframe and first.data == START_CODE + b"\x65\x88"
    assert second is not None and not second.keyframe and second.timestamp == 270
    assert d.poll_frame() is None


@given(st.lists(st.binary(max_size=30), max_size=30), st.lists(st.booleans(), max_size=5))
def test_garbage_never_raises(payloads: list[bytes], markers: list[bool]) -> None:
    garbage_run(H264Depacketizer(), payloads, markers)


@given(st.lists(nonzero(1, 300), min_size=1, max_size=6), st.sampled_from([1, 2, 4]), st.sampled_from([3, 4]))
def test_annexb_avcc_roundtrip(units: list[bytes], length_size: int, start: int) -> None:
    units = [u for u in units if length_size > 1 or len(u) < 256]
    annexb = b"".join(b"\x00" * (start - 1) + b"\x01" + u for u in units)
    assert [bytes(u) for u in split_annexb(annexb)] == units
    avcc = annexb_to_avcc(annexb, length_size)
    assert avcc_to_annexb(avcc, length_size) == b"".join(START_CODE + u for u in units)


@given(st.binary(max_size=64), st.sampled_from([1, 2, 4]))
def test_avcc_random_only_payload_error(data: bytes, length_size: int) -> None:
    with contextlib.suppress(PayloadError):
        avcc_to_annexb(data, length_size)
    with pytest.raises(LocalProtocolError):
        avcc_to_annexb(data, 3)


@given(
    st.lists(nonzero(4, 40), min_size=1, max_size=3), st.lists(nonzero(1, 40), max_size=3), st.sampled_from([1, 2, 4])
)
def test_avcc_config_roundtrip(sps: list[bytes], pps: list[bytes], length_size: int) -> None:
    config = parse_avcc_config(build_avcc_config(sps, pps, length_size))
    assert (config.sps, config.pps, config.length_size) == (sps, pps, length_size)
    assert (config.profile, config.profile_compat, config.level) == tuple(sps[0][1:4])
    assert config.parameter_sets_annexb() == b"".join(START_CODE + u for u in [*sps, *pps])


@given(st.binary(max_size=64))
def test_avcc_config_random_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_avcc_config(data)
