"""Nothing a client sends makes the core raise: random control sequences, garbage entries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.core import controls as c
from trackmesh.core.errors import ControlError
from trackmesh.core.model import BitrateLimit, InfoMode, JoinOptions, TrackKind, TrackSource
from trackmesh.core.room import RoomView

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
)
steps = st.lists(
    st.tuples(st.integers(0, 3), control | st.just(None), st.floats(0, 2)), max_size=60
)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_random_control_sequences_never_raise(seq: list[tuple[int, object, float]]) -> None:
    h = Harness()
    eps = [h.endpoint(i % 2) for i in range(4)]
    for idx, ctl, dt in seq:
        ep = eps[idx]
        if ctl is None:
            h.workers[idx % 2].close_endpoint(h.now, ep.session, "gone")
        else:
            res = ep.control(h.now, ctl)  # type: ignore[arg-type]
            assert res is None or isinstance(res, ControlError)
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
    view.on_registry_put(key, value)
    view.on_registry_delete(key)
    assert view.bad_entries >= 0


def test_known_bad_entries_are_counted() -> None:
    h = Harness()
    view = RoomView("r", h.registry)
    view.on_registry_put("r/r/p/alice/notanumber", b"{}")
    view.on_registry_put("r/r/p/alice/1", b"not json")
    view.on_registry_put("r/r/t/alice/cam/1", b'{"kind": "smell"}')
    view.on_registry_put("r/r/p/alice/1", b'{"metadata": 5}')
    view.on_registry_delete("zzz")
    assert view.bad_entries == 5
    assert view.peers == {} and view.tracks == {}
