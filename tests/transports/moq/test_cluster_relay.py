"""The cluster-wide MoQ relay in memory: two nodes' relays, each with its own sessions, joined by
one in-process registry and message hub (what zenoh gives a media node). A namespace published
on node A is subscribable on node B; one copy of each object crosses, whatever the number of
subscribers on B; refusals, endings and withdrawn namespaces reach B's subscribers."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.cluster_relay import (
    OBJECT,
    BadClusterMessage,
    ClusterRelay,
    decode_message,
    encode_object,
    namespace_key,
    parse_namespace_key,
)
from trackmesh.transports.moq.errors import PublishDoneCode, RequestErrorCode
from trackmesh.transports.moq.relay import Relay

from .harness import Client, Clock

NS = (b"live", b"show")


class Counting(LocalChannelHub):
    """The in-process hub, counting what is sent on each message channel (the copies crossing)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[int, int] = {}

    def send_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        self.sent[channel] = self.sent.get(channel, 0) + 1
        super().send_message(now, channel, sender, data)


class Cluster:
    def __init__(self, names: tuple[str, ...] = ("A", "B")) -> None:
        self.clock = Clock()
        self.registry = LocalRegistry()
        self.hub = Counting()
        self.relays = {name: Relay() for name in names}
        self.members = {
            name: ClusterRelay(relay, self.registry, self.hub, name, self.clock.now)
            for name, relay in self.relays.items()
        }

    def client(self, node: str, draft: int = 16) -> Client:
        client = Client(self.relays[node], self.clock, draft=draft)
        client.setup()
        return client


def publisher(cluster: Cluster, node: str = "A") -> tuple[Client, int]:
    """A publisher on ``node``: PUBLISH_NAMESPACE, answered; returns it and its track alias."""
    pub = cluster.client(node)
    pub.send(m.PublishNamespace(pub.rid(), NS))
    assert isinstance(pub.messages()[0], m.RequestOk)
    return pub, 7


def answer_subscribe(pub: Client, alias: int) -> m.Subscribe:
    (sub,) = [x for x in pub.messages() if isinstance(x, m.Subscribe)]
    pub.send(m.SubscribeOk(sub.request_id, alias, {m.PARAM_EXPIRES: 0}))
    return sub


def subscribe(client: Client, name: bytes = b"video") -> int:
    rid = client.rid()
    client.request(m.Subscribe(rid, NS, name, {m.PARAM_FORWARD: 1}))
    return rid


def replies(client: Client) -> list[m.ControlMessage]:
    """Every answer not read before: on the control stream (draft-16) or request streams (draft-20)."""
    out = client.messages()
    for stream in list(client.request_streams):
        out += client.messages(stream)
    return out


def objects(client: Client) -> list[tuple[int, int, bytes]]:
    return [(h.group_id, oid, p) for _, h, objs, _ in client.received() for oid, p in objs]


def test_a_namespace_on_a_is_watched_on_b_with_one_copy_crossing() -> None:
    cluster = Cluster()
    pub, alias = publisher(cluster)
    a, b = cluster.members["A"], cluster.members["B"]
    assert NS in a.local_namespaces and NS in b.remote
    viewers = [cluster.client("B"), cluster.client("B", draft=20)]
    rids = [subscribe(v) for v in viewers]
    answer_subscribe(pub, alias)  # node A's relay asked the publisher once, for both viewers
    for viewer, rid in zip(viewers, rids, strict=True):
        reply = [x for x in replies(viewer) if isinstance(x, m.SubscribeOk)]
        assert reply and reply[0].request_id == rid
    pub.subgroup(alias, 0, [(0, b"key"), (1, b"delta")], fin=True)
    pub.subgroup(alias, 1, [(0, b"key2")], fin=False)
    for viewer in viewers:
        assert objects(viewer) == [(0, 0, b"key"), (0, 1, b"delta"), (1, 0, b"key2")]
    assert a.counters["objects_out"] == 3  # one copy per object, for two subscribers on B
    assert b.counters["objects_in"] == 3
    (channel,) = b.imports
    assert cluster.hub.sent[channel] == 4  # OK + three objects
    assert b.metrics()["cluster_tracks_imported"] == 1 and a.metrics()["cluster_tracks_exported"] == 1

    # The viewers leave: B withdraws its want, A ends its local subscription (UNSUBSCRIBE upstream).
    for viewer, rid in zip(viewers, rids, strict=True):
        if viewer.vi64:
            stream = next(s for s, r in viewer.request_streams.items() if r == rid)
            viewer.session.stream_reset(stream, 0, cluster.clock.now)
        else:
            viewer.send(m.Unsubscribe(rid))
    assert not b.imports and not a.exports
    assert any(isinstance(x, m.Unsubscribe) for x in pub.messages())
    assert not [k for k in cluster.registry._data if k.startswith("moq/want/")]


