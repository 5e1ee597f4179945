"""The draft-20 control codec and vi64 integers: Hypothesis round trips, truncation, known bytes,
the per-parameter value encodings and draft-22's typed LOCATION_FILTER."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.transports.moq import codec20
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import MoqDecodeError
from trackmesh.transports.moq.varint import MAX_VI64, Reader, encode_varint, encode_vi64

vi = st.integers(min_value=0, max_value=MAX_VI64)
small = st.integers(min_value=0, max_value=1 << 40)
blobs = st.binary(max_size=24)
namespaces = st.lists(st.binary(max_size=8), max_size=4).map(tuple)
locations = st.tuples(small, small).map(lambda t: encode_varint(t[0]) + encode_varint(t[1]))


@st.composite
def params(draw: st.DrawFn) -> m.Params:
    """Message parameters of every value encoding, in the draft-16 shapes the codec maps to."""
    out: m.Params = {}
    if draw(st.booleans()):
        out[0x03] = draw(blobs)  # AUTHORIZATION_TOKEN: bytes
    if draw(st.booleans()):
        out[0x08] = draw(vi)  # EXPIRES: varint
    if draw(st.booleans()):
        out[0x09] = draw(locations)  # LARGEST_OBJECT: Location
    if draw(st.booleans()):
        out[0x10] = draw(st.integers(0, 1))  # FORWARD: one byte
    if draw(st.booleans()):
        out[0x20] = draw(st.integers(0, 255))  # SUBSCRIBER_PRIORITY: one byte
    if draw(st.booleans()):
        out[0x21] = draw(
            st.one_of(
                st.just(encode_varint(m.FILTER_NEXT_GROUP_START)),
                st.just(encode_varint(m.FILTER_LATEST_OBJECT)),
                # Absolute Start from {0, 0} is sent as "no filter" (draft-20 s5.1.2): start at 1.
                st.tuples(small.map(lambda g: g + 1), small).map(
                    lambda t: bytes([3]) + encode_varint(t[0]) + encode_varint(t[1])
                ),
                st.tuples(small, small, small).map(
                    lambda t: bytes([4]) + encode_varint(t[0]) + encode_varint(t[1]) + encode_varint(t[0] + t[2])
                ),
            )
        )
    if draw(st.booleans()):
        out[0x25] = draw(blobs)  # SUBGROUP_FILTER: kept as its length-prefixed bytes
    return out


@st.composite
def kvps(draw: st.DrawFn) -> m.Params:
    keys = draw(st.lists(st.integers(min_value=0, max_value=300), max_size=5, unique=True))
    return {k: (draw(blobs) if k & 1 else draw(vi)) for k in keys}


@st.composite
def fetch_ranges(draw: st.DrawFn, fetch: m.Fetch) -> m.Fetch:
    """The ranges a draft-20 FETCH's LOCATION_FILTER can say, in the draft-16 fields."""
    fetch.end_group = m.FETCH_OPEN_END
    kind = draw(st.sampled_from(["relative", "next", "open", "group", "object"]))
    if kind == "relative":
        fetch.relative_groups = draw(small)
    elif kind == "next":
        fetch.start_group = m.FETCH_OPEN_END
    else:
        fetch.start_group, fetch.start_object = draw(small.map(lambda g: g + 1)), draw(small)
        if kind in ("group", "object"):
            fetch.end_group = fetch.start_group + draw(small)
        if kind == "object":
            fetch.end_object = draw(small) + 1
    return fetch


requests = st.one_of(
    st.builds(m.Subscribe, small, namespaces, blobs, params()),
    st.builds(m.PublishNamespace, small, namespaces, st.just({})),
    st.builds(m.SubscribeNamespace, small, namespaces, st.just(m.NAMESPACE_OPTION_NAMESPACE), st.just({})),
    st.builds(m.SubscribeTracks, small, namespaces, st.just({})),
    st.builds(m.Publish, small, namespaces, blobs, vi, params(), kvps()),
    st.builds(m.TrackStatus, small, namespaces, blobs, st.just({})),
    st.builds(m.Fetch, small, st.just(m.FETCH_STANDALONE), namespaces, blobs, params=st.just({})).flatmap(
        lambda f: fetch_ranges(f)
    ),
    st.builds(m.Namespace, namespaces),
    st.builds(m.NamespaceDone, namespaces),
    st.builds(m.GoAway, blobs, vi),
)
replies = st.one_of(
    st.builds(m.SubscribeOk, small, vi, params(), kvps()),
    st.builds(m.RequestError, small, st.integers(0, 0x33), vi, blobs),
    st.builds(m.RequestOk, small, params()),
    st.builds(m.PublishDone, small, st.integers(0, 0x12), vi, blobs),
    st.builds(m.FetchOk, small, st.integers(0, 1), vi, vi, st.just({}), kvps()),
)


@given(vi)
def test_vi64_round_trip_and_length(value: int) -> None:
    data = encode_vi64(value)
    r = Reader(data, vi64=True)
    assert r.varint() == value and r.remaining() == 0
    assert len(data) == next(n for n in range(1, 10) if n == 9 or value < 1 << (7 * n))


