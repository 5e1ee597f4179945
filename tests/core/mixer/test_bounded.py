"""Bounded mixer mode (a cluster node): a node imports at most N+1 remote audio channels per
room, chosen by the levels the other nodes report; on the virtual clock, two nodes sharing an
in-process registry and hub, each node's hub wrapper counting what it subscribes (media channels) and
the levels channels it listens to and reports on (message path)."""

from __future__ import annotations

import pytest

from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.core.channel import ChannelSubscriber, MessageSender, MessageSubscriber
from trackmesh.core.controls import CreateLocalTrack, Join, Leave, MixerConfig, MixerDetach, MixerMode
from trackmesh.core.ids import channel_id
from trackmesh.core.mixer.levels import levels_channel
from trackmesh.core.model import TrackKind
from trackmesh.core.worker import MediaWorker

from ..conftest import Harness
from .test_mixer import Listener, Room, mic


class NodeHub:
    """One node's view of the shared hub: records the channels this node subscribes (``subs``: media,
    ``msg_subs``: messages) and the message channels it holds a standing sender on (``senders``)."""

    def __init__(self, hub: LocalChannelHub) -> None:
        self._hub = hub
        self.subs: dict[int, int] = {}
        self.msg_subs: dict[int, int] = {}
        self.senders: dict[int, int] = {}
        self.start_publish = hub.start_publish
        self.feedback = hub.feedback
        self.send_message = hub.send_message

    def subscribe_messages(self, now: float, channel: int, subscriber: MessageSubscriber) -> None:
        self.msg_subs[channel] = self.msg_subs.get(channel, 0) + 1
        self._hub.subscribe_messages(now, channel, subscriber)

    def unsubscribe_messages(self, now: float, channel: int, subscriber: MessageSubscriber) -> None:
        self.msg_subs[channel] -= 1
        if not self.msg_subs[channel]:
            del self.msg_subs[channel]
        self._hub.unsubscribe_messages(now, channel, subscriber)

    def open_messages(self, now: float, channel: int, kind: str) -> MessageSender:
        assert kind == "levels"
        self.senders[channel] = self.senders.get(channel, 0) + 1
        return _Sender(self, channel, self._hub.open_messages(now, channel, kind))

    def subscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        self.subs[channel] = self.subs.get(channel, 0) + 1
        self._hub.subscribe(now, channel, subscriber)

    def unsubscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        self.subs[channel] -= 1
        if not self.subs[channel]:
            del self.subs[channel]
        self._hub.unsubscribe(now, channel, subscriber)


class _Sender:
    def __init__(self, node: NodeHub, channel: int, inner: MessageSender) -> None:
        self._node, self._channel, self._inner = node, channel, inner
        self.sent: list[bytes] = []

    def send(self, now: float, sender: str, data: bytes) -> None:
        self.sent.append(data)
        self._inner.send(now, sender, data)

    def close(self, now: float) -> None:
        self._node.senders[self._channel] -= 1
        if not self._node.senders[self._channel]:
            del self._node.senders[self._channel]
        self._inner.close(now)


class TwoNodes(Harness):
    def __init__(self) -> None:
        self.registry = LocalRegistry()
        self.hub = LocalChannelHub()
        self.hubs = [NodeHub(self.hub), NodeHub(self.hub)]
        self.workers = [
            MediaWorker(node, 0, "secret", self.registry, self.hubs[i], mixer_bound=True)
            for i, node in enumerate((1, 0))
        ]
        # worker 0 is node 1 (listeners, "B"), worker 1 is node 0 (speakers, "A")
        self.now = 100.0


SIX = {"s1": 10, "s2": 20, "s3": 30, "s4": 40, "s5": 50, "s6": 60}  # -dBov: s1 loudest


def imported(h: TwoNodes) -> set[str]:
    channels = {channel_id("r", p, "mic"): p for p in SIX}
    return {channels[c] for c in h.hubs[0].subs if c in channels}


def talk(room: Room, h: TwoNodes, levels: dict[str, int], seconds: float, seen: list[set[str]]) -> None:
    for _ in range(round(seconds / 0.1)):
        room.talk(levels, 0.1)
        seen.append(imported(h))


