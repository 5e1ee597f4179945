"""The per-track recorder core on a virtual clock, fed real encoded frames (FFmpeg's encoders)
packetized by our packetizers."""

from __future__ import annotations

import random
from functools import cache

import pytest

from tests.recording.media import Rtp, encode_opus, encode_video, packetize
from trackmesh.codecs.h264 import split_annexb
from trackmesh.recording.clock import NTP_UNIX_OFFSET, PeerClock, TimestampUnwrapper
from trackmesh.recording.track import (
    RecorderOutput,
    Sample,
    SegmentEnd,
    SegmentStart,
    StartRefined,
    TrackRecorder,
)

T0 = 1_800_000_000.0  # the virtual wall clock's start (Unix seconds)


@cache
def vp8_frames() -> tuple[tuple[bytes, bool], ...]:
    return tuple(encode_video("vp8", 90, gop=30))  # key frames at 0, 30, 60


@cache
def h264_frames() -> tuple[tuple[bytes, bool], ...]:
    return tuple(encode_video("h264", 60, gop=30))


def feed(rec: TrackRecorder, codec: str, packets: list[Rtp], t0: float = T0, step: float = 1 / 90) -> float:
    now = t0
    for seq, ts, marker, payload in packets:
        rec.on_packet(now, codec, seq, ts, marker, payload)
        now += step
    return now


def drain(rec: TrackRecorder) -> list[RecorderOutput]:
    out = []
    while (o := rec.poll()) is not None:
        out.append(o)
    return out


def samples(outs: list[RecorderOutput]) -> list[Sample]:
    return [o for o in outs if isinstance(o, Sample)]


def flat(groups: list[list[Rtp]]) -> list[Rtp]:
    return [p for g in groups for p in g]


def test_in_order_stream_writes_every_frame_from_the_first_key_frame() -> None:
    frames = vp8_frames()
    groups = packetize("vp8", [d for d, _ in frames], 3000)
    rec = TrackRecorder(True, PeerClock())
    end = feed(rec, "VP8", flat(groups))
    rec.stop(end)
    outs = drain(rec)
    assert isinstance(outs[0], SegmentStart)
    assert (outs[0].codec, outs[0].container, outs[0].rate) == ("vp8", "webm", 90000)
    assert (outs[0].width, outs[0].height) == (160, 120)
    assert isinstance(outs[-1], SegmentEnd)
    written = samples(outs)
    assert len(written) == len(frames)
    assert [s.data for s in written] == [d for d, _ in frames]
    # Timestamps wrapped past 2^32 in this stream: pts still count up by one frame each.
    assert [s.pts for s in written] == [i * 3000 for i in range(len(frames))]
    assert outs[-1].duration == pytest.approx((len(frames) - 1) / 30)


