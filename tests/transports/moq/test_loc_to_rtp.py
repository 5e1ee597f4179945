"""A MoQ publisher's LOC objects into RTP (sans-IO): the codec from the catalog's codec string,
packets from the shared packetizers that the depacketizers read back, video from a group's start,
timestamps from the LOC property; and the in-process subscriber that receives them from a
publisher session through the relay (in memory)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.codecs.registry import depacketizer
from trackmesh.core.model import MediaCodec
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.loc import LocProperties, encode_loc_properties
from trackmesh.transports.moq.loc_to_rtp import LocToRtp, media_codec
from trackmesh.transports.moq.local_subscriber import LocalSubscriber
from trackmesh.transports.moq.objects import SubgroupHeader, encode_object, encode_subgroup_header
from trackmesh.transports.moq.relay import Relay

from .harness import Client, Clock
from .test_rtp_to_loc import vp8_frame

NS = (b"trackmesh", b"r1")


def test_codec_strings() -> None:
    assert media_codec("vp8") == (MediaCodec.VP8, "vp8")
    assert media_codec("vp09.00.10.08") == (MediaCodec.VP9, "vp9")
    assert media_codec("avc1.42e01f") == (MediaCodec.H264, "h264")
    assert media_codec("av01.0.04M.08") == (MediaCodec.AV1, "av1")
    assert media_codec("opus") == (MediaCodec.OPUS, "opus")
    assert media_codec("mp4a.40.2") is None and media_codec("hev1.1.6.L93.B0") is None and media_codec("") is None


def test_video_starts_on_a_group_and_round_trips_through_the_depacketizer() -> None:
    rtp = LocToRtp(MediaCodec.VP8, "vp8")
    assert rtp.object(3, vp8_frame(False), b"", 1.0) == []  # mid-group: wait for the next one
    assert rtp.waiting_frames == 1
    depack = depacketizer("vp8")
    frames = [(0, vp8_frame(True, size=3000)), (1, vp8_frame(False, size=2000)), (2, vp8_frame(False, size=10))]
    seqs = []
    for object_id, frame in frames:
        ext = encode_loc_properties(LocProperties(1_000_000 + object_id * 33_333))
        packets = rtp.object(object_id, frame, ext, 2.0)
        assert packets and all(len(p.payload) <= 1200 for p in packets)
        assert [p.marker for p in packets] == [False] * (len(packets) - 1) + [True]
        assert all(p.keyframe == (object_id == 0) and p.codec is MediaCodec.VP8 for p in packets)
        assert len({p.ts for p in packets}) == 1 and packets[0].ts == (1_000_000 + object_id * 33_333) * 90 // 1000
        for p in packets:
            seqs.append(p.seq)
            depack.push(p.payload, p.seq, p.ts, p.marker)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    got = []
    while (f := depack.poll_frame()) is not None:
        got.append((f.keyframe, f.data))
    assert got == [(object_id == 0, frame) for object_id, frame in frames]


def test_audio_and_missing_timestamps() -> None:
    rtp = LocToRtp(MediaCodec.OPUS, "opus")
    (pkt,) = rtp.object(7, b"\x78\x01\x02", b"", 10.0)  # any audio object plays; no LOC timestamp
    assert pkt.ts == int(10.0 * 48_000) and not pkt.marker and not pkt.keyframe
    assert rtp.object(8, b"", b"", 10.0) == []  # an Object Status, not a frame


@given(
    st.sampled_from(["vp8", "vp09.00.10.08", "avc1.42e01f", "av01.0.04M.08", "opus"]),
    st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=3000), st.binary(max_size=20))),
)
def test_garbage_objects_never_raise(name: str, objects: list[tuple[int, bytes, bytes]]) -> None:
    carried = media_codec(name)
    assert carried is not None
    rtp = LocToRtp(*carried)
    for object_id, payload, ext in objects:
        for pkt in rtp.object(object_id, payload, ext, 1.0):
            assert 0 < len(pkt.payload) <= 1200


class Handler:
    def __init__(self) -> None:
        self.objects: list[tuple[int, int, bytes, bytes]] = []
        self.subscribed = False
        self.done: tuple[int, str] | None = None
        self.refused: tuple[int, str] | None = None

    def on_subscribed(self) -> None:
        self.subscribed = True

    def on_refused(self, code: int, reason: str) -> None:
        self.refused = (code, reason)

    def on_object(self, group: int, object_id: int, payload: bytes, extensions: bytes) -> None:
        self.objects.append((group, object_id, payload, extensions))

    def on_done(self, status: int, reason: str) -> None:
        self.done = (status, reason)


def test_the_local_subscriber_gets_a_publishers_namespace_and_objects() -> None:
    relay, clock = Relay(), Clock()
    seen: list[tuple[tuple[bytes, ...], bool]] = []
    sub = LocalSubscriber(relay, lambda ns, live: seen.append((ns, live)))
    sub.watch_namespaces((b"trackmesh",))
    pub = Client(relay, clock, draft=20)  # a draft-20 publisher: the relay re-frames for us
    pub.setup()
    ns_stream = pub.request(m.PublishNamespace(pub.rid(), NS))
    pub.messages(ns_stream)
    assert seen == [(NS, True)]
    handler = Handler()
    sub.subscribe(NS, b"cam/video_main", handler, clock.now)
    ((stream, upstream),) = pub.server_requests()
    assert isinstance(upstream, m.Subscribe) and upstream.name == b"cam/video_main"
    pub.send(m.SubscribeOk(upstream.request_id, 9, {m.PARAM_EXPIRES: 0}), stream)
    assert handler.subscribed
    ext = encode_loc_properties(LocProperties(5), vi64=True)
    data = encode_subgroup_header(SubgroupHeader(9, 4, 0, 128, True), True)
    data += encode_object(0, None, b"key", extensions=ext, vi64=True)
    data += encode_object(1, 0, b"delta", extensions=ext, vi64=True)
    pub.raw(1002, data, fin=True, uni=True)
    assert [(g, o, p) for g, o, p, _ in handler.objects] == [(4, 0, b"key"), (4, 1, b"delta")]
    assert handler.objects[0][3] == encode_loc_properties(LocProperties(5))  # in draft-16 integers
    pub.session.stream_reset(ns_stream, 0, clock.now)  # draft-20: PUBLISH_NAMESPACE withdrawn
    assert seen[-1] == (NS, False)
