"""LOC properties and the MSF catalog: round trips and garbage (Hypothesis)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.transports.moq.catalog import CatalogTrack, codec_string, decode_catalog, encode_catalog
from trackmesh.transports.moq.errors import MoqDecodeError
from trackmesh.transports.moq.loc import LocProperties, decode_loc_properties, encode_loc_properties
from trackmesh.transports.moq.objects import transcode_extensions

props = st.builds(
    LocProperties,
    st.one_of(st.none(), st.integers(0, (1 << 62) - 1)),
    st.one_of(st.none(), st.binary(max_size=300)),
)


@given(props, st.booleans())
def test_loc_properties_round_trip(p: LocProperties, vi64: bool) -> None:
    assert decode_loc_properties(encode_loc_properties(p, vi64), vi64) == p


@given(props)
def test_loc_properties_survive_the_relays_reframing_for_draft_20(p: LocProperties) -> None:
    raw = encode_loc_properties(p)
    assert decode_loc_properties(transcode_extensions(raw, False, True), vi64=True) == p


@given(st.binary(max_size=64), st.booleans())
def test_loc_garbage_is_a_decode_error_or_properties(raw: bytes, vi64: bool) -> None:
    with contextlib.suppress(MoqDecodeError):
        decode_loc_properties(raw, vi64)


def test_loc_unknown_properties_are_skipped() -> None:
    # type 0x02 = 2 (an integer), then 0x06 (delta 4) = 1000, then 0x0B (delta 5) = b"xy"
    raw = bytes([0x02, 0x07, 0x04]) + b"\x43\xe8" + bytes([0x05, 0x02]) + b"xy"
    assert decode_loc_properties(raw) == LocProperties(1000, None)
    with pytest.raises(MoqDecodeError):
        decode_loc_properties(raw[:-1])


names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)
tracks = st.builds(
    CatalogTrack,
    names,
    st.booleans(),
    st.integers(0, 50),
    st.text(max_size=10),
    st.sampled_from(["", "vp8", "avc1.42e01f", "opus"]),
    st.integers(0, 4096),
    st.integers(0, 4096),
    st.integers(0, 96_000),
    st.integers(0, 8),
)


def _normal(t: CatalogTrack) -> CatalogTrack:
    """What survives the catalog: a video size only when both are known; audio fields for audio."""
    if t.video:
        w, h = (t.width, t.height) if t.width and t.height else (0, 0)
        return CatalogTrack(t.name, True, t.render_group, t.label, t.codec, w, h, 0, 0)
    return CatalogTrack(t.name, False, t.render_group, t.label, t.codec, 0, 0, t.samplerate, t.channels)


@given(st.lists(tracks, max_size=8), st.one_of(st.none(), st.integers(0, 1 << 50)))
def test_catalog_round_trip(entries: list[CatalogTrack], at: int | None) -> None:
    assert decode_catalog(encode_catalog(entries, at)) == [_normal(t) for t in entries]


@given(st.binary(max_size=200))
def test_catalog_garbage_is_a_decode_error_or_tracks(raw: bytes) -> None:
    with contextlib.suppress(MoqDecodeError):
        decode_catalog(raw)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=8), c),
        max_leaves=12,
    )
)
def test_catalog_of_any_json_is_a_decode_error_or_tracks(doc: object) -> None:
    for wrapped in (doc, {"version": 1, "tracks": doc}, {"version": 1, "tracks": [doc]}):
        with contextlib.suppress(MoqDecodeError):
            decode_catalog(json.dumps(wrapped).encode())


def test_catalog_shape() -> None:
    doc = json.loads(
        encode_catalog(
            [
                CatalogTrack("alice/video_main", True, 1, "alice", codec_string("vp8"), 640, 480),
                CatalogTrack("alice/audio_main", False, 1, "alice", codec_string("OPUS"), samplerate=48000, channels=2),
            ]
        )
    )
    assert doc == {
        "version": 1,
        "tracks": [
            {"name": "alice/video_main", "packaging": "loc", "isLive": True, "role": "video", "renderGroup": 1,
             "label": "alice", "codec": "vp8", "width": 640, "height": 480},
            {"name": "alice/audio_main", "packaging": "loc", "isLive": True, "role": "audio", "renderGroup": 1,
             "label": "alice", "codec": "opus", "samplerate": 48000, "channelConfig": "2"},
        ],
    }  # fmt: skip
    assert codec_string("h264") == "avc1.42e01f" and codec_string("nonesuch") == ""
