"""Draft-16 data streams and datagrams: round trips, byte-at-a-time feeding, truncation, bad types."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.transports.moq.errors import MoqDecodeError, Truncated
from trackmesh.transports.moq.objects import (
    Datagram,
    FetchObject,
    SubgroupHeader,
    SubgroupStreamParser,
    decode_datagram,
    decode_fetch_object,
    decode_subgroup_header,
    encode_datagram,
    encode_fetch_object,
    encode_object,
    encode_subgroup_header,
    transcode_objects,
)
from trackmesh.transports.moq.varint import MAX_VARINT, Reader, encode_varint, encode_vi64

varints = st.integers(min_value=0, max_value=MAX_VARINT)
priorities = st.one_of(st.none(), st.integers(0, 255))


@st.composite
def extension_blocks(draw: st.DrawFn, vi64: bool) -> bytes:
    """Object extensions: delta-typed Key-Value-Pairs (draft-16 s1.4.2) in the draft's integers."""
    enc = encode_vi64 if vi64 else encode_varint
    out = b""
    previous = 0
    for key in sorted(draw(st.lists(st.integers(0, 200), max_size=3, unique=True))):
        out += enc(key - previous)
        previous = key
        out += enc(len(v := draw(st.binary(max_size=5)))) + v if key & 1 else enc(draw(st.integers(0, 1 << 40)))
    return out


@st.composite
def subgroup_streams(
    draw: st.DrawFn, vi64: bool = False
) -> tuple[SubgroupHeader, list[tuple[int, bytes, bytes | None, int]], bytes]:
    mode = draw(st.sampled_from([0, 1, 2]))
    ext = draw(st.booleans())
    header = SubgroupHeader(
        draw(varints),
        draw(varints),
        draw(varints) if mode == 2 else (0 if mode == 0 else None),
        draw(priorities),
        ext,
        draw(st.booleans()),
        mode,
    )
    ids = sorted(draw(st.lists(st.integers(0, 1 << 30), max_size=6, unique=True)))
    objects = []
    wire = bytearray(encode_subgroup_header(header, vi64))
    previous = None
    for object_id in ids:
        payload = draw(st.binary(max_size=40))
        status = 0 if payload else draw(st.sampled_from([0, 3, 4]))
        extensions = draw(extension_blocks(vi64)) if ext else None
        wire += encode_object(object_id, previous, payload, extensions=extensions, status=status, vi64=vi64)
        objects.append((object_id, payload, extensions, status))
        previous = object_id
    return header, objects, bytes(wire)


@pytest.mark.parametrize("vi64", [False, True])
@given(data=st.data(), chunk=st.integers(1, 7))
def test_subgroup_stream_round_trip_in_any_chunking(vi64: bool, data: st.DataObject, chunk: int) -> None:
    header, objects, wire = data.draw(subgroup_streams(vi64))
    r = Reader(wire, vi64=vi64)
    parser = SubgroupStreamParser(r.varint(), vi64)
    got = []
    for i in range(r.pos, len(wire), chunk):
        got += parser.feed(wire[i : i + chunk])
    assert parser.pending() == 0
    assert parser.header is not None
    assert parser.header.track_alias == header.track_alias
    assert parser.header.group_id == header.group_id
    assert parser.header.publisher_priority == header.publisher_priority
    assert parser.header.first_object == (header.first_object or not vi64)
    if header.subgroup_id_mode == 1 and objects:
        assert parser.header.subgroup_id == objects[0][0]
    elif header.subgroup_id_mode != 1:
        assert parser.header.subgroup_id == header.subgroup_id
    assert [(o.object_id, o.payload, o.extensions if header.extensions_present else None, o.status) for o in got] == [
        (i, p, e, s) for i, p, e, s in objects
    ]
    # The relay forwards each object's exact bytes: they concatenate back to the stream body.
    assert b"".join(o.wire for o in got) == wire[len(encode_subgroup_header(header, vi64)) :]
    # Re-framed for the other draft and back: the same bytes (payloads untouched).
    other = transcode_objects(got, None, not vi64, vi64)
    head = encode_subgroup_header(header, not vi64)
    hr = Reader(head, vi64=not vi64)
    back = SubgroupStreamParser(hr.varint(), not vi64)
    again = back.feed(head[hr.pos :] + other)
    assert [(o.object_id, o.payload, o.status) for o in again] == [(o.object_id, o.payload, o.status) for o in got]
    assert transcode_objects(again, None, vi64, not vi64) == b"".join(o.wire for o in got)


