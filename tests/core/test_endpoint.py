"""Every control, event, mode and cascade of the media core, in memory on a virtual clock."""

from __future__ import annotations

from trackmesh.core.controls import (
    Control,
    CreateLocalTrack,
    Join,
    Leave,
    PeerSubscribe,
    PeerUnsubscribe,
    Publish,
    RequestKeyframe,
    RoomSubscribe,
    RoomUnsubscribe,
    Subscribe,
    Switch,
    Unpublish,
    Unsubscribe,
    UpdatePeer,
    UpdateTrack,
)
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.errors import ControlError, ErrorCode
from trackmesh.core.events import (
    Joined,
    KeyframeRequested,
    Left,
    LocalTrackStateChanged,
    PeerJoined,
    PeerLeft,
    PeerUpdated,
    TrackStarted,
    TrackStopped,
    TrackUpdated,
)
from trackmesh.core.model import (
    InfoMode,
    JoinOptions,
    LocalTrackState,
    MediaCodec,
    MediaPacket,
    PeerInfo,
    TrackInfo,
    TrackKind,
    TrackSource,
)

from .conftest import Harness, drain

V, A = TrackKind.VIDEO, TrackKind.AUDIO
MANUAL = JoinOptions(peer_info=InfoMode.MANUAL, track_info=InfoMode.MANUAL)


def pkt(seq: int) -> MediaPacket:
    return MediaPacket(MediaCodec.VP8, 96, seq, seq * 3000, False, seq == 0, b"payload")


def joined(h: Harness, room: str, peer: str, worker: int = 0, options: JoinOptions | None = None) -> Endpoint:
    ep = h.endpoint(worker)
    assert ep.control(h.now, Join(room, peer, options or JoinOptions())) is None
    return ep


def test_join_emits_joined_and_rejects_a_second_join(h: Harness) -> None:
    ep = h.endpoint()
    assert ep.control(h.now, Join("r1", "alice")) is None
    assert drain(ep) == [Joined("r1", "alice", ep.session)]
    assert ep.room == "r1"
    err = ep.control(h.now, Join("r2", "alice"))
    assert err is not None and err.code is ErrorCode.ALREADY_JOINED


def test_controls_before_join_and_leave_twice_are_typed_errors(h: Harness) -> None:
    ep = h.endpoint()
    for ctl in (Leave(), Publish("v", V), RoomSubscribe(), PeerSubscribe("x"), Unpublish("v"), UpdatePeer("m")):
        err = ep.control(h.now, ctl)
        assert err is not None and err.code is ErrorCode.NOT_JOINED, ctl
    assert ep.control(h.now, Join("r", "p")) is None
    assert ep.control(h.now, Leave()) is None
    err = ep.control(h.now, Leave())
    assert err is not None and err.code is ErrorCode.NOT_JOINED


def test_invalid_names_are_refused(h: Harness) -> None:
    ep = h.endpoint()
    for room, peer in (("", "p"), ("r", ""), ("x" * 129, "p"), ("r", "bad\nname")):
        err = ep.control(h.now, Join(room, peer))
        assert err is not None and err.code is ErrorCode.INVALID_NAME
    assert ep.room is None


def test_names_with_slashes_do_not_break_the_registry(h: Harness) -> None:
    a = joined(h, "a/b", "p/1")
    b = joined(h, "a/b", "p/2")
    a.control(h.now, Publish("cam/1", V))
    drain(a)
    assert drain(b) == [
        Joined("a/b", "p/2", b.session),
        PeerJoined(PeerInfo("p/1")),
        TrackStarted(TrackInfo("p/1", "cam/1", V)),
    ]
    other_room = joined(h, "a", "p")
    assert drain(other_room) == [Joined("a", "p", other_room.session)]


def test_auto_mode_peer_and_track_events_both_ways(h: Harness) -> None:
    a = joined(h, "r", "alice", options=JoinOptions(metadata="m1", extra_data="x"))
    assert a.control(h.now, Publish("mic", A, metadata="tm")) is None
    drain(a)
    b = joined(h, "r", "bob", worker=1)
    assert drain(b) == [
        Joined("r", "bob", b.session),
        PeerJoined(PeerInfo("alice", "m1", "x")),
        TrackStarted(TrackInfo("alice", "mic", A, "tm")),
    ]
    # The earlier member hears about the newcomer, never about itself.
    assert drain(a) == [PeerJoined(PeerInfo("bob"))]

    assert a.control(h.now, UpdatePeer("m2")) is None
    assert a.control(h.now, UpdateTrack("mic", "tm2")) is None
    assert a.control(h.now, Publish("cam", V, screen=True)) is None
    assert a.control(h.now, Unpublish("mic")) is None
    assert drain(b) == [
        PeerUpdated(PeerInfo("alice", "m2", "x")),
        TrackUpdated(TrackInfo("alice", "mic", A, "tm2")),
        TrackStarted(TrackInfo("alice", "cam", V, None, True)),
        TrackStopped("alice", "mic", A),
    ]
    assert drain(a) == []


