from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.errors import ProtocolError
from trackmesh.rtp.rtcp import (
    Bye,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpError,
    SenderReport,
    SourceDescription,
    TransportCcFeedback,
    build_bye,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sdes,
    build_sr,
    build_transport_cc,
    parse_rtcp,
)


def test_rr_by_hand() -> None:
    # RFC 3550 s6.4.2: V=2 RC=1 PT=201 length=7; SSRC; one 24-byte report block.
    pkt = bytes([0x81, 201, 0, 7]) + struct.pack("!I", 0x11) + struct.pack(
        "!IB3sIIII", 0x22, 64, b"\xff\xff\xfe", 70000, 5, 6, 7
    )
    (rr,) = parse_rtcp(pkt)
    assert isinstance(rr, ReceiverReport)
    assert rr.ssrc == 0x11
    assert rr.reports == [ReportBlock(0x22, 64, -2, 70000, 5, 6, 7)]


def test_compound_sr_sdes_bye_roundtrip() -> None:
    block = ReportBlock(1, 10, 300, 65540, 12, 0xABCD, 0x1234)
    sr_bytes = build_sr(9, 0x0102030405060708, 1234, 50, 5000, [block])
    pkt = sr_bytes + build_sdes([(9, "user@host")]) + build_bye([9, 10], "leaving")
    sr, sdes, bye = parse_rtcp(pkt)
    assert isinstance(sr, SenderReport)
    assert (sr.ssrc, sr.ntp_timestamp, sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (
        9, 0x0102030405060708, 1234, 50, 5000,
    )
    assert sr.reports == [block]
    assert isinstance(sdes, SourceDescription) and sdes.chunks == [(9, "user@host")]
    assert isinstance(bye, Bye) and bye.ssrcs == [9, 10] and bye.reason == "leaving"


def test_nack_by_hand_expands_blp() -> None:
    # RFC 4585 s6.2.1: PID 100, BLP bits 0 and 15 -> 101 and 116 lost as well.
    pkt = bytes([0x81, 205, 0, 3]) + struct.pack("!IIHH", 1, 2, 100, 0x8001)
    (nack,) = parse_rtcp(pkt)
    assert isinstance(nack, Nack)
    assert (nack.sender_ssrc, nack.media_ssrc) == (1, 2)
    assert nack.lost == [100, 101, 116]


def test_nack_builder_wraps_and_packs() -> None:
    lost = [65534, 65535, 0, 1, 15, 40]
    pkt = build_nack(1, 2, lost)
    # 65534 + up to 16 -> covers 65535, 0, 1 and 14 (not 15): 15 starts a new FCI as does 40.
    assert len(pkt) == 12 + 4 * 3
    (nack,) = parse_rtcp(pkt)
    assert isinstance(nack, Nack)
    assert sorted(nack.lost) == sorted(lost)


def test_pli_fir_remb() -> None:
    pkt = build_pli(1, 2) + build_fir(1, [(5, 3), (6, 255)]) + build_remb(1, 1_500_000, [5, 6])
    pli, fir, remb = parse_rtcp(pkt)
    assert isinstance(pli, Pli) and (pli.sender_ssrc, pli.media_ssrc) == (1, 2)
    assert isinstance(fir, Fir) and fir.entries == [(5, 3), (6, 255)]
    assert isinstance(remb, Remb) and remb.ssrcs == [5, 6]
    assert remb.bitrate == 1_500_000  # fits the 18-bit mantissa with exponent 3 exactly
    assert pkt[:4] == bytes([0x81, 206, 0, 2])


def test_remb_by_hand() -> None:
    # exp=2, mantissa=0x3FFFF -> bitrate 0x3FFFF << 2.
    body = struct.pack("!II", 1, 0) + b"REMB" + bytes([1, (2 << 2) | 3, 0xFF, 0xFF]) + struct.pack("!I", 77)
    pkt = bytes([0x8F, 206, 0, len(body) // 4]) + body
    (remb,) = parse_rtcp(pkt)
    assert isinstance(remb, Remb)
    assert remb.bitrate == 0x3FFFF << 2 and remb.ssrcs == [77]


def test_unknown_types_are_skipped() -> None:
    app = bytes([0x80, 204, 0, 2]) + b"\x00\x00\x00\x01name"  # APP (s6.7)
    xr = bytes([0x80, 207, 0, 1]) + bytes(4)
    pkt = app + build_pli(1, 2) + xr
    assert [type(p) for p in parse_rtcp(pkt)] == [Pli]


def test_twcc_by_hand() -> None:
    # draft-holmer s3.1: base 10, count 3; run-length chunk (S=01, length 2) then a two-bit
    # vector chunk whose first symbol is 10 (large delta); deltas 4, 8 then -1 (signed 16).
    chunks = struct.pack("!HH", (1 << 13) | 2, 0xC000 | (2 << 12))
    deltas = bytes([4, 8]) + struct.pack("!h", -1)
    body = struct.pack("!IIHHI", 1, 2, 10, 3, (5 << 8) | 9) + chunks + deltas
    pkt = bytes([0x8F, 205, 0, len(body) // 4]) + body
    (fb,) = parse_rtcp(pkt)
    assert isinstance(fb, TransportCcFeedback)
    assert (fb.base_seq, fb.packet_status_count, fb.reference_time, fb.fb_pkt_count) == (10, 3, 5, 9)
    assert fb.statuses == [1, 1, 2]
    assert fb.deltas == [4, 8, -1]
    ref = 5 * 0.064
    got = fb.packets()
    assert [s for s, _ in got] == [10, 11, 12]
    arrivals = [a for _, a in got]
    assert arrivals == pytest.approx([ref + 0.001, ref + 0.003, ref + 0.00275])


def test_twcc_reserved_symbol_rejected() -> None:
    body = struct.pack("!IIHHI", 1, 2, 0, 1, 0) + struct.pack("!H", 0xC000 | (3 << 12)) + b"\x00\x00"
    pkt = bytes([0x8F, 205, 0, len(body) // 4]) + body
    with pytest.raises(RtcpError):
        parse_rtcp(pkt)


@pytest.mark.parametrize(
    "pkt",
    [
        b"\x80",
        bytes([0x40, 201, 0, 1]) + bytes(4),  # version 1
        bytes([0x80, 201, 0, 5]) + bytes(4),  # length beyond data
        bytes([0x81, 201, 0, 1]) + bytes(4),  # report block missing
        bytes([0x80, 205, 0, 0]),  # feedback without SSRCs
        bytes([0xA0, 201, 0, 1]) + bytes(4),  # padding count 0
        build_pli(1, 2) + b"\x80\xc9",  # trailing garbage
    ],
)
def test_malformed(pkt: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_rtcp(pkt)


@given(st.binary(max_size=120))
def test_random_bytes_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_rtcp(data)


@given(st.binary(max_size=80))
def test_random_feedback_bodies(body: bytes) -> None:
    body += b"\x00" * (-len(body) % 4)
    for pt, fmt in ((205, 1), (205, 15), (206, 1), (206, 4), (206, 15), (200, 1), (202, 2), (203, 3)):
        pkt = bytes([0x80 | fmt, pt]) + struct.pack("!H", len(body) // 4) + body
        with contextlib.suppress(ProtocolError):
            parse_rtcp(pkt)


@given(st.sets(st.integers(0, 0xFFFF), min_size=1, max_size=60))
def test_nack_roundtrip(lost: set[int]) -> None:
    (nack,) = parse_rtcp(build_nack(3, 4, lost))
    assert isinstance(nack, Nack)
    assert set(nack.lost) == lost
    assert len(nack.lost) == len(lost)


@given(st.integers(0, 2**40), st.lists(st.integers(0, 0xFFFFFFFF), max_size=10))
def test_remb_roundtrip(bitrate: int, ssrcs: list[int]) -> None:
    (remb,) = parse_rtcp(build_remb(1, bitrate, ssrcs))
    assert isinstance(remb, Remb)
    assert remb.ssrcs == ssrcs
    # Encoding rounds down to 18 significant bits.
    assert remb.bitrate <= bitrate and bitrate - remb.bitrate < max(1, bitrate >> 17)


_block = st.builds(
    ReportBlock,
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 255),
    st.integers(-0x800000, 0x7FFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
)


@given(st.lists(_block, max_size=31), st.integers(0, 2**64 - 1))
def test_sr_rr_roundtrip(blocks: list[ReportBlock], ntp: int) -> None:
    sr, rr = parse_rtcp(build_sr(1, ntp, 2, 3, 4, blocks) + build_rr(5, blocks))
    assert isinstance(sr, SenderReport) and isinstance(rr, ReceiverReport)
    assert sr.ntp_timestamp == ntp and sr.reports == blocks and rr.reports == blocks


@given(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.text(max_size=40)), max_size=5))
def test_sdes_roundtrip(chunks: list[tuple[int, str]]) -> None:
    chunks = [(s, c) for s, c in chunks if len(c.encode()) <= 255]
    (sdes,) = parse_rtcp(build_sdes(chunks))
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks == chunks


_status_delta = st.one_of(
    st.just((0, None)),
    st.tuples(st.just(1), st.integers(0, 255)),
    st.tuples(st.just(2), st.integers(-32768, 32767)),
)


@given(
    st.lists(_status_delta, min_size=1, max_size=300),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFF),
    st.integers(0, 255),
)
def test_twcc_roundtrip(items: list[tuple[int, int | None]], base: int, ref: int, count: int) -> None:
    statuses = [s for s, _ in items]
    deltas = [d for _, d in items if d is not None]
    pkt = build_transport_cc(7, 8, base, ref, count, statuses, deltas)
    assert len(pkt) % 4 == 0
    (fb,) = parse_rtcp(pkt)
    assert isinstance(fb, TransportCcFeedback)
    assert (fb.sender_ssrc, fb.media_ssrc, fb.base_seq, fb.reference_time, fb.fb_pkt_count) == (
        7, 8, base, ref, count,
    )
    assert fb.statuses == statuses
    assert fb.deltas == deltas


def test_twcc_long_run_uses_run_length() -> None:
    pkt = build_transport_cc(1, 2, 0, 0, 0, [1] * 1000, [1] * 1000)
    # header 4 + ssrcs 8 + 8 fixed + one 2-byte chunk + 1000 deltas, padded.
    assert len(pkt) == 4 + 8 + 8 + ((2 + 1000 + 3) // 4) * 4
    (fb,) = parse_rtcp(pkt)
    assert isinstance(fb, TransportCcFeedback) and fb.statuses == [1] * 1000
