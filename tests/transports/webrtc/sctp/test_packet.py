"""SCTP packet codec: CRC32c, chunk round trips, malformed input."""

from __future__ import annotations

import contextlib
import importlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.errors import ProtocolError
from trackmesh.transports.webrtc.sctp.packet import (
    AbortChunk,
    Chunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    ForwardTsnChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitAckChunk,
    InitChunk,
    OutgoingResetRequest,
    ReconfigChunk,
    ReconfigResponse,
    SackChunk,
    SctpPacketError,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
    UnknownReconfigParam,
    build_packet,
    crc32c,
    crc32c_python,
    parse_packet,
)


def test_crc32c_check_value() -> None:
    for f in (crc32c, crc32c_python):
        assert f(b"123456789") == 0xE3069283  # the CRC-32C catalogue check value
        assert f(b"") == 0


def test_native_crc32c_is_used_when_installed() -> None:
    # google-crc32c comes with aiortc (a test dependency): with its C extension the checksum is ~800x faster.
    try:
        importlib.import_module("google_crc32c.cext")
    except ImportError:
        assert crc32c is crc32c_python
    else:
        assert crc32c is not crc32c_python


@given(st.binary(max_size=3000))
def test_crc32c_matches_the_pure_python_one(data: bytes) -> None:
    assert crc32c(data) == crc32c_python(data)


def test_checksum_is_written_least_significant_byte_first() -> None:
    # RFC 4960 appendix B; these bytes match an independent implementation's test vector.
    pkt = build_packet(5000, 5000, 0x12345678, (SackChunk(999, 456),))
    assert pkt.hex() == "138813881234567807e8387703000010000003e7000001c800000000"


def test_bad_checksum_rejected() -> None:
    pkt = bytearray(build_packet(5000, 5000, 1, (CookieAckChunk(),)))
    pkt[9] ^= 1
    with pytest.raises(SctpPacketError, match="checksum"):
        parse_packet(bytes(pkt))
    assert parse_packet(bytes(pkt), verify_checksum=False).chunks == (CookieAckChunk(),)


def test_bundled_chunks_and_padding() -> None:
    chunks: tuple[Chunk, ...] = (
        SackChunk(10, 1000, ((2, 3), (5, 5)), (7,)),
        DataChunk(11, 1, 0, 53, b"abc", beginning=True, ending=False),
        DataChunk(12, 1, 0, 53, b"defgh", unordered=True, beginning=False, ending=True),
    )
    pkt = build_packet(1, 2, 3, chunks)
    assert len(pkt) % 4 == 0
    parsed = parse_packet(pkt)
    assert (parsed.source_port, parsed.destination_port, parsed.verification_tag) == (1, 2, 3)
    assert parsed.chunks == chunks


def raw_packet(body: bytes) -> bytes:
    return build_packet(5000, 5000, 0, [body])


@pytest.mark.parametrize(
    "body",
    [
        struct.pack("!BBH", 0, 3, 16) + bytes(12),  # DATA without user data
        struct.pack("!BBH", 1, 0, 20) + bytes(16),  # INIT with zero tag
        struct.pack("!BBH", 2, 0, 24) + struct.pack("!IIHHI", 1, 1, 1, 1, 1),  # INIT ACK, no cookie
        struct.pack("!BBH", 3, 0, 16) + struct.pack("!IIHH", 1, 1, 1, 0),  # SACK block count lies
        struct.pack("!BBH", 4, 0, 4),  # HEARTBEAT without info
        struct.pack("!BBH", 7, 0, 6) + b"\x00\x00\x00\x00",  # SHUTDOWN bad length
        struct.pack("!BBH", 192, 0, 6) + b"\x00\x00\x00\x00",  # FORWARD TSN bad length
        struct.pack("!BBH", 130, 0, 4),  # empty RE-CONFIG
        struct.pack("!BBH", 130, 0, 12) + struct.pack("!HHI", 16, 8, 0),  # short response param
        struct.pack("!BBH", 0, 3, 40),  # chunk longer than the packet
        struct.pack("!BBH", 0, 3, 2),  # chunk length below 4
        b"\x00\x00",  # truncated chunk header
    ],
)
def test_malformed_chunks(body: bytes) -> None:
    with pytest.raises(SctpPacketError):
        parse_packet(raw_packet(body))


