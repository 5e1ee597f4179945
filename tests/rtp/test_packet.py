from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.errors import ProtocolError
from trackmesh.rtp.packet import (
    RtpError,
    RtpHeader,
    build_rtp_packet,
    find_extension,
    get_payload_type,
    parse_extensions,
    read_abs_send_time,
    read_audio_level,
    read_mid,
    read_rid,
    read_transport_cc_seq,
    rewrite_header,
    set_marker,
    set_payload_type,
    set_transport_cc_seq,
)


def test_fixed_header_by_hand() -> None:
    # RFC 3550 s5.1 layout: V=2, P=0, X=0, CC=1; M=1, PT=96; seq 0x1234; ts; ssrc; one CSRC.
    pkt = bytes([0x81, 0xE0, 0x12, 0x34]) + struct.pack("!III", 0xDEADBEEF, 0x01020304, 7) + b"payload"
    h = RtpHeader.parse(pkt)
    assert (h.marker, h.payload_type, h.sequence_number) == (True, 96, 0x1234)
    assert (h.timestamp, h.ssrc, h.csrc_count) == (0xDEADBEEF, 0x01020304, 1)
    assert h.csrcs(pkt) == [7]
    assert h.header_length == 16 == h.payload_offset
    assert h.payload_length == 7
    assert h.extension_length == 0


def test_padding_respected() -> None:
    pkt = build_rtp_packet(111, 1, 2, 3, b"abcd", padding=4)
    h = RtpHeader.parse(pkt)
    assert h.padding_length == 4
    assert pkt[h.payload_offset : h.payload_offset + h.payload_length] == b"abcd"


@pytest.mark.parametrize(
    "pkt",
    [
        b"",
        b"\x80\x00",
        bytes([0x40]) + bytes(11),  # version 1
        bytes([0x82]) + bytes(11),  # CSRC count beyond the packet
        bytes([0x90]) + bytes(11),  # extension bit without extension header
        bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x05",  # extension longer than packet
        bytes([0xA0]) + bytes(11),  # padding bit, padding count 0
        bytes([0xA0]) + bytes(10) + b"\x10",  # padding longer than packet
    ],
)
def test_malformed_raise_rtp_error(pkt: bytes) -> None:
    with pytest.raises(RtpError):
        RtpHeader.parse(pkt)


def test_one_byte_extensions_by_hand() -> None:
    # RFC 8285 s4.2 shape: 0xBEDE, 4 words; id 1 len 1, id 2 len 2, two padding bytes, id 3 len 6.
    ext = bytes([0xBE, 0xDE, 0x00, 0x04, 0x10, 0xAA, 0x21, 0xBB, 0xCC, 0x00, 0x00, 0x35]) + b"abcdef\0\0"
    pkt = bytes([0x90, 0x60, 0, 1]) + bytes(8) + ext + b"P"
    h = RtpHeader.parse(pkt)
    assert h.extension_profile == 0xBEDE
    assert h.payload_offset == 12 + 4 + 16
    exts = parse_extensions(pkt, h)
    assert bytes(exts[1]) == b"\xaa"
    assert bytes(exts[2]) == b"\xbb\xcc"
    assert bytes(exts[3]) == b"abcdef"
    assert find_extension(pkt, h, 4) is None


def test_one_byte_id15_stops_parsing() -> None:
    pkt = bytes([0x90, 0x60, 0, 1]) + bytes(8) + bytes([0xBE, 0xDE, 0, 1, 0xF0, 0x10, 0x01, 0x00])
    h = RtpHeader.parse(pkt)
    assert parse_extensions(pkt, h) == {}


def test_two_byte_extensions() -> None:
    exts_in = {1: b"", 20: b"hello", 200: bytes(17)}
    pkt = build_rtp_packet(96, 5, 6, 7, b"x", extensions=exts_in, two_byte=True)
    h = RtpHeader.parse(pkt)
    assert h.extension_profile & 0xFFF0 == 0x1000
    exts = parse_extensions(pkt, h)
    assert {k: bytes(v) for k, v in exts.items()} == {1: b"", 20: b"hello", 200: bytes(17)}
    assert pkt[h.payload_offset :] == b"x"


def test_overrunning_extension_raises() -> None:
    pkt = bytes([0x90, 0x60, 0, 1]) + bytes(8) + bytes([0xBE, 0xDE, 0, 1, 0x1F, 0, 0, 0])
    h = RtpHeader.parse(pkt)
    with pytest.raises(RtpError):
        parse_extensions(pkt, h)


