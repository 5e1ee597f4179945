"""Nothing a client sends makes the core raise: random control sequences, garbage entries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.core import controls as c
from trackmesh.core.errors import ControlError
from trackmesh.core.model import BitrateLimit, InfoMode, JoinOptions, MediaCodec, MediaPacket, TrackKind, TrackSource
from trackmesh.core.room import RoomView
from trackmesh.core.worker import MediaWorker

from .conftest import Harness, drain

names = st.sampled_from(["a", "b", "", "x/y", "v0", "a0"])
kinds = st.sampled_from(list(TrackKind))
sources = st.builds(TrackSource, names, names)
limits = st.builds(BitrateLimit, st.none() | st.integers(0, 5_000_000), st.none() | st.integers(0, 100_000))
join_opts = st.builds(JoinOptions, st.sampled_from(list(InfoMode)), st.sampled_from(list(InfoMode)), st.booleans())
control = st.one_of(
    st.builds(c.Join, names, names, join_opts),
    st.just(c.Leave()),
    st.builds(c.UpdatePeer, st.none() | names),
    st.just(c.RoomSubscribe()),
    st.just(c.RoomUnsubscribe()),
    st.builds(c.PeerSubscribe, names),
    st.builds(c.PeerUnsubscribe, names),
    st.builds(c.Publish, names, kinds),
    st.builds(c.UpdateTrack, names, st.none() | names),
    st.builds(c.Unpublish, names),
    st.builds(c.SetRemoteBitrate, names, limits),
    st.builds(c.CreateLocalTrack, names, kinds),
    st.builds(c.Subscribe, names, sources),
    st.builds(c.Switch, names, sources),
    st.builds(c.Unsubscribe, names),
    st.builds(c.SetLocalBitrate, names, limits),
    st.builds(c.RequestKeyframe, names),
    st.builds(
        c.MixerConfig,
        st.sampled_from(list(c.MixerMode)),
        st.lists(names, max_size=3).map(tuple),
        st.lists(sources, max_size=3).map(tuple),
    ),
    st.builds(c.MixerAttach, st.lists(sources, max_size=3).map(tuple)),
    st.builds(c.MixerDetach, st.lists(sources, max_size=3).map(tuple)),
    st.builds(c.MessageChannelStartPub, names),
    st.builds(c.MessageChannelStopPub, names),
    st.builds(c.MessageChannelSub, names),
    st.builds(c.MessageChannelUnsub, names),
    st.builds(c.MessageChannelPub, names, st.binary(max_size=8)),
)
steps = st.lists(
    st.tuples(st.integers(0, 3), control | st.just(None), st.floats(0, 2), st.none() | st.integers(0, 127)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_random_control_sequences_never_raise(seq: list[tuple[int, object, float, int | None]]) -> None:
    h = Harness()
    eps = [h.endpoint(i % 2) for i in range(4)]
    for n, (idx, ctl, dt, level) in enumerate(seq):
        ep = eps[idx]
        if ctl is None:
            h.workers[idx % 2].close_endpoint(h.now, ep.session, "gone")
        else:
            res = ep.control(h.now, ctl)  # type: ignore[arg-type]
            assert res is None or isinstance(res, ControlError)
        # Audio with levels from every published track, so mixers pick and drop slots.
        for e in eps:
            for track in list(e.remote_tracks.values()):
                track.on_packet(MediaPacket(MediaCodec.OPUS, 111, n, n * 960, False, False, b"x", 0, 0, level))
        h.advance(dt)
        for e in eps:
            drain(e)
    for w in h.workers:
        w.shutdown(h.now, "end")
    # Everything was cleaned up: no registry entry, no channel left behind.
    assert len(h.registry) == 0
    assert len(h.hub) == 0


@given(st.text(max_size=40), st.binary(max_size=40))
def test_garbage_registry_entries_are_counted_not_raised(key: str, value: bytes) -> None:
    h = Harness()
    view = RoomView("r", h.registry)
    view.on_registry_put(0.0, key, value)
    view.on_registry_delete(0.0, key)
    assert view.bad_entries >= 0


def test_known_bad_entries_are_counted() -> None:
    h = Harness()
    view = RoomView("r", h.registry)
    view.on_registry_put(0.0, "r/r/p/alice/notanumber", b"{}")
    view.on_registry_put(0.0, "r/r/p/alice/1", b"not json")
    view.on_registry_put(0.0, "r/r/t/alice/cam/1", b'{"kind": "smell"}')
    view.on_registry_put(0.0, "r/r/p/alice/1", b'{"metadata": 5}')
    view.on_registry_delete(0.0, "zzz")
    assert view.bad_entries == 5
    assert view.peers == {} and view.tracks == {}


mixer_peers = st.sampled_from(["p0", "p1", "p2", "p3"])
mixer_step = st.one_of(
    st.builds(c.Publish, st.sampled_from(["mic", "mic2"]), st.just(TrackKind.AUDIO)),
    st.builds(c.Unpublish, st.sampled_from(["mic", "mic2"])),
    st.builds(c.MixerAttach, st.lists(st.builds(TrackSource, mixer_peers, st.just("mic")), max_size=2).map(tuple)),
    st.builds(c.MixerDetach, st.lists(st.builds(TrackSource, mixer_peers, st.just("mic")), max_size=2).map(tuple)),
    st.just(c.Leave()),
    st.just("rejoin"),
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(list(c.MixerMode)), min_size=4, max_size=4),
    st.lists(
        st.tuples(st.integers(0, 3), mixer_step, st.floats(0, 1.5), st.lists(st.integers(0, 127), min_size=4)),
        max_size=40,
    ),
)
def test_mixers_under_random_churn_keep_consistent_slots(
    modes: list[c.MixerMode], seq: list[tuple[int, object, float, list[int]]]
) -> None:
    """Four peers on two workers, each publishing and mixing: slots always match outputs, and
    everything is torn down at the end."""
    churn(Harness(), modes, seq)


class TwoBoundNodes(Harness):
    """Two cluster nodes (one worker each) in bounded mixer mode, sharing the in-process seams."""

    def __init__(self) -> None:
        super().__init__()
        self.workers = [MediaWorker(node, 0, "secret", self.registry, self.hub, mixer_bound=True) for node in (7, 8)]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(list(c.MixerMode)), min_size=4, max_size=4),
    st.lists(
        st.tuples(st.integers(0, 3), mixer_step, st.floats(0, 1.5), st.lists(st.integers(0, 127), min_size=4)),
        max_size=40,
    ),
)
def test_bounded_mixers_under_random_churn_leak_no_channel(
    modes: list[c.MixerMode], seq: list[tuple[int, object, float, list[int]]]
) -> None:
    """The same churn across two nodes in bounded mode: levels channels and imports come and go,
    and nothing (registry entry, track or levels channel, timer) is left at the end."""
    churn(TwoBoundNodes(), modes, seq)


def churn(h: Harness, modes: list[c.MixerMode], seq: list[tuple[int, object, float, list[int]]]) -> None:
    eps = [h.endpoint(i % 2) for i in range(4)]

    def setup(i: int) -> None:
        ep = eps[i]
        assert ep.control(h.now, c.Join("r", f"p{i}")) is None
        for name in ("o0", "o1"):
            ep.control(h.now, c.CreateLocalTrack(name, TrackKind.AUDIO))
        src = (TrackSource(f"p{(i + 1) % 4}", "mic"),)
        assert ep.control(h.now, c.MixerConfig(modes[i], ("o0", "o1"), src)) is None

    for i in range(4):
        setup(i)
    for n, (idx, ctl, dt, levels) in enumerate(seq):
        ep = eps[idx]
        if ctl == "rejoin":
            if ep.room is None:
                setup(idx)
        else:
            res = ep.control(h.now, ctl)  # type: ignore[arg-type]
            assert res is None or isinstance(res, ControlError)
        t = 0.0
        while t < dt:
            for i, e in enumerate(eps):
                for track in e.remote_tracks.values():
                    track.on_packet(MediaPacket(MediaCodec.OPUS, 111, n, n, False, False, b"x", 0, 0, levels[i]))
            h.advance(0.05)
            t += 0.05
        for e in eps:
            drain(e)
            mixer = e.mixer
            if mixer is None:
                continue
            for out, src in zip(mixer.outputs, mixer.slots, strict=True):
                if src is None:
                    assert out.channel is None and out.source is None
                else:
                    assert out.channel == src.channel and out in src.outputs
                    assert src.source.peer != e.peer
                    stage = e.mixer_stage
                    assert stage is not None and src.source in stage.sources
    for w in h.workers:
        w.shutdown(h.now, "end")
    assert len(h.registry) == 0
    assert len(h.hub) == 0
    assert all(w.next_deadline() is None for w in h.workers)