def test_vi64_known_bytes() -> None:
    assert encode_vi64(0x25) == b"\x25"
    assert encode_vi64(0x2F00) == b"\xaf\x00"  # the SETUP type (draft-20 s10.3)
    assert encode_vi64(MAX_VI64) == b"\xff" + b"\xff" * 8
    assert Reader(b"\x80\x25", vi64=True).varint() == 0x25  # non-minimal encodings are read too


@pytest.mark.parametrize("typed", [False, True])
@given(msg=requests)
def test_request_round_trip(typed: bool, msg: m.ControlMessage) -> None:
    wire = codec20.encode_message(msg, typed)
    split = codec20.split_message(wire)
    assert split is not None
    kind, payload, used = split
    assert used == len(wire)
    assert codec20.decode_message(kind, payload, 0, typed) == msg


@given(replies, small)
def test_replies_take_the_request_id_of_their_stream(msg: m.ControlMessage, rid: int) -> None:
    msg.request_id = rid  # type: ignore[union-attr]
    kind, payload, _ = codec20.split_message(codec20.encode_message(msg))  # type: ignore[misc]
    assert codec20.decode_message(kind, payload, rid) == msg


@given(st.one_of(requests, replies), st.data())
def test_truncated_input(msg: m.ControlMessage, data: st.DataObject) -> None:
    wire = codec20.encode_message(msg)
    cut = data.draw(st.integers(0, len(wire) - 1))
    assert codec20.split_message(wire[:cut]) is None
    kind, payload, _ = codec20.split_message(wire)  # type: ignore[misc]
    if payload:
        short = data.draw(st.integers(0, len(payload) - 1))
        try:
            decoded = codec20.decode_message(kind, payload[:short])
        except MoqDecodeError:
            return
        # Only messages ending in properties or a count-less Setup can lose whole pairs and parse.
        assert isinstance(decoded, m.SubscribeOk | m.Publish | m.FetchOk | m.RequestOk)


@given(st.integers(0, 0x60), st.binary(max_size=64), st.booleans())
def test_arbitrary_payloads_never_crash(kind: int, payload: bytes, typed: bool) -> None:
    with contextlib.suppress(MoqDecodeError):
        codec20.decode_message(kind, payload, 0, typed)


def test_setup_is_symmetric_and_count_less() -> None:
    setup = m.ServerSetup({m.SETUP_IMPLEMENTATION: b"trackmesh"})
    wire = codec20.encode_message(setup)
    assert wire[:2] == b"\xaf\x00"  # type 0x2F00 as vi64
    assert wire[4:] == b"\x07\x09trackmesh"  # option 7, no parameter count
    kind, payload, _ = codec20.split_message(wire)  # type: ignore[misc]
    assert codec20.decode_message(kind, payload) == m.ClientSetup({m.SETUP_IMPLEMENTATION: b"trackmesh"})


def test_parameters_are_encoded_by_their_definition() -> None:
    msg = m.Subscribe(2, (b"ns",), b"t", {0x10: 1, 0x20: 200, 0x09: bytes([5, 6])})
    payload = codec20.encode_message(msg)[3:]
    # request 2, namespace, name, then 3 parameters: FORWARD one byte, LARGEST_OBJECT a bare
    # Location (two varints, no length), SUBSCRIBER_PRIORITY one byte (200 is not a vi64 byte).
    assert payload == bytes([2, 1, 2]) + b"ns" + bytes([1]) + b"t" + bytes([3, 0x09, 5, 6, 0x07, 1, 0x10, 200])


def test_unknown_parameter_cannot_be_skipped() -> None:
    payload = bytes([0, 0, 0, 1, 0x0C, 0])  # request 0, empty namespace and name, parameter 0x0C
    with pytest.raises(MoqDecodeError, match="unknown message parameter 0xc"):
        codec20.decode_message(codec20.T_SUBSCRIBE, payload)


def test_publish_done_swaps_expired_and_too_far_behind() -> None:
    wire = codec20.encode_message(m.PublishDone(0, 0x6, 1))  # TOO_FAR_BEHIND (draft-16 numbering)
    assert wire[3] == 0x5
    kind, payload, _ = codec20.split_message(wire)  # type: ignore[misc]
    assert codec20.decode_message(kind, payload).status_code == 0x6  # type: ignore[union-attr]


def test_draft22_location_filter_is_typed() -> None:
    absolute = bytes([3]) + encode_varint(7) + encode_varint(1)  # ABSOLUTE_START 7/1 (draft-16 shape)
    msg = m.Subscribe(0, (b"a",), b"b", {0x21: absolute})
    d20 = codec20.encode_message(msg)
    d22 = codec20.encode_message(msg, typed=True)
    assert d20.endswith(bytes([0x21, 2, 7, 1]))  # a Length, then the fields
    assert d22.endswith(bytes([0x21, 2, 7, 1]))  # Type 2 (ABSOLUTE_START), then the fields
    next_object = m.Subscribe(0, (b"a",), b"b", {0x21: bytes([m.FILTER_LATEST_OBJECT])})
    assert codec20.encode_message(next_object).endswith(bytes([0x21, 2, 0, 0]))
    assert codec20.encode_message(next_object, typed=True).endswith(bytes([0x21, 5]))
    kind, payload, _ = codec20.split_message(codec20.encode_message(next_object, typed=True))  # type: ignore[misc]
    assert codec20.decode_message(kind, payload, 0, typed=True) == next_object
    with pytest.raises(MoqDecodeError):
        codec20.decode_message(kind, payload, 0, typed=False)
