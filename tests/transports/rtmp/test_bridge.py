"""The RTMP room bridge (transports/rtmp/bridge.py) in memory on a virtual clock: a real media core
(in-process registry and channels), a publisher fed FLV tags, a viewer endpoint whose LocalTrack
sink collects what the room delivers."""

from __future__ import annotations

import array
import itertools
import struct
from fractions import Fraction
from typing import Any

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.transports.rtmp.test_flv import hvcc
from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.codecs.h264 import build_avcc_config
from trackmesh.core.controls import CreateLocalTrack, Join, Subscribe
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.events import EndpointEvent, PeerJoined, PeerLeft, TrackStarted, TrackStopped
from trackmesh.core.model import JoinOptions, MediaCodec, MediaPacket, TrackKind, TrackSource
from trackmesh.core.tracks import ALTERNATE_TTL
from trackmesh.core.worker import MediaWorker
from trackmesh.transports.rtmp.aac_opus import OPUS_FRAME_SAMPLES, AacToOpus
from trackmesh.transports.rtmp.bridge import (
    AUDIO_TRACK,
    BFRAMES_FIX,
    PACE_AT_ONCE,
    PACE_INTERVAL,
    PACE_TICKS,
    VIDEO_TRACK,
    EndPublish,
    Notice,
    PublisherSetupError,
    RtmpPublisher,
    StopAlternate,
    TranscodeAudio,
    TranscodeVideo,
)
from trackmesh.transports.rtmp.video_transcode import H264Reencoder

SPS = b"\x67\x42\xc0\x1f\xac\xd9\x40\x50"
PPS = b"\x68\xeb\xe3\xcb"
AVC_CONFIG = b"\x17\x00\x00\x00\x00" + build_avcc_config([SPS], [PPS])
ASC = b"\x12\x10"  # AAC-LC 44.1 kHz stereo


def avcc(*nals: bytes) -> bytes:
    return b"".join(struct.pack("!I", len(n)) + n for n in nals)


def key_tag(cts: int = 0, size: int = 3000) -> bytes:
    return b"\x17\x01" + cts.to_bytes(3, "big") + avcc(b"\x65" + b"\x88" * size)


def inter_tag(cts: int = 0) -> bytes:
    return b"\x27\x01" + cts.to_bytes(3, "big") + avcc(b"\x41\x9a\x01")


class Room:
    def __init__(self) -> None:
        self.core = MediaWorker(7, 0, "secret", LocalRegistry(), LocalChannelHub())
        self.now = 100.0

    def publisher(self, bframes: str = "transcode", peer: str = "cam") -> RtmpPublisher:
        return RtmpPublisher(self.now, self.core.create_endpoint(), "r", peer, bframes=bframes)

    def viewer(self, kind: TrackKind = TrackKind.VIDEO, track: str = VIDEO_TRACK) -> tuple[Endpoint, list[MediaPacket]]:
        ep = self.core.create_endpoint()
        assert ep.control(self.now, Join("r", "viewer", JoinOptions(publish_peer=False, publish_tracks=False))) is None
        assert ep.control(self.now, CreateLocalTrack("v", kind)) is None
        assert ep.control(self.now, Subscribe("v", TrackSource("cam", track))) is None
        got: list[MediaPacket] = []
        local = ep.local_track("v")
        assert local is not None
        local.sink = got.append
        return ep, got

    def pump(self, pub: RtmpPublisher) -> None:
        """What the driver does after every input: hand the publisher its endpoint's events."""
        for endpoint in self.core.take_ready():
            if endpoint is pub.endpoint:
                pub.on_core_events(self.now)


def stamps(packet: av.Packet[Any]) -> tuple[int, int]:
    """(dts, pts) of a packet an encoder returned: encoders stamp every packet."""
    assert packet.dts is not None and packet.pts is not None, packet
    return packet.dts, packet.pts


