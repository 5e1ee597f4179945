"""ZenohChannelHub across real zenoh sessions on 127.0.0.1 (private netns only)."""

from __future__ import annotations

import time

from trackmesh.cluster.zenoh_channels import CH_ROOT, ZenohChannelHub
from trackmesh.cluster.zenoh_registry import ZenohRegistry
from trackmesh.cluster.zenoh_session import ZenohNode
from trackmesh.core.channel import Feedback, FeedbackKind
from trackmesh.core.model import MediaCodec, MediaPacket

from .conftest import Pump, wait_for

CH = 0xDEADBEEF12345678


def pkt(seq: int) -> MediaPacket:
    return MediaPacket(MediaCodec.VP8, 96, seq, seq * 3000, seq % 3 == 0, seq == 0, b"p" * 100, layers=(1, 2))


class Sub:
    def __init__(self) -> None:
        self.pkts: list[MediaPacket] = []
        self.live: list[bool] = []

    def on_channel_packet(self, channel: int, p: MediaPacket) -> None:
        self.pkts.append(p)

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        self.live.append(live)


class Pub:
    def __init__(self) -> None:
        self.fb: list[Feedback] = []

    def on_channel_feedback(self, now: float, channel: int, fb: Feedback) -> None:
        self.fb.append(fb)


def linked(*ns) -> None:  # type: ignore[no-untyped-def]
    wait_for(lambda: all(len(n.peers()) >= len(ns) - 1 for n in ns))


def hubs(*ns: ZenohNode) -> list[tuple[ZenohChannelHub, Pump]]:
    out = []
    for n in ns:
        pump = Pump()
        out.append((ZenohChannelHub(n.session, pump, time.monotonic), pump))
    return out


def test_media_crosses_once_for_two_viewers_feedback_returns_unsubscribe_undeclares(nodes) -> None:  # type: ignore[no-untyped-def]
    a = nodes()
    b = nodes(seeds=a.config.listen)
    linked(a, b)
    (ha, pa), (hb, pb) = hubs(a, b)
    pub = Pub()
    handle = ha.start_publish(0.0, CH, pub)
    local_viewer = Sub()
    ha.subscribe(0.0, CH, local_viewer)  # same node: served in process, live at once
    assert local_viewer.live == [True]
    s1, s2 = Sub(), Sub()
    hb.subscribe(0.0, CH, s1)
    hb.subscribe(0.0, CH, s2)
    assert hb.imported() == [CH]
    pb.until(lambda: s1.live == [True] and s2.live == [True])
    export = ha._exports[CH]
    wait_for(lambda: export.interest)
    for seq in range(50):
        handle.send(pkt(seq))
    pb.until(lambda: len(s1.pkts) == 50 and len(s2.pkts) == 50)
    # One copy crossed per packet, however many viewers B has; both got the same object.
    assert ha.packets_out == 50 and hb.packets_in == 50
    assert [p.seq for p in s1.pkts] == list(range(50))
    assert all(x is y for x, y in zip(s1.pkts, s2.pkts, strict=True))
    assert s1.pkts[3] == pkt(3)
    assert len(local_viewer.pkts) == 50
    # Feedback from B's viewers reaches the publisher on A.
    hb.feedback(1.0, CH, Feedback(FeedbackKind.KEYFRAME, 1 << 70))
    hb.feedback(1.0, CH, Feedback(FeedbackKind.BITRATE, 5, 300_000))
    pa.until(lambda: len(pub.fb) == 2)
    assert pub.fb == [Feedback(FeedbackKind.KEYFRAME, 1 << 70), Feedback(FeedbackKind.BITRATE, 5, 300_000)]
    assert hb.feedback_out == 2 and ha.feedback_in == 2
    # The publisher stops: B's viewers see the source go silent.
    handle.stop(2.0)
    pb.until(lambda: s1.live == [True, False] and s2.live == [True, False])
    assert local_viewer.live == [True, False]
    assert ha.exported() == []
    # It publishes again: live again.
    handle = ha.start_publish(3.0, CH, pub)
    pb.until(lambda: s1.live[-1] is True and s2.live[-1] is True)
    # The last viewer leaving B undeclares B's subscription: A stops serializing.
    hb.unsubscribe(4.0, CH, s1)
    assert hb.imported() == [CH]
    hb.unsubscribe(4.0, CH, s2)
    assert hb.imported() == []
    export = ha._exports[CH]
    wait_for(lambda: not export.interest)
    out = ha.packets_out
    for seq in range(100, 110):
        handle.send(pkt(seq))
    pb.drain(0.2)
    assert ha.packets_out == out
    assert len(s1.pkts) == len(s2.pkts) == 50
    assert len(local_viewer.pkts) == 60
    ha.close()
    hb.close()


