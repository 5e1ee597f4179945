"""The RTP-to-LOC bridge of a room track, sans-IO on a virtual clock: groups per key frame, the wait
for a key frame at the start and after a loss, audio groups by media time, timestamps; H.264 parameter sets and size."""

from __future__ import annotations

import fractions
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.codecs.h264 import START_CODE, H264Packetizer, split_annexb
from trackmesh.codecs.opus import OpusPacketizer
from trackmesh.codecs.vp8 import Vp8Packetizer
from trackmesh.transports.moq.loc import decode_loc_properties
from trackmesh.transports.moq.rtp_to_loc import AUDIO_GROUP_SECONDS, KEYFRAME_RETRY, LocObject, RtpToLoc


def vp8_frame(key: bool, width: int = 320, height: int = 240, size: int = 1500) -> bytes:
    """A VP8 frame header (RFC 6386 s9.1) and filler: enough for the depacketizer and the size."""
    tag = (10 << 5) | 0x10 | (0 if key else 1)
    head = tag.to_bytes(3, "little")
    if key:
        head += b"\x9d\x01\x2a" + width.to_bytes(2, "little") + height.to_bytes(2, "little")
    return head + bytes(size)


class Feed:
    """Packetizes frames into RTP for the bridge; drops the packets asked."""

    def __init__(self, bridge: RtpToLoc, codec: str = "vp8", seq: int = 1000, ts: int = 5000) -> None:
        self.bridge = bridge
        self.codec = codec
        self.pack = Vp8Packetizer() if codec == "vp8" else OpusPacketizer()
        self.seq = seq
        self.ts = ts
        self.now = 100.0

    def frame(self, data: bytes, step: int = 3000, drop: int | None = None) -> list[LocObject]:
        payloads = self.pack.packetize(data, 1200)
        for i, payload in enumerate(payloads):
            if i != drop:
                marker = i == len(payloads) - 1
                self.bridge.push(payload, self.seq & 0xFFFF, self.ts & 0xFFFFFFFF, marker, self.codec, self.now)
            self.seq += 1
        self.ts += step
        self.now += step / 90_000
        out = []
        while (obj := self.bridge.poll()) is not None:
            out.append(obj)
        return out


def test_video_waits_for_a_key_frame_then_makes_a_group_per_key_frame() -> None:
    bridge = RtpToLoc(video=True)
    feed = Feed(bridge)
    assert feed.frame(vp8_frame(False)) == []  # nothing before the first key frame
    assert bridge.skipped_frames == 1 and bridge.keyframe_wanted
    assert bridge.take_keyframe_request(feed.now)
    assert not bridge.take_keyframe_request(feed.now + KEYFRAME_RETRY / 2)  # at most once a second
    assert bridge.take_keyframe_request(feed.now + KEYFRAME_RETRY)
    got = feed.frame(vp8_frame(True)) + feed.frame(vp8_frame(False)) + feed.frame(vp8_frame(False))
    assert [(o.group, o.object_id, o.keyframe) for o in got] == [(0, 0, True), (0, 1, False), (0, 2, False)]
    assert not bridge.keyframe_wanted and (bridge.width, bridge.height) == (320, 240)
    got = feed.frame(vp8_frame(True, 640, 360)) + feed.frame(vp8_frame(False))
    assert [(o.group, o.object_id) for o in got] == [(1, 0), (1, 1)]
    assert (bridge.width, bridge.height) == (640, 360)
    assert got[0].payload == vp8_frame(True, 640, 360)  # the frame itself, as WebCodecs takes it
    # The LOC timestamp: RTP time in microseconds, 3000 ticks of 90 kHz apart.
    stamps = [decode_loc_properties(o.extensions).timestamp_us for o in got]
    assert stamps[1] is not None and stamps[0] is not None and stamps[1] - stamps[0] in (33_333, 33_334)
    assert bridge.counters()["objects"] == 5


def test_a_loss_waits_for_the_next_key_frame_and_asks_for_one() -> None:
    bridge = RtpToLoc(video=True)
    feed = Feed(bridge)
    feed.frame(vp8_frame(True))
    bridge.take_keyframe_request(feed.now)
    assert [o.object_id for o in feed.frame(vp8_frame(False))] == [1]
    assert feed.frame(vp8_frame(False), drop=0) == []  # a packet of this frame is lost
    assert feed.frame(vp8_frame(False)) == []  # it references the lost one: skipped
    assert bridge.keyframe_wanted and bridge.take_keyframe_request(feed.now)
    got = feed.frame(vp8_frame(True))
    assert [(o.group, o.object_id, o.keyframe) for o in got] == [(1, 0, True)]
    counters = bridge.counters()
    assert counters["lost_packets"] == 1 and counters["skipped_frames"] >= 1