def events(ep: Endpoint) -> list[EndpointEvent]:
    out = []
    while (ev := ep.poll_event()) is not None:
        out.append(ev)
    return out


def test_publisher_joins_publishes_on_config_and_viewers_get_h264_at_the_presentation_time() -> None:
    room = Room()
    watcher = room.core.create_endpoint()
    watcher.control(room.now, Join("r", "watcher"))
    pub = room.publisher()
    gen = pub.attach(room.now)
    assert pub.endpoint.remote_track(VIDEO_TRACK) is None  # no track before a sequence header
    pub.video(room.now, gen, 0, AVC_CONFIG)
    seen = events(watcher)
    assert any(isinstance(e, PeerJoined) and e.info.peer == "cam" for e in seen)
    assert any(isinstance(e, TrackStarted) and e.info.track == VIDEO_TRACK for e in seen)
    _, got = room.viewer()
    pub.video(room.now, gen, 1000, key_tag())
    pub.video(room.now, gen, 1033, inter_tag())
    assert {p.codec for p in got} == {MediaCodec.H264}
    assert got[0].keyframe and got[0].ts == 1000 * 90
    assert got[-1].ts == 1033 * 90 and got[-1].marker
    assert [p.seq for p in got] == list(range(got[0].seq, got[0].seq + len(got)))
    assert pub.counters["video_frames"] == 2 and pub.counters["keyframes"] == 1


