"""The draft-16 control codec: Hypothesis round trips, truncated and trailing input, known bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.codec16 import decode_message, encode_message, split_message
from trackmesh.transports.moq.errors import MoqDecodeError
from trackmesh.transports.moq.varint import MAX_VARINT, Reader, encode_varint

varints = st.integers(min_value=0, max_value=MAX_VARINT)
small = st.integers(min_value=0, max_value=1 << 20)
blobs = st.binary(max_size=24)
namespaces = st.lists(st.binary(max_size=8), max_size=4).map(tuple)


@st.composite
def params(draw: st.DrawFn) -> m.Params:
    keys = draw(st.lists(st.integers(min_value=0, max_value=300), max_size=5, unique=True))
    return {k: (draw(blobs) if k & 1 else draw(varints)) for k in keys}


messages = st.one_of(
    st.builds(m.ClientSetup, params()),
    st.builds(m.ServerSetup, params()),
    st.builds(m.GoAway, blobs),
    st.builds(m.MaxRequestId, varints),
    st.builds(m.RequestsBlocked, varints),
    st.builds(m.Subscribe, small, namespaces, blobs, params()),
    st.builds(m.SubscribeOk, small, varints, params(), params()),
    st.builds(m.RequestError, small, varints, varints, blobs),
    st.builds(m.RequestOk, small, params()),
    st.builds(m.RequestUpdate, small, small, params()),
    st.builds(m.Unsubscribe, small),
    st.builds(m.PublishDone, small, varints, varints, blobs),
    st.builds(m.PublishNamespace, small, namespaces, params()),
    st.builds(m.PublishNamespaceDone, small),
    st.builds(m.PublishNamespaceCancel, small, varints, blobs),
    st.builds(m.Namespace, namespaces),
    st.builds(m.NamespaceDone, namespaces),
    st.builds(m.SubscribeNamespace, small, namespaces, st.integers(0, 2), params()),
    st.builds(m.Publish, small, namespaces, blobs, varints, params(), params()),
    st.builds(m.PublishOk, small, params()),
    st.builds(m.TrackStatus, small, namespaces, blobs, params()),
    st.builds(
        m.Fetch,
        small,
        st.just(m.FETCH_STANDALONE),
        namespaces,
        blobs,
        small,
        small,
        small,
        small,
        st.just(0),
        st.just(0),
        params(),
    ),
    st.builds(
        m.Fetch,
        small,
        st.sampled_from([m.FETCH_RELATIVE_JOINING, m.FETCH_ABSOLUTE_JOINING]),
        st.just(()),
        st.just(b""),
        st.just(0),
        st.just(0),
        st.just(0),
        st.just(0),
        small,
        small,
        params(),
    ),
    st.builds(m.FetchOk, small, st.integers(0, 1), small, small, params(), params()),
    st.builds(m.FetchCancel, small),
)


@given(st.integers(min_value=0, max_value=MAX_VARINT))
def test_varint_round_trip(value: int) -> None:
    data = encode_varint(value)
    r = Reader(data)
    assert r.varint() == value
    assert r.remaining() == 0


@given(messages)
def test_round_trip(msg: m.ControlMessage) -> None:
    wire = encode_message(msg)
    split = split_message(wire)
    assert split is not None
    kind, payload, used = split
    assert used == len(wire)
    assert decode_message(kind, payload) == msg


@given(messages, st.data())
def test_truncated_input_waits_or_is_refused(msg: m.ControlMessage, data: st.DataObject) -> None:
    wire = encode_message(msg)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    # A control stream buffer cut short is not a message yet...
    assert split_message(wire[:cut]) is None
    # ...and a payload cut short (a Length that lies) is a protocol violation, never a crash.
    kind, payload, _ = split_message(wire)  # type: ignore[misc]
    if len(payload):
        short = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
        try:
            decoded = decode_message(kind, payload[:short])
        except MoqDecodeError:
            return
        # Only messages ending in extensions can lose whole trailing pairs and still parse.
        assert isinstance(decoded, m.SubscribeOk | m.Publish | m.FetchOk)


@given(messages, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_refused_unless_extensions(msg: m.ControlMessage, extra: bytes) -> None:
    kind, payload, _ = split_message(encode_message(msg))  # type: ignore[misc]
    try:
        decode_message(kind, bytes(payload) + extra)
    except MoqDecodeError:
        return
    assert isinstance(msg, m.SubscribeOk | m.Publish | m.FetchOk)


@given(st.integers(0, 0x40), st.binary(max_size=64))
def test_arbitrary_payloads_never_crash(kind: int, payload: bytes) -> None:
    with contextlib.suppress(MoqDecodeError):
        decode_message(kind, payload)


def test_known_bytes_client_setup_of_a_real_client() -> None:
    # @moq/lite's draft-16 CLIENT_SETUP (protocols.md s3.3): MAX_REQUEST_ID and IMPLEMENTATION,
    # the second type delta-encoded (7 - 2 = 5).
    wire = bytes.fromhex("2000130202" + "8000a455" + "050b") + b"moq-lite-js"
    kind, payload, used = split_message(wire)  # type: ignore[misc]
    assert used == len(wire)
    msg = decode_message(kind, payload)
    assert msg == m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 0xA455, m.SETUP_IMPLEMENTATION: b"moq-lite-js"})
    assert encode_message(msg) == wire


def test_unknown_type_is_a_decode_error() -> None:
    with pytest.raises(MoqDecodeError, match="unknown control message type 0x7f"):
        decode_message(0x7F, b"")


def test_oversized_namespace_is_refused() -> None:
    payload = encode_varint(0) + encode_varint(40) + b"\x00" * 40 + b"\x00" + b"\x00"
    with pytest.raises(MoqDecodeError, match="namespace of 40 fields"):
        decode_message(0x06, payload)
