"""The registry and hub of a standalone node's workers spreading a room (cluster/worker_mesh.py):
MediaWorkers on an in-memory wire between their meshes, a virtual clock. The core API is unchanged:
a viewer on worker 1 sees and receives a publisher on worker 0, each packet crosses once per worker
with viewers, key-frame requests cross back, a lost worker's peers and tracks go."""

from __future__ import annotations

from collections import deque
from typing import Any

from trackmesh.cluster.worker_mesh import WorkerMesh
from trackmesh.core.controls import (
    CreateLocalTrack,
    Join,
    Leave,
    MessageChannelPub,
    MessageChannelStartPub,
    MessageChannelSub,
    Publish,
    Subscribe,
    Unpublish,
    Unsubscribe,
)
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.events import (
    EndpointEvent,
    KeyframeRequested,
    LocalTrackStateChanged,
    MessageChannelMessage,
    PeerJoined,
    PeerLeft,
    TrackStarted,
    TrackStopped,
)
from trackmesh.core.model import LocalTrackState, MediaCodec, MediaPacket, PeerInfo, TrackInfo, TrackKind, TrackSource
from trackmesh.core.worker import MediaWorker

V = TrackKind.VIDEO
SRC = TrackSource("alice", "cam")
NOW = 100.0


def pkt(seq: int) -> MediaPacket:
    return MediaPacket(MediaCodec.VP8, 96, seq, seq * 3000, False, seq == 0, b"payload")


class Node:
    """N workers of one node, their meshes wired in memory: ``pump()`` delivers what was sent."""

    def __init__(self, workers: int) -> None:
        self.wire: deque[tuple[int, int, tuple[Any, ...]]] = deque()  # (to, from, item)
        self.meshes = [WorkerMesh(i, workers, self._sender(i)) for i in range(workers)]
        self.workers = [MediaWorker(1, i, "secret", m.registry, m.hub) for i, m in enumerate(self.meshes)]
        self.events: dict[int, list[EndpointEvent]] = {}
        self.crossed: list[tuple[int, int, tuple[Any, ...]]] = []
        self.down: set[int] = set()

    def _sender(self, index: int) -> Any:
        def send(peer: int, item: tuple[Any, ...]) -> None:
            self.wire.append((peer, index, item))

        return send

    def pump(self) -> None:
        while self.wire:
            to, frm, item = self.wire.popleft()
            self.crossed.append((to, frm, item))
            if to not in self.down and frm not in self.down:
                self.meshes[to].on_items(NOW, frm, [item])
        for worker in self.workers:
            for ep in worker.take_ready():
                while (ev := ep.poll_event()) is not None:
                    self.events.setdefault(ep.session, []).append(ev)

    def take(self, ep: Endpoint) -> list[EndpointEvent]:
        self.pump()
        return self.events.pop(ep.session, [])

    def sent(self, kind: str) -> list[tuple[int, int, tuple[Any, ...]]]:
        return [c for c in self.crossed if c[2][0] == kind]


def viewer(node: Node, worker: int, name: str, got: list[int]) -> Endpoint:
    v = node.workers[worker].create_endpoint()
    assert v.control(NOW, Join("r", name)) is None
    node.pump()  # the room's tracks on the other workers reach this one's registry view
    assert v.control(NOW, CreateLocalTrack("video0", V)) is None
    local = v.local_track("video0")
    assert local is not None
    local.sink = lambda p: got.append(p.seq)
    assert v.control(NOW, Subscribe("video0", SRC)) is None
    return v


def test_viewers_on_another_worker_get_each_packet_once_across_and_ask_the_publisher_for_key_frames() -> None:
    node = Node(2)
    pub = node.workers[0].create_endpoint()
    assert pub.control(NOW, Join("r", "alice")) is None
    assert pub.control(NOW, Publish("cam", V)) is None
    got_bob: list[int] = []
    got_carol: list[int] = []
    bob, carol = viewer(node, 1, "bob", got_bob), viewer(node, 1, "carol", got_carol)
    node.pump()
    # The room crosses through the registry both ways: worker 1's viewers learn of alice and her
    # track, alice of them.
    for v in (bob, carol):
        evs = node.take(v)
        assert TrackStarted(TrackInfo("alice", "cam", V)) in evs and PeerJoined(PeerInfo("alice")) in evs
        assert LocalTrackStateChanged("video0", LocalTrackState.ACTIVE, SRC) in evs
    evs = node.take(pub)
    assert PeerJoined(PeerInfo("bob")) in evs and PeerJoined(PeerInfo("carol")) in evs
    # The viewers' key-frame requests crossed back to the publisher's endpoint.
    assert KeyframeRequested("cam") in evs
    assert node.meshes[1].hub.feedback_out >= 1 and node.meshes[0].hub.feedback_in >= 1

    remote = pub.remote_track("cam")
    assert remote is not None
    for seq in range(5):
        remote.on_packet(pkt(seq))
    node.pump()
    assert got_bob == got_carol == [0, 1, 2, 3, 4]
    hub0, hub1 = node.meshes[0].hub, node.meshes[1].hub
    assert hub0.packets_out == 5 and hub1.packets_in == 5  # once across, two viewers served there
    assert len(node.sent("p")) == 5 and {(to, frm) for to, frm, _ in node.sent("p")} == {(1, 0)}
    assert hub0.stats()["channels_exported"] == 1 and hub1.stats()["channels_imported"] == 1
    assert hub1.packets_out == 0 and hub0.packets_in == 0

    # Unpublish: the viewers on worker 1 go back to WAITING and hear the track stopped.
    assert pub.control(NOW, Unpublish("cam")) is None
    node.pump()
    for v in (bob, carol):
        evs = node.take(v)
        assert LocalTrackStateChanged("video0", LocalTrackState.WAITING, SRC) in evs
        assert TrackStopped("alice", "cam", V) in evs
    # The viewers unsubscribe: worker 1 tells worker 0 it no longer wants the channel.
    for v in (bob, carol):
        assert v.control(NOW, Unsubscribe("video0")) is None
    node.pump()
    assert node.sent("unsub") and remote.channel not in hub0._interest
    assert hub1.stats()["channels_imported"] == 0


