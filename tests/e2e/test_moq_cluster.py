"""MoQ across the cluster (docs/moq.md "Across the cluster"): two `trackmesh media` processes
joined by zenoh in the loopback netns, shared by the tests of this module.

- The relay: a MoQ publisher (our draft-16 session over aioquic) on node A, two MoQ subscribers
  (draft-16, raw QUIC) on node B. Both receive every object, and node A sends each object once
  into the cluster.
- Rooms: a GStreamer WHIP publisher in a room on node A, watched over MoQ on node B (the room
  bridge of node B taps the track's cluster channel, as a WHEP viewer on node B would).
- Namespaces: a SUBSCRIBE_NAMESPACE on node B hears of a namespace published on node A, and a
  publisher-initiated track (PUBLISH) on node A is subscribed on node B, and offered (PUBLISH) to
  a SUBSCRIBE_NAMESPACE with the PUBLISH option on node B."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aioquic.asyncio.client import connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived

from tests.cluster.test_roles import Cluster, Member, http, running_cluster
from tests.e2e.test_moq_interop import free_udp_port
from tests.e2e.test_moq_rooms import Publisher, Subscriber, is_vp8_key
from tests.e2e.test_whip_whep import Background
from trackmesh.transports.moq import codec16
from trackmesh.transports.moq import messages as m

pytestmark = pytest.mark.e2e

NS = (b"moq-test", b"cluster")
GROUPS, PER_GROUP = 6, 5


@pytest.fixture(scope="module")
def cluster(netns_guard: None) -> Iterator[tuple[Cluster, Member, Member, int, int]]:
    with running_cluster() as c:
        port_a, port_b = free_udp_port(), free_udp_port()
        a = c.media(1, 10, "--moq-port", str(port_a), "--moq-anonymous")
        b = c.media(1, 11, "--moq-port", str(port_b), "--moq-anonymous")
        yield c, a, b, port_a, port_b


def moq_metrics(member: Member) -> dict[str, float]:
    status, _, body = http("GET", member.base + "/metrics")
    assert status == 200, body
    pattern = r'^trackmesh_moq\{what="([a-z_]+)"\} (\S+)$'
    return {x.group(1): float(x.group(2)) for x in re.finditer(pattern, body.decode(), re.M)}


def wait_metric(member: Member, name: str, at_least: float, timeout: float = 10) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        metrics = moq_metrics(member)
        if metrics.get(name, 0) >= at_least or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


async def relay_across(port_a: int, port_b: int, b: Member) -> dict[str, Any]:
    config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], verify_mode=ssl.CERT_NONE)
    setup = m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 10})
    async with connect("127.0.0.1", port_a, configuration=config, create_protocol=Publisher) as c:
        pub: Publisher = c  # type: ignore[assignment]
        pub.send(setup)
        await pub.wait_for(lambda: pub.messages, 5)
        pub.send(m.PublishNamespace(0, NS))
        await pub.wait_for(lambda: len(pub.messages) >= 2, 5)
        assert isinstance(pub.messages[1], m.RequestOk), pub.messages
        # Node B learns of the namespace through the cluster registry.
        seen = await asyncio.to_thread(wait_metric, b, "cluster_namespaces_remote", 1)
        assert seen.get("cluster_namespaces_remote") == 1, seen
        async with (
            connect("127.0.0.1", port_b, configuration=config, create_protocol=Subscriber) as c1,
            connect("127.0.0.1", port_b, configuration=config, create_protocol=Subscriber) as c2,
        ):
            viewers: list[Subscriber] = [c1, c2]  # type: ignore[list-item]
            for viewer in viewers:
                viewer.send(setup)
                await viewer.wait_for(lambda v=viewer: v.messages, 5)
                viewer.send(m.Subscribe(0, NS, b"video", {m.PARAM_FORWARD: 1}))
                viewer.send(m.Subscribe(2, NS, b"missing", {m.PARAM_FORWARD: 1}))

            def subscribes() -> list[m.Subscribe]:
                return [x for x in pub.messages if isinstance(x, m.Subscribe)]

            await pub.wait_for(lambda: {s.name for s in subscribes()} >= {b"video", b"missing"}, 5)
            for sub in subscribes():
                if sub.name == b"video":
                    pub.send(m.SubscribeOk(sub.request_id, 1, {m.PARAM_EXPIRES: 0}))
                else:
                    pub.send(m.RequestError(sub.request_id, 0x10, 0, b"no such track"))
            for viewer in viewers:
                await viewer.wait_for(lambda v=viewer: v.reply(0) and v.reply(2), 5)
                assert isinstance(viewer.reply(0), m.SubscribeOk), viewer.messages
                missing = viewer.reply(2)
                assert isinstance(missing, m.RequestError) and missing.error_code == 0x10, viewer.messages
            sent = []
            for group in range(GROUPS):
                objects: list[tuple[bytes, bytes | None]] = [
                    (f"g{group}o{o}".encode() * 50, None) for o in range(PER_GROUP)
                ]
                pub.send_group(1, group, objects)
                pub.end_stream()
                sent += [(group, o, p) for o, (p, _) in enumerate(objects)]
                await asyncio.sleep(0.02)
            for viewer in viewers:
                await viewer.wait_for(lambda v=viewer: len(v.objects) >= len(sent), 5)
            got = [[(g, o, p) for _, g, o, p, _ in viewer.objects] for viewer in viewers]
            b_during = await asyncio.to_thread(moq_metrics, b)
        # The subscribers left: node B withdraws its interest, node A unsubscribes upstream.
        await pub.wait_for(lambda: any(isinstance(x, m.Unsubscribe) for x in pub.messages), 5)
        unsubscribed = any(isinstance(x, m.Unsubscribe) for x in pub.messages)
    return {"sent": sent, "got": got, "b_during": b_during, "unsubscribed": unsubscribed}


def test_a_moq_publisher_on_a_is_watched_on_b_with_one_copy_crossing(
    cluster: tuple[Cluster, Member, Member, int, int],
) -> None:
    _, a, b, port_a, port_b = cluster
    t0 = time.monotonic()
    result = asyncio.run(relay_across(port_a, port_b, b))
    elapsed = time.monotonic() - t0
    a_after, b_after = moq_metrics(a), moq_metrics(b)
    info_a = a.info()["workers"][0]["cluster"]
    print("moq cluster:", json.dumps({"elapsed_s": round(elapsed, 2), "a": a_after, "b": b_after, "hub_a": info_a}))
    sent = result["sent"]
    assert result["got"] == [sent, sent], result["got"]
    # One copy crossed: A sent each object once into the cluster, for two subscribers on B.
    assert a_after["cluster_objects_out_total"] == len(sent), a_after
    assert b_after["cluster_objects_in_total"] == len(sent), b_after
    assert a_after["objects_in_total"] == len(sent) and b_after["objects_out_total"] == 2 * len(sent)
    assert result["b_during"]["cluster_tracks_imported"] == 1, result["b_during"]
    # On the zenoh level too: node A put each object once (plus the answers OK and REFUSED).
    assert len(sent) <= info_a["messages_out"] <= len(sent) + 2, info_a
    assert info_a.get("moq_channels_exported", 0) == 0  # the subscribers left: the export ended
    assert result["unsubscribed"], "node A never unsubscribed from the publisher"
    assert b_after["cluster_tracks_imported"] == 0 and a_after["cluster_tracks_exported"] == 0


class NamespaceWatcher(Subscriber):
    """A draft-16 subscriber with one SUBSCRIBE_NAMESPACE on its own bidi stream (draft-16 s9.28)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ns_stream = -1
        self.ns_buf = bytearray()
        self.ns_messages: list[m.ControlMessage] = []

    def subscribe_namespace(
        self, request_id: int, prefix: m.TrackNamespace, options: int = m.NAMESPACE_OPTION_NAMESPACE
    ) -> None:
        self.ns_stream = self._quic.get_next_available_stream_id()
        msg = m.SubscribeNamespace(request_id, prefix, options)
        self._quic.send_stream_data(self.ns_stream, codec16.encode_message(msg))
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id == self.ns_stream:
            self.ns_buf += event.data
            while (split := codec16.split_message(self.ns_buf)) is not None:
                kind, payload, used = split
                self.ns_messages.append(codec16.decode_message(kind, payload))
                del self.ns_buf[:used]
            self.arrived.set()
            return
        super().quic_event_received(event)


