"""A publisher's key-frame cache: viewers that ask for a key frame while the publisher may not be asked
again are served from the last one; requests a pending key frame answers are merged (virtual clock)."""

from __future__ import annotations

import itertools
import math

from trackmesh.core.controls import CreateLocalTrack, Join, Publish, RequestKeyframe, Subscribe
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.model import MediaCodec, MediaPacket, TrackKind, TrackSource
from trackmesh.core.tracks import KEYFRAME_CACHE_AGE, KEYFRAME_CACHE_PACKETS, KEYFRAME_MIN_INTERVAL, RemoteTrack

from .conftest import Harness, drain
from .test_feedback import kf_count

V = TrackKind.VIDEO


class Publisher:
    """A video publisher that numbers its packets, one per frame (30 fps), key frames on demand."""

    def __init__(self, h: Harness, cache: bool = True, layers: int = 1) -> None:
        self.h = h
        self.ep = h.endpoint()
        self.ep.control(h.now, Join("r", "alice"))
        self.ep.control(h.now, Publish("cam", V, cache_keyframes=cache))
        track = self.ep.remote_track("cam")
        assert track is not None
        self.track: RemoteTrack = track
        self.seq = [100 * (layer + 1) for layer in range(layers)]
        self.frame = 0

    def send(self, key: bool = False, packets: int = 1, layers: tuple[int, ...] = (0,)) -> None:
        """One frame (``packets`` packets, one timestamp) on each of ``layers``."""
        self.frame += 1
        for layer in layers:
            for i in range(packets):
                seq = self.seq[layer]
                self.seq[layer] += 1
                pkt = MediaPacket(MediaCodec.VP8, 96, seq, 3000 * self.frame, i == packets - 1, key and i == 0,
                                  bytes([layer, seq & 0xFF]), layer, arrival=self.h.now)  # fmt: skip
                self.track.on_packet(pkt)

    def asked(self) -> int:
        """Key-frame requests the publisher was sent since the last call."""
        return kf_count(drain(self.ep))


class Viewer:
    def __init__(self, h: Harness, name: str, worker: int = 0) -> None:
        self.ep: Endpoint = h.endpoint(worker)
        self.ep.control(h.now, Join("r", name))
        self.ep.control(h.now, CreateLocalTrack("v0", V))
        local = self.ep.local_track("v0")
        assert local is not None
        self.got: list[MediaPacket] = []
        local.sink = self.got.append

    def subscribe(self, h: Harness) -> None:
        self.ep.control(h.now, Subscribe("v0", TrackSource("alice", "cam")))

    def seqs(self, replay: int | None = None) -> list[int]:
        return [p.seq for p in self.got if replay is None or p.replay == replay]


def test_a_viewer_after_the_key_frame_went_by_gets_it_from_the_cache_at_once(h: Harness) -> None:
    pub = Publisher(h)
    first = Viewer(h, "v1")
    first.subscribe(h)
    assert pub.asked() == 1  # the first viewer's request goes out at once
    h.advance(0.03)
    pub.send(key=True, packets=3)  # the encoder's answer, then two more frames
    for _ in range(2):
        h.advance(1 / 30)
        pub.send()
    h.advance(0.1)
    late = Viewer(h, "v2", worker=1)  # another worker of the node: the replay reaches it through the hub
    late.subscribe(h)
    assert late.got == []  # the replay waits for the next timer run (the viewer handles its subscription first)
    h.advance(0)
    assert late.seqs(replay=1) == [100, 101, 102, 103, 104]  # the key frame and every packet since, in order
    assert late.got[0].keyframe and all(p.arrival == h.now for p in late.got)
    counts = pub.track.keyframe_counts
    assert counts["replays"] == 1 and counts["replayed_packets"] == 5
    # The first viewer got the copies too, marked: a transport skips a replay while it plays.
    assert first.seqs(replay=0) == [100, 101, 102, 103, 104] and first.seqs(replay=1) == late.seqs(replay=1)
    # Live packets follow the replay in order.
    pub.send()
    assert late.seqs() == [100, 101, 102, 103, 104, 105]
    # The request is still sent when the interval is over (nothing came after it): a viewer that plays
    # and lost its decoder state cannot use a replay; the publisher is asked at most once per interval.
    assert pub.asked() == 0
    h.advance(KEYFRAME_MIN_INTERVAL)
    assert pub.asked() == 1
    assert counts["sent"] == 2 and counts["requests"] == 2


def test_a_request_the_pending_key_frame_answers_is_merged_not_sent_again(h: Harness) -> None:
    pub = Publisher(h)
    viewers = [Viewer(h, f"v{i}") for i in range(3)]
    viewers[0].subscribe(h)
    assert pub.asked() == 1
    h.advance(0.05)
    viewers[1].subscribe(h)  # before the key frame asked for came: it will start on that one
    h.advance(0.05)
    viewers[2].ep.control(h.now, RequestKeyframe("v0"))  # not subscribed: nothing to ask for
    pub.send(key=True)
    h.advance(KEYFRAME_MIN_INTERVAL)
    assert pub.asked() == 0  # the key frame came after the merged request: answered, no second one
    counts = pub.track.keyframe_counts
    assert counts == {"requests": 2, "sent": 1, "merged": 1, "replays": 0, "replayed_packets": 0}
    assert viewers[1].seqs() == [100] and viewers[1].got[0].keyframe


