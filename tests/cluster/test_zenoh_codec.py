"""Wire format of packets and feedback between nodes (pure functions; no sessions)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.cluster.zenoh_channels import (
    BadMessage,
    decode_feedback,
    decode_packet,
    decode_stamped_packet,
    encode_feedback,
    encode_packet,
)
from trackmesh.core.channel import Feedback, FeedbackKind
from trackmesh.core.model import MediaCodec, MediaPacket

OPENS_SESSIONS = False  # pure functions: runs outside the netns too

u8 = st.integers(0, 255)
packets = st.builds(
    MediaPacket,
    codec=st.sampled_from(list(MediaCodec)),
    payload_type=st.integers(0, 127),
    seq=st.integers(0, 2**32 - 1),
    ts=st.integers(0, 2**32 - 1),
    marker=st.booleans(),
    keyframe=st.booleans(),
    payload=st.binary(max_size=1500),
    spatial=u8,
    temporal=u8,
    audio_level=st.none() | st.integers(0, 127),
    layers=st.lists(u8, max_size=8).map(tuple),
    alternate_of=st.none() | st.sampled_from(list(MediaCodec)),
)


@given(packets, st.none() | st.integers(0, 2**32 - 1))
def test_packet_round_trip(pkt: MediaPacket, stamp: int | None) -> None:
    data = encode_packet(pkt, stamp)
    assert data[0] == (1 if stamp is None else 2)  # version 2 carries the send stamp
    decoded, got_stamp = decode_stamped_packet(data)
    assert decoded == pkt and decoded.alternate_of == pkt.alternate_of  # the mark is not in ==
    assert got_stamp == (-1 if stamp is None else stamp)
    assert decode_packet(data) == pkt


def test_packet_header_is_compact_and_memoryview_payloads_work() -> None:
    pkt = MediaPacket(MediaCodec.VP8, 96, 1, 2, True, False, memoryview(b"x" * 1200), layers=(1, 2))
    data = encode_packet(pkt)
    assert len(data) == 16 + 2 + 1200  # version 1
    assert decode_packet(data).payload == b"x" * 1200
    stamped = encode_packet(pkt, 0xDEADBEEF)
    assert len(stamped) == 20 + 2 + 1200  # version 2: 4 bytes more
    assert stamped[12:16] == bytes.fromhex("deadbeef")  # after seq and ts
    decoded, stamp = decode_stamped_packet(stamped)
    assert stamp == 0xDEADBEEF and decoded.payload == b"x" * 1200 and decoded.layers == (1, 2)


@given(st.binary(max_size=64))
def test_garbage_either_parses_or_is_a_bad_message(data: bytes) -> None:
    with contextlib.suppress(BadMessage):
        decode_packet(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01" * 15,  # shorter than the header
        b"\x03" + bytes(19),  # unknown version
        b"\x02" + bytes(18),  # version 2 shorter than its header
        bytes([2, 2, 96, 0]) + bytes(15) + b"\x05",  # version 2: 5 layers announced, none present
        bytes([2, 2, 96, 0x10]) + bytes(16),  # version 2: unknown flag
        bytes([1, 99]) + bytes(14),  # unknown codec
        bytes([1, 2, 96, 0x80]) + bytes(12),  # unknown flag
        bytes([1, 2, 96, 0]) + bytes(11) + b"\x05",  # 5 layers announced, none present
        bytes([1, 2, 96, 8]) + bytes(12),  # an alternate's original codec announced, not present
        bytes([1, 2, 96, 8]) + bytes(12) + b"\x63",  # an unknown original codec
    ],
)
def test_malformed_packets_are_rejected(data: bytes) -> None:
    with pytest.raises(BadMessage):
        decode_packet(data)


@given(st.sampled_from(list(FeedbackKind)), st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1))
def test_feedback_round_trip(kind: FeedbackKind, origin: int, bitrate: int) -> None:
    fb = Feedback(kind, origin, bitrate)
    assert decode_feedback(encode_feedback(fb)) == fb


@pytest.mark.parametrize("data", [b"", b"\x01\x00" + bytes(23), b"\x02\x00" + bytes(24), b"\x01\x07" + bytes(24)])
def test_malformed_feedback_is_rejected(data: bytes) -> None:
    with pytest.raises(BadMessage):
        decode_feedback(data)