async def announce_across(port_a: int, port_b: int) -> dict[str, Any]:
    """SUBSCRIBE_NAMESPACE on node B hears of a namespace published on node A (and of its end),
    and a SUBSCRIBE to the announced namespace reaches the publisher on A."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], verify_mode=ssl.CERT_NONE)
    setup = m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 10})
    ns = (b"moq-ns", b"announced")
    async with (
        connect("127.0.0.1", port_b, configuration=config, create_protocol=NamespaceWatcher) as cw,
        connect("127.0.0.1", port_a, configuration=config, create_protocol=Publisher) as cp,
    ):
        watcher: NamespaceWatcher = cw  # type: ignore[assignment]
        pub: Publisher = cp  # type: ignore[assignment]
        for session in (watcher, pub):
            session.send(setup)
        await watcher.wait_for(lambda: watcher.messages, 5)
        watcher.subscribe_namespace(0, (b"moq-ns",))
        await watcher.wait_for(lambda: watcher.ns_messages, 5)
        answer = list(watcher.ns_messages)
        await pub.wait_for(lambda: pub.messages, 5)
        pub.send(m.PublishNamespace(0, ns))

        def said(kind: type) -> list[Any]:
            return [x for x in watcher.ns_messages if isinstance(x, kind)]

        # Through the cluster registry: generous, a loaded box may take a while.
        await watcher.wait_for(lambda: said(m.Namespace), 15)
        announced = said(m.Namespace)
        watcher.send(m.Subscribe(2, ns, b"video", {m.PARAM_FORWARD: 1}))
        await pub.wait_for(lambda: any(isinstance(x, m.Subscribe) for x in pub.messages), 10)
        sub = next((x for x in pub.messages if isinstance(x, m.Subscribe)), None)
        assert sub is not None and sub.namespace == ns, pub.messages
        pub.send(m.SubscribeOk(sub.request_id, 1, {m.PARAM_EXPIRES: 0}))
        await watcher.wait_for(lambda: watcher.reply(2), 10)
        pub.send_group(1, 0, [(b"key frame", None)])
        await watcher.wait_for(lambda: watcher.objects, 10)
        objects = [(g, o, p) for _, g, o, p, _ in watcher.objects]
        pub.send(m.PublishNamespaceDone(0))
        await watcher.wait_for(lambda: said(m.NamespaceDone), 15)
        return {"answer": answer, "announced": announced, "done": said(m.NamespaceDone), "objects": objects}


def test_subscribe_namespace_on_b_hears_of_a_namespace_published_on_a(
    cluster: tuple[Cluster, Member, Member, int, int],
) -> None:
    _, _, _, port_a, port_b = cluster
    got = asyncio.run(announce_across(port_a, port_b))
    print("namespace across:", got)
    assert got["answer"] == [m.RequestOk(0)], got
    assert got["announced"] == [m.Namespace((b"announced",))], got
    assert got["objects"] == [(0, 0, b"key frame")], got
    assert got["done"] == [m.NamespaceDone((b"announced",))], got


async def publish_across(port_a: int, port_b: int, b: Member) -> dict[str, Any]:
    """A publisher-initiated track (PUBLISH, no PUBLISH_NAMESPACE) on node A, subscribed on node B."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], verify_mode=ssl.CERT_NONE)
    setup = m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 10})
    ns = (b"moq-pub", b"initiated")
    remote_before = (await asyncio.to_thread(moq_metrics, b)).get("cluster_namespaces_remote", 0)
    async with (
        connect("127.0.0.1", port_a, configuration=config, create_protocol=Publisher) as cp,
        connect("127.0.0.1", port_b, configuration=config, create_protocol=Subscriber) as cv,
    ):
        pub: Publisher = cp  # type: ignore[assignment]
        viewer: Subscriber = cv  # type: ignore[assignment]
        for session in (pub, viewer):
            session.send(setup)
        await pub.wait_for(lambda: pub.messages, 5)
        pub.send(m.Publish(0, ns, b"video", 3))
        await pub.wait_for(lambda: any(isinstance(x, m.PublishOk) for x in pub.messages), 5)
        seen = await asyncio.to_thread(wait_metric, b, "cluster_namespaces_remote", remote_before + 1, 15)
        await viewer.wait_for(lambda: viewer.messages, 5)
        viewer.send(m.Subscribe(0, ns, b"video", {m.PARAM_FORWARD: 1}))
        await viewer.wait_for(lambda: viewer.reply(0), 10)
        reply = viewer.reply(0)
        pub.send_group(3, 0, [(b"key frame", None), (b"delta", None)])
        await viewer.wait_for(lambda: len(viewer.objects) >= 2, 10)
        return {"seen": seen, "reply": reply, "objects": [(g, o, p) for _, g, o, p, _ in viewer.objects]}