def test_subscribe_before_publish_three_nodes_and_publisher_node_death(nodes) -> None:  # type: ignore[no-untyped-def]
    a = nodes()
    b = nodes(seeds=a.config.listen)
    c = nodes(seeds=[*a.config.listen, *b.config.listen])
    linked(a, b, c)
    (ha, _pa), (hb, pb), (hc, pc) = hubs(a, b, c)
    sb, sc = Sub(), Sub()
    hb.subscribe(0.0, CH, sb)
    hc.subscribe(0.0, CH, sc)
    pb.drain(0.2)
    assert sb.live == []  # nobody publishes yet
    handle = ha.start_publish(0.0, CH, Pub())
    pb.until(lambda: sb.live == [True])
    pc.until(lambda: sc.live == [True])
    wait_for(lambda: ha._exports[CH].interest)
    # Matching status turns true on the first remote subscriber; wait until both are declared.
    time.sleep(0.2)
    for seq in range(20):
        handle.send(pkt(seq))
    pb.until(lambda: len(sb.pkts) == 20)
    pc.until(lambda: len(sc.pkts) == 20)
    assert ha.packets_out == 20  # one put reaches both nodes
    # A's session dies without any undeclare: its liveliness token goes, viewers see silence.
    a.session.close()
    pb.until(lambda: sb.live == [True, False], timeout=3.0)
    pc.until(lambda: sc.live == [True, False], timeout=3.0)


def test_local_publisher_wins_over_a_remote_one_and_malformed_media_is_counted(nodes) -> None:  # type: ignore[no-untyped-def]
    a = nodes()
    b = nodes(seeds=a.config.listen)
    linked(a, b)
    (ha, _pa), (hb, pb) = hubs(a, b)
    sb = Sub()
    hb.subscribe(0.0, CH, sb)
    ha_handle = ha.start_publish(0.0, CH, Pub())
    pb.until(lambda: sb.live == [True])
    # B starts publishing too: its own viewer switches to the local publisher, without a gap.
    hb_handle = hb.start_publish(1.0, CH, Pub())
    assert sb.live == [True]
    hb_handle.send(pkt(1))
    assert [p.seq for p in sb.pkts] == [1]
    wait_for(lambda: ha._exports[CH].interest)
    ha_handle.send(pkt(2))
    pb.until(lambda: hb.dropped_no_source == 1)
    assert [p.seq for p in sb.pkts] == [1]
    # B's publisher stops: A still publishes, so B's viewer is back on the remote one.
    hb_handle.stop(2.0)
    assert sb.live == [True, False, True]
    ha_handle.send(pkt(3))
    pb.until(lambda: [p.seq for p in sb.pkts] == [1, 3])
    # Garbage on the channel's key is dropped and counted.
    a.session.put(f"{CH_ROOT}{CH}", b"\x07garbage")
    pb.until(lambda: hb.bad_packets == 1)
    assert len(sb.pkts) == 2
    # A loop that falls too far behind drops remote packets (counted) instead of queueing forever.
    hb.inbox_limit = 0
    ha_handle.send(pkt(4))
    wait_for(lambda: hb.inbox_dropped == 1)
    pb.drain(0.1)
    assert len(sb.pkts) == 2