def test_bounded_mode_needs_the_message_path() -> None:
    class MediaOnly:  # a ChannelHub without the MessageHub half
        def __init__(self, hub: LocalChannelHub) -> None:
            self.start_publish, self.subscribe, self.unsubscribe = hub.start_publish, hub.subscribe, hub.unsubscribe
            self.feedback = hub.feedback

    hub = MediaOnly(LocalChannelHub())
    with pytest.raises(ValueError, match="MessageHub"):
        MediaWorker(1, 0, "secret", LocalRegistry(), hub, mixer_bound=True)
    MediaWorker(1, 0, "secret", LocalRegistry(), hub)  # unbounded: fine


def test_remote_node_imports_at_most_n_and_follows_loudness() -> None:
    h = TwoNodes()
    room = Room(h)
    for peer in SIX:
        room.speaker(peer, worker=1)
    lis = room.listener("bob", worker=0)
    seen: list[set[str]] = []
    talk(room, h, SIX, 2.0, seen)
    assert max(len(s) for s in seen) <= 3
    assert seen[-1] == {"s1", "s2", "s3"}
    assert set(lis.slots()) == {mic("s1"), mic("s2"), mic("s3")}
    got = {src for out in lis.got.values() for src, _ in out[-5:]}
    assert got == {mic("s1"), mic("s2"), mic("s3")}
    # The quiet ones become the loud ones: B's imports follow, its listener too.
    # (below -60 dBov the old ones no longer hold their slots, see core.mixer)
    flipped = {"s1": 100, "s2": 95, "s3": 90, "s4": 30, "s5": 20, "s6": 10}
    seen.clear()
    talk(room, h, flipped, 3.0, seen)
    assert max(len(s) for s in seen) <= 3
    assert seen[-1] == {"s6", "s5", "s4"}
    assert set(lis.slots()) == {mic("s6"), mic("s5"), mic("s4")}
    # No flapping: once settled, the imports stay put.
    seen.clear()
    talk(room, h, flipped, 1.0, seen)
    assert all(s == {"s6", "s5", "s4"} for s in seen)
    # The listener leaves: B imports nothing more.
    assert lis.ep.control(h.now, Leave()) is None
    room.talk(flipped, 0.3)
    assert imported(h) == set()


def levels_subs(h: TwoNodes) -> int:
    """Levels channels node B subscribes (on the message path; never as a media channel)."""
    assert levels_channel("r", 0, 0) not in h.hubs[0].subs
    return sum(1 for c in h.hubs[0].msg_subs if c == levels_channel("r", 0, 0))


def test_manual_listeners_import_the_top_n_of_their_own_choice_the_node_the_union() -> None:
    h = TwoNodes()
    room = Room(h)
    for peer in SIX:
        room.speaker(peer, worker=1)
    # bob (3 slots) chose all six remote voices: at most 3 of them are imported, the loudest.
    bob = room.listener("bob", worker=0, mode=MixerMode.MANUAL, sources=tuple(mic(p) for p in SIX))
    seen: list[set[str]] = []
    talk(room, h, SIX, 2.0, seen)
    assert max(len(s) for s in seen) <= 3
    assert seen[-1] == {"s1", "s2", "s3"}
    assert set(bob.slots()) == {mic("s1"), mic("s2"), mic("s3")}
    assert levels_subs(h) == 1
    # carol chose two quiet ones: she hears them, the node imports the union (3 + 2).
    carol = room.listener("carol", worker=0, mode=MixerMode.MANUAL, sources=(mic("s5"), mic("s6")))
    seen.clear()
    talk(room, h, SIX, 1.0, seen)
    assert max(len(s) for s in seen) <= 3 + 2
    assert seen[-1] == {"s1", "s2", "s3", "s5", "s6"}
    assert set(carol.slots()) == {mic("s5"), mic("s6"), None}
    # bob drops s1: his third import moves to the next loudest of his choice.
    assert bob.ep.control(h.now, MixerDetach((mic("s1"),))) is None
    talk(room, h, SIX, 1.0, seen)
    assert imported(h) == {"s2", "s3", "s4", "s5", "s6"}
    # The freed slot went at once to s5, heard already (imported for carol); s4, imported for bob only now and
    # 10 levels louder, does not take it over: a slot holder is replaced only by 30 levels (the slots' margin).
    assert set(bob.slots()) == {mic("s2"), mic("s3"), mic("s5")}
    stage = bob.ep.mixer_stage
    assert stage is not None and stage.imported == 5
    # Both leave: nothing imported, no levels channel subscribed.
    for lis in (bob, carol):
        assert lis.ep.control(h.now, Leave()) is None
    room.talk(SIX, 0.3)
    assert imported(h) == set() and levels_subs(h) == 0


