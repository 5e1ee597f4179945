"""Multitrack Enhanced RTMP in the room bridge (in memory, virtual clock): H.264 renditions of one
video, encoded by x264 at three sizes, become simulcast layers of ``video_main`` ranked by the
picture size in their SPS, each with its own sequence space and GOP cache; a rendition the bridge
cannot carry (B-frames beside the re-encoded track 0, more than MAX_RENDITIONS) is left out and said."""

from __future__ import annotations

import itertools
import struct
from fractions import Fraction

import av
import pytest

from tests.transports.rtmp.test_bridge import Room
from trackmesh.codecs.h264 import build_avcc_config, split_annexb
from trackmesh.core.model import MediaCodec
from trackmesh.transports.rtmp.bridge import MAX_RENDITIONS, Notice, TranscodeVideo

SIZES = {0: (240, 180), 1: (320, 240), 2: (160, 120)}  # track id -> size; layers: 2 -> 0, 0 -> 1, 1 -> 2
LAYER = {2: 0, 0: 1, 1: 2}


def encode(width: int, height: int, frames: int, bframes: int = 0) -> tuple[bytes, list[tuple[bool, int, bytes]]]:
    """x264 at ``width`` x ``height``: (avcC, [(key, composition ms, AVCC frame)])."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.options = {"preset": "ultrafast", "g": "15", "bf": str(bframes)} | ({} if bframes else {"tune": "zerolatency"})
    packets = []
    for i in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 9) & 0xFF]) * plane.buffer_size)
        frame.pts = i
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    sps = pps = b""
    out = []
    for pkt in packets:
        nals = [bytes(n) for n in split_annexb(bytes(pkt))]
        sps = next((n for n in nals if n[0] & 0x1F == 7), sps)
        pps = next((n for n in nals if n[0] & 0x1F == 8), pps)
        body = b"".join(struct.pack("!I", len(n)) + n for n in nals if n[0] & 0x1F not in (7, 8, 9))
        assert pkt.pts is not None and pkt.dts is not None  # the encoder stamps every packet
        cts = int((pkt.pts - pkt.dts) * 1000 / 30)
        out.append((bool(pkt.is_keyframe), cts, body))
    return build_avcc_config([sps], [pps]), out


def track_tag(track: int, packet_type: int, body: bytes, key: bool = True, cts: int = 0) -> bytes:
    """Enhanced RTMP (v2): track 0 as a plain ExVideoTagHeader, others as OneTrack multitrack tags."""
    frame_type = 0x10 if key else 0x20
    if packet_type == 1:
        body = cts.to_bytes(3, "big", signed=True) + body
    if track == 0:
        return bytes([0x80 | frame_type | packet_type]) + b"avc1" + body
    return bytes([0x80 | frame_type | 6, packet_type]) + b"avc1" + bytes([track]) + body


def test_renditions_become_simulcast_layers_ranked_by_size_each_with_its_own_gop() -> None:
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    streams = {track: encode(w, h, 20) for track, (w, h) in SIZES.items()}
    for track, (config, _) in streams.items():
        pub.video(room.now, gen, 0, track_tag(track, 0, config))
    assert pub.counters["renditions"] == 3
    notices = [o.text for o in pub.take_outputs() if isinstance(o, Notice)]
    assert any("3 renditions carried as simulcast layers of video_main" in t for t in notices), notices
    _, got = room.viewer()
    for i in range(20):
        for track, (_, frames) in streams.items():
            key, cts, body = frames[i]
            pub.video(room.now, gen, i * 33, track_tag(track, 1, body, key, cts))
        room.now += 0.033
        pub.handle_timeout(room.now)
    room.pump(pub)
    live = [p for p in got if p.replay == 0]
    assert {p.codec for p in live} == {MediaCodec.H264} and {p.spatial for p in live} == {0, 1, 2}
    for layer in (0, 1, 2):
        mine = [p for p in live if p.spatial == layer]
        assert mine[0].keyframe  # each layer starts on its own key frame
        assert [p.seq for p in mine] == list(range(mine[0].seq, mine[0].seq + len(mine)))  # own sequence space
        assert [p.ts // 90 for p in mine if p.marker] == [i * 33 for i in range(20)]
    # The bytes per layer follow the picture sizes: layer 0 is the 160x120 rendition.
    size = {layer: sum(len(p.payload) for p in live if p.spatial == layer) for layer in (0, 1, 2)}
    assert size[0] < size[1] < size[2], size
    # A late viewer's key-frame request replays every layer's current GOP, lowest layer first,
    # each from its key frame (the second GOP: frames 15..19).
    replays_before = pub.counters["gop_replays"]
    room.now += 1.0
    _, late = room.viewer()
    room.pump(pub)
    assert pub.counters["gop_replays"] == replays_before + 1
    layers_in_order = [layer for layer, _ in itertools.groupby(p.spatial for p in late)]
    assert layers_in_order == [0, 1, 2], layers_in_order
    for layer in (0, 1, 2):
        mine = [p for p in late if p.spatial == layer]
        assert mine[0].keyframe and mine[0].ts == 15 * 33 * 90
        assert len([p for p in mine if p.marker]) == 5


def test_a_b_frame_rendition_beside_the_re_encoded_track_0_is_left_out_and_said() -> None:
    room = Room()
    pub = room.publisher()  # --rtmp-bframes transcode (the default)
    gen = pub.attach(room.now)
    plain_config, plain = encode(160, 120, 6)
    b_config, with_b = encode(320, 240, 6, bframes=2)
    pub.video(room.now, gen, 0, track_tag(0, 0, b_config))
    pub.video(room.now, gen, 0, track_tag(1, 0, plain_config))
    pub.video(room.now, gen, 0, track_tag(2, 0, b_config))
    _, got = room.viewer()
    for i in range(6):
        for track, frames in ((0, with_b), (1, plain), (2, with_b)):
            key, cts, body = frames[i]
            pub.video(room.now, gen, 100 + i * 33, track_tag(track, 1, body, key, cts))
    outputs = pub.take_outputs()
    assert any(isinstance(o, TranscodeVideo) for o in outputs)  # track 0 goes to the re-encoder
    notices = [o.text for o in outputs if isinstance(o, Notice)]
    assert any("B-frames in rendition 2: not carried" in t for t in notices), notices
    # What reaches the room directly: rendition 1 (no B-frames) on its layer; nothing of track 2.
    assert {p.spatial for p in got} == {0} and len([p for p in got if p.marker]) == 6
    assert pub.counters["other_tracks"] >= 5


@pytest.mark.parametrize("extra", [1, 2])
def test_renditions_over_the_limit_are_not_carried(extra: int) -> None:
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    config, frames = encode(160, 120, 1)
    for track in range(MAX_RENDITIONS + extra):
        pub.video(room.now, gen, 0, track_tag(track, 0, config))
    assert pub.counters["renditions"] == MAX_RENDITIONS
    _, got = room.viewer()
    key, cts, body = frames[0]
    for track in range(MAX_RENDITIONS + extra):
        pub.video(room.now, gen, 0, track_tag(track, 1, body, key, cts))
    assert {p.spatial for p in got} == set(range(MAX_RENDITIONS))
    assert pub.counters["other_tracks"] == extra
    notices = [o.text for o in pub.take_outputs() if isinstance(o, Notice)]
    assert any(f"rendition {MAX_RENDITIONS} is over {MAX_RENDITIONS}: not carried" in t for t in notices), notices