def test_wrong_secret_node_receives_nothing_and_reaches_nobody(nodes) -> None:  # type: ignore[no-untyped-def]
    a = nodes()
    b = nodes(seeds=a.config.listen)
    evil = nodes(seeds=[*a.config.listen, *b.config.listen], secret="not-the-cluster-secret")
    linked(a, b)
    time.sleep(1.0)  # give the intruder every chance to connect
    assert evil.peers() == []
    assert evil.zid not in a.peers() + b.peers()
    (ha, _pa), (hb, pb), (he, pe) = hubs(a, b, evil)
    ra, re = ZenohRegistry(a.session, Pump(), time.monotonic), ZenohRegistry(evil.session, pe, time.monotonic)
    # Media and registry entries of the cluster do not reach the intruder...
    se = Sub()
    he.subscribe(0.0, CH, se)
    handle = ha.start_publish(0.0, CH, Pub())
    ra.put(0.0, "r/x/p/a/1", b"secret room")
    seen: list[str] = []

    class W:
        def on_registry_put(self, now: float, key: str, value: bytes) -> None:
            seen.append(key)

        def on_registry_delete(self, now: float, key: str) -> None:
            seen.append(key)

    re.watch(0.0, "r/x/", W())
    for seq in range(10):
        handle.send(pkt(seq))
    # ...and the intruder's puts, media and feedback do not reach the cluster.
    sb, seen_b = Sub(), []
    hb.subscribe(0.0, CH + 1, sb)
    rb = ZenohRegistry(b.session, pb, time.monotonic)

    class WB:
        def on_registry_put(self, now: float, key: str, value: bytes) -> None:
            seen_b.append(key)

        def on_registry_delete(self, now: float, key: str) -> None:
            seen_b.append(key)

    rb.watch(0.0, "r/evil/", WB())
    evil_handle = he.start_publish(0.0, CH + 1, Pub())
    re.put(0.0, "r/evil/p/mallory/1", b"let me in")
    evil_handle.send(pkt(1))
    he.feedback(0.0, CH, Feedback(FeedbackKind.KEYFRAME, 9))
    pe.drain(1.0)
    pb.drain(0.5)
    assert se.live == [] and se.pkts == [] and seen == []
    assert sb.live == [] and sb.pkts == [] and seen_b == []
    assert ha.packets_out == 0  # nobody outside A subscribed
    assert ha.feedback_in == 0


class MsgSub:
    def __init__(self, kind: str | None = None) -> None:
        self.got: list[tuple[float, int, str, bytes]] = []
        if kind is not None:
            self.channel_kind = kind

    def on_channel_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        self.got.append((now, channel, sender, data))


def test_messages_cross_once_per_node_standing_senders_are_counted_garbage_is_dropped(nodes) -> None:  # type: ignore[no-untyped-def]
    a = nodes()
    b = nodes(seeds=a.config.listen)
    linked(a, b)
    (ha, _), (hb, pb) = hubs(a, b)
    mine, theirs, levels = MsgSub(), MsgSub(), MsgSub("levels")
    ha.subscribe_messages(0.0, CH, mine)
    hb.subscribe_messages(0.0, CH, theirs)
    hb.subscribe_messages(0.0, CH + 1, levels)
    assert hb.imported("message") == [CH] and hb.imported("levels") == [CH + 1]
    st = hb.stats()
    assert (st["message_channels_imported"], st["levels_channels_imported"], st["channels_imported"]) == (1, 1, 0)
    # A one-off message: A's own subscriber in process (once, not echoed back by zenoh), B's over zenoh.
    probe = ha.open_messages(0.5, CH, "message")  # B's subscription is known on A once a sender matches it
    wait_for(lambda: ha._msg_exports[CH].interest)
    probe.close(0.5)
    assert ha.exported("message") == []
    ha.send_message(1.0, CH, "alice", b"hi")
    pb.until(lambda: len(theirs.got) == 1)
    assert mine.got == [(1.0, CH, "alice", b"hi")]
    assert theirs.got[0][1:] == (CH, "alice", b"hi") and hb.messages_in == 1
    # A standing sender (the mixer's levels): counted as exported while open, serialized only while B listens.
    sender = ha.open_messages(2.0, CH + 1, "levels")
    assert ha.exported("levels") == [CH + 1] and ha.stats()["levels_channels_exported"] == 1
    export = ha._msg_exports[CH + 1]
    wait_for(lambda: export.interest)
    for i in range(5):
        sender.send(3.0, "1.0", bytes([i]))
    pb.until(lambda: len(levels.got) == 5)
    assert [d for *_, d in levels.got] == [bytes([i]) for i in range(5)]
    hb.unsubscribe_messages(4.0, CH + 1, levels)
    assert hb.imported("levels") == []
    wait_for(lambda: not export.interest)
    out = ha.messages_out
    sender.send(5.0, "1.0", b"x")
    assert ha.messages_out == out  # nobody listens on another node: nothing serialized
    sender.close(5.0)
    sender.close(5.0)  # idempotent
    assert ha.exported("levels") == [] and ha.stats()["levels_channels_exported"] == 0
    # Garbage on the wire is dropped and counted on the receiving node.
    a.session.put(f"tm/msg/{CH}", b"\x07")
    pb.until(lambda: hb.bad_messages == 1)
    assert len(theirs.got) == 1
    hb.unsubscribe_messages(6.0, CH, theirs)
    assert hb.imported("message") == []
    ha.close()
    hb.close()
