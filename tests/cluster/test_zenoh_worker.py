"""Two MediaWorkers on two zenoh nodes: the unchanged core API carries media across nodes."""

from __future__ import annotations

import time

from trackmesh.cluster.zenoh_channels import ZenohChannelHub
from trackmesh.cluster.zenoh_registry import ZenohRegistry
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
    TrackStarted,
)
from trackmesh.core.message_channel import message_channel_id
from trackmesh.core.model import LocalTrackState, MediaCodec, MediaPacket, PeerInfo, TrackInfo, TrackKind, TrackSource
from trackmesh.core.worker import MediaWorker

from .conftest import Pump, wait_for

V = TrackKind.VIDEO


def pkt(seq: int) -> MediaPacket:
    return MediaPacket(MediaCodec.VP8, 96, seq, seq * 3000, False, seq == 0, b"payload")


class Node:
    def __init__(self, zn, node_id: int) -> None:  # type: ignore[no-untyped-def]
        self.pump = Pump()
        self.registry = ZenohRegistry(zn.session, self.pump, time.monotonic)
        self.hub = ZenohChannelHub(zn.session, self.pump, time.monotonic)
        self.worker = MediaWorker(node_id, 0, "secret", self.registry, self.hub)
        self.events: dict[int, list[EndpointEvent]] = {}

    def collect(self, seconds: float = 0.0) -> None:
        self.pump.drain(seconds)
        self._take()

    def _take(self) -> None:
        for ep in self.worker.take_ready():
            while (ev := ep.poll_event()) is not None:
                self.events.setdefault(ep.session, []).append(ev)

    def until(self, ep: Endpoint, cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
        def check() -> bool:
            self._take()
            return bool(cond(self.events.get(ep.session, [])))

        self.pump.until(check, timeout)

    def take(self, ep: Endpoint) -> list[EndpointEvent]:
        self._take()
        return self.events.pop(ep.session, [])


def test_viewer_on_node_b_receives_publisher_on_node_a_through_the_core(nodes) -> None:  # type: ignore[no-untyped-def]
    za = nodes()
    zb = nodes(seeds=za.config.listen)
    wait_for(lambda: za.peers() and zb.peers())
    a, b = Node(za, 1), Node(zb, 2)
    now = time.monotonic

    pub = a.worker.create_endpoint()
    assert pub.control(now(), Join("r", "alice")) is None
    assert pub.control(now(), Publish("cam", V)) is None
    viewers = []
    for name in ("bob", "carol"):
        v = b.worker.create_endpoint()
        assert v.control(now(), Join("r", name)) is None
        viewers.append(v)
    # The room state crosses through the registry: B's endpoints learn of alice and her track.
    for v in viewers:
        b.until(v, lambda evs: TrackStarted(TrackInfo("alice", "cam", V)) in evs)
        assert PeerJoined(PeerInfo("alice")) in b.take(v)
    a.until(pub, lambda evs: PeerJoined(PeerInfo("carol")) in evs)

    got: dict[str, list[int]] = {}
    src = TrackSource("alice", "cam")
    for v, name in zip(viewers, ("bob", "carol"), strict=True):
        assert v.control(now(), CreateLocalTrack("video0", V)) is None
        local = v.local_track("video0")
        assert local is not None
        seqs = got.setdefault(name, [])
        local.sink = lambda p, seqs=seqs: seqs.append(p.seq)
        assert v.control(now(), Subscribe("video0", src)) is None
    for v in viewers:
        b.until(v, lambda evs: LocalTrackStateChanged("video0", LocalTrackState.ACTIVE, src) in evs)
        assert b.take(v)[0] == LocalTrackStateChanged("video0", LocalTrackState.WAITING, src)
    # The viewers' key-frame requests reach the publisher's endpoint on A (merged there).
    a.until(pub, lambda evs: KeyframeRequested("cam") in evs)

    remote = pub.remote_track("cam")
    assert remote is not None
    wait_for(lambda: a.hub._exports[remote.channel].interest)
    for seq in range(5):
        remote.on_packet(pkt(seq))
    b.pump.until(lambda: got["bob"] == got["carol"] == [0, 1, 2, 3, 4])
    assert a.hub.packets_out == 5 and b.hub.packets_in == 5  # once across, two viewers served
    assert b.hub.imported() == [remote.channel]

    # Unpublish on A: the viewers on B go back to WAITING and the track is reported stopped.
    assert pub.control(now(), Unpublish("cam")) is None
    for v in viewers:
        b.until(v, lambda evs: LocalTrackStateChanged("video0", LocalTrackState.WAITING, src) in evs)
    # The viewers leave: B drops its subscription.
    for v in viewers:
        assert v.control(now(), Unsubscribe("video0")) is None
    assert b.hub.imported() == []


def test_room_message_channels_reach_subscribers_on_every_node(nodes) -> None:  # type: ignore[no-untyped-def]
    """The MessageHub path of the zenoh hub: a message published on node A reaches the label's subscribers on A
    (the sender's own echo, in process) and on B (over zenoh), with the sender's peer id; nothing else."""
    za = nodes()
    zb = nodes(seeds=za.config.listen)
    wait_for(lambda: za.peers() and zb.peers())
    a, b = Node(za, 1), Node(zb, 2)
    now = time.monotonic
    alice, bob, carol = a.worker.create_endpoint(), b.worker.create_endpoint(), b.worker.create_endpoint()
    for ep, peer in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        assert ep.control(now(), Join("r", peer)) is None
    assert alice.control(now(), MessageChannelSub("chat")) is None
    assert alice.control(now(), MessageChannelStartPub("chat")) is None
    assert bob.control(now(), MessageChannelSub("chat")) is None
    assert carol.control(now(), MessageChannelSub("other")) is None
    assert b.hub.stats()["message_channels_imported"] == 2
    a.collect()
    b.collect()
    a.take(alice), b.take(bob), b.take(carol)

    def got(node: Node, ep: Endpoint) -> list[MessageChannelMessage]:
        return [ev for ev in node.take(ep) if isinstance(ev, MessageChannelMessage)]

    # B's subscription propagates to A asynchronously: publish until the first message crosses.
    def crossed() -> bool:
        assert alice.control(now(), MessageChannelPub("chat", b"hello")) is None
        b.collect(0.05)
        return bool(b.events.get(bob.session))

    wait_for(crossed)
    b.collect(0.2)
    at_bob = got(b, bob)
    assert at_bob and all((m.label, m.peer, m.data) == ("chat", "alice", b"hello") for m in at_bob)
    echoed = got(a, alice)
    assert len(echoed) >= len(at_bob) and all(m.peer == "alice" for m in echoed)
    assert got(b, carol) == [] and b.hub.messages_in == len(at_bob)
    # Bob leaves: B holds no message subscription for the label any more.
    assert bob.control(now(), Leave()) is None
    assert b.hub.imported("message") == [message_channel_id("r", "other")]  # carol's only
    a.hub.close()
    b.hub.close()
    a.registry.close()
    b.registry.close()