def test_an_unknown_track_on_a_is_refused_on_b_with_the_publishers_code() -> None:
    cluster = Cluster()
    pub, _ = publisher(cluster)
    viewer = cluster.client("B")
    rid = subscribe(viewer, b"nothing")
    sub = next(x for x in pub.messages() if isinstance(x, m.Subscribe))
    pub.send(m.RequestError(sub.request_id, RequestErrorCode.DOES_NOT_EXIST, 0, b"no such track"))
    (error,) = [x for x in viewer.messages() if isinstance(x, m.RequestError)]
    assert error.request_id == rid and error.error_code == RequestErrorCode.DOES_NOT_EXIST
    assert not cluster.members["B"].imports and not cluster.members["A"].exports


def test_a_namespace_nobody_publishes_is_not_found_on_b() -> None:
    cluster = Cluster()
    viewer = cluster.client("B")
    rid = subscribe(viewer)
    (error,) = [x for x in viewer.messages() if isinstance(x, m.RequestError)]
    assert error.request_id == rid and error.error_code == RequestErrorCode.DOES_NOT_EXIST


def test_the_publisher_leaving_ends_the_track_on_b() -> None:
    cluster = Cluster()
    pub, alias = publisher(cluster)
    viewer = cluster.client("B")
    rid = subscribe(viewer)
    answer_subscribe(pub, alias)
    pub.subgroup(alias, 0, [(0, b"key")], fin=True)
    pub.session.close(0, "bye")
    cluster.relays["A"].peer_gone(pub.session)
    cluster.clock.now += 3  # PUBLISH_DONE waits (at most 2 s) for the streams it counts
    cluster.relays["B"].timer(cluster.clock.now)
    done = [x for x in viewer.messages() if isinstance(x, m.PublishDone)]
    assert done and done[0].request_id == rid, viewer.messages()
    assert done[0].status_code == PublishDoneCode.GOING_AWAY
    assert NS not in cluster.members["B"].remote and NS not in cluster.relays["B"].providers
    assert objects(viewer) == [(0, 0, b"key")]


def test_a_session_publishing_the_namespace_on_b_takes_precedence() -> None:
    cluster = Cluster()
    publisher(cluster)
    local_pub = cluster.client("B")
    local_pub.send(m.PublishNamespace(local_pub.rid(), NS))
    viewer = cluster.client("B")
    subscribe(viewer)
    assert [x for x in local_pub.messages() if isinstance(x, m.Subscribe)]
    assert not cluster.members["B"].imports


def test_the_publishers_node_stopping_ends_the_track_on_b() -> None:
    cluster = Cluster()
    pub, alias = publisher(cluster)
    viewer = cluster.client("B")
    rid = subscribe(viewer)
    answer_subscribe(pub, alias)
    assert [x for x in viewer.messages() if isinstance(x, m.SubscribeOk)]
    cluster.members["A"].close(cluster.clock.now)  # its registry entries go, as when a node dies
    assert NS not in cluster.members["B"].remote and not cluster.members["B"].imports
    cluster.clock.now += 3
    cluster.relays["B"].timer(cluster.clock.now)
    done = [x for x in viewer.messages() if isinstance(x, m.PublishDone)]
    assert done and done[0].request_id == rid and done[0].status_code == PublishDoneCode.GOING_AWAY


