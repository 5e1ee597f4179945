"""The sans-IO MoQ session and relay, in memory on a virtual clock: setup, request IDs, aliases,
namespaces, subscriptions relayed upstream, fan-out from the latest-group cache, PUBLISH, FETCH,
TRACK_STATUS, GOAWAY and the specific error codes a client's mistakes get."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.transports.moq.harness import CONTROL, Client, Clock
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import PublishDoneCode, RequestErrorCode, SessionErrorCode, StreamResetCode
from trackmesh.transports.moq.objects import decode_fetch_object
from trackmesh.transports.moq.relay import UPSTREAM_TIMEOUT, Relay
from trackmesh.transports.moq.session import Authorizer
from trackmesh.transports.moq.varint import Reader

NS = (b"moq-test", b"room")
TRACK = b"video"


def pair() -> tuple[Relay, Clock, Client, Client]:
    relay, clock = Relay(), Clock()
    pub, sub = Client(relay, clock), Client(relay, clock)
    pub.setup()
    sub.setup()
    return relay, clock, pub, sub


def live_track(pub: Client, sub: Client) -> tuple[int, int]:
    """pub publishes NS, sub subscribes TRACK, pub accepts with alias 7: (sub's request, upstream request)."""
    rid = pub.rid()
    pub.send(m.PublishNamespace(rid, NS))
    assert pub.messages() == [m.RequestOk(rid)]
    srid = sub.rid()
    sub.send(m.Subscribe(srid, NS, TRACK))
    (upstream,) = pub.messages()
    assert isinstance(upstream, m.Subscribe) and upstream.namespace == NS and upstream.name == TRACK
    assert upstream.request_id % 2 == 1  # the server's request IDs are odd
    assert upstream.params.get(m.PARAM_FORWARD) == 1
    assert sub.messages() == []  # held until the publisher answers
    pub.send(m.SubscribeOk(upstream.request_id, 7))
    (ok,) = sub.messages()
    assert isinstance(ok, m.SubscribeOk) and ok.request_id == srid
    return srid, upstream.request_id


def test_setup_answers_with_parameters() -> None:
    relay, clock = Relay(), Clock()
    client = Client(relay, clock)
    reply = client.setup()
    assert reply.params[m.SETUP_MAX_REQUEST_ID] == 20
    assert reply.params[m.SETUP_IMPLEMENTATION] == b"trackmesh"


def test_first_message_must_be_client_setup() -> None:
    client = Client(Relay(), Clock())
    client.send(m.Subscribe(0, NS, TRACK))
    client.pump()
    assert client.closed is not None
    assert client.closed.code == SessionErrorCode.PROTOCOL_VIOLATION
    assert "CLIENT_SETUP" in client.closed.reason


def test_malformed_control_message_closes_with_protocol_violation() -> None:
    client = Client(Relay(), Clock())
    client.setup()
    client.raw(CONTROL, bytes([0x03, 0x00, 0x02, 0x00, 0x05]))  # SUBSCRIBE whose namespace runs past its length
    client.pump()
    assert client.closed is not None and client.closed.code == SessionErrorCode.PROTOCOL_VIOLATION
    assert "shorter than its fields" in client.closed.reason


def test_unknown_track_gets_does_not_exist_not_internal_error() -> None:
    _, _, _, sub = pair()
    sub.send(m.Subscribe(0, (b"nobody",), TRACK))
    (err,) = sub.messages()
    assert isinstance(err, m.RequestError) and err.error_code == RequestErrorCode.DOES_NOT_EXIST


def test_unauthorized_namespace() -> None:
    relay, clock = Relay(), Clock()
    client = Client(relay, clock, authorizer=Authorizer())
    client.setup()
    client.send(m.PublishNamespace(0, NS))
    client.send(m.Subscribe(2, NS, TRACK))
    replies = client.messages()
    assert replies == [
        m.RequestError(0, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized"),
        m.RequestError(2, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized"),
    ]


def test_request_id_accounting() -> None:
    _, _, _, sub = pair()
    for rid in range(0, 12, 2):  # half the window of 20 used: the server raises it
        sub.send(m.TrackStatus(rid, NS, TRACK))
    raised = [x for x in sub.messages() if isinstance(x, m.MaxRequestId)]
    assert raised and raised[-1].request_id == 40
    sub.send(m.TrackStatus(4, NS, TRACK))  # repeated
    sub.pump()
    assert sub.closed is not None and sub.closed.code == SessionErrorCode.INVALID_REQUEST_ID


def test_request_id_over_the_limit_is_too_many_requests() -> None:
    _, _, _, sub = pair()
    sub.send(m.TrackStatus(20, NS, TRACK))
    sub.pump()
    assert sub.closed is not None and sub.closed.code == SessionErrorCode.TOO_MANY_REQUESTS


def test_relayed_subscription_forwards_objects_and_publish_done() -> None:
    _, _, pub, sub = pair()
    srid, upstream = live_track(pub, sub)
    payloads = [(0, b"key" * 20), (1, b"delta"), (2, b"")]
    pub.subgroup(7, 0, payloads[:2])
    pub.subgroup(7, 1, [(0, b"next")])
    streams = sub.received()
    assert [(h.group_id, objs, fin) for _, h, objs, fin in streams] == [
        (0, payloads[:2], True),
        (1, [(0, b"next")], True),
    ]
    (ok_alias,) = {h.track_alias for _, h, _, _ in streams}
    assert all(h.publisher_priority == 128 for _, h, _, _ in streams)
    pub.send(m.PublishDone(upstream, PublishDoneCode.TRACK_ENDED, 2, b"bye"))
    (done,) = sub.messages()
    assert done == m.PublishDone(srid, PublishDoneCode.TRACK_ENDED, 2, b"bye")
    assert ok_alias == 0


def test_a_fin_alone_after_the_objects_ends_the_subscribers_stream() -> None:
    """A publisher that ends a subgroup with an empty last write (aioquic's send_stream_data(sid, b"", True),
    arriving as its own event): the subscriber's stream ends too, and the relay forgets the upstream one."""
    _, _, pub, sub = pair()
    live_track(pub, sub)
    sid = pub.subgroup(7, 0, [(0, b"key" * 20), (1, b"delta")], fin=False)
    ((_, _, objects, fin),) = sub.received()
    assert len(objects) == 2 and not fin
    pub.raw(sid, b"", True, uni=True)
    ((_, _, _, fin),) = sub.received()
    assert fin
    assert not pub.session.data_streams.has(sid)


def test_publish_done_waits_for_the_streams_it_counts() -> None:
    relay, clock, pub, sub = pair()
    _srid, upstream = live_track(pub, sub)
    pub.send(m.PublishDone(upstream, PublishDoneCode.TRACK_ENDED, 1))
    assert sub.messages() == []  # the counted stream has not arrived yet
    pub.subgroup(7, 0, [(0, b"late")])
    (done,) = sub.messages()
    assert isinstance(done, m.PublishDone) and done.stream_count == 1
    # Without the stream, the grace period ends it anyway.
    srid2, up2 = live_track_again(pub, sub)
    pub.send(m.PublishDone(up2, PublishDoneCode.TRACK_ENDED, 3))
    clock.now += 2.5
    relay.timer(clock.now)
    (done2,) = sub.messages()
    assert isinstance(done2, m.PublishDone) and done2.request_id == srid2


def live_track_again(pub: Client, sub: Client) -> tuple[int, int]:
    srid = sub.rid()
    sub.send(m.Subscribe(srid, NS, TRACK))
    (upstream,) = pub.messages()
    assert isinstance(upstream, m.Subscribe)
    pub.send(m.SubscribeOk(upstream.request_id, 8))
    sub.messages()
    return srid, upstream.request_id


def test_late_subscribers_start_at_the_current_group_from_the_cache() -> None:
    relay, clock, pub, first = pair()
    live_track(pub, first)
    pub.subgroup(7, 4, [(0, b"old")])
    pub.subgroup(7, 5, [(0, b"I" * 100), (1, b"P1")], fin=False)
    late = [Client(relay, clock) for _ in range(5)]
    for client in late:
        client.setup()
        client.send(m.Subscribe(client.rid(), NS, TRACK))
        (ok,) = client.messages()
        assert isinstance(ok, m.SubscribeOk)
        assert ok.params[m.PARAM_LARGEST_OBJECT] == bytes([5, 1])
    assert pub.messages() == []  # one upstream subscription serves everyone
    for client in late:
        ((_, header, objects, fin),) = client.received()
        assert header.group_id == 5 and objects == [(0, b"I" * 100), (1, b"P1")] and not fin
    assert relay.stats.objects_in == 3


def test_unsubscribe_of_the_last_subscriber_ends_the_upstream_subscription() -> None:
    _, _, pub, sub = pair()
    srid, upstream = live_track(pub, sub)
    sub.send(m.Unsubscribe(srid))
    assert pub.messages() == [m.Unsubscribe(upstream)]


def test_publisher_that_never_answers_times_out() -> None:
    relay, clock, pub, sub = pair()
    pub.send(m.PublishNamespace(pub.rid(), NS))
    sub.send(m.Subscribe(sub.rid(), NS, TRACK))
    clock.now += UPSTREAM_TIMEOUT - 0.1
    relay.timer(clock.now)
    assert sub.messages() == []
    clock.now += 0.2
    relay.timer(clock.now)
    (err,) = sub.messages()
    assert isinstance(err, m.RequestError) and err.error_code == RequestErrorCode.TIMEOUT


def test_upstream_error_is_passed_down() -> None:
    _, _, pub, sub = pair()
    pub.send(m.PublishNamespace(pub.rid(), NS))
    pub.messages()
    sub.send(m.Subscribe(0, NS, TRACK))
    (upstream,) = pub.messages()
    pub.send(m.RequestError(upstream.request_id, RequestErrorCode.DOES_NOT_EXIST, 0, b"no"))  # type: ignore[union-attr]
    (err,) = sub.messages()
    assert isinstance(err, m.RequestError) and err.error_code == RequestErrorCode.DOES_NOT_EXIST


def test_duplicate_track_alias_closes() -> None:
    _, _, pub, sub = pair()
    live_track(pub, sub)
    pub.send(m.Publish(pub.rid(), NS, b"audio", 7))
    pub.pump()
    assert pub.closed is not None and pub.closed.code == SessionErrorCode.DUPLICATE_TRACK_ALIAS


def test_namespace_subscription_lifecycle_and_publish_offers() -> None:
    _relay, _clock, pub, sub = pair()
    stream = sub.new_bidi()
    rid = sub.rid()
    sub.send(m.SubscribeNamespace(rid, (b"moq-test",), m.NAMESPACE_OPTION_BOTH), stream_id=stream)
    assert sub.messages(stream) == [m.RequestOk(rid)]
    ns_rid = pub.rid()
    pub.send(m.PublishNamespace(ns_rid, NS))
    assert pub.messages() == [m.RequestOk(ns_rid)]
    assert sub.messages(stream) == [m.Namespace((b"room",))]
    prid = pub.rid()
    pub.send(m.Publish(prid, NS, TRACK, 3))
    (ok,) = pub.messages()
    assert isinstance(ok, m.PublishOk) and ok.request_id == prid
    (offer,) = sub.messages()
    assert isinstance(offer, m.Publish) and offer.name == TRACK and offer.request_id % 2 == 1
    sub.send(m.PublishOk(offer.request_id, {m.PARAM_FORWARD: 1}))
    pub.subgroup(3, 0, [(0, b"hello")])
    ((_, header, objects, _),) = sub.received()
    assert header.track_alias == offer.track_alias and objects == [(0, b"hello")]
    pub.send(m.PublishNamespaceDone(ns_rid))
    assert sub.messages(stream) == [m.NamespaceDone((b"room",))]
    sub.raw(stream, b"", fin=True)  # the subscriber ends its namespace subscription
    pub.send(m.PublishNamespace(pub.rid(), (b"moq-test", b"other")))
    assert sub.messages(stream) == []


def test_fetch_standalone_and_joining_from_the_cache() -> None:
    _, _, pub, sub = pair()
    _srid, _ = live_track(pub, sub)
    pub.subgroup(7, 2, [(0, b"a"), (1, b"b"), (2, b"c")])
    frid = sub.rid()
    sub.send(m.Fetch(frid, m.FETCH_STANDALONE, NS, TRACK, 2, 1, 2, 0))
    (ok,) = sub.messages()
    assert ok == m.FetchOk(frid, 0, 2, 2)
    fetch_stream = max(sid for sid in sub.incoming if sid % 4 == 3)
    r = Reader(bytes(sub.incoming[fetch_stream]))
    assert r.varint() == 0x05 and r.varint() == frid
    got = []
    prior = None
    while r.remaining():
        prior = decode_fetch_object(r, prior)
        assert prior is not None
        got.append((prior.group_id, prior.object_id, prior.payload))
    assert got == [(2, 1, b"b"), (2, 2, b"c")] and fetch_stream in sub.fins
    sub.send(m.Fetch(sub.rid(), m.FETCH_RELATIVE_JOINING, joining_request_id=999, joining_start=1))
    (err,) = sub.messages()
    assert isinstance(err, m.RequestError) and err.error_code == RequestErrorCode.INVALID_JOINING_REQUEST_ID
    sub.send(m.Fetch(sub.rid(), m.FETCH_STANDALONE, (b"x",), TRACK, 0, 0, 1, 0))
    (err2,) = sub.messages()
    assert isinstance(err2, m.RequestError) and err2.error_code == RequestErrorCode.DOES_NOT_EXIST


def test_track_status() -> None:
    _, _, pub, sub = pair()
    live_track(pub, sub)
    pub.subgroup(7, 3, [(0, b"x"), (4, b"y")])
    rid = sub.rid()
    sub.send(m.TrackStatus(rid, NS, TRACK))
    (ok,) = sub.messages()
    assert isinstance(ok, m.RequestOk) and ok.params[m.PARAM_LARGEST_OBJECT] == bytes([3, 4])
    sub.send(m.TrackStatus(sub.rid(), NS, b"nope"))
    (err,) = sub.messages()
    assert isinstance(err, m.RequestError) and err.error_code == RequestErrorCode.DOES_NOT_EXIST


def test_goaway_and_publisher_leaving() -> None:
    _, _, pub, sub = pair()
    _srid, _ = live_track(pub, sub)
    sub.session.goaway(b"moqt://elsewhere")
    assert sub.messages() == [m.GoAway(b"moqt://elsewhere")]
    pub.session.transport_closed()
    (done,) = sub.messages()
    assert isinstance(done, m.PublishDone) and done.status_code == PublishDoneCode.GOING_AWAY


def test_data_stream_before_its_subscribe_ok_is_held() -> None:
    _, _, pub, sub = pair()
    pub.send(m.PublishNamespace(pub.rid(), NS))
    pub.messages()
    sub.send(m.Subscribe(sub.rid(), NS, TRACK))
    (upstream,) = pub.messages()
    pub.subgroup(9, 0, [(0, b"early")])  # overtakes the SUBSCRIBE_OK
    pub.send(m.SubscribeOk(upstream.request_id, 9))  # type: ignore[union-attr]
    ((_, _, objects, fin),) = sub.received()
    assert objects == [(0, b"early")] and fin


@settings(max_examples=200)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_control_bytes_never_raise(data: bytes, after_setup: bool) -> None:
    client = Client(Relay(), Clock())
    if after_setup:
        client.setup()
    client.raw(CONTROL, data)
    client.raw(2, data, uni=True)
    client.session.datagram(data, 0.0)
    client.pump()
    if client.closed is not None:
        assert client.closed.code != SessionErrorCode.INTERNAL_ERROR


def test_a_subscriber_that_falls_behind_loses_old_groups_not_the_others() -> None:
    relay, clock, pub, slow = pair()
    live_track(pub, slow)
    fast = Client(relay, clock)
    fast.setup()
    fast.send(m.Subscribe(fast.rid(), NS, TRACK))
    fast.messages()
    pub.subgroup(7, 0, [(0, b"x" * 1000)], fin=False)  # group 0 still open
    slow.session.backlog = 2 << 20  # the driver measured 2 MiB queued toward it
    pub.subgroup(7, 1, [(0, b"new group")])
    slow.pump()
    old_stream = next(sid for sid, header, _, _ in slow.received() if header.group_id == 0)
    assert slow.resets[old_stream] == StreamResetCode.TOO_FAR_BEHIND
    assert [h.group_id for _, h, _, _ in slow.received()][-1] == 1  # the new group still goes out
    assert fast.resets == {}  # the other subscriber keeps everything
    assert [(h.group_id, objs) for _, h, objs, _ in fast.received()] == [
        (0, [(0, b"x" * 1000)]),
        (1, [(0, b"new group")]),
    ]
    assert relay.stats.groups_dropped == 1
