"""AMF0 encode/decode round trips, the AMF3 switch, caps and garbage."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.errors import RemoteProtocolError
from trackmesh.transports.rtmp import amf0, amf3
from trackmesh.transports.rtmp.errors import RtmpError
from trackmesh.transports.rtmp.values import UNDEFINED, AmfValue

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    # 3 UTF-8 bytes per character: either side of the 65535-byte switch to a long string
    st.integers(0x5554, 0x5557).map(lambda n: "\u20ac" * n),
)
values: st.SearchStrategy[AmfValue] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(values, max_size=5))
def test_amf0_round_trip(items: list[AmfValue]) -> None:
    assert amf0.decode_all(amf0.encode_all(*items)) == items


def test_strings_count_bytes_not_characters() -> None:
    assert amf0.encode("é") == b"\x02\x00\x02\xc3\xa9"  # pyrtmp wrote a length of 1 here
    assert amf0.decode_all(b"\x02\x00\x02\xc3\xa9") == ["é"]


def test_known_command_bytes() -> None:
    wire = amf0.encode_all("_result", 1, None, UNDEFINED, {"a": True})
    assert wire == (
        b"\x02\x00\x07_result" + b"\x00" + struct.pack("!d", 1.0) + b"\x05\x06" + b"\x03\x00\x01a\x01\x01\x00\x00\x09"
    )


def test_ecma_array_date_reference_and_typed_object() -> None:
    ecma = b"\x08\x00\x00\x00\x09\x00\x08duration\x00" + struct.pack("!d", 5.0) + b"\x00\x00\x09"
    date = b"\x0b" + struct.pack("!d", 1000.0) + b"\x00\x00"
    ref = b"\x07\x00\x00"
    typed = b"\x10\x00\x01C\x00\x01x\x05\x00\x00\x09"
    assert amf0.decode_all(ecma + date + ref + typed) == [{"duration": 5.0}, 1000.0, {"duration": 5.0}, {"x": None}]


def test_depth_cap() -> None:
    deep = b"\x0a\x00\x00\x00\x01" * (amf0.MAX_DEPTH + 2) + b"\x05"
    with pytest.raises(RtmpError, match="deeper"):
        amf0.decode_all(deep)


def test_reference_forward_is_refused() -> None:
    with pytest.raises(RtmpError, match="reference"):
        amf0.decode_all(b"\x07\x00\x00")


def test_huge_counts_are_refused_without_allocating() -> None:
    with pytest.raises(RtmpError, match="count"):
        amf0.decode_all(b"\x0a\xff\xff\xff\xff\x05")


def test_avmplus_switch_reads_amf3() -> None:
    # AMF0 0x11 then an AMF3 dynamic anonymous object {app: "live", n: 5, d: 1.5, s: "live"}
    # where the second "live" is a string reference (index 1: "app" is 0).
    obj = (
        b"\x0a\x0b\x01"  # object, inline traits: dynamic, 0 sealed; class name "" (0x01)
        + b"\x07app\x06\x09live"
        + b"\x03n\x04\x05"
        + b"\x03d\x05"
        + struct.pack("!d", 1.5)
        + b"\x03s\x06\x02"  # string reference 1 -> "live"
        + b"\x01"
    )
    assert amf0.decode_all(b"\x11" + obj) == [{"app": "live", "n": 5, "d": 1.5, "s": "live"}]


def test_amf3_integers_arrays_and_references() -> None:
    # -1 as U29 (0x1FFFFFFF), a dense array [1, true], then an object reference to it.
    data = b"\x04\xff\xff\xff\xff" + b"\x09\x05\x01\x04\x01\x03" + b"\x09\x00"
    v1, pos = amf3.decode_value(data, 0)
    assert v1 == -1 and pos == 5
    # references are per top-level value, so decode the array and its reference inside one array
    outer = b"\x09\x05\x01" + data[5:-1] + b"\x02"  # ref index 1: the inner array (0 is the outer)
    v2, end = amf3.decode_value(outer, 0)
    assert v2 == [[1, True], [1, True]] and end == len(outer)


def test_cyclic_references_are_refused() -> None:
    with pytest.raises(RtmpError, match="cyclic"):
        amf3.decode_value(b"\x09\x03\x01\x09\x00", 0)  # [ref 0] inside array 0
    with pytest.raises(RtmpError, match="cyclic"):
        amf0.decode_all(b"\x03\x00\x01a\x07\x00\x00\x00\x00\x09")  # {a: ref 0}


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    for decode in (amf0.decode_all, lambda d: amf0.decode_all(b"\x11" + d)):
        try:
            out = decode(data)
        except RemoteProtocolError:
            continue
        assert isinstance(out, list)


def test_nan_survives() -> None:
    [value] = amf0.decode_all(amf0.encode(math.nan))
    assert isinstance(value, float) and math.isnan(value)