@given(subgroup_streams(), st.data())
def test_truncated_subgroup_stream_holds_the_partial_object(stream, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    _, objects, wire = stream
    cut = data.draw(st.integers(1, len(wire)))
    r = Reader(wire)
    parser = SubgroupStreamParser(r.varint())
    got = parser.feed(wire[r.pos : cut]) if cut > r.pos else []
    assert len(got) <= len(objects)
    assert [o.object_id for o in got] == [o[0] for o in objects[: len(got)]]


def test_subgroup_header_fields_on_the_wire() -> None:
    # Type 0x14: explicit Subgroup ID, no extensions; alias 1, group 2, subgroup 0, priority 128.
    header = SubgroupHeader(1, 2, 0, 128)
    assert encode_subgroup_header(header) == bytes([0x14, 1, 2, 0, 128])
    # DEFAULT_PRIORITY (0x20): no priority byte.
    assert encode_subgroup_header(SubgroupHeader(1, 2, 0, None, subgroup_id_mode=0)) == bytes([0x30, 1, 2])


@pytest.mark.parametrize("kind", [0x06, 0x0F, 0x1E, 0x16, 0x36, 0x40])
def test_bad_subgroup_types_are_refused(kind: int) -> None:
    with pytest.raises(MoqDecodeError):
        SubgroupStreamParser(kind)


def test_malformed_extensions_are_refused() -> None:
    parser = SubgroupStreamParser(0x11)  # extensions present
    with pytest.raises(MoqDecodeError, match="Key-Value-Pairs"):
        parser.feed(bytes([1, 2, 128, 0, 1, 0x01, 1, 0x61]))  # one odd-typed pair cut short


def test_unknown_object_status_is_refused() -> None:
    parser = SubgroupStreamParser(0x10)
    with pytest.raises(MoqDecodeError, match="Object Status"):
        parser.feed(bytes([1, 2, 128, 0, 0, 9]))


datagrams = st.builds(
    Datagram,
    varints,
    varints,
    st.integers(0, 1 << 40),
    priorities,
    st.binary(max_size=50),
    st.one_of(st.none(), st.binary(max_size=8)),
    st.one_of(st.none(), st.sampled_from([0, 3, 4])),
    st.booleans(),
)


@pytest.mark.parametrize("vi64", [False, True])
@given(d=datagrams)
def test_datagram_round_trip(vi64: bool, d: Datagram) -> None:
    got = decode_datagram(encode_datagram(d, vi64), vi64)
    if d.status is not None:
        d.payload, d.end_of_group = b"", False
    assert got == d


@given(datagrams, st.data())
def test_truncated_datagram_never_crashes(d: Datagram, data: st.DataObject) -> None:
    wire = encode_datagram(d)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with contextlib.suppress(MoqDecodeError):
        decode_datagram(wire[:cut])


@given(st.binary(max_size=40))
def test_arbitrary_datagrams_never_crash(wire: bytes) -> None:
    with contextlib.suppress(MoqDecodeError):
        decode_datagram(wire)


fetch_objects = st.builds(
    FetchObject,
    varints,
    varints,
    varints,
    st.integers(0, 255),
    st.binary(max_size=30),
    st.one_of(st.none(), st.binary(max_size=8)),
    st.booleans(),
)


@given(st.lists(fetch_objects, max_size=5))
def test_fetch_objects_round_trip(objs: list[FetchObject]) -> None:
    wire = b"".join(encode_fetch_object(o) for o in objs)
    r = Reader(wire)
    got = []
    prior = None
    while r.remaining():
        prior = decode_fetch_object(r, prior)
        assert prior is not None
        got.append(prior)
    for o in objs:
        if o.datagram:
            o.subgroup_id = 0
    assert got == objs


@given(fetch_objects, st.data())
def test_truncated_fetch_object_raises_truncated(o: FetchObject, data: st.DataObject) -> None:
    wire = encode_fetch_object(o)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(Truncated):
        decode_fetch_object(Reader(wire[:cut]), None)


def test_decode_subgroup_header_waits_for_bytes() -> None:
    with pytest.raises(Truncated):
        decode_subgroup_header(Reader(bytes([5])), 0x14)
