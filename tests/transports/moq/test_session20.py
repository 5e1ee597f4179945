"""The session at draft-20 in memory on a virtual clock: SETUP on unidirectional streams, a bidi
stream per request, cancellation by reset, SUBSCRIBE_TRACKS, RENDEZVOUS_TIMEOUT, a paused PUBLISH,
and relaying between draft-16 and draft-20 sessions (objects re-framed, payloads the same)."""

from __future__ import annotations

from tests.transports.moq.harness import Client, Clock
from trackmesh.transports.moq import codec20
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import PublishDoneCode, RequestErrorCode, SessionErrorCode, StreamResetCode
from trackmesh.transports.moq.objects import FETCH_HEADER
from trackmesh.transports.moq.relay import Relay
from trackmesh.transports.moq.varint import Reader

NS = (b"moq-test", b"room")
TRACK = b"video"


def clients(pub_draft: int = 20, sub_draft: int = 20) -> tuple[Relay, Clock, Client, Client]:
    relay, clock = Relay(), Clock()
    pub, sub = Client(relay, clock, draft=pub_draft), Client(relay, clock, draft=sub_draft)
    pub.setup()
    sub.setup()
    return relay, clock, pub, sub


def announce(pub: Client) -> int:
    rid = pub.rid()
    stream = pub.request(m.PublishNamespace(rid, NS))
    assert pub.messages(stream) == [m.RequestOk(rid)]
    return stream


def subscribe(pub: Client, sub: Client, alias: int = 7) -> tuple[int, int, int]:
    """sub subscribes TRACK through the relay: (sub's stream, sub's request, upstream stream)."""
    rid = sub.rid()
    stream = sub.request(m.Subscribe(rid, NS, TRACK))
    if pub.vi64:
        ((up_stream, upstream),) = pub.server_requests()
    else:
        (upstream,) = pub.messages()
        up_stream = 0
    assert isinstance(upstream, m.Subscribe) and upstream.params[m.PARAM_FORWARD] == 1
    pub.send(m.SubscribeOk(upstream.request_id, alias), up_stream)
    (ok,) = sub.messages(stream)
    assert isinstance(ok, m.SubscribeOk) and ok.request_id == rid
    return stream, rid, up_stream


def test_setup_opens_our_control_stream() -> None:
    relay, clock = Relay(), Clock()
    client = Client(relay, clock, draft=20)
    reply = client.setup()
    assert reply.params == {m.SETUP_IMPLEMENTATION: b"trackmesh"}
    assert client.server_control is not None and client.server_control % 4 == 3


def test_requests_before_setup_wait_for_it() -> None:
    relay, clock = Relay(), Clock()
    client = Client(relay, clock, draft=20)
    stream = client.request(m.PublishNamespace(0, NS))  # overtakes the SETUP
    client.pump()
    assert stream not in client.incoming
    client.setup()
    assert client.messages(stream) == [m.RequestOk(0)]


def test_a_request_on_the_control_stream_is_a_protocol_violation() -> None:
    relay, clock = Relay(), Clock()
    client = Client(relay, clock, draft=20)
    client.raw(
        2, codec20.encode_message(m.ClientSetup({})) + codec20.encode_message(m.PublishNamespace(0, NS)), uni=True
    )
    client.pump()
    assert client.closed is not None and client.closed.code == SessionErrorCode.PROTOCOL_VIOLATION


def test_relayed_subscription_on_request_streams() -> None:
    _, _, pub, sub = clients()
    announce(pub)
    stream, rid, up_stream = subscribe(pub, sub)
    pub.subgroup(7, 0, [(0, b"key"), (1, b"delta")])
    ((_, header, objects, fin),) = sub.received()
    assert header.first_object and objects == [(0, b"key"), (1, b"delta")] and fin
    pub.send(m.PublishDone(0, PublishDoneCode.TRACK_ENDED, 1, b"end"), up_stream)
    assert sub.messages(stream) == [m.PublishDone(rid, PublishDoneCode.TRACK_ENDED, 1, b"end")]
    assert stream in sub.fins  # PUBLISH_DONE ends the request stream


def test_resetting_the_subscribe_stream_cancels_upstream() -> None:
    _, _, pub, sub = clients()
    announce(pub)
    stream, _, up_stream = subscribe(pub, sub)
    sub.session.stream_reset(stream, StreamResetCode.CANCELLED, sub.clock.now)
    pub.pump()
    assert pub.resets.get(up_stream) == StreamResetCode.CANCELLED


def test_resetting_the_announce_withdraws_the_namespace() -> None:
    _, _, pub, sub = clients()
    ns_stream = sub.request(m.SubscribeNamespace(sub.rid(), (b"moq-test",), m.NAMESPACE_OPTION_NAMESPACE))
    announce_stream = announce(pub)
    assert sub.messages(ns_stream) == [m.RequestOk(0), m.Namespace((b"room",))]
    pub.session.stream_reset(announce_stream, StreamResetCode.CANCELLED, pub.clock.now)
    assert sub.messages(ns_stream) == [m.NamespaceDone((b"room",))]


