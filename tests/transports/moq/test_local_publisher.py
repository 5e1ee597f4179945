"""An in-process publisher on the relay (the rooms' tracks), driven through real sessions in
memory: SUBSCRIBE reaches it, its objects reach draft-16 and draft-20 subscribers with their LOC
properties, later subscribers are reported, refusals and endings are the draft's messages."""

from __future__ import annotations

import pytest

from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import RequestErrorCode
from trackmesh.transports.moq.loc import LocProperties, decode_loc_properties, encode_loc_properties
from trackmesh.transports.moq.local_publisher import LocalPublisher, LocalTrack
from trackmesh.transports.moq.objects import SubgroupStreamParser
from trackmesh.transports.moq.relay import Relay
from trackmesh.transports.moq.varint import Reader

from .harness import Client, Clock

NS = (b"trackmesh", b"r1")


class Owner:
    def __init__(self, relay: Relay) -> None:
        self.tracks: list[LocalTrack] = []
        self.cancelled: list[LocalTrack] = []
        self.attached = 0
        self.refuse = False
        self.publisher = LocalPublisher(relay, (b"trackmesh",), self.subscribe, self.cancelled.append)

    def subscribe(self, local: LocalTrack) -> None:
        if self.refuse:
            local.refuse(RequestErrorCode.DOES_NOT_EXIST, "no such track")
            return
        self.tracks.append(local)
        local.on_attach = self.attach
        local.accept(128)

    def attach(self) -> None:
        self.attached += 1


def subscribe(client: Client, name: bytes = b"alice/video_main") -> int:
    rid = client.rid()
    client.request(m.Subscribe(rid, NS, name, {m.PARAM_FORWARD: 1}))
    return rid


def objects_with_properties(client: Client) -> list[tuple[int, int, LocProperties, bytes]]:
    client.pump()
    out = []
    for sid, data in sorted(client.incoming.items()):
        if sid % 4 != 3 or sid == client.server_control:
            continue
        r = Reader(bytes(data), vi64=client.vi64)
        parser = SubgroupStreamParser(r.varint(), client.vi64)
        for o in parser.feed(bytes(data[r.pos :])):
            assert parser.header is not None
            props = decode_loc_properties(o.extensions, client.vi64)
            out.append((parser.header.group_id, o.object_id, props, o.payload))
    return out


@pytest.mark.parametrize("draft", [16, 20])
def test_subscribers_get_the_local_tracks_objects(draft: int) -> None:
    relay, clock = Relay(), Clock()
    owner = Owner(relay)
    alice = Client(relay, clock, draft=draft)
    alice.setup()
    rid = subscribe(alice)
    (local,) = owner.tracks
    assert local.name == b"alice/video_main" and local.namespace == NS and owner.attached == 1
    (ok,) = alice.messages((alice.request_streams and max(alice.request_streams)) or 0)
    assert isinstance(ok, m.SubscribeOk), ok
    for group in range(2):
        for obj in range(3):
            ext = encode_loc_properties(LocProperties(group * 1000 + obj))
            local.publish(group, obj, bytes([group, obj]) * 10, ext)
    got = objects_with_properties(alice)
    assert [(g, o, p.timestamp_us, pl[:2]) for g, o, p, pl in got] == [
        (g, o, g * 1000 + o, bytes([g, o])) for g in range(2) for o in range(3)
    ]
    # A second subscriber shares the track: the owner hears of it (a room asks for a key frame).
    bob = Client(relay, clock, draft=16)
    bob.setup()
    subscribe(bob)
    assert len(owner.tracks) == 1 and owner.attached == 2
    assert [(g, o) for g, o, _, _ in objects_with_properties(bob)] == [(1, 0), (1, 1), (1, 2)]  # the current group
    # The last subscribers leave: the owner is told.
    if draft == 16:
        alice.send(m.Unsubscribe(rid))
    else:  # draft-20: resetting the request's stream cancels it
        alice.session.stream_reset(max(alice.request_streams), 0, clock.now)
    bob.send(m.Unsubscribe(0))
    assert owner.cancelled == [local] and local.closed


def test_a_refused_track_is_does_not_exist() -> None:
    relay, clock = Relay(), Clock()
    owner = Owner(relay)
    owner.refuse = True
    alice = Client(relay, clock)
    alice.setup()
    subscribe(alice, b"nobody/nothing")
    (err,) = alice.messages()
    assert isinstance(err, m.RequestError) and err.error_code == RequestErrorCode.DOES_NOT_EXIST
    assert b"no such track" in err.reason
    assert relay.tracks == {}


def test_a_session_publishing_the_room_namespace_wins_over_the_local_publisher() -> None:
    relay, clock = Relay(), Clock()
    owner = Owner(relay)
    pub = Client(relay, clock)
    pub.setup()
    pub.send(m.PublishNamespace(pub.rid(), NS))
    pub.messages()
    sub = Client(relay, clock)
    sub.setup()
    subscribe(sub)
    assert owner.tracks == []
    (upstream,) = [msg for msg in pub.messages() if isinstance(msg, m.Subscribe)]
    assert upstream.name == b"alice/video_main"


def test_an_ended_track_sends_publish_done() -> None:
    relay, clock = Relay(), Clock()
    owner = Owner(relay)
    alice = Client(relay, clock)
    alice.setup()
    subscribe(alice)
    (local,) = owner.tracks
    local.publish(0, 0, b"key", None)
    local.publish(0, 1, b"delta", None)
    local.end(clock.now, "the track was unpublished")
    msgs = alice.messages()
    done = [msg for msg in msgs if isinstance(msg, m.PublishDone)]
    assert len(done) == 1 and done[0].stream_count == 1 and done[0].reason == b"the track was unpublished"
    (stream,) = alice.received()
    assert stream[2] == [(0, b"key"), (1, b"delta")] and stream[3]  # the group's stream was finished
    assert relay.tracks == {}


def test_a_track_accepted_mid_group_starts_at_the_next_group() -> None:
    relay, clock = Relay(), Clock()
    owner = Owner(relay)
    alice = Client(relay, clock)
    alice.setup()
    subscribe(alice)
    (local,) = owner.tracks
    local.publish(3, 5, b"late", None)  # the source is mid-group when the track is accepted
    local.publish(4, 0, b"key", None)
    local.publish(4, 1, b"delta", None)
    assert [(h.group_id, objs) for _, h, objs, _ in alice.received()] == [(4, [(0, b"key"), (1, b"delta")])]