def test_subscribe_namespace_on_b_hears_of_namespaces_published_on_a() -> None:
    cluster = Cluster(("A", "B", "C"))
    watcher = cluster.client("B")
    stream = watcher.new_bidi()
    rid = watcher.rid()
    watcher.send(m.SubscribeNamespace(rid, (b"live",), m.NAMESPACE_OPTION_NAMESPACE), stream_id=stream)
    assert watcher.messages(stream) == [m.RequestOk(rid)]
    pub_a, alias = publisher(cluster, "A")
    assert watcher.messages(stream) == [m.Namespace((b"show",))]
    # The same namespace published on C, then here on B: no second NAMESPACE, and B's own
    # publisher is not exported back as if it were remote.
    pub_c, _ = publisher(cluster, "C")
    local = cluster.client("B")
    local.send(m.PublishNamespace(local.rid(), NS))
    assert watcher.messages(stream) == []
    # A namespace outside the prefix is not announced; one published before the watch is.
    other = cluster.client("A")
    other.send(m.PublishNamespace(other.rid(), (b"elsewhere",)))
    late = cluster.client("B")
    late_stream = late.new_bidi()
    late.send(m.SubscribeNamespace(late.rid(), (), m.NAMESPACE_OPTION_NAMESPACE), stream_id=late_stream)
    announced = [x for x in late.messages(late_stream) if isinstance(x, m.Namespace)]
    assert sorted(x.suffix for x in announced) == [(b"elsewhere",), NS]
    assert watcher.messages(stream) == []
    # The namespace is subscribable through the announcement: a SUBSCRIBE reaches a publisher.
    local.send(m.PublishNamespaceDone(0))
    pub_c.send(m.PublishNamespaceDone(0))
    assert watcher.messages(stream) == []  # A publishes it still
    viewer = cluster.client("B")
    subscribe(viewer)
    answer_subscribe(pub_a, alias)
    assert [x for x in replies(viewer) if isinstance(x, m.SubscribeOk)]
    # The last publisher withdraws it: NAMESPACE_DONE, and only once.
    pub_a.send(m.PublishNamespaceDone(0))
    assert watcher.messages(stream) == [m.NamespaceDone((b"show",))]
    assert [x for x in late.messages(late_stream) if isinstance(x, m.NamespaceDone)] == [m.NamespaceDone(NS)]
    assert NS not in cluster.relays["B"].remote_namespaces
    # Node A stops: its other namespace is withdrawn on B too.
    cluster.members["A"].close(cluster.clock.now)
    assert late.messages(late_stream) == [m.NamespaceDone((b"elsewhere",))]


def test_a_publisher_initiated_track_on_a_is_watched_on_b() -> None:
    cluster = Cluster()
    pub = cluster.client("A")
    prid = pub.rid()
    pub.send(m.Publish(prid, NS, b"video", 5))  # no PUBLISH_NAMESPACE
    (ok,) = pub.messages()
    assert isinstance(ok, m.PublishOk), ok
    a, b = cluster.members["A"], cluster.members["B"]
    assert NS in a.local_namespaces and NS in b.remote
    viewer = cluster.client("B")
    rid = subscribe(viewer)
    reply = [x for x in replies(viewer) if isinstance(x, m.SubscribeOk)]
    assert reply and reply[0].request_id == rid, replies(viewer)
    pub.subgroup(5, 0, [(0, b"key"), (1, b"delta")], fin=True)
    assert objects(viewer) == [(0, 0, b"key"), (0, 1, b"delta")]
    assert a.counters["objects_out"] == 2 and b.counters["objects_in"] == 2
    # The publisher ends the track: PUBLISH_DONE on B, and the namespace is no longer A's.
    pub.send(m.PublishDone(prid, PublishDoneCode.TRACK_ENDED, 1, b"the end"))
    cluster.clock.now += 3
    for relay in cluster.relays.values():
        relay.timer(cluster.clock.now)
    done = [x for x in viewer.messages() if isinstance(x, m.PublishDone)]
    assert done and done[0].request_id == rid, viewer.messages()
    assert not a.local_namespaces and NS not in b.remote and not a.published_tracks