def test_extension_readers() -> None:
    exts = {1: b"0", 2: b"hi\x00", 3: b"\x12\x34\x56", 4: b"\xff\xfe", 5: bytes([0x80 | 42])}
    pkt = build_rtp_packet(96, 1, 2, 3, b"", extensions=exts)
    h = RtpHeader.parse(pkt)
    assert read_mid(pkt, h, 1) == "0"
    assert read_rid(pkt, h, 2) == "hi"
    assert read_abs_send_time(pkt, h, 3) == 0x123456
    assert read_transport_cc_seq(pkt, h, 4) == 0xFFFE
    assert read_audio_level(pkt, h, 5) == (True, 42)
    assert read_mid(pkt, h, 9) is None
    with pytest.raises(RtpError):
        read_abs_send_time(pkt, h, 4)  # wrong length
    with pytest.raises(RtpError):
        read_mid(build_rtp_packet(96, 1, 2, 3, extensions={1: b"\xff"}), RtpHeader.parse(
            build_rtp_packet(96, 1, 2, 3, extensions={1: b"\xff"})), 1)


def test_in_place_rewriters() -> None:
    buf = bytearray(build_rtp_packet(96, 65535, 1, 2, b"data", marker=True, extensions={4: b"\x00\x01"}))
    rewrite_header(buf, 0xCAFEBABE, 70000, 2**32 + 5)
    h = RtpHeader.parse(buf)
    assert (h.ssrc, h.sequence_number, h.timestamp) == (0xCAFEBABE, 70000 & 0xFFFF, 5)
    loc = find_extension(buf, h, 4)
    assert loc is not None
    set_transport_cc_seq(buf, loc[0], 0x1_0203)
    assert read_transport_cc_seq(buf, h, 4) == 0x0203
    set_payload_type(buf, 100)
    assert get_payload_type(buf) == 100
    assert RtpHeader.parse(buf).marker is True
    set_marker(buf, False)
    assert RtpHeader.parse(buf).marker is False
    assert RtpHeader.parse(buf).payload_type == 100
    with pytest.raises(ValueError):
        set_payload_type(buf, 128)


@given(st.binary(max_size=80))
def test_random_bytes_only_protocol_error(data: bytes) -> None:
    try:
        h = RtpHeader.parse(data)
    except ProtocolError:
        return
    assert 12 <= h.payload_offset <= len(data)
    assert h.payload_length >= 0
    with contextlib.suppress(ProtocolError):
        parse_extensions(data, h)


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=40),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    exts=st.dictionaries(st.integers(1, 14), st.binary(min_size=1, max_size=16), max_size=5),
    padding=st.integers(0, 255),
)
def test_build_parse_roundtrip(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool,
    csrcs: tuple[int, ...], exts: dict[int, bytes], padding: int,
) -> None:
    pkt = build_rtp_packet(
        pt, seq, ts, ssrc, payload, marker=marker, csrcs=csrcs, extensions=exts, padding=padding
    )
    h = RtpHeader.parse(pkt)
    assert (h.payload_type, h.sequence_number, h.timestamp, h.ssrc, h.marker) == (pt, seq, ts, ssrc, marker)
    assert h.csrcs(pkt) == list(csrcs)
    assert pkt[h.payload_offset : h.payload_offset + h.payload_length] == payload
    assert {k: bytes(v) for k, v in parse_extensions(pkt, h).items()} == exts


@given(exts=st.dictionaries(st.integers(1, 255), st.binary(max_size=255), max_size=5))
def test_two_byte_roundtrip(exts: dict[int, bytes]) -> None:
    pkt = build_rtp_packet(96, 1, 1, 1, b"z", extensions=exts or {1: b""}, two_byte=True)
    h = RtpHeader.parse(pkt)
    assert {k: bytes(v) for k, v in parse_extensions(pkt, h).items()} == (exts or {1: b""})


@given(st.binary(max_size=24), st.booleans(), st.integers(1, 15))
def test_find_extension_agrees_with_parse_extensions(block: bytes, two_byte: bool, wanted: int) -> None:
    block += b"\x00" * (-len(block) % 4)
    profile = b"\x10\x00" if two_byte else b"\xbe\xde"
    pkt = bytes([0x90, 96]) + bytes(10) + profile + (len(block) // 4).to_bytes(2, "big") + block
    h = RtpHeader.parse(pkt)
    try:
        everything = parse_extensions(pkt, h)
    except ProtocolError:
        return
    loc = find_extension(pkt, h, wanted)
    if wanted in everything:
        assert loc is not None
        assert pkt[loc[0] : loc[0] + loc[1]] == bytes(everything[wanted])
    else:
        assert loc is None