def test_unknown_chunk_kept() -> None:
    parsed = parse_packet(raw_packet(struct.pack("!BBH", 0x40, 1, 5) + b"x\x00\x00\x00"))
    assert parsed.chunks == (UnknownChunk(0x40, 1, b"x"),)


u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
nz32 = st.integers(1, 0xFFFFFFFF)
nz16 = st.integers(1, 0xFFFF)
extra_params = st.lists(
    st.tuples(st.integers(0, 0xFFFF).filter(lambda t: t not in (7, 0x8008, 0xC000)), st.binary(max_size=20)),
    max_size=3,
).map(tuple)
exts = st.lists(st.integers(0, 255), max_size=6).map(tuple)
reconfig_params = st.one_of(
    st.builds(OutgoingResetRequest, u32, u32, u32, st.lists(u16, max_size=5).map(tuple)),
    st.builds(ReconfigResponse, u32, u32),
    st.builds(UnknownReconfigParam, u16.filter(lambda t: t not in (13, 16)), st.binary(max_size=12)),
)
chunks = st.one_of(
    st.builds(DataChunk, u32, u16, u16, u32, st.binary(min_size=1, max_size=50), st.booleans(), st.booleans(),
              st.booleans(), st.booleans()),
    st.builds(InitChunk, nz32, u32, nz16, nz16, u32, st.booleans(), exts, extra_params),
    st.builds(InitAckChunk, nz32, u32, nz16, nz16, u32, st.binary(max_size=40), st.booleans(), exts, extra_params),
    st.builds(SackChunk, u32, u32, st.lists(st.tuples(u16, u16), max_size=5).map(tuple),
              st.lists(u32, max_size=5).map(tuple)),
    st.builds(HeartbeatChunk, st.binary(max_size=40)),
    st.builds(HeartbeatAckChunk, st.binary(max_size=40)),
    st.builds(AbortChunk, st.binary(max_size=20), st.booleans()),
    st.builds(ShutdownChunk, u32),
    st.just(ShutdownAckChunk()),
    st.builds(ShutdownCompleteChunk, st.booleans()),
    st.builds(ErrorChunk, st.binary(max_size=20)),
    st.builds(CookieEchoChunk, st.binary(max_size=60)),
    st.just(CookieAckChunk()),
    st.builds(ForwardTsnChunk, u32, st.lists(st.tuples(u16, u16), max_size=5).map(tuple)),
    st.builds(ReconfigChunk, st.lists(reconfig_params, min_size=1, max_size=2).map(tuple)),
    st.builds(UnknownChunk, st.sampled_from([12, 13, 15, 0x40, 0x81, 0xC1]), st.integers(0, 255),
              st.binary(max_size=20)),
)  # fmt: skip


@settings(max_examples=500)
@given(st.lists(chunks, min_size=1, max_size=4), u16, u16, u32)
def test_chunks_round_trip(cs: list[Chunk], src: int, dst: int, vtag: int) -> None:
    parsed = parse_packet(build_packet(src, dst, vtag, tuple(cs)))
    assert parsed.chunks == tuple(cs)
    assert (parsed.source_port, parsed.destination_port, parsed.verification_tag) == (src, dst, vtag)


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    for candidate in (data, raw_packet(data + b"\x00" * (-len(data) % 4))):
        with contextlib.suppress(ProtocolError):
            parse_packet(candidate)


@given(st.binary(min_size=1, max_size=200), st.integers(0, 199), st.integers(1, 255))
def test_corrupted_packets_fail_checksum(payload: bytes, pos: int, flip: int) -> None:
    pkt = bytearray(build_packet(5000, 5000, 7, (DataChunk(1, 0, 0, 51, payload),)))
    pkt[pos % len(pkt)] ^= flip
    with pytest.raises(ProtocolError):
        parse_packet(bytes(pkt))