def test_subscribe_tracks_offers_published_tracks() -> None:
    _, _, pub, sub = clients()
    announce(pub)
    prid = pub.rid()
    pstream = pub.request(m.Publish(prid, NS, TRACK, 3, {m.PARAM_FORWARD: 0}))
    ok, update = pub.messages(pstream)
    assert ok == m.RequestOk(prid)  # draft-20 answers PUBLISH with REQUEST_OK
    assert isinstance(update, m.RequestUpdate) and update.params == {m.PARAM_FORWARD: 1}  # resume it
    trid = sub.rid()
    tstream = sub.request(m.SubscribeTracks(trid, NS))
    assert sub.messages(tstream) == [m.RequestOk(trid)]
    ((offer_stream, offer),) = sub.server_requests()
    assert isinstance(offer, m.Publish) and offer.name == TRACK
    sub.send(m.RequestOk(offer.request_id), offer_stream)
    pub.subgroup(3, 0, [(0, b"hi")])
    ((_, header, objects, _),) = sub.received()
    assert header.track_alias == offer.track_alias and objects == [(0, b"hi")]


def test_rendezvous_timeout() -> None:
    relay, clock, pub, sub = clients()
    rid = sub.rid()
    stream = sub.request(m.Subscribe(rid, (b"later",), TRACK, {m.PARAM_RENDEZVOUS_TIMEOUT: 500}))
    relay.timer(clock.now + 0.4)
    assert sub.messages(stream) == []
    relay.timer(clock.now + 0.6)
    (err,) = sub.messages(stream)
    assert isinstance(err, m.RequestError) and err.error_code == RequestErrorCode.TIMEOUT
    # A publisher that arrives in time is used.
    rid2 = sub.rid()
    stream2 = sub.request(m.Subscribe(rid2, NS, TRACK, {m.PARAM_RENDEZVOUS_TIMEOUT: 500}))
    announce(pub)
    ((_, upstream),) = pub.server_requests()
    assert isinstance(upstream, m.Subscribe) and upstream.name == TRACK
    assert sub.messages(stream2) == []


def test_draft16_publisher_to_draft20_subscriber_and_back() -> None:
    for pub_draft, sub_draft in ((16, 20), (20, 16)):
        relay, clock, pub, sub = clients(pub_draft, sub_draft)
        announce(pub)
        subscribe(pub, sub)
        payloads = [(0, b"I" * 300), (1, b""), (200, b"p")]
        pub.subgroup(7, 1 << 20, payloads)  # a group ID whose integer differs between the drafts
        ((_, header, objects, fin),) = sub.received()
        assert header.group_id == 1 << 20 and fin
        assert [(i, p) for i, p in objects] == payloads
        # A late subscriber of the other draft gets the cached group, re-framed once.
        late = Client(relay, clock, draft=pub_draft)
        late.setup()
        stream = late.request(m.Subscribe(late.rid(), NS, TRACK))
        assert isinstance(late.messages(stream)[0], m.SubscribeOk)
        ((_, _, late_objects, _),) = late.received()
        assert late_objects == payloads


def test_fetch_and_fill_at_draft20() -> None:
    _, _, pub, sub = clients()
    announce(pub)
    subscribe(pub, sub)
    for group in range(3):
        pub.subgroup(7, group, [(0, b"g%d-0" % group), (1, b"g%d-1" % group)])
    rid = sub.rid()
    stream = sub.request(m.Fetch(rid, m.FETCH_STANDALONE, NS, TRACK, 1, 0, 1, 0))  # group 1, whole
    (ok,) = sub.messages(stream)
    assert ok == m.FetchOk(rid, 0, 1, 1)  # End Location inclusive at draft-20
    late = Client(sub.session.relay, sub.clock, draft=20)
    late.setup()
    fill = bytes([1, 0x21, 1, 2])  # one parameter: LOCATION_FILTER Relative Start, 2 groups back
    join_rid = late.rid()
    late.request(m.Subscribe(join_rid, NS, TRACK, {m.PARAM_FILL_PARAMETERS: fill}))
    late.pump()
    fetch_streams = [bytes(d) for sid, d in late.incoming.items() if sid % 4 == 3 and d[:1] == bytes([FETCH_HEADER])]
    (fill_stream,) = fetch_streams
    r = Reader(fill_stream, vi64=True)
    assert r.varint() == FETCH_HEADER and r.varint() == join_rid
    # Group 1 (2 groups before the next one, 3): the subscription itself starts at group 2.
    assert b"g1-0" in fill_stream and b"g1-1" in fill_stream and b"g2-0" not in fill_stream