def test_a_namespace_published_on_two_nodes_is_imported_from_one() -> None:
    cluster = Cluster(("A", "B", "C"))
    pub_a, alias = publisher(cluster, "A")
    pub_c, _ = publisher(cluster, "C")
    viewer = cluster.client("B")
    subscribe(viewer)
    subs = {n: [x for x in p.messages() if isinstance(x, m.Subscribe)] for n, p in (("A", pub_a), ("C", pub_c))}
    assert len(subs["A"]) == 1 and not subs["C"]  # "A" < "C": one source, the same on every node
    pub_a.send(m.SubscribeOk(subs["A"][0].request_id, alias, {m.PARAM_EXPIRES: 0}))
    pub_a.subgroup(alias, 0, [(0, b"key")], fin=True)
    assert objects(viewer) == [(0, 0, b"key")]
    # C's namespace goes: B's viewer (fed by A) carries on.
    pub_c.send(m.PublishNamespaceDone(0))
    assert cluster.members["B"].imports and cluster.members["B"].remote[NS] == {"A"}
    pub_c.send(m.PublishNamespace(pub_c.rid(), NS))  # C again
    assert cluster.members["B"].remote[NS] == {"A", "C"}
    # A's goes: the track ends, and a new subscription imports from C.
    pub_a.send(m.PublishNamespaceDone(0))
    assert not cluster.members["B"].imports and cluster.members["B"].remote[NS] == {"C"}
    cluster.clock.now += 3
    cluster.relays["B"].timer(cluster.clock.now)
    assert [x.status_code for x in viewer.messages() if isinstance(x, m.PublishDone)] == [PublishDoneCode.GOING_AWAY]
    subscribe(viewer)
    assert [x for x in pub_c.messages() if isinstance(x, m.Subscribe)]


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=4))
def test_namespace_keys_round_trip(namespace: list[bytes]) -> None:
    key = namespace_key(tuple(namespace))
    assert "/" not in key and "*" not in key and all(key.split("."))
    assert parse_namespace_key(key) == tuple(namespace)


@given(st.integers(0, 2**63), st.integers(0, 2**63), st.binary(max_size=20), st.binary(max_size=50))
def test_object_messages_round_trip(group: int, object_id: int, ext: bytes, payload: bytes) -> None:
    assert decode_message(encode_object(group, object_id, payload, ext)) == (OBJECT, group, object_id, ext, payload)


@given(st.binary(max_size=40))
def test_any_bytes_decode_or_raise_bad_message(data: bytes) -> None:
    with contextlib.suppress(BadClusterMessage):
        decode_message(data)


def test_a_malformed_message_is_dropped_and_counted() -> None:
    cluster = Cluster()
    pub, alias = publisher(cluster)
    viewer = cluster.client("B")
    subscribe(viewer)
    b = cluster.members["B"]
    (channel,) = b.imports
    b.on_channel_message(cluster.clock.now, channel, "A", bytes([OBJECT, 1]))
    assert b.counters["bad_messages"] == 1
    answer_subscribe(pub, alias)
    pub.subgroup(alias, 0, [(0, b"key")], fin=True)
    assert objects(viewer) == [(0, 0, b"key")]


def test_a_track_published_on_a_is_offered_to_namespace_subscribers_on_b() -> None:
    """SUBSCRIBE_NAMESPACE with the PUBLISH option on B: a track PUBLISHed on A is offered by a
    PUBLISH, as one published on B is, through one import whatever the number of offers."""
    cluster = Cluster()
    a, b = cluster.members["A"], cluster.members["B"]
    watcher = cluster.client("B")
    stream = watcher.new_bidi()
    rid = watcher.rid()
    watcher.send(m.SubscribeNamespace(rid, (b"live",), m.NAMESPACE_OPTION_BOTH), stream_id=stream)
    assert watcher.messages(stream) == [m.RequestOk(rid)]
    names_only = cluster.client("B")  # asks for namespaces only: offered nothing
    names_only.send(
        m.SubscribeNamespace(names_only.rid(), (b"live",), m.NAMESPACE_OPTION_NAMESPACE),
        stream_id=names_only.new_bidi(),
    )
    pub = cluster.client("A")
    prid = pub.rid()
    pub.send(m.Publish(prid, NS, b"video", 5))
    assert isinstance(pub.messages()[0], m.PublishOk)
    assert watcher.messages(stream) == [m.Namespace((b"show",))]
    (offer,) = watcher.messages()
    assert isinstance(offer, m.Publish) and (offer.namespace, offer.name) == (NS, b"video"), offer
    assert offer.request_id % 2 == 1 and b.counters["tracks_opened"] == 1
    assert not [x for x in names_only.messages() if isinstance(x, m.Publish)]
    watcher.send(m.PublishOk(offer.request_id, {m.PARAM_FORWARD: 1}))
    pub.subgroup(5, 0, [(0, b"key"), (1, b"delta")], fin=True)
    assert objects(watcher) == [(0, 0, b"key"), (0, 1, b"delta")]
    assert [h.track_alias for _, h, _, _ in watcher.received()] == [offer.track_alias]
    # A second namespace subscriber on B, later: offered at once, from the same import.
    late = cluster.client("B")
    late.send(m.SubscribeNamespace(late.rid(), (), m.NAMESPACE_OPTION_PUBLISH), stream_id=late.new_bidi())
    (offer2,) = [x for x in late.messages() if isinstance(x, m.Publish)]
    late.send(m.PublishOk(offer2.request_id, {m.PARAM_FORWARD: 1}))
    pub.subgroup(5, 1, [(0, b"key2")], fin=True)
    assert objects(late)[-1] == (1, 0, b"key2") and objects(watcher)[-1] == (1, 0, b"key2")
    assert len(b.imports) == 1 and a.counters["objects_out"] == 3 and b.counters["tracks_opened"] == 1
    # One refuses (UNSUBSCRIBE after accepting), the other unsubscribes: the import ends on B and
    # the export on A.
    late.send(m.Unsubscribe(offer2.request_id))
    assert len(b.imports) == 1
    watcher.send(m.Unsubscribe(offer.request_id))
    assert not b.imports and not a.exports
    # The publisher ends the track: its entry goes on B.
    pub.send(m.PublishDone(prid, PublishDoneCode.TRACK_ENDED, 2, b"the end"))
    cluster.clock.now += 3
    for relay in cluster.relays.values():
        relay.timer(cluster.clock.now)
    assert not b.remote_tracks and not a.track_entries


