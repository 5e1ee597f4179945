"""FLV and Enhanced RTMP tag bodies: legacy AVC/AAC, ExVideoTagHeader (v1), ModEx and multitrack
(v2), ExAudioTagHeader, the configs handed to codecs/, and garbage."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.codecs.h264 import AvcConfig, build_avcc_config
from trackmesh.codecs.hevc import HevcConfig
from trackmesh.errors import RemoteProtocolError
from trackmesh.transports.rtmp import flv
from trackmesh.transports.rtmp.errors import RtmpError
from trackmesh.transports.rtmp.flv import PacketType

SPS = b"\x67\x64\x00\x1f\xac\xd9\x40\x50\x05\xbb\x01\x10"
PPS = b"\x68\xeb\xe3\xcb\x22\xc0"
AVCC = build_avcc_config([SPS], [PPS])


def hvcc() -> bytes:
    fixed = bytes([1, 0x21]) + bytes(4) + bytes(6) + bytes([93]) + b"\xf0\x00\xfc\xfd\xf8\xf8\x00\x00\x0f"
    out = fixed + bytes([3])
    for nal_type, unit in ((32, b"\x40\x01\x0c"), (33, b"\x42\x01\x01"), (34, b"\x44\x01\xc1")):
        out += bytes([0x80 | nal_type]) + struct.pack("!H", 1) + struct.pack("!H", len(unit)) + unit
    return out


def test_legacy_avc_sequence_header_and_frames() -> None:
    [seq] = flv.parse_video(b"\x17\x00\x00\x00\x00" + AVCC)
    assert (seq.fourcc, seq.packet_type, seq.is_keyframe) == ("avc1", PacketType.SEQUENCE_START, True)
    config = flv.video_config(seq)
    assert isinstance(config, AvcConfig) and config.sps == [SPS] and config.pps == [PPS]
    nalu = struct.pack("!I", 3) + b"\x65\x88\x80"
    [frame] = flv.parse_video(b"\x27\x01\xff\xff\xfe" + nalu)  # composition time -2 (SI24)
    assert (frame.packet_type, frame.composition_time, frame.data, frame.is_keyframe) == (
        PacketType.CODED_FRAMES,
        -2,
        nalu,
        False,
    )


def test_legacy_hevc_codec_id_12() -> None:
    [seq] = flv.parse_video(b"\x1c\x00\x00\x00\x00" + hvcc())
    assert seq.fourcc == "hvc1"
    config = flv.video_config(seq)
    assert isinstance(config, HevcConfig) and config.vps == [b"\x40\x01\x0c"]


def test_legacy_other_codec_is_named_none() -> None:
    [tag] = flv.parse_video(b"\x22raw vp6")
    assert tag.fourcc is None and tag.data == b"raw vp6"


def test_enhanced_v1_hevc_sequence_start_and_frames() -> None:
    # 0x90 = IsExHeader | key frame | SequenceStart, as PyAV's FFmpeg 8.1 sends (protocols.md s1.3)
    [seq] = flv.parse_video(b"\x90hvc1" + hvcc())
    assert (seq.fourcc, seq.packet_type, seq.is_keyframe) == ("hvc1", PacketType.SEQUENCE_START, True)
    assert isinstance(flv.video_config(seq), HevcConfig)
    [frame] = flv.parse_video(b"\xa1hvc1\x00\x00\x21" + b"data")  # inter frame, CodedFrames, cts 33
    assert (frame.frame_type, frame.composition_time, frame.data) == (2, 33, b"data")
    [framex] = flv.parse_video(b"\x93hvc1" + b"data")  # CodedFramesX: no composition time
    assert (framex.packet_type, framex.composition_time, framex.data) == (PacketType.CODED_FRAMES_X, 0, b"data")


@pytest.mark.parametrize("fourcc", [b"av01", b"vp09"])
def test_enhanced_codecs_without_composition_time(fourcc: bytes) -> None:
    [frame] = flv.parse_video(b"\x91" + fourcc + b"\x12\x00\x0a")
    assert frame.fourcc == fourcc.decode() and frame.composition_time == 0 and frame.data == b"\x12\x00\x0a"
    [seq] = flv.parse_video(b"\x90" + fourcc + b"\x81\x00")
    assert flv.video_config(seq) is None


def test_enhanced_metadata_sequence_end_and_command() -> None:
    [meta] = flv.parse_video(b"\x94hvc1" + b"\x02\x00\x09colorInfo")
    assert meta.packet_type == PacketType.METADATA
    [end] = flv.parse_video(b"\x92avc1")
    assert end.packet_type == PacketType.SEQUENCE_END and end.data == b""
    [cmd] = flv.parse_video(b"\xd4\x00")  # frame type 5 (command), as protocols.md s1.3 saw
    assert cmd.packet_type == PacketType.COMMAND


def test_modex_timestamp_offset_nano_is_skipped() -> None:
    # ModEx: size-1 = 2 (3 bytes of nanoseconds), then modExType 0 | packet type CodedFrames
    [frame] = flv.parse_video(b"\x97" + b"\x02\x00\x01\x00" + b"\x01" + b"avc1\x00\x00\x00" + b"nal")
    assert (frame.fourcc, frame.packet_type, frame.data) == ("avc1", PacketType.CODED_FRAMES, b"nal")


def test_multitrack_one_codec_many_tracks() -> None:
    body = (
        b"\x96"  # key frame, Multitrack
        + b"\x11avc1"  # ManyTracks | CodedFrames, one FourCC for all
        + b"\x00"
        + (3 + 2).to_bytes(3, "big")
        + b"\x00\x00\x00hi"
        + b"\x02"
        + (3 + 3).to_bytes(3, "big")
        + b"\x00\x00\x10bye"
    )
    tracks = flv.parse_video(body)
    assert [(t.track_id, t.fourcc, t.composition_time, t.data) for t in tracks] == [
        (0, "avc1", 0, b"hi"),
        (2, "avc1", 16, b"bye"),
    ]


def test_multitrack_many_codecs_and_one_track() -> None:
    body = b"\x96\x21" + b"av01\x00" + (1).to_bytes(3, "big") + b"A" + b"vp09\x01" + (2).to_bytes(3, "big") + b"VV"
    assert [(t.fourcc, t.track_id, t.data) for t in flv.parse_video(body)] == [("av01", 0, b"A"), ("vp09", 1, b"VV")]
    [one] = flv.parse_video(b"\x96\x01hvc1\x05\x00\x00\x00rest")  # OneTrack: body runs to the end
    assert (one.track_id, one.data) == (5, b"rest")


def test_audio_aac_and_config() -> None:
    asc = bytes.fromhex("1210")  # AAC LC, 44.1 kHz, stereo
    [seq] = flv.parse_audio(b"\xaf\x00" + asc)
    assert (seq.fourcc, seq.packet_type) == ("mp4a", PacketType.SEQUENCE_START)
    config = flv.parse_aac_config(seq.data)
    assert (config.object_type, config.sample_rate, config.channels) == (2, 44100, 2)
    [raw] = flv.parse_audio(b"\xaf\x01frame")
    assert (raw.packet_type, raw.data) == (PacketType.CODED_FRAMES, b"frame")
    assert flv.parse_aac_config(bytes.fromhex("121056e500")).sample_rate == 44100  # ffmpeg's (protocols.md)


def test_audio_enhanced_opus_and_multitrack() -> None:
    [seq] = flv.parse_audio(b"\x90Opus" + b"OpusHead")
    assert (seq.fourcc, seq.packet_type, seq.data) == ("Opus", PacketType.SEQUENCE_START, b"OpusHead")
    [frame] = flv.parse_audio(b"\x91Opus\xfc")
    assert frame.packet_type == PacketType.CODED_FRAMES
    tracks = flv.parse_audio(b"\x95\x11Opus\x00\x00\x00\x01a\x01\x00\x00\x01b")
    assert [(t.track_id, t.data) for t in tracks] == [(0, b"a"), (1, b"b")]
    [mp3] = flv.parse_audio(b"\x2fmp3")
    assert mp3.fourcc is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x17",
        b"\x17\x00\x00",
        b"\x17\x05\x00\x00\x00",
        b"\x90hv",
        b"\x96\x31avc1",
        b"\x96\x16avc1\x00",
        b"\x96\x11avc1",
    ],
)
def test_malformed_video_raises(body: bytes) -> None:
    with pytest.raises(RtmpError):
        flv.parse_video(body)


def test_bad_sequence_header_raises_our_error() -> None:
    [seq] = flv.parse_video(b"\x17\x00\x00\x00\x00\x02garbage")
    with pytest.raises(RtmpError, match="avc1 sequence header"):
        flv.video_config(seq)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    for parse in (flv.parse_video, flv.parse_audio, flv.parse_aac_config):
        try:
            out = parse(data)
        except RemoteProtocolError:
            continue
        assert out is not None
    try:
        packets = flv.parse_video(data)
    except RemoteProtocolError:
        return
    for packet in packets:
        if packet.packet_type == PacketType.SEQUENCE_START:
            with contextlib.suppress(RemoteProtocolError):
                assert flv.video_config(packet) is not None or packet.fourcc not in ("avc1", "hvc1")


# --- writer round trips ---------------------------------------------------------------------------

video_fourccs = st.sampled_from(["avc1", "hvc1", "av01", "vp09"])
video_types = st.sampled_from(
    [PacketType.SEQUENCE_START, PacketType.CODED_FRAMES, PacketType.SEQUENCE_END, PacketType.CODED_FRAMES_X]
)


def _key(p: flv.VideoPacket) -> tuple[object, ...]:
    return (p.fourcc, p.frame_type, p.packet_type, p.composition_time, p.track_id, p.data)


@settings(max_examples=300, deadline=None)
@given(
    frame_type=st.sampled_from([1, 2, 3, 4]),
    packet_type=video_types,
    tracks=st.lists(
        st.tuples(video_fourccs, st.integers(-(1 << 23), (1 << 23) - 1), st.binary(max_size=40)),
        min_size=1,
        max_size=4,
    ),
    same_codec=st.booleans(),
)
def test_enhanced_video_round_trip(
    frame_type: int, packet_type: int, tracks: list[tuple[str, int, bytes]], same_codec: bool
) -> None:
    packets = []
    for track_id, (fourcc, cts, data) in enumerate(tracks):
        fourcc = tracks[0][0] if same_codec else fourcc
        with_cts = packet_type == PacketType.CODED_FRAMES and fourcc in ("avc1", "hvc1")
        packets.append(flv.VideoPacket(fourcc, frame_type, packet_type, cts if with_cts else 0, track_id, data))
    if len(packets) == 1:
        packets[0].track_id = 0
    assert [_key(p) for p in flv.parse_video(flv.video_tag(packets))] == [_key(p) for p in packets]


@settings(max_examples=200, deadline=None)
@given(
    frame_type=st.sampled_from([1, 2]),
    packet_type=st.sampled_from([0, 1, 2]),
    cts=st.integers(-(1 << 23), (1 << 23) - 1),
    data=st.binary(max_size=40),
)
def test_legacy_avc_round_trip(frame_type: int, packet_type: int, cts: int, data: bytes) -> None:
    packet = flv.VideoPacket("avc1", frame_type, packet_type, cts if packet_type == 1 else 0, 0, data)
    [back] = flv.parse_video(flv.video_tag([packet], enhanced=False))
    assert _key(back) == _key(packet)


@settings(max_examples=200, deadline=None)
@given(
    tracks=st.lists(
        st.tuples(st.sampled_from(["Opus", "mp4a", "fLaC"]), st.binary(max_size=30)), min_size=1, max_size=3
    ),
    packet_type=st.sampled_from([0, 1]),
)
def test_audio_round_trip(tracks: list[tuple[str, bytes]], packet_type: int) -> None:
    packets = [
        flv.AudioPacket(fourcc, 0, packet_type, i if len(tracks) > 1 else 0, data)
        for i, (fourcc, data) in enumerate(tracks)
    ]
    back = flv.parse_audio(flv.audio_tag(packets))
    assert [(p.fourcc, p.packet_type, p.track_id, p.data) for p in back] == [
        (p.fourcc, p.packet_type, p.track_id, p.data) for p in packets
    ]