def test_three_workers_each_packet_crosses_once_to_each_worker_with_viewers_and_never_back() -> None:
    node = Node(3)
    pub = node.workers[0].create_endpoint()
    assert pub.control(NOW, Join("r", "alice")) is None
    assert pub.control(NOW, Publish("cam", V)) is None
    got_bob: list[int] = []
    got_carol: list[int] = []
    got_dave: list[int] = []
    viewer(node, 1, "bob", got_bob)
    viewer(node, 2, "carol", got_carol)
    viewer(node, 2, "dave", got_dave)
    node.pump()
    remote = pub.remote_track("cam")
    assert remote is not None
    for seq in range(10):
        remote.on_packet(pkt(seq))
    node.pump()
    assert got_bob == got_carol == got_dave == list(range(10))
    # Ten packets to each of the two other workers; the proxies on 1 and 2 never forward them on.
    assert sorted((to, frm) for to, frm, _ in node.sent("p")) == [(1, 0)] * 10 + [(2, 0)] * 10
    assert [m.hub.packets_out for m in node.meshes] == [20, 0, 0]
    assert [m.hub.packets_in for m in node.meshes] == [0, 10, 10]


def test_a_lost_worker_takes_its_peers_and_tracks_with_it() -> None:
    node = Node(2)
    pub = node.workers[0].create_endpoint()
    assert pub.control(NOW, Join("r", "alice")) is None
    assert pub.control(NOW, Publish("cam", V)) is None
    got: list[int] = []
    bob = viewer(node, 1, "bob", got)
    node.pump()
    node.take(bob), node.take(pub)
    # Worker 0 goes (its pipe closed): worker 1's viewer sees alice leave and her track stop.
    node.down.add(0)
    node.meshes[1].peer_lost(NOW, 0)
    node.pump()
    evs = node.take(bob)
    assert PeerLeft("alice") in evs and TrackStopped("alice", "cam", V) in evs
    assert LocalTrackStateChanged("video0", LocalTrackState.WAITING, SRC) in evs
    assert node.meshes[1].hub.peers == [] and node.meshes[1].registry.peers == []
    # And worker 0, told worker 1 went, sees bob leave.
    node.meshes[0].peer_lost(NOW, 1)
    node.pump()
    assert PeerLeft("bob") in node.take(pub)


def test_room_messages_cross_once_to_each_worker_with_subscribers() -> None:
    node = Node(2)
    alice, bob = node.workers[0].create_endpoint(), node.workers[1].create_endpoint()
    for ep, peer in ((alice, "alice"), (bob, "bob")):
        assert ep.control(NOW, Join("r", peer)) is None
        assert ep.control(NOW, MessageChannelSub("chat")) is None
    assert alice.control(NOW, MessageChannelStartPub("chat")) is None
    node.pump()
    node.take(alice), node.take(bob)
    assert alice.control(NOW, MessageChannelPub("chat", b"hello")) is None
    node.pump()

    def messages(ep: Endpoint) -> list[MessageChannelMessage]:
        return [ev for ev in node.take(ep) if isinstance(ev, MessageChannelMessage)]

    at_bob, at_alice = messages(bob), messages(alice)
    assert [(m.label, m.peer, m.data) for m in at_bob] == [("chat", "alice", b"hello")]
    assert [(m.label, m.peer, m.data) for m in at_alice] == [("chat", "alice", b"hello")]  # the echo, once
    assert len(node.sent("m")) == 1
    assert node.meshes[0].hub.messages_out == 1 and node.meshes[1].hub.messages_in == 1
    # Bob leaves: worker 1 tells worker 0; the next message does not cross.
    assert bob.control(NOW, Leave()) is None
    node.pump()
    assert alice.control(NOW, MessageChannelPub("chat", b"again")) is None
    node.pump()
    assert len(node.sent("m")) == 1


def test_malformed_items_are_dropped_and_counted() -> None:
    node = Node(2)
    mesh = node.meshes[1]
    mesh.on_items(NOW, 0, [("nope",), ("p",), ("put", "r/x/"), (), ("src", 7)])
    assert mesh.bad_items == 5
    hub = mesh.hub
    hub.subscribe(NOW, 7, _Sink())
    mesh.on_items(NOW, 0, [("src", 7, True), ("p", 7, b"\x09garbage"), ("fb", 7, b"short")])
    assert hub.bad_packets == 1 and hub.feedback_in == 0


class _Sink:
    def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None:
        pass

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        pass
