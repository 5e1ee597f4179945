"""The levels summary (core/mixer/levels.py): its wire format and the remote subscriber that keeps the latest one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.core.mixer.levels import RemoteLevels, decode_levels, encode_levels, levels_channel
from trackmesh.core.model import TrackSource

names = st.text(max_size=40)
levels_lists = st.lists(st.tuples(st.builds(TrackSource, names, names), st.integers(0, 127)), max_size=20)


def test_levels_round_trip() -> None:
    levels = [(TrackSource("a/é", "mic"), 12), (TrackSource("", "x"), 127)]
    assert decode_levels(encode_levels(levels)) == dict(levels)
    assert decode_levels(b"") == {}


@given(levels_lists)
def test_any_summary_round_trips(levels: list[tuple[TrackSource, int]]) -> None:
    assert decode_levels(encode_levels(levels)) == dict(levels)


def test_loudness_is_clamped_when_encoded_and_checked_when_decoded() -> None:
    p, q = TrackSource("p", "t"), TrackSource("q", "t")
    assert decode_levels(encode_levels([(p, 300), (q, -5)])) == {p: 127, q: 0}
    with pytest.raises(ValueError, match="out of range"):
        decode_levels(encode_levels([(p, 1)])[:-1] + b"\x80")
    with pytest.raises(ValueError, match="truncated"):
        decode_levels(encode_levels([(p, 1)])[:-1])


@given(st.binary(max_size=200))
def test_garbage_either_decodes_or_is_a_value_error(data: bytes) -> None:
    try:
        out = decode_levels(data)
    except ValueError:
        return
    assert all(0 <= v <= 127 for v in out.values())
    assert decode_levels(encode_levels(list(out.items()))) == out


@given(st.binary(max_size=100))
def test_a_remote_summary_replaces_the_last_good_one_or_is_counted(data: bytes) -> None:
    lv = RemoteLevels(levels_channel("r", 1, 0))
    good = encode_levels([(TrackSource("p", "mic"), 90)])
    lv.on_channel_message(5.0, lv.channel, "1.0", good)
    assert lv.levels == {TrackSource("p", "mic"): 90} and lv.received == 5.0
    lv.on_channel_message(6.0, lv.channel, "1.0", data)
    try:
        expected = decode_levels(data)
    except ValueError:
        assert lv.bad == 1 and lv.received == 5.0 and lv.levels == {TrackSource("p", "mic"): 90}
    else:
        assert lv.bad == 0 and lv.received == 6.0 and lv.levels == expected


def test_channels_differ_per_room_node_and_worker() -> None:
    chans = {levels_channel(r, n, w) for r in ("a", "b") for n in (0, 1) for w in (0, 1)}
    assert len(chans) == 8