def test_a_publisher_initiated_track_on_a_is_watched_on_b(
    cluster: tuple[Cluster, Member, Member, int, int],
) -> None:
    _, _, b, port_a, port_b = cluster
    got = asyncio.run(publish_across(port_a, port_b, b))
    print("publish across:", got)
    assert isinstance(got["reply"], m.SubscribeOk), got
    assert got["objects"] == [(0, 0, b"key frame"), (0, 1, b"delta")], got


async def offer_across(port_a: int, port_b: int, b: Member) -> dict[str, Any]:
    """SUBSCRIBE_NAMESPACE with the PUBLISH option on node B, then a PUBLISH on node A: node B
    offers the track to the watcher by a PUBLISH, and its objects follow the watcher's PUBLISH_OK."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], verify_mode=ssl.CERT_NONE)
    setup = m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 10})
    ns = (b"moq-offer", b"live")
    async with (
        connect("127.0.0.1", port_b, configuration=config, create_protocol=NamespaceWatcher) as cw,
        connect("127.0.0.1", port_a, configuration=config, create_protocol=Publisher) as cp,
    ):
        watcher: NamespaceWatcher = cw  # type: ignore[assignment]
        pub: Publisher = cp  # type: ignore[assignment]
        for session in (watcher, pub):
            session.send(setup)
        await watcher.wait_for(lambda: watcher.messages, 5)
        watcher.subscribe_namespace(0, (b"moq-offer",), m.NAMESPACE_OPTION_BOTH)
        await watcher.wait_for(lambda: watcher.ns_messages, 5)
        await pub.wait_for(lambda: pub.messages, 5)
        pub.send(m.Publish(0, ns, b"video", 3))

        def offers() -> list[m.Publish]:
            return [x for x in watcher.messages if isinstance(x, m.Publish)]

        # Through the cluster registry and node A's answer on the track's channel: generous.
        await watcher.wait_for(offers, 15)
        assert offers(), (watcher.messages, watcher.ns_messages)
        offer = offers()[0]
        watcher.send(m.PublishOk(offer.request_id, {m.PARAM_FORWARD: 1}))
        # A group at a time until objects arrive: those before the PUBLISH_OK reached node B's
        # cache may or may not be replayed, and the accept crosses QUIC in its own time.
        group = 0
        deadline = time.monotonic() + 15
        while not watcher.objects and time.monotonic() < deadline:
            pub.send_group(3, group, [(b"key %d" % group, None), (b"delta %d" % group, None)])
            pub.end_stream()
            group += 1
            await watcher.wait_for(lambda: watcher.objects, 0.2)

        def whole_group() -> bool:  # streams interleave: wait for both objects of one group
            groups = [g for _, g, _, _, _ in watcher.objects]
            return any(groups.count(g) >= 2 for g in groups)

        await watcher.wait_for(whole_group, 5)
        metrics = await asyncio.to_thread(moq_metrics, b)
        return {
            "offer": offer,
            "namespaces": [x for x in watcher.ns_messages if isinstance(x, m.Namespace)],
            "objects": [(alias, g, o, p) for alias, g, o, p, _ in watcher.objects],
            "b": metrics,
        }


def test_a_track_published_on_a_is_offered_to_a_namespace_subscriber_on_b(
    cluster: tuple[Cluster, Member, Member, int, int],
) -> None:
    _, _, b, port_a, port_b = cluster
    got = asyncio.run(offer_across(port_a, port_b, b))
    print("offer across:", {k: v for k, v in got.items() if k != "b"})
    offer = got["offer"]
    assert (offer.namespace, offer.name) == ((b"moq-offer", b"live"), b"video"), offer
    assert got["namespaces"] == [m.Namespace((b"live",))], got
    objects = got["objects"]
    assert objects and all(alias == offer.track_alias for alias, _, _, _ in objects), objects
    by_group: dict[int, list[tuple[int, bytes]]] = {}
    for _, g, o, p in objects:
        by_group.setdefault(g, []).append((o, p))
    for g, got_objects in by_group.items():  # each group as sent, from its first object on
        assert got_objects == [(0, b"key %d" % g), (1, b"delta %d" % g)][: len(got_objects)], by_group
    assert any(len(x) == 2 for x in by_group.values()), by_group
    assert got["b"]["cluster_tracks_opened_total"] >= 1, got["b"]


async def watch_room(port: int, room: str, objects_wanted: int, node: Member) -> dict[str, Any]:
    """A MoQ subscriber of the room's catalog, then of ``pub/video_main`` once the catalog lists it."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], verify_mode=ssl.CERT_NONE)
    ns = (b"trackmesh", room.encode())
    async with connect("127.0.0.1", port, configuration=config, create_protocol=Subscriber) as c:
        viewer: Subscriber = c  # type: ignore[assignment]
        viewer.send(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 10}))
        await viewer.wait_for(lambda: viewer.messages, 5)
        viewer.send(m.Subscribe(0, ns, b"catalog", {m.PARAM_FORWARD: 1}))
        await viewer.wait_for(lambda: viewer.reply(0), 5)
        catalog_ok = viewer.reply(0)
        assert isinstance(catalog_ok, m.SubscribeOk), viewer.messages

        def catalogs() -> list[bytes]:
            return [p for alias, _, _, p, _ in viewer.objects if alias == catalog_ok.track_alias]

        await viewer.wait_for(lambda: any(b'"pub/video_main"' in x for x in catalogs()), 15)
        viewer.send(m.Subscribe(2, ns, b"pub/video_main", {m.PARAM_FORWARD: 1}))
        await viewer.wait_for(lambda: viewer.reply(2), 5)
        video_ok = viewer.reply(2)
        assert isinstance(video_ok, m.SubscribeOk), (viewer.messages, catalogs())

        def video() -> list[tuple[int, int, bytes]]:
            return [(g, o, p) for alias, g, o, p, _ in viewer.objects if alias == video_ok.track_alias]

        await viewer.wait_for(lambda: len(video()) >= objects_wanted, 10)
        info = await asyncio.to_thread(node.info)  # while watching: the track's channel is imported
        return {"video": video(), "catalogs": catalogs(), "cluster": info["workers"][0]["cluster"]}


