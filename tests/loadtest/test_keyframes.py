"""The replayed publisher answers PLI/FIR like an encoder: the recording's next key frame at the next frame
boundary, at most once per interval, with RTP sequence numbers and timestamps continuous (no network)."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.loadtest.keyframes import KeyframeResponder, keyframe_requests
from trackmesh.loadtest.media import Publisher, SendLog
from trackmesh.loadtest.recording import AUDIO, VIDEO, Packet, Recording, payload_key
from trackmesh.rtp.rtcp import build_fir, build_pli, build_rr

VIDEO_SSRC = 0x2222
FRAME = 1 / 30
FRAME_TICKS = 3000


def _video_frames(keys: list[bool], per_frame: int) -> list[Packet]:
    out = []
    for f, key in enumerate(keys):
        for k in range(per_frame):
            first = k == 0
            # VP8 descriptor: S bit on a frame's first packet (RFC 7741 s4.2); then the frame tag's P bit
            # (RFC 6386 s9.1) is 0 on a key frame. The rest makes every payload distinct.
            payload = bytes([0x10 if first else 0x00, 0x00 if key else 0x01]) + struct.pack("!II", f, k) + bytes(30)
            out.append(Packet(VIDEO, k == per_frame - 1, f * FRAME, f * FRAME_TICKS, payload,
                              payload_key(VIDEO, payload), key and first))
    return out


def _recording(frames: int = 30, gop: int = 10, per_frame: int = 3) -> Recording:
    video = _video_frames([f % gop == 0 for f in range(frames)], per_frame)
    audio = []
    for i in range(int(frames * FRAME / 0.02)):
        payload = b"opus" + struct.pack("!I", i) + bytes(20)
        audio.append(Packet(AUDIO, False, i * 0.02, i * 960, payload, payload_key(AUDIO, payload), False))
    packets = sorted(video + audio, key=lambda p: (p.offset, p.kind))
    return Recording(tuple(packets), frames * FRAME)


class _Wire:
    """Stands in for the publisher's transport: keeps what it would have encrypted and sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.on_rtcp = None
        self.hook: dict[int, bytes] = {}  # after this many video packets, feed this RTCP to the publisher
        self.pub: Publisher | None = None
        self.videos = 0

    def send_srtp(self, pkt: bytes) -> None:
        self.sent.append(pkt)
        if pkt[1] & 0x7F == 96:
            self.videos += 1
            rtcp = self.hook.pop(self.videos, None)
            if rtcp is not None and self.pub is not None:
                self.pub.on_rtcp(rtcp, time.monotonic())


def _run(rec: Recording, wire: _Wire, seconds: float, interval: float = 0.3) -> Publisher:
    async def main() -> Publisher:
        pub = Publisher(wire, rec, SendLog(), ssrcs=(0x1111, VIDEO_SSRC), pacing_bps=0,  # type: ignore[arg-type]
                        keyframe_interval=interval)
        wire.pub = pub
        pub.start(time.monotonic() + seconds)
        assert pub._task is not None
        await pub._task
        return pub

    return asyncio.run(main())


def _video(wire: _Wire) -> list[tuple[int, int, bytes]]:
    return [(struct.unpack_from("!H", p, 2)[0], struct.unpack_from("!I", p, 4)[0], p)
            for p in wire.sent if p[1] & 0x7F == 96]


def _frame_of(pkt: bytes) -> tuple[int, int]:
    # the payload starts after the 12-byte header and the one-byte-header extension carrying the mid
    ext_words = struct.unpack_from("!H", pkt, 14)[0]
    body = pkt[16 + 4 * ext_words:]
    frame, part = struct.unpack_from("!II", body, 2)
    return frame, part