def test_loss_waits_for_the_next_key_frame() -> None:
    frames = vp8_frames()
    keys = [i for i, (_, k) in enumerate(frames) if k]
    assert keys[:3] == [0, 30, 60]
    groups = packetize("vp8", [d for d, _ in frames], 3000)
    del groups[10][0]  # frame 10 loses a packet for good (no retransmission)
    rec = TrackRecorder(True, PeerClock(), reorder_wait=0.1)
    end = feed(rec, "vp8", flat(groups), step=0.02)
    rec.stop(end)
    written = samples(drain(rec))
    # Frames 0-9 are whole; 10 is broken; 11-29 reference it: skipped until the key frame at 30.
    assert [s.pts // 3000 for s in written] == list(range(10)) + list(range(30, 90))
    assert written[10].keyframe
    assert rec.skipped_frames == 19


def test_a_late_retransmission_completes_its_frame() -> None:
    frames = vp8_frames()
    groups = packetize("vp8", [d for d, _ in frames], 3000)
    packets = flat(groups)
    late = packets.pop(40)
    packets.insert(46, late)  # arrives 6 packets late (a NACK answered), within the reorder wait
    rec = TrackRecorder(True, PeerClock(), reorder_wait=0.25)
    end = feed(rec, "vp8", packets, step=0.005)
    rec.stop(end)
    assert len(samples(drain(rec))) == len(frames)
    assert rec.skipped_frames == 0


def test_the_reorder_wait_gives_up_on_the_clock_alone() -> None:
    frames = vp8_frames()
    groups = packetize("vp8", [d for d, _ in frames[:31]], 3000)
    packets = flat(groups)
    lost = packets.pop(5)
    rec = TrackRecorder(True, PeerClock(), reorder_wait=0.2)
    now = feed(rec, "vp8", packets[:20], step=0.001)
    assert rec.next_deadline() is not None
    held = len(samples(drain(rec)))
    rec.handle_timeout(now + 0.3)  # no more packets: the gap is given up on the timer
    assert rec.next_deadline() is None
    assert lost[0] not in (p[0] for p in packets)
    assert held <= 2
    assert rec.counters()["lost_packets"] == 1


def test_garbage_payloads_are_skipped_to_the_next_key_frame() -> None:
    frames = list(vp8_frames())  # a copy: the encoded frames are shared between tests
    rng = random.Random(7)
    # Frame 12's payload is garbage behind a valid descriptor: not a VP8 frame.
    garbage = bytes([0x01]) + bytes(rng.randrange(256) for _ in range(200))
    frames[12] = (garbage, False)
    groups = packetize("vp8", [d for d, _ in frames], 3000)
    rec = TrackRecorder(True, PeerClock())
    end = feed(rec, "vp8", flat(groups))
    # And a packet that is no VP8 payload at all (empty descriptor run) in the middle.
    rec.on_packet(end, "vp8", (groups[-1][-1][0] + 1) & 0xFFFF, groups[-1][-1][1] + 3000, True, b"\xff")
    rec.stop(end + 0.1)
    written = samples(drain(rec))
    pts = [s.pts // 3000 for s in written]
    assert 12 not in pts
    assert pts == list(range(12)) + list(range(30, 90))
    assert rec.bad_frames + rec.counters()["bad_payloads"] >= 1


def test_h264_key_frames_get_their_parameter_sets_back() -> None:
    frames = [d for d, _ in h264_frames()]
    keys = [i for i, (_, k) in enumerate(h264_frames()) if k]
    assert keys == [0, 30]

    def strip(frame: bytes) -> bytes:
        return b"".join(b"\x00\x00\x00\x01" + u for u in split_annexb(frame) if u[0] & 0x1F not in (7, 8))

    frames[30] = strip(frames[30])  # a browser that sends SPS/PPS only once
    groups = packetize("h264", frames, 3000, mtu=1200)
    rec = TrackRecorder(True, PeerClock())
    end = feed(rec, "H264", flat(groups))
    rec.stop(end)
    outs = drain(rec)
    assert isinstance(outs[0], SegmentStart) and outs[0].container == "mp4"
    written = samples(outs)
    assert len(written) == 60
    types = [u[0] & 0x1F for u in split_annexb(written[30].data)]
    assert 7 in types and 8 in types and 5 in types


def test_h264_that_starts_without_parameter_sets_waits_for_a_key_frame_with_them() -> None:
    frames = [d for d, _ in h264_frames()]
    frames[0] = b"".join(b"\x00\x00\x00\x01" + u for u in split_annexb(frames[0]) if u[0] & 0x1F == 5)
    rec = TrackRecorder(True, PeerClock())
    end = feed(rec, "h264", flat(packetize("h264", frames, 3000, mtu=1200)))
    rec.stop(end)
    written = samples(drain(rec))
    assert written[0].keyframe
    assert [bytes(u) for u in split_annexb(written[0].data)] == [bytes(u) for u in split_annexb(frames[30])]
    assert len(written) == 30 and rec.bad_frames == 1 and rec.skipped_frames == 29


def test_max_file_duration_starts_a_new_segment_on_a_key_frame() -> None:
    frames = vp8_frames()
    rec = TrackRecorder(True, PeerClock(), max_segment=1.5)
    end = feed(rec, "vp8", flat(packetize("vp8", [d for d, _ in frames], 3000)))
    rec.stop(end)
    outs = drain(rec)
    starts = [o for o in outs if isinstance(o, SegmentStart)]
    ends = [o for o in outs if isinstance(o, SegmentEnd)]
    # 3 s of 30 fps with key frames every second: the cut waits for the key frame at 2 s.
    assert [s.index for s in starts] == [0, 1]
    assert [e.reason for e in ends] == ["max file duration", "stopped"]
    second = outs.index(starts[1])
    after = outs[second + 1]
    assert isinstance(after, Sample) and after.keyframe and after.pts == 0
    assert starts[1].start_wall == pytest.approx(starts[0].start_wall + 2.0)
    assert len(samples(outs)) == 90


def test_codec_change_starts_a_new_segment() -> None:
    vp8 = vp8_frames()[:30]
    h264 = h264_frames()[:30]
    rec = TrackRecorder(True, PeerClock())
    now = feed(rec, "vp8", flat(packetize("vp8", [d for d, _ in vp8], 3000)))
    now = feed(rec, "h264", flat(packetize("h264", [d for d, _ in h264], 3000, seq0=100, ts0=5000, mtu=1200)), t0=now)
    rec.stop(now)
    outs = drain(rec)
    starts = [o for o in outs if isinstance(o, SegmentStart)]
    assert [(s.codec, s.container) for s in starts] == [("vp8", "webm"), ("h264", "mp4")]
    assert [o.reason for o in outs if isinstance(o, SegmentEnd)] == ["codec change", "stopped"]


def test_unsupported_codecs_are_counted_not_recorded() -> None:
    rec = TrackRecorder(False, PeerClock())
    for i in range(10):
        rec.on_packet(T0 + i * 0.02, "PCMU", i, i * 160, True, b"\xff" * 160)
    rec.stop(T0 + 1)
    assert drain(rec) == []
    assert rec.counters()["unsupported_packets"] == 10


def ntp64(unix: float) -> int:
    return int((unix + NTP_UNIX_OFFSET) * 2**32)


def test_sender_reports_put_one_peers_tracks_on_one_clock() -> None:
    """Audio and video of one sender: the SRs say their RTP times were captured together, even
    though the packets arrived 80 ms apart; both files start at the same wall time."""
    clock = PeerClock()
    video = TrackRecorder(True, clock)
    audio = TrackRecorder(False, clock)
    vgroups = packetize("vp8", [d for d, _ in vp8_frames()[:30]], 3000, ts0=1000)
    vhead, vframes = flat(vgroups[:4]), flat(vgroups[4:])
    aframes = flat(packetize("opus", encode_opus(50), 960, ts0=777_000))
    sender_ntp = T0 - 3600.0  # the sender's wall clock is an hour off ours
    # Each track's first SR: RTP time 1000 (video) and 777000 (audio) both at sender time X.
    feed(video, "vp8", vhead, t0=T0 + 0.080, step=0.001)
    feed(audio, "opus", aframes[:3], t0=T0)
    video.on_sender_report(T0 + 0.1, 0, 1000, ntp64(sender_ntp))
    audio.on_sender_report(T0 + 0.3, 0, 777_000, ntp64(sender_ntp))
    feed(video, "vp8", vframes, t0=T0 + 0.2)
    feed(audio, "opus", aframes[3:], t0=T0 + 0.2)
    v, a = drain(video), drain(audio)
    vstart = next(o for o in v if isinstance(o, SegmentStart))
    astart = next(o for o in a if isinstance(o, SegmentStart))
    # Before the SRs the starts came from arrival times (80 ms apart); the SRs refine both.
    assert not vstart.synced and vstart.start_wall == pytest.approx(T0 + 0.08, abs=0.01)
    assert not astart.synced and astart.start_wall == pytest.approx(T0)
    vref = next(o for o in v if isinstance(o, StartRefined))
    aref = next(o for o in a if isinstance(o, StartRefined))
    assert vref.start_wall == pytest.approx(aref.start_wall, abs=1e-6)
    # The peer's offset was fixed by the first SR (arrival T0+0.1): on the node's clock.
    assert vref.start_wall == pytest.approx(T0 + 0.1, abs=1e-6)
    assert astart.channels == 1 and astart.rate == 48000


def test_a_sender_report_before_the_first_frame_syncs_the_first_segment() -> None:
    rec = TrackRecorder(False, PeerClock())
    rec.on_sender_report(T0, 0, 5000, ntp64(T0 - 10))
    feed(rec, "opus", flat(packetize("opus", encode_opus(5), 960, ts0=5000 + 4800)), t0=T0 + 0.2)
    start = drain(rec)[0]
    assert isinstance(start, SegmentStart) and start.synced
    assert start.start_wall == pytest.approx(T0 + 0.1)


def test_timestamp_unwrapper_crosses_the_wrap_both_ways() -> None:
    u = TimestampUnwrapper()
    assert u.unwrap(0xFFFFFF00) == 0xFFFFFF00
    assert u.unwrap(0x100) == 0x1_0000_0100
    assert u.unwrap(0xFFFFFFF0) == 0xFFFFFFF0  # a late packet from before the wrap


def test_a_video_track_says_when_it_needs_a_key_frame() -> None:
    frames = vp8_frames()
    groups = packetize("vp8", [d for d, _ in frames], 3000)
    rec = TrackRecorder(True, PeerClock(), reorder_wait=0.05)
    assert not rec.needs_keyframe  # nothing received yet
    now = feed(rec, "vp8", flat(groups[5:10]))  # joined mid-stream: delta frames only
    assert rec.needs_keyframe
    now = feed(rec, "vp8", flat(groups[30:35]), t0=now)  # a gap, then the key frame at 30
    rec.handle_timeout(now + 1)
    assert not rec.needs_keyframe
    del groups[40][0]
    feed(rec, "vp8", flat(groups[36:45]), t0=now + 1)
    rec.handle_timeout(now + 3)
    assert rec.needs_keyframe  # lost a packet of frame 40: waits for the key frame at 60
    audio = TrackRecorder(False, PeerClock())
    feed(audio, "opus", flat(packetize("opus", encode_opus(5), 960)))
    assert not audio.needs_keyframe


def test_simulcast_records_the_highest_layer_and_starts_a_file_when_it_appears() -> None:
    """Chrome sends the low layer first and adds higher ones as its estimate grows: each layer is
    its own RTP stream (numbering, timestamps), so the higher layer starts a new file on its key
    frame and the lower layer's packets are then ignored."""
    frames = [d for d, _ in vp8_frames()]
    low = packetize("vp8", frames, 3000, seq0=100, ts0=1_000)
    high = packetize("vp8", frames, 3000, seq0=40_000, ts0=9_999_000)
    rec = TrackRecorder(True, PeerClock())
    now = T0
    for i in range(60):
        for seq, ts, marker, payload in low[i]:
            rec.on_packet(now, "vp8", seq, ts, marker, payload, 0)
        if i >= 30:  # the top layer from its key frame at 30 on
            for seq, ts, marker, payload in high[i]:
                rec.on_packet(now, "vp8", seq, ts, marker, payload, 1)
        now += 1 / 30
    rec.stop(now)
    outs = drain(rec)
    starts = [o for o in outs if isinstance(o, SegmentStart)]
    assert [s.index for s in starts] == [0, 1]
    assert [o.reason for o in outs if isinstance(o, SegmentEnd)] == ["layer change", "stopped"]
    second = samples(outs[outs.index(starts[1]) :])
    assert len(second) == 30 and second[0].keyframe and [s.pts for s in second] == [i * 3000 for i in range(30)]
    assert rec.other_layers == sum(len(g) for g in low[31:60])


def test_later_sender_reports_move_the_start_when_the_first_ones_lagged() -> None:
    """A sender that sends a start-up backlog in a burst reports RTP times that lag at first;
    its later (steady) reports move the open segment's start; jitter-sized moves are not told."""
    rec = TrackRecorder(False, PeerClock())
    feed(rec, "opus", flat(packetize("opus", encode_opus(10), 960, ts0=48_000)), t0=T0)
    rec.on_sender_report(T0 + 0.2, 0, 48_000 + 4_800, ntp64(T0 + 0.2))  # says: ts0 was sent at T0+0.1
    rec.on_sender_report(T0 + 1.2, 0, 48_000 + 48_000 + 480, ntp64(T0 + 1.2))  # steady: moves by 0.09 s
    rec.on_sender_report(T0 + 2.2, 0, 48_000 + 96_000 + 960, ntp64(T0 + 2.2 + 0.005))  # 5 ms: not told
    refined = [o.start_wall for o in drain(rec) if isinstance(o, StartRefined)]
    assert refined == [pytest.approx(T0 + 0.1), pytest.approx(T0 + 0.19)]
