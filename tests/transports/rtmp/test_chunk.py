"""Chunk stream decoder/encoder (RTMP spec s5.3): round trips, header forms, limits, garbage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.errors import RemoteProtocolError
from trackmesh.transports.rtmp.chunk import MAX_CHUNK_SIZE, ChunkDecoder, ChunkEncoder, Message
from trackmesh.transports.rtmp.errors import RtmpError
from trackmesh.transports.rtmp.messages import ABORT, SET_CHUNK_SIZE, set_chunk_size

csids = st.one_of(st.integers(2, 63), st.integers(64, 319), st.integers(320, 65599))
timestamps = st.one_of(
    st.integers(0, 0xFFFFFFFF), st.integers(0xFFFF00, 0x1000100), st.integers(0xFFFFFF00, 0xFFFFFFFF)
)


def _feed_in_pieces(decoder: ChunkDecoder, data: bytes, cuts: list[int]) -> list[Message]:
    out: list[Message] = []
    pos = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out += decoder.receive(data[pos:cut])
        pos = max(pos, cut)
    out += decoder.receive(data[pos:])
    return out


@settings(max_examples=150, deadline=None)
@given(
    chunk_size=st.integers(1, 5000),
    msgs=st.lists(
        st.tuples(csids, timestamps, st.integers(3, 40), st.integers(0, 0xFFFFFFFF), st.binary(max_size=3000)),
        max_size=12,
    ),
    repeat_delta=st.integers(0, 0x1FFFFFF),
    cuts=st.lists(st.integers(0, 100_000), max_size=8),
)
def test_round_trip(
    chunk_size: int,
    msgs: list[tuple[int, int, int, int, bytes]],
    repeat_delta: int,
    cuts: list[int],
) -> None:
    encoder = ChunkEncoder()
    wire = bytearray(encoder.encode(2, 0, SET_CHUNK_SIZE, 0, set_chunk_size(chunk_size)))
    encoder.set_chunk_size(chunk_size)
    expected = [Message(2, 0, SET_CHUNK_SIZE, 0, set_chunk_size(chunk_size))]
    for csid, ts, type_id, stream_id, payload in msgs:
        # Each message twice more with a constant delta, so fmt 2 and fmt 3 headers (and an
        # extended delta when repeat_delta >= 0xFFFFFF) are exercised, across the 2^32 wrap.
        for k in range(3):
            t = (ts + k * repeat_delta) & 0xFFFFFFFF
            wire += encoder.encode(csid, t, type_id, stream_id, payload)
            expected.append(Message(csid, t, type_id, stream_id, payload))
    decoder = ChunkDecoder()
    assert _feed_in_pieces(decoder, bytes(wire), cuts) == expected
    assert decoder.chunk_size == chunk_size
    assert decoder.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=4))
def test_garbage_raises_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    decoder = ChunkDecoder(max_message_size=64 * 1024)
    try:
        msgs = _feed_in_pieces(decoder, data, cuts)
    except RemoteProtocolError:
        return  # the one allowed failure (anything else fails the test)
    # Whatever parsed is bounded by the input: no bytes invented, none lost.
    assert sum(len(m.payload) for m in msgs) + decoder.buffered <= len(data)


def test_three_byte_basic_header_is_little_endian() -> None:
    # csid 64 + 0x01 + 0x02 * 256 = 577; the spec (s5.3.1.1) puts the low byte first.
    header = bytes((0x01, 0x01, 0x02))
    body = b"\x00\x00\x10" + b"\x00\x00\x02" + b"\x09" + b"\x01\x00\x00\x00" + b"hi"
    [msg] = ChunkDecoder().receive(header + body)
    assert (msg.csid, msg.timestamp, msg.type_id, msg.stream_id, msg.payload) == (577, 16, 9, 1, b"hi")
    assert ChunkEncoder().encode(577, 16, 9, 1, b"hi") == header + body


def test_two_byte_basic_header() -> None:
    [msg] = ChunkDecoder().receive(bytes((0x00, 10)) + bytes(11))
    assert msg.csid == 74


def test_extended_timestamp_repeated_on_fmt3_continuations() -> None:
    # What ffmpeg sends for a 300-byte message at ts 0x01000000 with 128-byte chunks:
    # the 4-byte extended timestamp follows every fmt 3 basic header of the message.
    ext = struct.pack("!I", 0x01000000)
    payload = bytes(range(256)) + bytes(44)
    wire = (
        b"\x06\xff\xff\xff\x00\x01\x2c\x09\x01\x00\x00\x00"
        + ext
        + payload[:128]
        + b"\xc6"
        + ext
        + payload[128:256]
        + b"\xc6"
        + ext
        + payload[256:]
    )
    [msg] = ChunkDecoder().receive(wire)
    assert msg.timestamp == 0x01000000 and msg.payload == payload
    assert ChunkEncoder().encode(6, 0x01000000, 9, 1, payload) == wire


def test_continuations_without_the_extended_timestamp_still_parse() -> None:
    # Older librtmp omitted the repeat on continuation chunks; the same message must come out.
    ext = struct.pack("!I", 0x01000000)
    payload = bytes(range(1, 201))
    wire = b"\x06\xff\xff\xff\x00\x00\xc8\x09\x01\x00\x00\x00" + ext + payload[:128] + b"\xc6" + payload[128:]
    [msg] = ChunkDecoder().receive(wire)
    assert msg.timestamp == 0x01000000 and msg.payload == payload


def test_extended_delta_is_a_delta() -> None:
    # fmt 1 with an extended delta: 100 + 0x01000000, not 0x01000000 (pyrtmp's bug).
    first = b"\x06\x00\x00\x64\x00\x00\x01\x09\x01\x00\x00\x00" + b"a"
    second = b"\x46\xff\xff\xff\x00\x00\x02\x09" + struct.pack("!I", 0x01000000) + b"bb"
    third = b"\xc6" + struct.pack("!I", 0x01000000) + b"cc"  # fmt 3: same delta again
    msgs = ChunkDecoder().receive(first + second + third)
    assert [x.timestamp for x in msgs] == [100, 100 + 0x01000000, 100 + 2 * 0x01000000]


def test_timestamp_wraps_at_2_32() -> None:
    enc = ChunkEncoder()
    wire = enc.encode(6, 0xFFFFFFF0, 9, 1, b"a") + enc.encode(6, 0x10, 9, 1, b"b")
    assert [m.timestamp for m in ChunkDecoder().receive(wire)] == [0xFFFFFFF0, 0x10]
    assert wire[12 + 4 + 1] >> 6 == 2  # after 12 + 4 (extended) + 1: a fmt 2 delta of 0x20


@pytest.mark.parametrize("size", [0, MAX_CHUNK_SIZE + 1])
def test_bad_chunk_size_is_refused(size: int) -> None:
    wire = ChunkEncoder().encode(2, 0, SET_CHUNK_SIZE, 0, struct.pack("!I", size))
    with pytest.raises(RtmpError, match="chunk size"):
        ChunkDecoder().receive(wire)


def test_message_length_cap() -> None:
    wire = b"\x06\x00\x00\x00\x10\x00\x01\x09\x01\x00\x00\x00"  # 1 MiB + 1, no payload yet
    with pytest.raises(RtmpError, match="over the limit"):
        ChunkDecoder(max_message_size=1024 * 1024).receive(wire)


def test_interleaved_unfinished_messages_are_capped_in_total() -> None:
    dec = ChunkDecoder(max_message_size=1000, max_pending_bytes=2500)
    enc = ChunkEncoder()
    # First chunks (128 bytes) of 1000-byte messages on 20 chunk streams: 20 * 128 > 2500.
    starts = b"".join(enc.encode(csid, 0, 9, 1, bytes(1000))[: 12 + 128] for csid in range(3, 23))
    with pytest.raises(RtmpError, match="unfinished messages"):
        dec.receive(starts)


def test_first_chunk_of_a_stream_must_be_fmt0() -> None:
    with pytest.raises(RtmpError, match="starts with fmt 1"):
        ChunkDecoder().receive(b"\x46\x00\x00\x00\x00\x00\x01\x09a")


def test_abort_drops_the_partial_message() -> None:
    enc = ChunkEncoder()
    dec = ChunkDecoder()
    whole = enc.encode(6, 0, 9, 1, bytes(200))
    assert dec.receive(whole[: 12 + 128]) == []
    abort = ChunkEncoder().encode(2, 0, ABORT, 0, struct.pack("!I", 6))
    assert [m.type_id for m in dec.receive(abort)] == [ABORT]
    assert dec.buffered == 0
    [msg] = dec.receive(ChunkEncoder().encode(6, 5, 9, 1, b"next"))
    assert msg.payload == b"next"