def test_a_late_viewer_is_started_from_the_cached_gop() -> None:
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    pub.video(room.now, gen, 0, AVC_CONFIG)
    pub.video(room.now, gen, 0, key_tag())
    for i in range(1, 4):
        pub.video(room.now, gen, i * 33, inter_tag())
    room.pump(pub)
    room.now += 1.0
    _, got = room.viewer()  # joins mid-GOP: its LocalTrack asks for a key frame
    room.pump(pub)
    assert pub.counters["gop_replays"] == 1
    assert got and got[0].keyframe and got[0].ts == 0  # the GOP's key frame, then its frames, in order
    assert [p.ts // 90 for p in got if p.marker] == [0, 33, 66, 99]
    assert all(p.arrival == room.now and p.replay == 1 for p in got)
    pub.video(room.now, gen, 132, inter_tag())
    assert got[-1].ts == 132 * 90 and got[-1].seq == (got[-2].seq + 1) & 0xFFFF and got[-1].replay == 0


def test_a_gop_over_the_cap_is_not_kept() -> None:
    room = Room()
    pub = RtmpPublisher(room.now, room.core.create_endpoint(), "r", "cam", gop_max_bytes=4000)
    gen = pub.attach(room.now)
    pub.video(room.now, gen, 0, AVC_CONFIG)
    pub.video(room.now, gen, 0, key_tag(size=5000))
    assert pub.counters["gop_too_big"] == 1
    pub.replay_gop(room.now)
    assert pub.counters["gop_replays"] == 0


def test_a_reconnect_with_the_same_key_takes_over_without_a_leave_and_keeps_the_timeline_going() -> None:
    room = Room()
    watcher = room.core.create_endpoint()
    watcher.control(room.now, Join("r", "watcher"))
    pub = room.publisher()
    old = pub.attach(room.now)
    pub.video(room.now, old, 50_000, AVC_CONFIG)
    pub.video(room.now, old, 50_000, key_tag())
    _, got = room.viewer()
    pub.video(room.now, old, 50_033, inter_tag())
    events(watcher)
    # The encoder's old connection broke: the publisher lingers, then the encoder comes back.
    pub.detach(room.now, old, clean=False)
    assert not pub.finished and pub.next_deadline() == room.now + 5.0
    room.now += 2.0
    new = pub.attach(room.now)
    pub.handle_timeout(room.now + 10)  # attached again: the linger deadline is gone
    assert not pub.finished and pub.next_deadline() is None
    pub.video(room.now, old, 50_066, inter_tag())  # a late tag of the old connection
    assert pub.counters["stale_generation"] == 1
    last = got[-1]
    pub.video(room.now, new, 0, AVC_CONFIG)  # a new encoder starts its clock at 0
    pub.video(room.now, new, 0, key_tag())
    first = next(p for p in got if p.seq == (last.seq + 1) & 0xFFFF)
    assert first.keyframe and first.ts == (50_033 + 2000) * 90  # continued by the 2 s that passed
    pub.video(room.now, new, 33, inter_tag())
    assert got[-1].ts == (50_033 + 2000 + 33) * 90
    assert not [e for e in events(watcher) if isinstance(e, PeerLeft | PeerJoined | TrackStopped)]
    assert pub.counters["takeovers"] == 0  # the old one had already gone: a reconnect, not a takeover


def test_an_encoder_that_does_not_come_back_finishes_after_the_linger_and_a_clean_end_at_once() -> None:
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    pub.detach(room.now, gen, clean=False)
    pub.handle_timeout(room.now + 4.9)
    assert not pub.finished
    pub.handle_timeout(room.now + 5.0)
    assert pub.finished
    other = room.publisher(peer="cam2")
    gen = other.attach(room.now)
    other.detach(room.now, gen + 1, clean=True)  # another generation's end does nothing
    assert not other.finished
    other.detach(room.now, gen, clean=True)
    assert other.finished and other.next_deadline() is None


def test_b_frames_forward_in_decode_order_with_pts_timestamps_or_end_the_publish() -> None:
    room = Room()
    pub = room.publisher(bframes="forward")
    gen = pub.attach(room.now)
    pub.video(room.now, gen, 0, AVC_CONFIG)
    _, got = room.viewer()
    pub.video(room.now, gen, 0, key_tag(cts=66))
    pub.video(room.now, gen, 33, inter_tag(cts=100))
    notices = pub.take_outputs()
    assert len(notices) == 1 and isinstance(notices[0], Notice) and "B-frames" in notices[0].text
    assert [p.ts // 90 for p in got if p.marker] == [66, 133]
    assert pub.counters["bframes"] == 2

    strict = room.publisher(bframes="reject", peer="cam2")
    gen = strict.attach(room.now)
    strict.video(room.now, gen, 0, AVC_CONFIG)
    strict.video(room.now, gen, 0, key_tag(cts=66))
    assert strict.take_outputs() == [EndPublish(gen, "NetStream.Publish.BadName", BFRAMES_FIX)]
    assert strict.counters["video_frames"] == 0


def test_hevc_b_frames_are_forwarded_and_said_so_not_claimed_re_encoded() -> None:
    """The re-encoder takes H.264 only: under the default policy an HEVC stream with B-frames is
    forwarded in decode order, the log says that (not "re-encoding"), and no transcode is counted."""
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    pub.video(room.now, gen, 0, b"\x90hvc1" + hvcc())
    _, got = room.viewer()
    pub.video(room.now, gen, 0, b"\x91hvc1" + (66).to_bytes(3, "big") + avcc(b"\x26\x01\xaf"))  # IDR, cts 66
    outputs = pub.take_outputs()
    texts = [o.text for o in outputs if isinstance(o, Notice)]
    assert len(texts) == 1 and "forwarded in decode order" in texts[0] and "hvc1" in texts[0], texts
    assert not pub.transcoding and not any(isinstance(o, TranscodeVideo) for o in outputs)
    assert [p.codec for p in got if p.marker] == [MediaCodec.H265] and got[-1].ts == 66 * 90
    assert pub.counters["bframes"] == 1


def test_hevc_gets_an_h264_alternate_while_a_viewer_wants_it_one_job_per_frame_marked_for_routing() -> None:
    """The routing decision's publisher side: nothing is transcoded until a viewer asks; then each
    HEVC frame is forwarded *and* is one alternate job (however many viewers), whose H.264 comes
    back on video_main marked ``alternate_of=H265`` in its own sequence space and GOP (replayed
    too); the last viewer gone, the coder is dropped."""
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    pub.video(room.now, gen, 0, b"\x90hvc1" + hvcc())
    viewer, got = room.viewer()
    idr = b"\x91hvc1" + bytes(3) + avcc(b"\x26\x01\xaf")
    pub.video(room.now, gen, 0, idr)
    assert pub.take_outputs() == [] and not pub.alternate_running  # nobody asked: no transcode
    local = viewer.local_track("v")
    assert local is not None
    local.request_alternate(room.now)  # what a viewer's sink does on HEVC it did not negotiate
    room.pump(pub)
    pub.video(room.now, gen, 33, idr)
    notice, job = pub.take_outputs()
    assert isinstance(notice, Notice) and "cannot decode H265: transcoding" in notice.text
    assert isinstance(job, TranscodeVideo)
    assert (job.source, job.alternate, job.pts, job.keyframe) == ("hvc1", True, 33, True)
    assert pub.alternate_running and pub.counters["video_to_alternate"] == 1
    originals = len(got)
    pub.alternate_video(room.now, gen, 33, True, b"\x00\x00\x00\x01\x65\x88\x84")
    pub.alternate_video(room.now, gen, 66, False, b"\x00\x00\x00\x01\x41\x9a")
    alt = got[originals:]
    assert [(p.codec, p.alternate_of, p.ts) for p in alt] == [
        (MediaCodec.H264, MediaCodec.H265, 33 * 90),
        (MediaCodec.H264, MediaCodec.H265, 66 * 90),
    ]
    assert alt[1].seq == (alt[0].seq + 1) & 0xFFFF and alt[0].spatial == 0  # its own sequence space
    assert all(p.alternate_of is None and p.codec is MediaCodec.H265 for p in got[:originals])
    pub.replay_gop(room.now)  # both GOPs: a new viewer of either codec starts at once
    replayed = got[originals + 2 :]
    assert {p.codec for p in replayed} == {MediaCodec.H264, MediaCodec.H265}
    room.now += ALTERNATE_TTL  # the viewer stopped asking (left): the core's TTL runs out
    room.core.handle_timeout(room.now)
    room.pump(pub)
    assert pub.take_outputs() == [StopAlternate(gen)] and not pub.alternate_running
    pub.video(room.now, gen, 66, idr)
    assert pub.take_outputs() == []  # forwarded only


def test_the_alternate_coder_decodes_hevc_from_x265_into_h264_with_its_key_frames() -> None:
    enc = av.CodecContext.create("libx265", "w")
    enc.width, enc.height, enc.pix_fmt = 160, 128, "yuv420p"
    enc.time_base = Fraction(1, 1000)
    enc.options = {"x265-params": "log-level=error:bframes=2:keyint=15"}
    enc.open()
    packets = []
    for i in range(30):
        frame = av.VideoFrame(160, 128, "yuv420p")
        for n, plane in enumerate(frame.planes):
            plane.update(bytes([(i * 7 + n * 50) % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = i * 33, Fraction(1, 1000)
        packets += list(enc.encode(frame))
    packets += list(enc.encode(None))
    coder = H264Reencoder(source="hvc1")
    out = []
    for p in packets:
        out += coder.push(bytes(p), *stamps(p), p.is_keyframe)
    assert len(out) >= 25 and out[0].keyframe
    assert all(b.pts > a.pts for a, b in itertools.pairwise(out))
    dec = av.CodecContext.create("h264", "r")
    decoded = [pic for f in out for pic in dec.decode(av.Packet(f.data))]
    assert len(decoded) >= len(out) - 2 and (decoded[0].width, decoded[0].height) == (160, 128)
    with pytest.raises(ValueError):
        H264Reencoder(source="mp4a")


def test_b_frames_by_default_send_the_stream_through_the_re_encoder_and_its_frames_feed_video_main() -> None:
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    pub.video(room.now, gen, 0, AVC_CONFIG)
    _, got = room.viewer()
    pub.video(room.now, gen, 1000, key_tag(cts=66))
    pub.video(room.now, gen, 1033, inter_tag(cts=0))  # once re-encoding, every frame goes that way
    notice, first, second = pub.take_outputs()
    assert isinstance(notice, Notice) and "re-encoding" in notice.text
    assert isinstance(first, TranscodeVideo) and (first.dts, first.pts, first.keyframe) == (1000, 1066, True)
    assert isinstance(second, TranscodeVideo) and (second.dts, second.pts, second.keyframe) == (1033, 1033, False)
    assert got == [] and pub.counters["video_to_transcoder"] == 2
    pub.transcoded_video(room.now, gen, 1033, True, b"\x00\x00\x00\x01\x65\x88\x84")
    pub.transcoded_video(room.now, gen + 1, 1066, False, b"\x00\x00\x00\x01\x41\x9a")  # stale
    assert [(p.ts, p.keyframe, p.marker) for p in got] == [(1033 * 90, True, True)]
    assert pub.counters["video_transcoded"] == 1 and pub.counters["stale_generation"] == 1
    # A new connection starts without the re-encoder until it shows B-frames itself.
    gen = pub.attach(room.now)
    assert not pub.transcoding


def test_aac_goes_to_the_transcoder_and_its_opus_feeds_audio_main() -> None:
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    pub.audio(room.now, gen, 0, b"\xaf\x00" + ASC)
    assert pub.endpoint.remote_track(AUDIO_TRACK) is not None
    _, got = room.viewer(TrackKind.AUDIO, AUDIO_TRACK)
    pub.audio(room.now, gen, 23, b"\xaf\x01frame")
    assert pub.take_outputs() == [TranscodeAudio(gen, 0, ASC, b"frame", 23)]
    pub.opus(room.now, gen, 960, b"\xfc\x00")
    pub.opus(room.now, gen + 1, 1920, b"\xfc\x00")  # a generation that is not (or no longer) publishing
    assert [(p.codec, p.ts, bytes(p.payload)) for p in got] == [(MediaCodec.OPUS, 960, b"\xfc\x00")]
    assert pub.counters["stale_generation"] == 1


def test_opus_from_enhanced_rtmp_is_forwarded() -> None:
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    pub.audio(room.now, gen, 0, b"\x90Opus" + b"OpusHead" + bytes(11))
    _, got = room.viewer(TrackKind.AUDIO, AUDIO_TRACK)
    pub.audio(room.now, gen, 20, b"\x91Opus\xfc\x00")
    assert [(p.ts, bytes(p.payload)) for p in got] == [(20 * 48, b"\xfc\x00")]


def test_a_big_key_frame_is_paced_over_a_few_ms_and_what_follows_keeps_its_place() -> None:
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    pub.video(room.now, gen, 0, AVC_CONFIG)
    _, got = room.viewer()
    t0 = room.now
    pub.video(t0, gen, 0, key_tag(size=100_000))  # ~84 packets at the 1,200-byte MTU
    total = pub.counters["packets"]
    assert total > 5 * PACE_AT_ONCE
    assert len(got) == PACE_AT_ONCE and pub.pacing and pub.next_deadline() == t0 + PACE_INTERVAL
    pub.video(t0 + 0.001, gen, 33, inter_tag())  # arrives while held: goes behind, not before
    assert len(got) == PACE_AT_ONCE
    times = [t0 + PACE_INTERVAL * k for k in range(1, PACE_TICKS + 1)]
    for at in times:
        deadline = pub.next_deadline()
        assert deadline is not None and abs(deadline - at) < 1e-9
        pub.handle_timeout(at)
    assert not pub.pacing and pub.next_deadline() is None
    assert len(got) == total + 1 and [p.seq for p in got] == list(range(got[0].seq, got[0].seq + len(got)))
    assert got[-1].ts == 33 * 90 and got[-1].marker and got[-2].ts == 0 and got[-2].marker
    # Each slice left at its release time (the viewers' now), all within PACE_TICKS x PACE_INTERVAL.
    assert {p.arrival for p in got} == {t0, *times}
    assert pub.counters["paced_frames"] == 2 and pub.counters["paced_packets"] == total + 1 - PACE_AT_ONCE
    # Small frames go at once.
    pub.video(t0 + 0.02, gen, 66, inter_tag())
    assert len(got) == total + 2 and not pub.pacing


def test_a_replay_or_takeover_first_sends_what_is_held() -> None:
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    pub.video(room.now, gen, 0, AVC_CONFIG)
    _, got = room.viewer()
    pub.video(room.now, gen, 0, key_tag(size=60_000))
    assert pub.pacing
    pub.replay_gop(room.now)
    assert not pub.pacing
    originals = [p for p in got if not p.replay]
    assert len(originals) == pub.counters["packets"] and got[: len(originals)] == originals
    pub.video(room.now, gen, 33, key_tag(size=60_000))
    assert pub.pacing
    pub.attach(room.now + 0.001)  # a takeover: the old encoder's packets go before the new one's
    assert not pub.pacing and len([p for p in got if not p.replay]) == pub.counters["packets"]


def test_packets_carry_the_publishers_capture_clock_for_audio_and_video_alike() -> None:
    """MediaPacket.capture: room ms on the publisher's clock, anchored at its first message; the
    Opus made from AAC (back from the transcoder 150 ms later) has the capture time of its AAC."""
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    t0 = room.now
    pub.video(t0, gen, 5000, AVC_CONFIG)
    pub.audio(t0, gen, 5000, b"\xaf\x00" + ASC)
    _, vgot = room.viewer()
    _, agot = room.viewer(TrackKind.AUDIO, AUDIO_TRACK)
    pub.video(t0 + 1.0, gen, 6000, key_tag())
    pub.audio(t0 + 1.0, gen, 6000, b"\xaf\x01frame")
    assert pub.take_outputs() == [TranscodeAudio(gen, 0, ASC, b"frame", 6000)]
    pub.opus(t0 + 1.15, gen, 6000 * 48, b"\xfc\x00")
    assert {p.capture for p in vgot} == {t0 + 1.0}
    assert [(p.capture, p.arrival) for p in agot] == [(t0 + 1.0, t0 + 1.15)]
    # An encoder clock far from ours (a stall of 5 s, then a burst) re-anchors it.
    pub.video(t0 + 7.0, gen, 6033, inter_tag())
    assert vgot[-1].capture == t0 + 7.0


def test_a_refused_join_is_a_setup_error() -> None:
    room = Room()
    with pytest.raises(PublisherSetupError):
        RtmpPublisher(room.now, room.core.create_endpoint(), "r", "bad\x00peer")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 1 << 40), st.binary(max_size=64)), max_size=30))
def test_garbage_tags_are_counted_never_raised(tags: list[tuple[bool, int, bytes]]) -> None:
    room = Room()
    pub = room.publisher()
    gen = pub.attach(room.now)
    pub.video(room.now, gen, 0, AVC_CONFIG)
    pub.audio(room.now, gen, 0, b"\xaf\x00" + ASC)
    for video, ts, payload in tags:
        (pub.video if video else pub.audio)(room.now, gen, ts, payload)
        pub.take_outputs()
    pub.replay_gop(room.now)


def _aac_frames(seconds: float) -> tuple[bytes, list[tuple[bytes, int]]]:
    """Real AAC (PyAV's encoder): a 440 Hz tone at 44.1 kHz stereo, as RTMP would carry it."""
    import math

    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate, enc.layout, enc.format = 44100, "stereo", "fltp"
    enc.time_base = Fraction(1, 44100)
    enc.open()
    frames: list[tuple[bytes, int]] = []
    n = 1024
    for i in range(int(seconds * 44100 / n) + 2):
        tone = [0.5 * math.sin(2 * math.pi * 440 * (i * n + k) / 44100) for k in range(n)]
        frame = av.AudioFrame(format="fltp", layout="stereo", samples=n)
        data = struct.pack(f"{n}f", *tone)
        frame.planes[0].update(data)
        frame.planes[1].update(data)
        frame.sample_rate, frame.pts = 44100, i * n
        for packet in enc.encode(frame):
            frames.append((bytes(packet), int(stamps(packet)[1] * 1000 // 44100)))
    assert enc.extradata is not None  # AAC's AudioSpecificConfig, set by open()
    return bytes(enc.extradata), frames


def test_aac_to_opus_makes_contiguous_20ms_frames_that_decode_to_the_tone() -> None:
    config, frames = _aac_frames(1.0)
    coder = AacToOpus(config, 64_000)
    out: list[tuple[int, bytes]] = []
    for data, ts in frames:
        out.extend(coder.push(data, ts + 5000))
    assert len(out) >= 45
    steps = {b[0] - a[0] for a, b in itertools.pairwise(out)}
    assert steps == {OPUS_FRAME_SAMPLES} and out[0][0] == (frames[0][1] + 5000) * 48
    dec = av.CodecContext.create("opus", "r")
    peak = 0.0
    for _, payload in out[10:]:
        for frame in dec.decode(av.Packet(payload)):
            assert frame.format.name in ("flt", "fltp"), frame.format.name
            samples = array.array("f", bytes(frame.planes[0])[: frame.samples * 4])
            peak = max(peak, max(abs(x) for x in samples))
    assert peak > 0.2  # a 0.5 full-scale tone, not silence
    # A jump of the input timeline re-anchors instead of stretching the output.
    coder.push(frames[-1][0], frames[-1][1] + 60_000)
    assert coder.resyncs == 1


def test_the_re_encoder_turns_an_x264_b_frame_stream_into_one_without_reordering() -> None:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 160, 120, "yuv420p"
    enc.time_base = Fraction(1, 1000)
    enc.options = {"bframes": "2", "preset": "veryfast", "g": "30", "keyint_min": "30"}
    enc.open()
    packets = []
    for i in range(60):
        frame = av.VideoFrame(160, 120, "yuv420p")
        for n, plane in enumerate(frame.planes):
            plane.update(bytes([(i * 7 + n * 50) % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = i * 33, Fraction(1, 1000)
        packets += list(enc.encode(frame))
    source_keys = [stamps(p)[1] for p in packets if p.is_keyframe]
    assert sum(p.pts != p.dts for p in packets) > 10  # really B-frames in the source
    coder = H264Reencoder()
    assert coder.push(bytes(packets[1]), *stamps(packets[1]), False) == []  # before a key frame
    out = []
    for p in packets:
        out += coder.push(bytes(p), *stamps(p), p.is_keyframe)
    assert len(out) >= len(packets) - 3 > 40  # the decoder holds its reorder depth back
    assert all(b.pts > a.pts for a, b in itertools.pairwise(out))  # presentation order = decode order
    assert [f.pts for f in out if f.keyframe] == [k for k in source_keys if k <= out[-1].pts]
    dec = av.CodecContext.create("h264", "r")
    decoded = []
    for f in out:
        for picture in dec.decode(av.Packet(f.data)):
            decoded.append(picture)
    assert len(decoded) >= len(out) - 2 and (decoded[0].width, decoded[0].height) == (160, 120)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=8))
def test_garbage_into_the_transcoders_is_an_rtmp_error_or_nothing(frames: list[bytes]) -> None:
    import contextlib

    from trackmesh.transports.rtmp.errors import RtmpError

    config, _ = _aac_frames(0.05)
    aac, h264 = AacToOpus(config), H264Reencoder()
    for i, data in enumerate(frames):
        with contextlib.suppress(RtmpError):
            aac.push(data, i * 23)
        with contextlib.suppress(RtmpError):
            h264.push(data, i * 33, i * 33, i == 0)