def test_publish_update_unpublish_errors(h: Harness) -> None:
    a = joined(h, "r", "alice")
    assert a.control(h.now, Publish("cam", V)) is None
    err = a.control(h.now, Publish("cam", V))
    assert err is not None and err.code is ErrorCode.TRACK_ALREADY_PUBLISHED
    for ctl in (Unpublish("nope"), UpdateTrack("nope", None)):
        err = a.control(h.now, ctl)
        assert err is not None and err.code is ErrorCode.TRACK_NOT_FOUND


def test_manual_mode_room_subscribe_and_unsubscribe(h: Harness) -> None:
    a = joined(h, "r", "alice")
    a.control(h.now, Publish("cam", V))
    m = joined(h, "r", "mallory", options=MANUAL)
    assert drain(m) == [Joined("r", "mallory", m.session)]
    assert m.control(h.now, RoomSubscribe()) is None
    assert drain(m) == [PeerJoined(PeerInfo("alice")), TrackStarted(TrackInfo("alice", "cam", V))]
    err = m.control(h.now, RoomSubscribe())
    assert err is not None and err.code is ErrorCode.ALREADY_SUBSCRIBED
    joined(h, "r", "bob")
    assert drain(m) == [PeerJoined(PeerInfo("bob"))]
    assert m.control(h.now, RoomUnsubscribe()) is None
    joined(h, "r", "carol")
    a.control(h.now, Unpublish("cam"))
    assert drain(m) == []
    err = m.control(h.now, RoomUnsubscribe())
    assert err is not None and err.code is ErrorCode.NOT_SUBSCRIBED


def test_manual_mode_peer_subscribe_gives_one_peer_only(h: Harness) -> None:
    a = joined(h, "r", "alice")
    a.control(h.now, Publish("cam", V))
    b = joined(h, "r", "bob")
    b.control(h.now, Publish("mic", A))
    m = joined(h, "r", "mallory", options=MANUAL)
    drain(m)
    assert m.control(h.now, PeerSubscribe("bob")) is None
    assert drain(m) == [PeerJoined(PeerInfo("bob")), TrackStarted(TrackInfo("bob", "mic", A))]
    a.control(h.now, Unpublish("cam"))
    b.control(h.now, Unpublish("mic"))
    assert drain(m) == [TrackStopped("bob", "mic", A)]
    # Subscribing to a peer that is not (yet) there works: its arrival is reported.
    assert m.control(h.now, PeerSubscribe("dave")) is None
    assert drain(m) == []
    joined(h, "r", "dave")
    assert drain(m) == [PeerJoined(PeerInfo("dave"))]
    assert m.control(h.now, PeerUnsubscribe("bob")) is None
    b.control(h.now, Leave())
    assert drain(m) == []
    err = m.control(h.now, PeerUnsubscribe("bob"))
    assert err is not None and err.code is ErrorCode.NOT_SUBSCRIBED


def test_subscribe_controls_are_refused_in_full_auto_mode(h: Harness) -> None:
    a = joined(h, "r", "alice")
    for ctl in (RoomSubscribe(), RoomUnsubscribe(), PeerSubscribe("bob"), PeerUnsubscribe("bob")):
        err = a.control(h.now, ctl)
        assert err is not None and err.code is ErrorCode.MODE_IS_AUTO


def test_peer_info_auto_with_track_info_manual(h: Harness) -> None:
    a = joined(h, "r", "alice")
    a.control(h.now, Publish("cam", V))
    t = joined(h, "r", "tess", options=JoinOptions(peer_info=InfoMode.AUTO, track_info=InfoMode.MANUAL))
    assert drain(t) == [Joined("r", "tess", t.session), PeerJoined(PeerInfo("alice"))]
    assert t.control(h.now, PeerSubscribe("alice")) is None
    assert drain(t) == [TrackStarted(TrackInfo("alice", "cam", V))]