def test_an_offer_refused_lets_the_import_go_and_a_new_subscriber_opens_it_again() -> None:
    cluster = Cluster()
    b = cluster.members["B"]
    pub = cluster.client("A")
    pub.send(m.Publish(pub.rid(), NS, b"audio", 3))
    assert b.remote_tracks == {(NS, b"audio"): {"A"}} and not b.imports  # nobody asked: nothing crosses
    watcher = cluster.client("B", draft=20)
    tstream = watcher.request(m.SubscribeTracks(watcher.rid(), NS))
    assert watcher.messages(tstream) == [m.RequestOk(0)]
    ((offer_stream, offer),) = watcher.server_requests()
    assert isinstance(offer, m.Publish) and offer.name == b"audio"
    watcher.send(m.RequestError(offer.request_id, RequestErrorCode.UNINTERESTED, 0, b"no"), offer_stream)
    assert not b.imports and (NS, b"audio") not in cluster.relays["B"].tracks
    again = cluster.client("B")
    again.send(m.SubscribeNamespace(again.rid(), NS, m.NAMESPACE_OPTION_PUBLISH), stream_id=again.new_bidi())
    (offer2,) = [x for x in again.messages() if isinstance(x, m.Publish)]
    assert offer2.name == b"audio" and b.counters["tracks_opened"] == 2 and len(b.imports) == 1


def test_a_track_whose_node_never_answers_is_let_go_after_the_upstream_timeout() -> None:
    from trackmesh.transports.moq.cluster_relay import NS_ROOT, TRACK_ROOT

    cluster = Cluster()
    b = cluster.members["B"]
    watcher = cluster.client("B")
    watcher.send(
        m.SubscribeNamespace(watcher.rid(), (b"live",), m.NAMESPACE_OPTION_PUBLISH), stream_id=watcher.new_bidi()
    )
    # Entries of a member "Z" that runs no relay: the import waits for an answer that never comes.
    cluster.registry.put(cluster.clock.now, f"{TRACK_ROOT}{namespace_key(NS)}/x{b'video'.hex()}/Z", b"")
    cluster.registry.put(cluster.clock.now, f"{NS_ROOT}{namespace_key(NS)}/Z", b"")
    assert b.counters["tracks_opened"] == 1 and len(b.imports) == 1
    assert not [x for x in watcher.messages() if isinstance(x, m.Publish)]  # offered only once live
    other = cluster.client("B")
    other.session.transport_closed()  # another session ending leaves the pending import alone
    assert len(b.imports) == 1
    cluster.clock.now += 6
    cluster.relays["B"].timer(cluster.clock.now)
    assert not b.imports and (NS, b"video") not in cluster.relays["B"].tracks