def test_pli_mid_gop_jumps_to_the_next_key_frame_at_the_next_frame_boundary() -> None:
    rec = _recording()
    wire = _Wire()
    # The first frame goes out as a key frame (an encoder starts with one); the PLI comes with the 2nd
    # packet of frame 2: the rest of frame 2 still goes out, then frame 10 (the next key frame).
    wire.hook[3 * 2 + 2] = build_pli(0x9999, VIDEO_SSRC)
    pub = _run(rec, wire, 0.45)
    frames = [_frame_of(p) for _, _, p in _video(wire)]
    assert frames[:9] == [(f, k) for f in (0, 1, 2) for k in range(3)]
    assert frames[9:12] == [(10, 0), (10, 1), (10, 2)]
    assert frames[12] == (11, 0)
    kf = pub.keyframes
    assert kf is not None and kf.honoured == 1 and kf.jumps == 1 and kf.already_key == 1  # the PLI; the start
    # Sequence numbers and timestamps continue as an encoder's would: frame 10 takes frame 3's place.
    vids = _video(wire)
    seqs = [s for s, _, _ in vids]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    ts = [t for _, t, _ in vids]
    frame_ts = sorted(set(ts))
    assert all(b - a == FRAME_TICKS for a, b in itertools.pairwise(frame_ts))
    # Audio is untouched: every packet in recording order.
    audio = [p for p in wire.sent if p[1] & 0x7F == 111]
    a_seq = [struct.unpack_from("!H", p, 2)[0] for p in audio]
    assert a_seq == list(range(a_seq[0], a_seq[0] + len(a_seq)))


def test_requests_within_the_interval_are_ignored_and_a_repeated_fir_counts_once() -> None:
    rec = _recording()
    wire = _Wire()
    wire.hook[4] = build_fir(0x9999, [(VIDEO_SSRC, 7)])
    wire.hook[5] = build_pli(0x9999, VIDEO_SSRC)  # within 300 ms of the FIR: ignored
    wire.hook[6] = build_fir(0x9999, [(VIDEO_SSRC, 7)])  # the same FIR again: a retransmission
    wire.hook[7] = build_pli(0x9999, 0x1234) + build_rr(0x9999)  # someone else's SSRC
    pub = _run(rec, wire, 0.3, interval=10.0)
    kf = pub.keyframes
    assert kf is not None
    assert kf.requests == 2 and kf.honoured == 1 and kf.ignored == 1


def test_no_keyframe_answer_without_an_interval_and_none_for_audio_only() -> None:
    rec = _recording()
    assert Publisher(_Wire(), rec, SendLog(), ssrcs=(1, 2)).keyframes is None  # type: ignore[arg-type]
    assert Publisher(_Wire(), rec, SendLog(), ssrcs=(1, 2), audio_only=True,  # type: ignore[arg-type]
                     keyframe_interval=0.3).keyframes is None


@st.composite
def _layouts(draw: st.DrawFn) -> tuple[list[Packet], int]:
    keys = draw(st.lists(st.booleans(), min_size=1, max_size=40))
    per_frame = draw(st.integers(1, 4))
    video = _video_frames(keys, per_frame)
    return video, draw(st.integers(0, len(video) - 1))


@given(_layouts(), st.booleans())
def test_next_index_lands_on_the_next_key_frame_start(layout: tuple[list[Packet], int], pending: bool) -> None:
    video, i = layout
    kf = KeyframeResponder(video)
    if pending:
        kf.request(0.0)
    got = kf.next_index(i)
    starts = [j for j, p in enumerate(video) if p.keyframe]
    frame_start = i == 0 or video[i].ts_offset != video[i - 1].ts_offset
    if not pending or not frame_start or video[i].keyframe or not starts:
        assert got is None
        assert kf.pending == (pending and not frame_start)
        return
    assert got is not None and not kf.pending
    j, wrapped = got
    assert video[j].keyframe
    later = [s for s in starts if s > i]
    assert (j, wrapped) == ((later[0], 0) if later else (starts[0], 1))


@given(st.lists(st.floats(0, 10, allow_nan=False), max_size=20), st.floats(0.01, 1.0))
def test_rate_limit_honours_requests_at_least_an_interval_apart(times: list[float], interval: float) -> None:
    kf = KeyframeResponder(_video_frames([True, False], 1), interval)
    honoured: list[float] = []
    for t in sorted(times):
        if kf.request(t):
            honoured.append(t)
    assert all(b - a >= interval for a, b in itertools.pairwise(honoured))
    assert kf.honoured + kf.ignored == kf.requests == len(times)


@given(st.binary(max_size=64), st.integers(0, 0xFFFFFFFF), st.one_of(st.none(), st.integers(0, 255)))
def test_keyframe_requests_never_raises_on_bad_rtcp(data: bytes, ssrc: int, last: int | None) -> None:
    n, seq = keyframe_requests(data, ssrc, last)
    assert n >= 0 and (seq is None or 0 <= seq <= 255)
