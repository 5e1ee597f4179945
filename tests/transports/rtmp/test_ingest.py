"""Ingest: FLV/Enhanced RTMP tags -> configs, Annex B access units, B-frame detection, audio."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.codecs.h264 import AvcConfig, build_avcc_config, split_annexb
from trackmesh.codecs.hevc import HevcConfig
from trackmesh.errors import RemoteProtocolError
from trackmesh.transports.rtmp.ingest import (
    AudioFrame,
    BFramesDetected,
    ConfigChanged,
    Ingest,
    UnsupportedCodec,
    VideoFrame,
)

SPS = b"\x67\x64\x00\x1f\xac\xd9\x40\x50"
PPS = b"\x68\xeb\xe3\xcb"
AVCC = build_avcc_config([SPS], [PPS])


def avcc(*nals: bytes) -> bytes:
    return b"".join(struct.pack("!I", len(n)) + n for n in nals)


def test_h264_frames_get_parameter_sets_before_key_frames_and_lose_auds() -> None:
    ingest = Ingest()
    assert ingest.video(0, b"\x27\x01\x00\x00\x00" + avcc(b"\x41\x9a")) == []  # before the config
    assert ingest.dropped_before_config == 1
    [config] = ingest.video(0, b"\x17\x00\x00\x00\x00" + AVCC)
    assert isinstance(config, ConfigChanged) and isinstance(config.config, AvcConfig)
    [key] = ingest.video(40, b"\x17\x01\x00\x00\x00" + avcc(b"\x09\xf0", b"\x65\x88\x84"))
    assert isinstance(key, VideoFrame) and key.keyframe and key.pts == 40 and key.rtp_timestamp == 3600
    assert [bytes(u) for u in split_annexb(key.data)] == [SPS, PPS, b"\x65\x88\x84"]
    [inter] = ingest.video(73, b"\x27\x01\x00\x00\x00" + avcc(b"\x41\x9a"))
    assert isinstance(inter, VideoFrame) and not inter.keyframe and inter.data == b"\x00\x00\x00\x01\x41\x9a"


def test_key_frame_that_carries_its_parameter_sets_is_left_alone() -> None:
    ingest = Ingest()
    ingest.video(0, b"\x17\x00\x00\x00\x00" + AVCC)
    [key] = ingest.video(0, b"\x17\x01\x00\x00\x00" + avcc(SPS, PPS, b"\x65\x88"))
    assert isinstance(key, VideoFrame)
    assert [bytes(u) for u in split_annexb(key.data)] == [SPS, PPS, b"\x65\x88"]


def test_b_frames_are_reported_once() -> None:
    ingest = Ingest()
    ingest.video(0, b"\x17\x00\x00\x00\x00" + AVCC)
    out = ingest.video(0, b"\x17\x01\x00\x00\x42" + avcc(b"\x65\x88"))
    assert out[0] == BFramesDetected(0, 0x42) and isinstance(out[1], VideoFrame) and out[1].pts == 0x42
    assert not any(isinstance(o, BFramesDetected) for o in ingest.video(33, b"\x27\x01\x00\x00\x21" + avcc(b"\x41")))


def test_enhanced_hevc_and_av1() -> None:
    hvcc = bytes([1, 0x21]) + bytes(10) + bytes([93]) + b"\xf0\x00\xfc\xfd\xf8\xf8\x00\x00\x0f" + bytes([1])
    hvcc += bytes([0x80 | 33]) + struct.pack("!HH", 1, 3) + b"\x42\x01\x01"
    ingest = Ingest()
    [config] = ingest.video(0, b"\x90hvc1" + hvcc)
    assert isinstance(config, ConfigChanged) and isinstance(config.config, HevcConfig)
    [frame] = ingest.video(0, b"\x93hvc1" + avcc(b"\x26\x01\xaf"))  # CodedFramesX, IDR_W_RADL
    assert isinstance(frame, VideoFrame) and frame.data == b"\x00\x00\x00\x01\x42\x01\x01\x00\x00\x00\x01\x26\x01\xaf"
    [av1_config] = ingest.video(0, b"\x90av01\x81\x00\x0c\x00")
    assert isinstance(av1_config, ConfigChanged) and av1_config.config == b"\x81\x00\x0c\x00"
    [av1] = ingest.video(33, b"\x91av01\x12\x00\x32\x01\x00")
    assert isinstance(av1, VideoFrame) and av1.data == b"\x12\x00\x32\x01\x00" and av1.keyframe


def test_audio_and_unsupported_codecs() -> None:
    ingest = Ingest()
    assert ingest.audio(0, b"\xaf\x01frame") == []  # AAC before its config
    [config] = ingest.audio(0, b"\xaf\x00\x12\x10")
    assert config == ConfigChanged("audio", "mp4a", 0, b"\x12\x10")
    assert ingest.audio(23, b"\xaf\x01frame") == [AudioFrame("mp4a", 0, 23, b"frame")]
    assert ingest.audio(20, b"\x91Opus\xfc\x00") == []  # another codec on an AAC track: dropped
    assert Ingest().audio(20, b"\x91Opus\xfc\x00") == [AudioFrame("Opus", 0, 20, b"\xfc\x00")]
    assert ingest.audio(0, b"\x2fmp3") == [UnsupportedCodec("audio", 0, "sound format 2")]
    assert ingest.audio(0, b"\x2fmp3") == []  # once per track
    assert ingest.video(0, b"\x22vp6") == [UnsupportedCodec("video", 0, "codec id 2")]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=80)), max_size=6))
def test_garbage_raises_only_protocol_errors(tags: list[tuple[bool, bytes]]) -> None:
    ingest = Ingest()
    ingest.video(0, b"\x17\x00\x00\x00\x00" + AVCC)
    for is_video, body in tags:
        try:
            out = ingest.video(0, body) if is_video else ingest.audio(0, body)
        except RemoteProtocolError:
            continue
        assert isinstance(out, list)
