"""Codec lookup by SDP encoding name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.codecs.h264 import H264Depacketizer
from trackmesh.codecs.registry import depacketizer, is_keyframe, packetizer
from trackmesh.codecs.vp9 import Vp9Packetizer
from trackmesh.errors import LocalProtocolError, ProtocolError


def test_unknown_codec_is_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        is_keyframe("opus", b"\x00")
    with pytest.raises(LocalProtocolError):
        packetizer("speex")


def test_lookup_is_case_insensitive() -> None:
    assert isinstance(depacketizer("H264"), H264Depacketizer)
    assert isinstance(packetizer("vp9"), Vp9Packetizer)
    for name in ("vp8", "VP9", "h264", "H265", "AV1", "opus", "PCMU", "pcma"):
        assert packetizer(name) is not None and depacketizer(name) is not None


@given(st.sampled_from(["vp8", "vp9", "h264", "H265", "av1"]), st.binary(max_size=40))
def test_random_payloads_only_protocol_error(codec: str, payload: bytes) -> None:
    try:
        result = is_keyframe(codec, payload)
    except ProtocolError:
        return
    assert isinstance(result, bool)