def test_a_merged_request_whose_key_frame_never_comes_is_sent_at_the_end_of_the_interval(h: Harness) -> None:
    pub = Publisher(h)
    a, b = Viewer(h, "a"), Viewer(h, "b")
    a.subscribe(h)
    h.advance(0.1)
    b.subscribe(h)
    pub.send()  # no key frame: the request (or the answer) was lost
    assert pub.asked() == 1
    h.advance(KEYFRAME_MIN_INTERVAL - 0.1 - 1e-6)
    assert pub.asked() == 0
    h.advance(2e-6)
    assert pub.asked() == 1


def test_without_a_cache_merged_requests_are_always_sent_and_nothing_is_replayed(h: Harness) -> None:
    """A publisher that is not an encoder (RTMP replays its own GOP): the merge as it always was."""
    pub = Publisher(h, cache=False)
    a, b = Viewer(h, "a"), Viewer(h, "b")
    a.subscribe(h)
    h.advance(0.03)
    pub.send(key=True)
    h.advance(0.1)
    b.subscribe(h)
    h.advance(KEYFRAME_MIN_INTERVAL)
    assert pub.asked() == 2
    assert b.got == [] and pub.track.keyframe_counts["replays"] == 0


def test_requests_in_one_instant_make_one_replay_and_a_stale_cache_none(h: Harness) -> None:
    pub = Publisher(h)
    a = Viewer(h, "a")
    a.subscribe(h)
    pub.send(key=True)
    h.advance(0.1)
    late = [Viewer(h, f"l{i}") for i in range(3)]
    for v in late:
        v.subscribe(h)
    h.advance(0)
    assert pub.track.keyframe_counts["replays"] == 1
    assert all(v.seqs() == [100] for v in late)
    # Full (more packets than it keeps): dropped, so the next viewer waits for the publisher.
    h.advance(KEYFRAME_MIN_INTERVAL)
    assert pub.asked() == 2
    pub.send(key=True)
    h.advance(0.01)
    pub.send(packets=KEYFRAME_CACHE_PACKETS)
    h.advance(0.05)
    v = Viewer(h, "full")
    v.subscribe(h)
    h.advance(0)
    assert pub.track.keyframe_counts["replays"] == 1 and v.got == []
    assert KEYFRAME_CACHE_AGE <= KEYFRAME_MIN_INTERVAL  # a cached key frame is never older than the interval


def test_simulcast_replays_every_layer_lowest_first_and_needs_a_key_frame_on_each(h: Harness) -> None:
    pub = Publisher(h, layers=2)
    pub.send(key=True, layers=(0, 1))  # an encoder's first frames
    h.advance(1.0)
    a = Viewer(h, "a")
    a.subscribe(h)
    assert pub.asked() == 1
    h.advance(0.03)
    pub.send(key=True, layers=(0,))  # only layer 0 answered so far: the key frame is still pending
    h.advance(0.03)
    b = Viewer(h, "b")
    b.subscribe(h)
    h.advance(0)
    assert pub.track.keyframe_counts["replays"] == 0 and pub.track.keyframe_counts["merged"] == 1
    pub.send(key=True, layers=(1,))
    pub.send(layers=(0, 1))
    h.advance(0.05)
    c = Viewer(h, "c")
    c.subscribe(h)
    h.advance(0)
    assert [(p.spatial, p.seq) for p in c.got if p.replay] == [(0, 101), (0, 102), (1, 201), (1, 202)]
    # b asked after layer 0's key frame went by: the interval's end asks the publisher again (c's
    # replay does not count as a key frame either).
    h.advance(KEYFRAME_MIN_INTERVAL)
    assert pub.asked() == 1


def test_key_frames_asked_of_the_publisher_stay_bounded_in_a_storm_of_joins(h: Harness) -> None:
    """20 joins a second for 3 s, the encoder answering each request 30 ms later: at most one request per
    interval reaches it, and every viewer gets a key frame (live or replayed) within 0.1 s of subscribing."""
    pub = Publisher(h)
    pub.send(key=True)
    asked_at: list[float] = []
    answer_at = math.inf
    joined: list[tuple[float, Viewer]] = []
    t_end = h.now + 3.0
    next_join = h.now
    while h.now < t_end + 0.5:  # joins for 3 s, then frames only: the last joins' key frames come
        if h.now >= next_join and h.now < t_end:
            v = Viewer(h, f"v{len(joined)}", worker=len(joined) % 2)
            v.subscribe(h)
            joined.append((h.now, v))
            next_join += 0.05
        if pub.asked():
            asked_at.append(pub.track._last_kf)  # when it was sent (the loop sees it up to a step later)
            answer_at = min(answer_at, h.now + 0.03)
        key = h.now >= answer_at
        if key:
            answer_at = math.inf
        pub.send(key=key)
        h.advance(1 / 60)
    assert all(b - a >= KEYFRAME_MIN_INTERVAL - 1e-9 for a, b in itertools.pairwise(asked_at))
    assert len(asked_at) <= 3.5 / KEYFRAME_MIN_INTERVAL + 1
    assert len(joined) >= 59
    for at, v in joined:
        first_key = next(p.arrival for p in v.got if p.keyframe)
        assert first_key - at <= 0.1, (at, first_key)