def test_a_whip_publisher_on_a_is_watched_over_moq_on_b(
    cluster: tuple[Cluster, Member, Member, int, int], gst_client: Any
) -> None:
    c, a, b, _, port_b = cluster
    room = "moqcluster"
    publisher = Background(
        gst_client, "whip", a.base + "/whip/endpoint", "--token", c.token(a.base, "whip", room, "pub"),
        "--codec", "vp8", "--duration", "4",
    )  # fmt: skip
    try:
        got = asyncio.run(watch_room(port_b, room, 20, b))
        info_b = got["cluster"]
    finally:
        rc, summary, err = publisher.join()
    assert rc == 0, (summary, err[-1500:])
    video = got["video"]
    print("room over moq on node B:", len(video), "objects, groups", sorted({g for g, _, _ in video}))
    assert len(video) >= 20, (len(video), a.log(), b.log())
    assert video[0][1] == 0 and is_vp8_key(video[0][2]), video[0][:2]  # starts on a group's key frame
    assert info_b["channels_imported"] >= 1, info_b  # the track came over its cluster channel


async def publish_until_killed(port_a: int, port_b: int, b: Member, kill: Any) -> dict[str, Any]:
    config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], verify_mode=ssl.CERT_NONE)
    setup = m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 10})
    ns = (b"moq-test", b"killed")
    pub_conn = connect("127.0.0.1", port_a, configuration=config, create_protocol=Publisher)
    pub: Publisher = await pub_conn.__aenter__()  # type: ignore[assignment]
    try:
        pub.send(setup)
        await pub.wait_for(lambda: pub.messages, 5)
        pub.send(m.PublishNamespace(0, ns))
        await asyncio.to_thread(wait_metric, b, "cluster_namespaces_remote", 1)
        async with connect("127.0.0.1", port_b, configuration=config, create_protocol=Subscriber) as c:
            viewer: Subscriber = c  # type: ignore[assignment]
            viewer.send(setup)
            await viewer.wait_for(lambda: viewer.messages, 5)
            viewer.send(m.Subscribe(0, ns, b"video", {m.PARAM_FORWARD: 1}))
            await pub.wait_for(lambda: any(isinstance(x, m.Subscribe) for x in pub.messages), 5)
            sub = next(x for x in pub.messages if isinstance(x, m.Subscribe))
            pub.send(m.SubscribeOk(sub.request_id, 1, {m.PARAM_EXPIRES: 0}))
            pub.send_group(1, 0, [(b"key frame", None), (b"delta", None)])
            await viewer.wait_for(lambda: len(viewer.objects) >= 2, 5)
            t0 = time.monotonic()
            kill()
            await viewer.wait_for(lambda: any(isinstance(x, m.PublishDone) for x in viewer.messages), 5)
            done = [x for x in viewer.messages if isinstance(x, m.PublishDone)]
            return {"objects": len(viewer.objects), "done": done, "after_s": time.monotonic() - t0}
    finally:
        pub._quic.close()  # its node is gone: nothing to wait for
        pub.transmit()


def test_kill_9_of_the_publishers_node_ends_the_track_on_b(cluster: tuple[Cluster, Member, Member, int, int]) -> None:
    """Last in this module: it kills node A."""
    _, a, b, port_a, port_b = cluster

    def kill() -> None:
        a.proc.kill()
        a.proc.wait(5)

    got = asyncio.run(publish_until_killed(port_a, port_b, b, kill))
    print("kill -9:", got)
    assert got["objects"] == 2, got
    assert len(got["done"]) == 1 and got["done"][0].status_code == 0x4, got  # GOING_AWAY
    after = moq_metrics(b)
    assert after["cluster_namespaces_remote"] == 0 and after["cluster_tracks_imported"] == 0, after
