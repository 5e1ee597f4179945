"""Per-stream matching of the S2/S3 load generator: tagging, attribution and bad input (no network)."""

from __future__ import annotations

from trackmesh.loadtest.recording import AUDIO, VIDEO, payload_key
from trackmesh.loadtest.streams import MultiSink, StreamLog, stream_id, tag_payload
from trackmesh.rtp.packet import build_rtp_packet

PT = {111: AUDIO, 96: VIDEO}
OPUS = bytes(range(80))
# VP8 descriptor with X and a 15-bit picture id (4 bytes), then a 10-byte key-frame header and data.
VP8 = bytes([0x90, 0x80, 0x81, 0x23]) + bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]) + bytes(
    range(200, 255)) * 4


def _send(log: StreamLog, pub: int, kind: int, payload: bytes, t: float) -> bytes:
    tagged = tag_payload(payload, pub, 0, kind)
    assert len(tagged) == len(payload)
    log.record(payload_key(kind, tagged), stream_id(pub, kind), t)
    return build_rtp_packet(111 if kind == AUDIO else 96, 1, 1, 0xABC, tagged)


def test_same_payload_from_two_publishers_is_attributed_to_each() -> None:
    log = StreamLog()
    sink = MultiSink(log, PT, [stream_id(1, AUDIO), stream_id(2, AUDIO)])
    a = _send(log, 1, AUDIO, OPUS, 10.0)
    b = _send(log, 2, AUDIO, OPUS, 10.001)
    assert a != b
    sink.on_rtp(b, 10.01)
    sink.on_rtp(a, 10.02)  # earlier send, other stream: not a reordering
    assert sink.received == 2 and not sink.reordered and not sink.duplicated
    assert sink.first_seq == {stream_id(1, AUDIO): 0, stream_id(2, AUDIO): 0}
    assert sink.loss(log, 0.0, 11.0) == {stream_id(1, AUDIO): 0.0, stream_id(2, AUDIO): 0.0}


def test_vp8_descriptor_and_header_are_kept_when_tagging() -> None:
    tagged = tag_payload(VP8, 7, 1, VIDEO)
    assert tagged[:14] == VP8[:14] and tagged[-4:] == bytes([0, 7, 1, VIDEO]) and len(tagged) == len(VP8)
    # Too short to tag without touching the header: the tag is appended.
    assert tag_payload(VP8[:16], 7, 1, VIDEO) == VP8[:16] + bytes([0, 7, 1, VIDEO])


def test_duplicates_reordering_loss_corruption_and_misrouting_are_counted_per_stream() -> None:
    log = StreamLog()
    mine, other = stream_id(0, VIDEO), stream_id(3, VIDEO)
    sink = MultiSink(log, PT, [mine])
    pkts = [_send(log, 0, VIDEO, VP8[:20] + bytes([i]) + VP8[21:], 1.0 + i / 100) for i in range(5)]
    stranger = _send(log, 3, VIDEO, VP8, 1.2)
    sink.on_rtp(pkts[0], 2.0)
    sink.on_rtp(pkts[2], 2.01)
    sink.on_rtp(pkts[1], 2.02)  # reordered
    sink.on_rtp(pkts[1], 2.03)  # duplicate
    bad = bytearray(pkts[4])
    bad[-5] ^= 0xFF  # decrypts (plain here) but matches nothing sent
    sink.on_rtp(bytes(bad), 2.04)
    sink.on_rtp(stranger, 2.05)  # a stream this subscriber must not get
    assert sink.reordered == {mine: 1} and sink.duplicated == {mine: 1}
    assert sink.corrupted == 1 and sink.corrupted_by_ssrc == {0xABC: 1} and sink.misrouted == 1
    assert sink.received == 3 and other not in sink.seen
    loss = sink.loss(log, 0.0, 5.0)
    assert loss == {mine: 2 / 5}  # indices 3 and 4 never arrived intact


def test_a_stream_never_heard_is_total_loss_and_silence() -> None:
    log = StreamLog()
    s = stream_id(1, AUDIO)
    sink = MultiSink(log, PT, [s])
    sink.open_window(100.0)
    for i in range(3):
        _send(log, 1, AUDIO, bytes([i]) + OPUS[1:], 100.0 + i)
    assert sink.loss(log, 100.0, 103.0) == {s: 1.0}
    assert sink.close_window(103.0) == 3.0
    assert sink.all_streams_at() is None