def test_hidden_peer_is_not_announced(h: Harness) -> None:
    a = joined(h, "r", "alice")
    drain(a)
    viewer = joined(h, "r", "whep-1", options=JoinOptions(publish_peer=False, publish_tracks=False))
    viewer.control(h.now, Publish("x", V))
    assert drain(a) == []


def test_subscribe_media_flow_and_states(h: Harness) -> None:
    pub = joined(h, "r", "alice")
    pub.control(h.now, Publish("cam", V))
    viewer = joined(h, "r", "bob", worker=1)
    assert viewer.control(h.now, CreateLocalTrack("video0", V)) is None
    got: list[int] = []
    local = viewer.local_track("video0")
    assert local is not None
    local.sink = lambda p: got.append(p.seq)
    drain(viewer)
    drain(pub)
    assert viewer.control(h.now, Subscribe("video0", TrackSource("alice", "cam"))) is None
    src = TrackSource("alice", "cam")
    assert drain(viewer) == [
        LocalTrackStateChanged("video0", LocalTrackState.WAITING, src),
        LocalTrackStateChanged("video0", LocalTrackState.ACTIVE, src),
    ]
    # A new viewer needs a key frame: the publisher's transport is asked for one.
    assert drain(pub) == [KeyframeRequested("cam")]
    remote = pub.remote_track("cam")
    assert remote is not None
    for seq in range(5):
        remote.on_packet(pkt(seq))
    assert got == [0, 1, 2, 3, 4]
    assert remote.packets == 5 and local.packets == 5
    assert viewer.control(h.now, Unsubscribe("video0")) is None
    assert drain(viewer) == [LocalTrackStateChanged("video0", LocalTrackState.INACTIVE, None)]
    remote.on_packet(pkt(5))
    assert got == [0, 1, 2, 3, 4]


def test_subscribe_errors(h: Harness) -> None:
    pub = joined(h, "r", "alice")
    pub.control(h.now, Publish("cam", V))
    v = joined(h, "r", "bob")
    v.control(h.now, CreateLocalTrack("a0", A))
    v.control(h.now, CreateLocalTrack("v0", V))
    cases: list[tuple[Control, ErrorCode]] = [
        (CreateLocalTrack("v0", V), ErrorCode.LOCAL_TRACK_EXISTS),
        (Subscribe("zz", TrackSource("alice", "cam")), ErrorCode.LOCAL_TRACK_NOT_FOUND),
        (Subscribe("v0", TrackSource("alice", "nope")), ErrorCode.TRACK_NOT_FOUND),
        (Subscribe("v0", TrackSource("nobody", "cam")), ErrorCode.TRACK_NOT_FOUND),
        (Subscribe("a0", TrackSource("alice", "cam")), ErrorCode.TRACK_KIND_MISMATCH),
        (Switch("v0", TrackSource("alice", "cam")), ErrorCode.LOCAL_TRACK_NOT_ATTACHED),
        (Unsubscribe("v0"), ErrorCode.LOCAL_TRACK_NOT_ATTACHED),
        (RequestKeyframe("v0"), ErrorCode.LOCAL_TRACK_NOT_ATTACHED),
        (Unsubscribe("zz"), ErrorCode.LOCAL_TRACK_NOT_FOUND),
    ]
    for ctl, code in cases:
        err = v.control(h.now, ctl)
        assert err is not None and err.code is code, (ctl, err)
    assert v.control(h.now, Subscribe("v0", TrackSource("alice", "cam"))) is None
    err = v.control(h.now, Subscribe("v0", TrackSource("alice", "cam")))
    assert err is not None and err.code is ErrorCode.ALREADY_SUBSCRIBED


