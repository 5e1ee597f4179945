"""Key-frame requests and bitrate hints from viewers, merged for the publisher (virtual clock)."""

from __future__ import annotations

from collections.abc import Sequence

from trackmesh.core.controls import (
    CreateLocalTrack,
    Join,
    Publish,
    RequestKeyframe,
    SetLocalBitrate,
    SetRemoteBitrate,
    Subscribe,
    Unsubscribe,
)
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.events import AlternateWanted, BitrateTarget, KeyframeRequested
from trackmesh.core.model import BitrateLimit, TrackKind, TrackSource
from trackmesh.core.tracks import ALTERNATE_REPEAT, ALTERNATE_TTL, BITRATE_HINT_TTL, KEYFRAME_MIN_INTERVAL

from .conftest import Harness, drain

V = TrackKind.VIDEO


def setup(h: Harness, viewers: int) -> tuple[Endpoint, list[Endpoint]]:
    pub = h.endpoint()
    pub.control(h.now, Join("r", "alice"))
    pub.control(h.now, Publish("cam", V))
    eps = []
    for i in range(viewers):
        v = h.endpoint(i % 2)
        v.control(h.now, Join("r", f"v{i}"))
        v.control(h.now, CreateLocalTrack("v0", V))
        v.control(h.now, Subscribe("v0", TrackSource("alice", "cam")))
        eps.append(v)
    return pub, eps


def kf_count(events: Sequence[object]) -> int:
    return sum(isinstance(e, KeyframeRequested) for e in events)


def test_keyframe_requests_are_merged_and_rate_limited(h: Harness) -> None:
    pub, viewers = setup(h, 3)
    # The first subscription asked immediately; the other two fell inside the interval.
    assert kf_count(drain(pub)) == 1
    h.advance(KEYFRAME_MIN_INTERVAL)
    assert kf_count(drain(pub)) == 1  # the merged, deferred one
    h.advance(5.0)
    assert kf_count(drain(pub)) == 0
    # A burst of 30 requests from 3 viewers in 0.1 s gives one now and one deferred.
    for i in range(30):
        viewers[i % 3].control(h.now, RequestKeyframe("v0"))
        h.advance(0.1 / 30)
    assert kf_count(drain(pub)) == 1
    h.advance(KEYFRAME_MIN_INTERVAL)
    assert kf_count(drain(pub)) == 1
    h.advance(2.0)
    assert drain(pub) == []


def test_bitrate_target_is_the_most_demanding_viewer_capped_by_the_publisher_limit(h: Harness) -> None:
    pub, (v1, v2) = setup(h, 2)
    h.advance(KEYFRAME_MIN_INTERVAL)  # let the subscribe-time key-frame requests go out
    assert kf_count(drain(pub)) == 2
    v1.control(h.now, SetLocalBitrate("v0", BitrateLimit(max_bps=300_000)))
    assert drain(pub) == [BitrateTarget("cam", 300_000)]
    v2.control(h.now, SetLocalBitrate("v0", BitrateLimit(max_bps=800_000)))
    assert drain(pub) == []  # at most one change per second
    h.advance(1.0)
    assert drain(pub) == [BitrateTarget("cam", 800_000)]
    pub.control(h.now, SetRemoteBitrate("cam", BitrateLimit(max_bps=500_000)))
    h.advance(1.0)
    assert drain(pub) == [BitrateTarget("cam", 500_000)]
    pub.control(h.now, SetRemoteBitrate("cam", BitrateLimit()))
    h.advance(1.0)
    assert drain(pub) == [BitrateTarget("cam", 800_000)]
    # The demanding viewer leaves: the target falls back to the other one.
    v2.control(h.now, Unsubscribe("v0"))
    h.advance(1.0)
    assert drain(pub) == [BitrateTarget("cam", 300_000)]


def test_hints_are_refreshed_while_watching_and_expire_when_the_viewer_vanishes(h: Harness) -> None:
    pub, (v1, v2) = setup(h, 2)
    v1.control(h.now, SetLocalBitrate("v0", BitrateLimit(max_bps=300_000)))
    h.advance(1.0)
    v2.control(h.now, SetLocalBitrate("v0", BitrateLimit(max_bps=900_000)))
    h.advance(1.0)
    drain(pub)
    # Long after the hint TTL the targets hold, because viewers refresh their hints.
    h.advance(BITRATE_HINT_TTL * 4)
    assert drain(pub) == []
    # v2's worker dies without telling anyone (no unsubscribe): its hint must expire.
    v2._next_refresh = None
    h.advance(BITRATE_HINT_TTL + 1.5)
    assert drain(pub) == [BitrateTarget("cam", 300_000)]


def test_alternate_requests_of_the_cluster_start_it_once_and_stop_it_when_the_last_stops_asking(h: Harness) -> None:
    """Viewers that cannot decode the track's codec ask for its alternate rendition (repeated while
    they want it, from any worker): the publisher hears "wanted" once, and "not wanted" only when the
    last request is ALTERNATE_TTL old (a viewer that left or crashed needs no goodbye)."""
    pub, viewers = setup(h, 2)
    h.advance(KEYFRAME_MIN_INTERVAL)
    drain(pub)
    locals_ = [v.local_track("v0") for v in viewers]
    assert all(local is not None for local in locals_)
    for local in locals_:
        assert local is not None
        local.request_alternate(h.now)
    assert drain(pub) == [AlternateWanted("cam", True)]
    for _ in range(8):  # the first viewer keeps asking, the second stopped
        h.advance(ALTERNATE_REPEAT)
        assert locals_[0] is not None
        locals_[0].request_alternate(h.now)
        assert drain(pub) == []
    h.advance(ALTERNATE_TTL - 0.01)
    assert drain(pub) == []
    h.advance(0.02)
    assert drain(pub) == [AlternateWanted("cam", False)]
    assert locals_[1] is not None
    locals_[1].request_alternate(h.now)
    assert drain(pub) == [AlternateWanted("cam", True)]