def test_a_new_subscriber_asks_for_a_key_frame_at_once() -> None:
    bridge = RtpToLoc(video=True)
    feed = Feed(bridge)
    feed.frame(vp8_frame(True))
    assert not bridge.take_keyframe_request(feed.now)
    bridge.request_keyframe(feed.now)
    assert bridge.take_keyframe_request(feed.now)
    bridge.request_keyframe(feed.now)  # another subscriber right after: asked again, not rate-limited
    assert bridge.take_keyframe_request(feed.now)
    assert not bridge.take_keyframe_request(feed.now)  # the retry while waiting is
    assert [o.object_id for o in feed.frame(vp8_frame(False))] == [1]  # delta frames still flow meanwhile
    assert [o.group for o in feed.frame(vp8_frame(True))] == [1]


def test_audio_is_an_object_per_frame_in_groups_of_about_a_second() -> None:
    bridge = RtpToLoc(video=False)
    feed = Feed(bridge, "opus")
    got: list[LocObject] = []
    frames = int(AUDIO_GROUP_SECONDS * 50) * 2 + 1
    for _ in range(frames):
        got += feed.frame(b"\xfc" + bytes(40), step=960)  # 20 ms at 48 kHz; TOC stereo bit set
    assert len(got) == frames
    assert [o.group for o in got] == [0] * 50 + [1] * 50 + [2]
    assert [o.object_id for o in got[:3]] == [0, 1, 2] and got[50].object_id == 0
    assert bridge.channels == 2 and not bridge.keyframe_wanted


def test_timestamps_keep_increasing_across_the_rtp_wrap() -> None:
    bridge = RtpToLoc(video=False)
    feed = Feed(bridge, "opus", ts=0xFFFFFFFF - 960 * 2)
    got: list[LocObject] = []
    for _ in range(5):
        got += feed.frame(b"\x78" + bytes(20), step=960)
    stamps = [decode_loc_properties(o.extensions).timestamp_us for o in got]
    assert all(b is not None and a is not None and b - a == 20_000 for a, b in itertools.pairwise(stamps))


def test_a_codec_change_restarts_on_a_key_frame() -> None:
    bridge = RtpToLoc(video=True)
    feed = Feed(bridge)
    feed.frame(vp8_frame(True))
    bridge.push(b"\x00" * 10, 1, 1, True, "av1", feed.now)  # another codec arrives
    assert bridge.codec == "av1" and bridge.keyframe_wanted
    bridge.push(b"\x00", 2, 2, True, "nonesuch", feed.now)  # one we have no payload format for
    assert bridge.poll() is None and bridge.codec == "nonesuch"


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["vp8", "vp9", "h264", "av1", "opus", "pcmu"]),
    st.lists(st.tuples(st.binary(max_size=64), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.booleans())),
)
def test_garbage_never_raises(codec: str, packets: list[tuple[bytes, int, int, bool]]) -> None:
    bridge = RtpToLoc(video=codec not in ("opus", "pcmu"))
    for i, (payload, seq, ts, marker) in enumerate(packets):
        bridge.push(payload, seq, ts, marker, codec, float(i))
        while (obj := bridge.poll()) is not None:
            assert obj.group >= 0 and obj.object_id >= 0 and obj.timestamp_us >= 0


def test_h264_key_frames_carry_their_parameter_sets_and_give_the_size() -> None:
    av = pytest.importorskip("av")
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.options = {"profile": "baseline", "tune": "zerolatency", "x264-params": "keyint=3:min-keyint=3:scenecut=0"}
    encoded = []
    for i in range(6):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for n, plane in enumerate(frame.planes):
            plane.update(bytes([(i * 9 + n * 40) % 256]) * plane.buffer_size)
        frame.pts = i
        encoded += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(frame)]
    encoded += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(None)]
    assert [k for _, k in encoded] == [True, False, False, True, False, False]

    def without_parameter_sets(data: bytes) -> bytes:
        return b"".join(START_CODE + bytes(u) for u in split_annexb(data) if u[0] & 0x1F not in (7, 8))

    bridge = RtpToLoc(video=True)
    pack = H264Packetizer()
    seq, got = 0, []
    for i, (data, _) in enumerate(encoded):
        if i == 3:
            data = without_parameter_sets(data)  # a publisher that does not repeat them
        payloads = pack.packetize(data, 1200)
        for j, payload in enumerate(payloads):
            bridge.push(payload, seq, i * 3000, j == len(payloads) - 1, "h264", float(i))
            seq += 1
        while (obj := bridge.poll()) is not None:
            got.append(obj)
    assert [(o.group, o.object_id) for o in got] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    kinds = [{u[0] & 0x1F for u in split_annexb(o.payload)} for o in got]
    assert {7, 8} <= kinds[0] and {7, 8} <= kinds[3]  # put back in front of the second key frame
    assert (bridge.width, bridge.height) == (320, 240) and bridge.codec_string.startswith("avc1.42")