def test_switch_source_moves_media_to_the_new_track(h: Harness) -> None:
    a = joined(h, "r", "alice")
    a.control(h.now, Publish("cam", V))
    b = joined(h, "r", "bob")
    b.control(h.now, Publish("cam", V))
    v = joined(h, "r", "vic", worker=1)
    v.control(h.now, CreateLocalTrack("v0", V))
    got: list[tuple[str, int]] = []
    lt = v.local_track("v0")
    assert lt is not None
    v.control(h.now, Subscribe("v0", TrackSource("alice", "cam")))
    ra, rb = a.remote_track("cam"), b.remote_track("cam")
    assert ra is not None and rb is not None
    lt.sink = lambda p: got.append(("a" if p.payload == b"A" else "b", p.seq))
    ra.on_packet(MediaPacket(MediaCodec.VP8, 96, 1, 0, False, True, b"A"))
    drain(v)
    drain(b)
    assert v.control(h.now, Switch("v0", TrackSource("bob", "cam"))) is None
    src = TrackSource("bob", "cam")
    assert drain(v) == [
        LocalTrackStateChanged("v0", LocalTrackState.WAITING, src),
        LocalTrackStateChanged("v0", LocalTrackState.ACTIVE, src),
    ]
    assert drain(b) == [KeyframeRequested("cam")]
    ra.on_packet(MediaPacket(MediaCodec.VP8, 96, 2, 0, False, False, b"A"))
    rb.on_packet(MediaPacket(MediaCodec.VP8, 96, 9, 0, False, True, b"B"))
    assert got == [("a", 1), ("b", 9)]


def test_leave_cascade(h: Harness) -> None:
    a = joined(h, "r", "alice")
    a.control(h.now, Publish("cam", V))
    a.control(h.now, Publish("mic", A))
    b = joined(h, "r", "bob", worker=1)
    b.control(h.now, Publish("cam", V))
    for name, kind in (("v0", V), ("a0", A)):
        b.control(h.now, CreateLocalTrack(name, kind))
    b.control(h.now, Subscribe("v0", TrackSource("alice", "cam")))
    b.control(h.now, Subscribe("a0", TrackSource("alice", "mic")))
    a.control(h.now, CreateLocalTrack("v0", V))
    a.control(h.now, Subscribe("v0", TrackSource("bob", "cam")))
    drain(a)
    drain(b)
    registry_before = len(h.registry)

    assert a.control(h.now, Leave()) is None

    assert drain(a) == [
        LocalTrackStateChanged("v0", LocalTrackState.INACTIVE, None),
        Left("r", "alice"),
    ]
    events = drain(b)
    # Every LocalTrack fed by alice stops (WAITING: the source may come back), and bob is told.
    assert LocalTrackStateChanged("v0", LocalTrackState.WAITING, TrackSource("alice", "cam")) in events
    assert LocalTrackStateChanged("a0", LocalTrackState.WAITING, TrackSource("alice", "mic")) in events
    assert TrackStopped("alice", "cam", V) in events
    assert TrackStopped("alice", "mic", A) in events
    assert events[-1] == PeerLeft("alice")
    assert len(h.registry) == registry_before - 3  # alice's peer entry and two tracks
    assert a.remote_tracks == {}


def test_close_cascades_like_leave_and_blocks_controls(h: Harness) -> None:
    a = joined(h, "r", "alice")
    a.control(h.now, Publish("cam", V))
    b = joined(h, "r", "bob")
    drain(b)
    h.workers[0].close_endpoint(h.now, a.session, "transport gone")
    assert drain(b) == [TrackStopped("alice", "cam", V), PeerLeft("alice")]
    assert [type(e).__name__ for e in drain(a)][-1] == "Closed"
    err = a.control(h.now, Join("r", "alice"))
    assert err is not None and err.code is ErrorCode.ENDPOINT_CLOSED


def test_two_sessions_of_one_peer_are_independent(h: Harness) -> None:
    s1 = joined(h, "r", "alice")
    s2 = joined(h, "r", "alice", worker=1)
    s1.control(h.now, Publish("cam", V))
    s2.control(h.now, Publish("screen", V, screen=True))
    obs = joined(h, "r", "obs")
    assert drain(obs) == [
        Joined("r", "obs", obs.session),
        PeerJoined(PeerInfo("alice")),
        TrackStarted(TrackInfo("alice", "cam", V)),
        TrackStarted(TrackInfo("alice", "screen", V, None, True)),
    ]
    # Each session sees the other one as the same peer of the room.
    assert PeerJoined(PeerInfo("alice")) in drain(s1)
    assert s1.control(h.now, Leave()) is None
    # The peer is still in the room through its second session: only s1's track stops.
    assert drain(obs) == [TrackStopped("alice", "cam", V)]
    assert s2.remote_track("screen") is not None
    assert s2.control(h.now, Leave()) is None
    assert drain(obs) == [TrackStopped("alice", "screen", V), PeerLeft("alice")]


