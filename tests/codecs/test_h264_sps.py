"""The H.264 SPS reader: sizes (with cropping) and codec strings of real libx264 streams, and
garbage that is None, never an exception (Hypothesis)."""

from __future__ import annotations

import fractions

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.codecs.h264 import split_annexb
from trackmesh.codecs.h264_sps import _unescape, avc1_codec_string, sps_picture_size

av = pytest.importorskip("av")


def x264_sps(width: int, height: int, profile: str) -> bytes:
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.options = {"profile": profile, "tune": "zerolatency"}
    frame = av.VideoFrame(width, height, "yuv420p")
    frame.pts = 0
    packets = [bytes(p) for p in ctx.encode(frame)] + [bytes(p) for p in ctx.encode(None)]
    return next(bytes(u) for u in split_annexb(packets[0]) if u[0] & 0x1F == 7)


@pytest.mark.parametrize(
    ("width", "height", "profile", "codec"),
    [
        (640, 480, "baseline", "avc1.42c01e"),
        (1280, 720, "high", "avc1.64001f"),
        (322, 242, "main", "avc1.4d400d"),  # not a multiple of 16: cropped
    ],
)
def test_real_streams(width: int, height: int, profile: str, codec: str) -> None:
    sps = x264_sps(width, height, profile)
    assert sps_picture_size(sps) == (width, height)
    assert avc1_codec_string(sps) == codec


def test_not_an_sps() -> None:
    assert sps_picture_size(b"\x68\xce\x3c\x80") is None  # a PPS
    assert avc1_codec_string(b"\x67\x42") is None
    assert _unescape(b"\x00\x00\x03\x01\x00\x00\x03") == b"\x00\x00\x01\x00\x00"


@given(st.binary(max_size=64))
def test_garbage_is_none_or_a_size(raw: bytes) -> None:
    size = sps_picture_size(b"\x67" + raw)
    assert size is None or (size[0] > 0 and size[1] > 0)
