"""Opus: the TOC parser (RFC 6716 s3.1) and RFC 7587's one-packet-per-payload."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.codecs.opus import OpusDepacketizer, OpusPacketizer, opus_frame_count, opus_packet_samples
from trackmesh.errors import LocalProtocolError, ProtocolError


def test_toc_durations() -> None:
    assert opus_packet_samples(bytes([0x78])) == 960  # config 15 (hybrid FB 20 ms), code 0
    assert opus_packet_samples(bytes([0xFC])) == 960  # config 31 (CELT FB 20 ms), code 0: what browsers send
    assert opus_packet_samples(bytes([0x09])) == 1920  # config 1 (SILK NB 20 ms), code 1: two frames
    assert opus_frame_count(bytes([0x03, 0x05])) == 5


@pytest.mark.parametrize("bad", [b"", bytes([0x03]), bytes([0x03, 0x00]), bytes([0x1B, 0x03])])
def test_toc_bad(bad: bytes) -> None:
    if bad == bytes([0x1B, 0x03]):
        with pytest.raises(ProtocolError, match="120 ms"):
            opus_packet_samples(bad)
    else:
        with pytest.raises(ProtocolError):
            opus_packet_samples(bad)


def test_toc_durations_limit() -> None:
    assert opus_packet_samples(bytes([0x1B, 0x02])) == 5760  # exactly 120 ms


@given(st.binary(max_size=8))
def test_toc_random_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        samples = opus_packet_samples(data)
        assert 120 <= samples <= 5760 and samples % 120 == 0


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=10))
def test_roundtrip(packets: list[bytes]) -> None:
    depack = OpusDepacketizer()
    for i, p in enumerate(packets):
        (payload,) = OpusPacketizer().packetize(p, 1200)
        depack.push(payload, i, i * 960, False)
    out = []
    while (frame := depack.poll_frame()) is not None:
        assert frame.keyframe
        out.append(frame.data)
    assert out == packets


def test_packetizer_limits() -> None:
    with pytest.raises(ProtocolError):  # a remote's packet too big to forward: dropped, counted
        OpusPacketizer().packetize(bytes(10), 5)
    with pytest.raises(ProtocolError):
        OpusPacketizer().packetize(b"", 500)
    with pytest.raises(LocalProtocolError):
        OpusPacketizer().packetize(b"x", 0)


def test_loss_and_duplicates_are_counted() -> None:
    depack = OpusDepacketizer()
    for seq in (65534, 65535, 65535, 2, 1):  # a duplicate, two lost (0, 1), then 1 arrives late
        depack.push(bytes([0xFC, seq & 0xFF]), seq, seq * 960, False)
    assert (depack.frames, depack.lost_packets, depack.late_packets) == (3, 2, 2)