def test_republished_track_resumes_for_its_viewers(h: Harness) -> None:
    a = joined(h, "r", "alice")
    a.control(h.now, Publish("cam", V))
    v = joined(h, "r", "vic")
    v.control(h.now, CreateLocalTrack("v0", V))
    v.control(h.now, Subscribe("v0", TrackSource("alice", "cam")))
    lt = v.local_track("v0")
    assert lt is not None
    got: list[int] = []
    lt.sink = lambda p: got.append(p.seq)
    drain(v)
    a.control(h.now, Unpublish("cam"))
    assert LocalTrackStateChanged("v0", LocalTrackState.WAITING, TrackSource("alice", "cam")) in drain(v)
    h.advance(1.0)
    drain(a)
    # Even from a new session after a reconnect: the channel is named by (room, peer, track).
    a.control(h.now, Leave())
    a2 = joined(h, "r", "alice", worker=1)
    a2.control(h.now, Publish("cam", V))
    assert LocalTrackStateChanged("v0", LocalTrackState.ACTIVE, TrackSource("alice", "cam")) in drain(v)
    assert KeyframeRequested("cam") in drain(a2)
    remote = a2.remote_track("cam")
    assert remote is not None
    remote.on_packet(pkt(77))
    assert got == [77]


def test_worker_lookup_rejects_forged_stale_and_foreign_ids(h: Harness) -> None:
    w0, w1 = h.workers
    ep = w0.create_endpoint()
    assert w0.lookup(ep.conn_id) is ep
    other = w1.lookup(ep.conn_id)
    assert isinstance(other, ControlError) and other.code is ErrorCode.UNKNOWN_CONN
    forged = ep.conn_id[:-2] + ("AA" if ep.conn_id[-2:] != "AA" else "BB")
    err = w0.lookup(forged)
    assert isinstance(err, ControlError) and err.code is ErrorCode.UNKNOWN_CONN
    w0.close_endpoint(h.now, ep.session, "bye")
    err = w0.lookup(ep.conn_id)
    assert isinstance(err, ControlError) and err.code is ErrorCode.UNKNOWN_CONN


def test_worker_shutdown_closes_every_endpoint(h: Harness) -> None:
    eps = [joined(h, "r", f"p{i}") for i in range(3)]
    closed = h.workers[0].shutdown(h.now, "node stopping")
    assert {e.session for e in closed} == {e.session for e in eps}
    assert all(e.closed for e in eps)
    assert len(h.registry) == 0
    assert len(h.hub) == 0


def test_worker_tracks_which_endpoints_have_events(h: Harness) -> None:
    w0, w1 = h.workers
    assert w0.take_ready() == []
    pub = joined(h, "r", "alice")
    pub.control(h.now, Publish("cam", V))
    viewer = joined(h, "r", "bob", worker=1)
    assert {e.session for e in w0.take_ready()} == {pub.session}
    assert {e.session for e in w1.take_ready()} == {viewer.session}
    drain(pub)
    drain(viewer)
    # A viewer on worker 1 subscribing makes the publisher on worker 0 ready (key frame request).
    viewer.control(h.now, CreateLocalTrack("v0", V))
    viewer.control(h.now, Subscribe("v0", TrackSource("alice", "cam")))
    assert [e.session for e in w0.take_ready()] == [pub.session]
    assert drain(pub) == [KeyframeRequested("cam")]
    assert w0.take_ready() == []


def test_a_muted_track_is_counted_not_forwarded_and_asks_a_key_frame_when_unmuted(h: Harness) -> None:
    pub = joined(h, "r", "alice")
    pub.control(h.now, Publish("cam", V))
    viewer = joined(h, "r", "bob", worker=1)
    viewer.control(h.now, CreateLocalTrack("video0", V))
    got: list[int] = []
    local = viewer.local_track("video0")
    assert local is not None
    local.sink = lambda p: got.append(p.seq)
    viewer.control(h.now, Subscribe("video0", TrackSource("alice", "cam")))
    h.advance(5.0)
    drain(viewer)
    drain(pub)
    remote = pub.remote_track("cam")
    assert remote is not None
    remote.on_packet(pkt(0))
    assert remote.set_muted(h.now, True) and not remote.set_muted(h.now, True)
    for seq in (1, 2):
        remote.on_packet(pkt(seq))
    assert got == [0] and remote.packets == 3 and remote.octets == 3 * len(pkt(0).payload)
    assert drain(pub) == []
    assert remote.set_muted(h.now, False)
    assert drain(pub) == [KeyframeRequested("cam")]  # the viewers need one to decode again
    remote.on_packet(pkt(3))
    assert got == [0, 3]
