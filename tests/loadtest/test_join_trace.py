"""Join phases of the S2/S3 generator (join_trace.py) and the key-frame detection they rely on (no network)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.loadtest.join_trace import PHASES, join_phases, summarize
from trackmesh.loadtest.keyframes import KeyframeResponder
from trackmesh.loadtest.recording import AUDIO, VIDEO, Packet, payload_key
from trackmesh.loadtest.streams import MultiSink, StreamLog, stream_id, tag_payload, vp8_keyframe_start
from trackmesh.rtp.packet import build_rtp_packet

PT = {111: AUDIO, 96: VIDEO}
# VP8: descriptor X=1 S=1 PID=0 with a 15-bit picture id, then a key frame's tag (P=0) and start code.
KEY = bytes([0x90, 0x80, 0x81, 0x23]) + bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]) + bytes(60)
DELTA = KEY[:4] + bytes([KEY[4] | 0x01]) + KEY[5:]


def test_a_key_frame_start_is_s_pid0_and_p_clear() -> None:
    assert vp8_keyframe_start(KEY)
    assert not vp8_keyframe_start(DELTA)  # P=1: an inter frame
    assert not vp8_keyframe_start(bytes([KEY[0] & ~0x10]) + KEY[1:])  # S=0: not the frame's first packet
    assert not vp8_keyframe_start(bytes([KEY[0] | 0x01]) + KEY[1:])  # another partition
    assert not vp8_keyframe_start(KEY[:4])  # nothing after the descriptor
    assert not vp8_keyframe_start(b"")


@given(st.binary(max_size=40))
def test_any_payload_is_judged_without_raising(data: bytes) -> None:
    assert vp8_keyframe_start(data) in (True, False)


def _packet(log: StreamLog, pub: int, kind: int, payload: bytes, sent: float) -> bytes:
    tagged = tag_payload(payload, pub, 0, kind)
    log.record(payload_key(kind, tagged), stream_id(pub, kind), sent)
    return build_rtp_packet(111 if kind == AUDIO else 96, 1, 1, 0xABC, tagged)


def test_phases_of_a_join_from_the_sink_and_the_publishers_logs() -> None:
    log = StreamLog()
    expected = [stream_id(p, k) for p in (1, 2) for k in (AUDIO, VIDEO)]
    sink = MultiSink(log, PT, expected)
    started = 1000.0
    sink.on_rtp(_packet(log, 1, AUDIO, bytes(range(40)), 1000.01), 1000.02)
    sink.on_rtp(_packet(log, 1, VIDEO, DELTA, 1000.02), 1000.03)  # forwarded from a delta frame
    sink.on_rtp(_packet(log, 1, VIDEO, KEY, 1000.05), 1000.06)
    sink.on_rtp(_packet(log, 2, AUDIO, bytes(range(1, 41)), 1000.01), 1000.04)
    sink.on_rtp(_packet(log, 2, VIDEO, KEY, 0.99e3), 1000.08)  # sent before the join: a replayed key frame
    video = [Packet(VIDEO, True, 0.0, 0, KEY, payload_key(VIDEO, KEY), True)]
    kfs = [KeyframeResponder(video), KeyframeResponder(video)]
    kfs[0].request(5.0)  # before the join (monotonic 5.0 = wall 995.0): someone else's
    kfs[0].request(10.015)  # wall 1000.015
    kfs[0].request(10.02)  # ignored: within 300 ms
    kfs[1].request(10.04)
    out = join_phases(started, sink, None, None, kfs, offset=990.0)
    assert set(out) == set(PHASES)
    assert out["token"] is None and out["dtls"] is None  # no SDK client, no transport
    assert out["pli"] == 40.0 and out["pli_honoured"] == 40.0  # the later of the two publishers' first
    assert out["first_audio"] == 40.0 and out["first_video"] == 80.0
    assert out["first_key"] == 80.0 and out["key_sent"] == 50.0  # the last stream's; publisher 2's was older
    assert out["all"] == 80.0
    assert sink.first_key_at == {stream_id(1, VIDEO): 1000.06, stream_id(2, VIDEO): 1000.08}
    summary = summarize([out, {**out, "all": 100.0}, dict.fromkeys(PHASES)])
    assert summary["n"] == 3 and summary["all"] == {"p50": 80.0, "p99": 100.0, "max": 100.0}
    assert "token" not in summary  # no join had it


def test_a_stream_that_never_sent_a_key_frame_leaves_first_key_open() -> None:
    log = StreamLog()
    sink = MultiSink(log, PT, [stream_id(3, VIDEO)])
    sink.on_rtp(_packet(log, 3, VIDEO, DELTA, 5.0), 5.01)
    out = join_phases(5.0, sink, None, None, [], offset=0.0)
    assert out["first_video"] is not None and out["first_key"] is None and out["pli"] is None
