"""Ingest frames -> core MediaPackets through the shared codecs/ packetizers."""

from __future__ import annotations

from trackmesh.codecs.h264 import H264Depacketizer
from trackmesh.core.model import MediaCodec
from trackmesh.transports.rtmp.ingest import AudioFrame, VideoFrame
from trackmesh.transports.rtmp.media import PAYLOAD_TYPES, RtmpMedia

IDR = (
    b"\x00\x00\x00\x01\x67\x42\xc0\x1f"
    + b"\x00\x00\x00\x01\x68\xce\x3c\x80"
    + b"\x00\x00\x00\x01\x65"
    + bytes(range(1, 256)) * 20
)


def test_h264_frames_become_rtp_payloads_that_depacketize_back() -> None:
    media = RtmpMedia(mtu=1200)
    key = VideoFrame("avc1", 0, 1000, 1000, True, IDR)
    inter = VideoFrame("avc1", 0, 1033, 1033, False, b"\x00\x00\x00\x01\x41\x9a\x07")
    packets = media.video(key, 5.0) + media.video(inter, 5.5)
    assert [p.seq for p in packets] == list(range(len(packets)))
    assert all(p.codec == MediaCodec.H264 and p.payload_type == PAYLOAD_TYPES[MediaCodec.H264] for p in packets)
    assert [p.marker for p in packets].count(True) == 2 and packets[-1].marker
    assert {p.ts for p in packets} == {90_000, 92_970}
    assert all(p.keyframe for p in packets[:-1]) and not packets[-1].keyframe
    assert all(len(p.payload) <= 1200 for p in packets)
    assert {p.arrival for p in packets} == {5.0, 5.5}
    depack = H264Depacketizer()
    for p in packets:
        depack.push(p.payload, p.seq, p.ts, p.marker)
    first, second = depack.poll_frame(), depack.poll_frame()
    assert first is not None and second is not None
    assert bytes(first.data) == IDR and bytes(second.data) == inter.data


def test_opus_and_sequence_wrap() -> None:
    media = RtmpMedia()
    [packet] = media.audio(AudioFrame("Opus", 0, 20, b"\xfc\xff"), 1.0)
    assert (packet.codec, packet.ts, packet.marker, packet.payload) == (MediaCodec.OPUS, 960, False, b"\xfc\xff")
    media._tracks["audio", 0, "Opus"].seq = 0xFFFF
    seqs = [media.audio(AudioFrame("Opus", 0, 40 + 20 * i, b"\xfc"), 1.0)[0].seq for i in range(2)]
    assert seqs == [0xFFFF, 0]


def test_codecs_the_core_cannot_carry_are_counted() -> None:
    media = RtmpMedia()
    assert media.video(VideoFrame("avc3", 0, 0, 0, True, b"\x00\x00\x00\x01\x65\x01"), 0.0) == []
    assert media.audio(AudioFrame("mp4a", 0, 0, b"aac"), 0.0) == []
    assert media.not_carried == 2


def test_hevc_frames_become_rfc7798_payloads_that_depacketize_back() -> None:
    from trackmesh.codecs.hevc import HevcDepacketizer

    # An Annex B access unit as ingest hands it: VPS, SPS, PPS (small: aggregated, RFC 7798
    # s4.4.2) and an IDR_W_RADL slice big enough for fragmentation units (s4.4.3).
    vps, sps, pps = b"\x40\x01\x0c\x01\xff\xff", b"\x42\x01\x01\x01\x60\x90", b"\x44\x01\xc1\x72"
    idr = b"\x26\x01" + bytes(range(1, 256)) * 12
    sc = b"\x00\x00\x00\x01"
    key = VideoFrame("hvc1", 0, 2000, 2000, True, sc + vps + sc + sps + sc + pps + sc + idr)
    inter = VideoFrame("hvc1", 0, 2033, 2033, False, sc + b"\x02\x01\xd0\x0a\x55")
    media = RtmpMedia(mtu=1200)
    packets = media.video(key, 1.0) + media.video(inter, 1.1)
    assert all(p.codec == MediaCodec.H265 and p.payload_type == PAYLOAD_TYPES[MediaCodec.H265] for p in packets)
    assert len(packets) >= 4 and all(len(p.payload) <= 1200 for p in packets)
    assert [p.marker for p in packets].count(True) == 2 and {p.ts for p in packets} == {180_000, 182_970}
    fu_types = {(p.payload[0] >> 1) & 0x3F for p in packets}
    assert 49 in fu_types  # FU (RFC 7798 s4.4.3) for the 3 KB slice
    depack = HevcDepacketizer()
    for p in packets:
        depack.push(p.payload, p.seq, p.ts, p.marker)
    first, second = depack.poll_frame(), depack.poll_frame()
    assert first is not None and second is not None and first.keyframe
    assert bytes(first.data) == key.data and bytes(second.data) == inter.data


def test_av1_frames_become_rtp_payloads_that_depacketize_back() -> None:
    from trackmesh.codecs.av1 import Av1Depacketizer

    # A temporal unit as RTMP carries it (low-overhead OBUs with sizes): a sequence header and a
    # frame OBU big enough to be fragmented.
    seq_body = b"\x00\x00\x00\x24\xc4\xff\xdf\x00\x68\x02"
    seq_header = bytes([0x0A, len(seq_body)]) + seq_body  # OBU_SEQUENCE_HEADER, has_size
    frame_body = bytes(range(1, 256)) * 16 + bytes(range(1, 21))  # 4,100 bytes
    frame_obu = bytes([0x32, 0x80 | (len(frame_body) & 0x7F), len(frame_body) >> 7]) + frame_body  # OBU_FRAME
    frame = VideoFrame("av01", 0, 500, 500, True, seq_header + frame_obu)
    media = RtmpMedia(mtu=1200)
    packets = media.video(frame, 1.0)
    assert len(packets) > 3 and all(p.codec == MediaCodec.AV1 and p.keyframe for p in packets)
    assert packets[-1].marker and {p.ts for p in packets} == {45_000}
    depack = Av1Depacketizer()
    for p in packets:
        depack.push(p.payload, p.seq, p.ts, p.marker)
    out = depack.poll_frame()
    # The receiver puts back the temporal delimiter the RTP payload leaves out (AV1 RTP spec s5).
    assert out is not None and bytes(out.data) == b"\x12\x00" + frame.data