def test_a_manual_choice_of_two_remote_sources_imports_just_those() -> None:
    h = TwoNodes()
    room = Room(h)
    for peer in SIX:
        room.speaker(peer, worker=1)
    room.listener("bob", worker=0, mode=MixerMode.MANUAL, sources=(mic("s6"), mic("nobody")))
    seen: list[set[str]] = []
    talk(room, h, SIX, 1.0, seen)
    assert all(s <= {"s6"} for s in seen) and seen[-1] == {"s6"}


def test_levels_channel_lives_while_the_worker_has_audio_in_the_room() -> None:
    h = TwoNodes()
    room = Room(h)
    mine = levels_channel("r", 0, 0)  # node 0 ("A"), worker 0
    assert mine not in h.hubs[1].senders
    room.speaker("s1", worker=1)
    assert h.hubs[1].senders == {mine: 1}
    room.listener("bob", worker=0)
    room.talk({"s1": 10}, 0.5)
    assert imported(h) == {"s1"} and levels_subs(h) == 1
    stage = h.workers[0].rooms.rooms["r"].stage
    assert stage is not None and stage.bad_levels == 0
    assert room.speakers["s1"].control(h.now, Leave()) is None
    room.talk({}, 0.3)
    assert imported(h) == set() and levels_subs(h) == 0
    assert h.hubs[1].senders == {} and mine not in h.hub._channels and len(h.hub) == 0


def test_the_bound_follows_the_largest_listener_down_at_once() -> None:
    h = TwoNodes()
    room = Room(h)
    for peer in SIX:
        room.speaker(peer, worker=1)
    small = room.listener("bob", worker=0)  # 3 slots
    big = Listener(h.workers[0].create_endpoint())
    assert big.ep.control(h.now, Join("r", "carol")) is None
    outs = tuple(f"o{i}" for i in range(5))
    for name in outs:
        assert big.ep.control(h.now, CreateLocalTrack(name, TrackKind.AUDIO)) is None
    assert big.ep.control(h.now, MixerConfig(MixerMode.AUTO, outs, ())) is None
    seen: list[set[str]] = []
    talk(room, h, SIX, 2.0, seen)
    assert max(len(s) for s in seen) <= 5 and seen[-1] == set(SIX) - {"s6"}
    # The five-slot listener leaves: the very next tick imports at most 3 again.
    assert big.ep.control(h.now, Leave()) is None
    room.talk(SIX, 0.1)
    assert imported(h) == {"s1", "s2", "s3"}
    assert set(small.slots()) == {mic("s1"), mic("s2"), mic("s3")}


def test_a_listener_whose_own_voice_is_remote_gets_one_more_import() -> None:
    """Mix-minus across nodes: "s1" speaks on node A and listens on node B. It never hears itself, so its top 3 reach
    down to the 4th loudest remote voice: B imports N+1 = 4 while that holds, and 3 again once s1 stops listening."""
    h = TwoNodes()
    room = Room(h)
    for peer in SIX:
        room.speaker(peer, worker=1)
    lis = room.listener("s1", worker=0)
    seen: list[set[str]] = []
    talk(room, h, SIX, 2.0, seen)
    assert max(len(s) for s in seen) <= 4
    assert seen[-1] == {"s1", "s2", "s3", "s4"}
    assert set(lis.slots()) == {mic("s2"), mic("s3"), mic("s4")}
    assert lis.ep.control(h.now, Leave()) is None
    bob = room.listener("bob", worker=0)
    seen.clear()
    talk(room, h, SIX, 1.0, seen)
    assert seen[-1] == {"s1", "s2", "s3"} and set(bob.slots()) == {mic("s1"), mic("s2"), mic("s3")}
