"""Rooms are per app (multi-tenancy): two apps' rooms of one name never meet in the media core.

The single-tenant app ("") keys rooms by their name alone, so its registry keys are what they
were before apps existed (a node without tenants, and atm0s-style deployments, see no change).
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.core.controls import (
    CreateLocalTrack,
    Join,
    MessageChannelPub,
    MessageChannelStartPub,
    MessageChannelSub,
    Publish,
    Subscribe,
)
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.errors import ErrorCode
from trackmesh.core.events import Joined, LocalTrackStateChanged, MessageChannelMessage, PeerJoined, TrackStarted
from trackmesh.core.ids import SessionId
from trackmesh.core.model import LocalTrackState, MediaCodec, MediaPacket, PeerInfo, TrackInfo, TrackKind, TrackSource
from trackmesh.core.registry import parse_key, peer_key, room_key, split_room_key

from .conftest import Harness, drain

V = TrackKind.VIDEO


def joined(h: Harness, app: str, room: str, peer: str, worker: int = 0) -> Endpoint:
    ep = h.workers[worker].create_endpoint(app)
    assert ep.control(h.now, Join(room, peer)) is None
    return ep


def seen_by(seen: list[int]) -> Callable[[MediaPacket], None]:
    return lambda p: seen.append(p.seq)


def pkt(seq: int) -> MediaPacket:
    return MediaPacket(MediaCodec.VP8, 96, seq, seq * 3000, False, seq == 0, b"payload")


def test_the_single_tenant_room_key_is_the_name_and_its_registry_keys_are_unchanged(h: Harness) -> None:
    assert room_key("", "r") == "r"
    ep = joined(h, "", "r", "alice")
    assert ep.room == ep.room_key == "r"
    assert h.registry.get(f"r/r/p/alice/{ep.session}") is not None
    tenant = joined(h, "acme", "r", "alice")
    assert tenant.room == "r" and tenant.room_key == room_key("acme", "r") != "r"
    assert h.registry.get(peer_key(room_key("acme", "r"), "alice", tenant.session)) is not None
    assert h.registry.get(f"r/r/p/alice/{tenant.session}") is None


def test_two_apps_with_one_room_name_do_not_see_each_others_peers_or_tracks(h: Harness) -> None:
    a1 = joined(h, "a", "r", "alice")
    assert a1.control(h.now, Publish("cam", V)) is None
    default = joined(h, "", "r", "dave", worker=1)
    b1 = joined(h, "b", "r", "bob", worker=1)
    assert drain(default) == [Joined("r", "dave", default.session)]  # the events name the room as given
    assert drain(b1) == [Joined("r", "bob", b1.session)]
    assert b1.room_tracks() == [] and default.room_tracks() == []
    a2 = joined(h, "a", "r", "carol", worker=1)
    assert drain(a2) == [Joined("r", "carol", a2.session), PeerJoined(PeerInfo("alice")),
                         TrackStarted(TrackInfo("alice", "cam", V))]  # fmt: skip
    assert drain(a1)[-1] == PeerJoined(PeerInfo("carol"))
    assert drain(b1) == [] and drain(default) == []


def test_a_track_of_the_same_peer_and_name_in_another_app_carries_no_media_across(h: Harness) -> None:
    """Same room, peer and track names in two apps: two channels; each viewer gets its app's packets."""
    pubs: dict[str, Endpoint] = {}
    viewers: dict[str, Endpoint] = {}
    got: dict[str, list[int]] = {}
    for app, worker in (("a", 0), ("b", 1)):
        pub = pubs[app] = joined(h, app, "r", "alice", worker)
        assert pub.control(h.now, Publish("cam", V)) is None
    for app, worker in (("a", 1), ("b", 0)):
        viewer = viewers[app] = joined(h, app, "r", "viewer", worker)
        assert viewer.control(h.now, CreateLocalTrack("v0", V)) is None
        local = viewer.local_track("v0")
        assert local is not None
        seen: list[int] = []
        got[app] = seen
        local.sink = seen_by(seen)
        assert viewer.control(h.now, Subscribe("v0", TrackSource("alice", "cam"))) is None
        states = [e for e in drain(viewer) if isinstance(e, LocalTrackStateChanged)]
        assert states[-1].state is LocalTrackState.ACTIVE
    remote_a, remote_b = pubs["a"].remote_track("cam"), pubs["b"].remote_track("cam")
    assert remote_a is not None and remote_b is not None and remote_a.channel != remote_b.channel
    for seq in range(3):
        remote_a.on_packet(pkt(seq))
    for seq in range(100, 102):
        remote_b.on_packet(pkt(seq))
    assert got == {"a": [0, 1, 2], "b": [100, 101]}


def test_a_track_only_another_app_has_is_not_found(h: Harness) -> None:
    pub = joined(h, "a", "r", "alice")
    assert pub.control(h.now, Publish("cam", V)) is None
    viewer = joined(h, "b", "r", "eve", worker=1)
    assert viewer.control(h.now, CreateLocalTrack("v0", V)) is None
    err = viewer.control(h.now, Subscribe("v0", TrackSource("alice", "cam")))
    assert err is not None and err.code is ErrorCode.TRACK_NOT_FOUND


def test_message_channels_are_per_app(h: Harness) -> None:
    a = joined(h, "a", "r", "alice")
    b = joined(h, "b", "r", "bob", worker=1)
    for ep in (a, b):
        drain(ep)
        assert ep.control(h.now, MessageChannelSub("chat")) is None
    assert a.control(h.now, MessageChannelStartPub("chat")) is None
    assert a.control(h.now, MessageChannelPub("chat", b"hi")) is None
    assert [e for e in drain(b) if isinstance(e, MessageChannelMessage)] == []
    own = [e for e in drain(a) if isinstance(e, MessageChannelMessage)]
    assert own == [MessageChannelMessage("chat", "alice", b"hi")]


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(str.isprintable)


@given(app=st.one_of(st.just(""), names), room=names)
def test_room_keys_round_trip_and_never_collide_with_a_plain_room(app: str, room: str) -> None:
    key = room_key(app, room)
    assert split_room_key(key) == (app, room)
    # A tenant's key is no valid room name, so no single-tenant room can share it.
    assert (key == room) == (app == "")
    assert key.isprintable() == (app == "")
    assert parse_key(peer_key(key, "p", SessionId(1))).room == key
