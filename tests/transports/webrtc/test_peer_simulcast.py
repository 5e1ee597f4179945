"""Simulcast through WebRtcPeer: three rid layers learned from header extensions, per-viewer
layer choice from the viewer's bandwidth estimate, switches only at key frames."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from trackmesh.codecs.vp8 import parse_vp8_descriptor
from trackmesh.codecs.vp9 import parse_vp9_descriptor
from trackmesh.rtp.packet import find_extension
from trackmesh.rtp.rtcp import Pli, build_nack, build_remb
from trackmesh.rtp.twcc import TwccRecorder
from trackmesh.transports.webrtc.peer import WebRtcPeer
from trackmesh.transports.whip_whep.session import PeerMode

from .peer_client import VP8_DELTA, VP8_KEY, Client, Net

LAYERS = (("q", 0xA0, 100), ("h", 0xA1, 400), ("f", 0xA2, 1200))  # rid, ssrc, bytes per frame
FPS = 30


class Publisher:
    def __init__(self, net: Net) -> None:
        self.net = net
        self.client, self.peer = net.connect(PeerMode.WHIP, peer="sim", simulcast=True)
        self.seq = [1000, 2000, 3000]
        self.frame = 0

    def frames(self, count: int, *, keyframe_at: int | None = None) -> None:
        """``count`` frames on every layer; the payload's 3rd byte names the layer."""
        for i in range(count):
            for layer, (rid, ssrc, size) in enumerate(LAYERS):
                key = keyframe_at == i
                body = (VP8_KEY if key else VP8_DELTA) + bytes([layer]) * size
                self.client.send_rtp(96, self.seq[layer], 3000 * self.frame, ssrc, body, mid="1", rid=rid, marker=True)
                self.seq[layer] += 1
            self.frame += 1
            self.net.flush()
            self.net.advance(1 / FPS)


def layers_seen(viewer: Client) -> list[int]:
    """The layer of every video packet the viewer got (from the marker byte after VP8)."""
    out = []
    for payload in viewer.payloads(viewer.local_ssrc("1")):
        off = len(VP8_KEY) if payload.startswith(VP8_KEY) else len(VP8_DELTA)
        out.append(payload[off])
    return out


def viewer_with_estimate(net: Net, bps: int) -> tuple[Client, WebRtcPeer]:
    viewer, vpeer = net.connect(PeerMode.WHEP)
    viewer.send_rtcp(build_remb(1, bps, [viewer.local_ssrc("1")]))
    net.flush()
    assert vpeer.ctx.estimate == pytest.approx(bps, rel=0.01)
    return viewer, vpeer


def test_low_estimate_gets_layer_0_then_switches_up_at_a_key_frame() -> None:
    net = Net()
    viewer, vpeer = viewer_with_estimate(net, 50_000)
    rich, _ = viewer_with_estimate(net, 5_000_000)
    pub = Publisher(net)
    pub.frames(45, keyframe_at=0)  # 1.5 s: one full rate window measured
    out = vpeer.outbound["1"]
    rates = out.layer_rates
    assert rates[0] == pytest.approx(8 * 102 * FPS, rel=0.1) and rates[2] > rates[1] > rates[0]
    assert set(layers_seen(viewer)) == {0}
    assert out.current == 0
    # The viewer that can take everything switched up to the top layer at the first key frame
    # after the first measurement window; before that it started on layer 0.
    assert rich.payloads(rich.local_ssrc("1"))
    pub.frames(20, keyframe_at=2)
    assert layers_seen(rich)[-1] == 2

    # The estimate rises: the switch waits for a key frame of layer 2, requested from the
    # publisher on every layer's SSRC.
    pub.client.rtcp.clear()
    viewer.send_rtcp(build_remb(1, 2_000_000, [viewer.local_ssrc("1")]))
    net.flush()
    net.advance(0.35)
    assert {p.media_ssrc for p in pub.client.rtcp_of(Pli)} == {ssrc for _, ssrc, _ in LAYERS}
    assert out.pending == 2 and out.current == 0
    before = len(layers_seen(viewer))
    pub.frames(3)  # inter frames: still layer 0
    pub.frames(3, keyframe_at=0)
    seen = layers_seen(viewer)[before:]
    # Layer 0's packet of the key frame goes first on the wire (still the current layer),
    # then layer 2's key frame switches.
    assert seen == [0, 0, 0, 0, 2, 2, 2]
    assert out.current == 2 and out.counters["switches"] == 2
    # One continuous sequence space across the switch.
    seqs = [h.sequence_number for h, _ in viewer.media(viewer.local_ssrc("1"))]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]


def test_max_spatial_caps_the_layer() -> None:
    net = Net()
    viewer, vpeer = net.connect(PeerMode.WHEP)  # no estimate: the best layer allowed
    pub = Publisher(net)
    pub.frames(40, keyframe_at=0)
    pub.frames(5, keyframe_at=0)
    assert layers_seen(viewer)[-1] == 2
    vpeer.set_max_spatial(net.now, 1)
    net.after_input()
    pub.frames(2)
    pub.frames(2, keyframe_at=0)
    assert layers_seen(viewer)[-4:] == [2, 2, 1, 1]


def test_layers_are_learned_from_rid_extensions() -> None:
    net = Net()
    pub = Publisher(net)
    pub.frames(1, keyframe_at=0)
    track = pub.peer.inbound.by_name["video_main"]
    assert track.rids == ("q", "h", "f")
    assert [s.ssrc for s in track.streams] == [ssrc for _, ssrc, _ in LAYERS]
    # RTX of layer "h" identified by repaired-rtp-stream-id (RFC 8852 s3.2): unwrapped.
    net.connect(PeerMode.WHEP)
    pub.client.send_rtp(97, 1, 0, 0xB1, (2000).to_bytes(2, "big") + VP8_KEY + b"\x01", mid="1", rrid="h")
    net.flush()
    assert track.streams[1].rtx_ssrc == 0xB1
    assert pub.peer.inbound.counters["rtx"] == 1


def test_transport_cc_feedback_from_the_viewer_drives_its_estimate() -> None:
    net = Net()
    viewer, vpeer = net.connect(PeerMode.WHEP)
    pub = Publisher(net)
    recorder = TwccRecorder(7)
    for _ in range(30):
        n = len(viewer.rtp)
        pub.frames(1, keyframe_at=0 if pub.frame == 0 else None)
        for h, p in viewer.rtp[n:]:
            loc = find_extension(p, h, 3)
            assert loc is not None
            recorder.record(int.from_bytes(p[loc[0] : loc[0] + 2], "big"), net.now)
        for fb in recorder.handle_timeout(net.now + 1):
            viewer.send_rtcp(fb)
        net.flush()
    assert vpeer.ctx.estimate is not None and vpeer.ctx.estimate > 0
    assert vpeer.ctx.history.unknown == 0


def test_viewer_on_transport_cc_probes_its_way_up_the_layers() -> None:
    """A transport-cc viewer's estimate is capped near what it is sent (1.5 x acknowledged);
    once the cap on layers is lifted it probes for the next layer, switches at a key frame,
    and repeats until the top layer (a lossless path with no queue)."""
    net = Net()
    viewer, vpeer = net.connect(PeerMode.WHEP)
    vpeer.set_max_spatial(net.now, 0)
    pub = Publisher(net)
    recorder = TwccRecorder(7, interval=0.05)
    out = vpeer.outbound["1"]
    layers: list[int] = []

    def run(seconds: float) -> None:
        for _ in range(round(seconds * FPS)):
            n = len(viewer.rtp)
            pub.frames(1, keyframe_at=0 if pub.frame % 15 == 0 else None)  # a key frame every 0.5 s
            for h, p in viewer.rtp[n:]:
                loc = find_extension(p, h, 3)
                assert loc is not None
                recorder.record(int.from_bytes(p[loc[0] : loc[0] + 2], "big"), net.now + 0.02)
            for fb in recorder.handle_timeout(net.now):
                viewer.send_rtcp(fb)
            net.flush()
            layers.append(out.current)

    run(4.0)
    assert out.current == 0 and vpeer.ctx.own_estimate
    assert vpeer.ctx.estimate is not None and vpeer.ctx.estimate < out.layer_rates[1] * 1.15
    assert vpeer.ctx.bwe.probes == 0
    vpeer.set_max_spatial(net.now, None)
    net.after_input()
    run(2.0)
    assert out.current == 1 and vpeer.ctx.bwe.probes == 1
    run(4.0)
    assert out.current == 2 and vpeer.ctx.bwe.probes == 2 and vpeer.ctx.bwe.probes_failed == 0
    assert layers == sorted(layers)  # never fell back on a clean path
    assert vpeer.ctx.history.unknown == 0


# ---- layers inside a stream: VP8 temporal layers and picture ids, VP9 SVC ---------------------

V_SSRC = 0x2222
TL_PATTERN = (0, 2, 1, 2)  # the usual 3-layer VP8 pattern


def vp8_packet(pid: int, tl0: int, tid: int, *, sync: bool, key: bool, start: bool, body: bytes) -> bytes:
    """X=1 with I (15-bit PictureID), L and T (RFC 7741 s4.2), then the frame header byte."""
    desc = bytes(
        [0x90 if start else 0x80, 0xE0, 0x80 | (pid >> 8), pid & 0xFF, tl0, (tid << 6) | (0x20 if sync else 0)]
    )
    header = b"\x00\x9d\x01\x2a" if key else b"\x01"
    return desc + (header if start else b"") + body


class Vp8Publisher:
    """One VP8 stream with three temporal layers, two packets per frame; the layer sync bit Y is
    set on the first TL2 and TL1 frames of every ``sync_every``-th group of four frames."""

    def __init__(self, net: Net, *, sync_every: int = 2, pid: int = 30000) -> None:
        self.net = net
        self.client, self.peer = net.connect(PeerMode.WHIP, peer="pub", ssrcs=(0x1111, V_SSRC, 0x3333))
        self.seq = 100
        self.frame = 0
        self.pid = pid
        self.tl0 = 250
        self.sync_every = sync_every

    def frames(self, count: int, *, keyframe_at: int | None = None) -> None:
        for i in range(count):
            pos = self.frame % 4
            tid = TL_PATTERN[pos]
            key = keyframe_at == i
            if key:
                assert tid == 0
            if tid == 0:
                self.tl0 = (self.tl0 + 1) & 0xFF
            sync = pos in (1, 2) and (self.frame // 4) % self.sync_every == self.sync_every - 1
            for part in range(2):
                body = vp8_packet(self.pid, self.tl0, tid, sync=sync, key=key, start=part == 0, body=bytes([tid]) * 50)
                self.client.send_rtp(96, self.seq, 3000 * self.frame, V_SSRC, body, mid="1", marker=part == 1)
                self.seq = (self.seq + 1) & 0xFFFF
            self.pid = (self.pid + 1) & 0x7FFF
            self.frame += 1
            self.net.flush()
            self.net.advance(1 / FPS)


def vp8_seen(viewer: Client) -> list[tuple[int, int, int, int, bool]]:
    """(seq, picture id, tl0picidx, tid, Y) of every first packet of a frame the viewer got."""
    out = []
    for h, p in viewer.media(viewer.local_ssrc("1")):
        d = parse_vp8_descriptor(p, h.payload_offset)
        assert d.picture_id_long
        if d.start_of_partition:
            out.append((h.sequence_number, d.picture_id, d.tl0picidx, d.temporal_id, d.layer_sync))
    return out


def assert_continuous(viewer: Client) -> None:
    seqs = [h.sequence_number for h, _ in viewer.media(viewer.local_ssrc("1"))]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    frames = vp8_seen(viewer)
    pids = [f[1] for f in frames]
    assert pids == [(pids[0] + i) & 0x7FFF for i in range(len(pids))]


def test_vp8_viewer_capped_at_tl0_gets_tl0_only_with_continuous_numbers_then_switches_up_at_sync() -> None:
    net = Net()
    viewer, vpeer = net.connect(PeerMode.WHEP)
    full, _ = net.connect(PeerMode.WHEP)
    vpeer.set_max_temporal(net.now, 0)
    pub = Vp8Publisher(net)
    pub.frames(24, keyframe_at=0)
    out = vpeer.outbound["1"]
    frames = vp8_seen(viewer)
    assert [f[3] for f in frames] == [0] * 6
    tl0s = [f[2] for f in frames]
    assert tl0s == [(tl0s[0] + i) & 0xFF for i in range(6)]  # 251..255, 0: wraps too
    assert_continuous(viewer)
    assert out.counters["temporal_filtered"] == 18 * 2 and out.temporal_layer == 0
    # The uncapped viewer got every frame, picture ids as sent.
    assert [f[3] for f in vp8_seen(full)] == [TL_PATTERN[i % 4] for i in range(24)]
    assert vp8_seen(full)[0][1] == 30000

    # Cap lifted: up one layer at a time, each at a frame with the layer sync bit.
    vpeer.set_max_temporal(net.now, None)
    net.after_input()
    before = len(vp8_seen(viewer))
    pub.frames(16)
    new = vp8_seen(viewer)[before:]
    tids = [f[3] for f in new]
    first1 = tids.index(1)
    first2 = tids.index(2)
    assert new[first1][4] and new[first2][4]  # both at Y=1 frames
    assert first1 < first2
    assert tids[first2:] == [TL_PATTERN[(pub.frame - len(tids) + first2 + i) % 4] for i in range(len(tids) - first2)]
    assert out.temporal_layer == 2
    assert_continuous(viewer)
    # Capping again takes effect at the next frame.
    vpeer.set_max_temporal(net.now, 1)
    net.after_input()
    before = len(vp8_seen(viewer))
    pub.frames(8)
    assert {f[3] for f in vp8_seen(viewer)[before:]} == {0, 1}
    assert_continuous(viewer)


def test_vp8_picture_ids_stay_continuous_across_a_simulcast_switch() -> None:
    net = Net()
    viewer, vpeer = net.connect(PeerMode.WHEP)
    vpeer.set_max_spatial(net.now, 0)
    pub = Publisher(net)
    pids = [(5000, 17), (20000, 99), (32760, 3)]  # per layer: picture id, tl0picidx

    def frames(count: int, keyframe_at: int | None = None) -> None:
        for i in range(count):
            for layer, (rid, ssrc, size) in enumerate(LAYERS):
                pid, tl0 = pids[layer]
                key = keyframe_at == i
                body = vp8_packet(pid, tl0, 0, sync=False, key=key, start=True, body=bytes([layer]) * size)
                pub.client.send_rtp(96, pub.seq[layer], 3000 * pub.frame, ssrc, body, mid="1", rid=rid, marker=True)
                pub.seq[layer] += 1
                pids[layer] = ((pid + 1) & 0x7FFF, (tl0 + 1) & 0xFF)
            pub.frame += 1
            net.flush()
            net.advance(1 / FPS)

    frames(40, keyframe_at=0)
    first = vp8_seen(viewer)
    assert first[0][1] == 5000 and first[0][2] == 17  # the first picture passes unchanged
    vpeer.set_max_spatial(net.now, 2)
    net.after_input()
    frames(3)
    frames(3, keyframe_at=1)  # picture ids of layer 2 wrap 15 bits around here
    out = vpeer.outbound["1"]
    assert out.current == 2
    layers = [p[h.payload_offset + 10] for h, p in viewer.media(viewer.local_ssrc("1"))]
    assert layers[-2:] == [2, 2] and layers[0] == 0
    assert_continuous(viewer)
    tl0s = [f[2] for f in vp8_seen(viewer)]
    assert tl0s == [(17 + i) & 0xFF for i in range(len(tl0s))]
    # A NACK for a renumbered packet (its descriptor rewritten for this viewer, the rest of the payload
    # kept by reference to the source's buffer): the RTX carries the OSN, then the payload as sent.
    vssrc = viewer.local_ssrc("1")
    h, pkt = viewer.media(vssrc)[-2]
    as_sent = pkt[h.payload_offset : h.payload_offset + h.payload_length]
    assert parse_vp8_descriptor(as_sent).picture_id != pids[2][0] - 2  # renumbered: not the source's id
    viewer.send_rtcp(build_nack(1, vssrc, [h.sequence_number]))
    net.flush()
    rtx_ssrc = out.rtx_ssrc
    assert rtx_ssrc is not None
    ((rh, rp),) = viewer.media(rtx_ssrc)
    body = rp[rh.payload_offset : rh.payload_offset + rh.payload_length]
    assert int.from_bytes(body[:2], "big") == h.sequence_number and body[2:] == as_sent
    assert rh.timestamp == h.timestamp


def vp9_packet(
    pid: int, sid: int, tid: int, *, p: bool, b: bool, e: bool, d: bool = False, u: bool = False, ss: bool = False
) -> bytes:
    """Non-flexible mode (RFC 9628 s4.2): I|P|L|F|B|E|V|Z, 15-bit picture id, TID|U|SID|D,
    TL0PICIDX, and on key pictures a scalability structure with 3 layer resolutions."""
    b0 = 0x80 | 0x20 | (0x40 if p else 0) | (0x08 if b else 0) | (0x04 if e else 0) | (0x02 if ss else 0)
    out = bytes([b0, 0x80 | (pid >> 8), pid & 0xFF, (tid << 5) | (0x10 if u else 0) | (sid << 1) | (1 if d else 0), 7])
    if ss:
        out += bytes([(2 << 5) | 0x10]) + bytes(12)
    return out


class SvcPublisher:
    """VP9 with three spatial layers on one SSRC, two packets per layer frame."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.client, self.peer = net.connect(PeerMode.WHIP, peer="pub", ssrcs=(0x1111, V_SSRC, 0x3333))
        self.seq = 7
        self.pid = 1
        self.frame = 0

    def pictures(self, count: int, *, keyframe_at: int | None = None, switch_at: int | None = None) -> None:
        """``switch_at``: a picture whose upper layers are predicted from the lower layer only."""
        for i in range(count):
            key = keyframe_at == i
            for sid in range(3):
                for part in range(2):
                    last = part == 1
                    body = (
                        vp9_packet(
                            self.pid,
                            sid,
                            0,
                            p=not (key or (switch_at == i and sid > 0)),
                            b=part == 0,
                            e=last,
                            d=sid > 0,
                            ss=key and sid == 0 and part == 0,
                        )
                        + bytes([sid]) * 300
                    )
                    self.client.send_rtp(
                        96, self.seq, 3000 * self.frame, V_SSRC, body, mid="1", marker=last and sid == 2
                    )
                    self.seq += 1
            self.pid = (self.pid + 1) & 0x7FFF
            self.frame += 1
            self.net.flush()
            self.net.advance(1 / FPS)


@pytest.fixture
def vp9_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    from . import peer_client

    make = peer_client.make_offer

    def vp9(*args: Any, **kw: Any) -> str:
        return make(*args, **kw).replace("VP8/90000", "VP9/90000")

    monkeypatch.setattr(peer_client, "make_offer", vp9)


def svc_seen(viewer: Client) -> list[tuple[int, int, bool, bool]]:
    """(picture id, SID, E, marker) of every packet the viewer got."""
    out = []
    for h, p in viewer.media(viewer.local_ssrc("1")):
        d = parse_vp9_descriptor(p, h.payload_offset)
        out.append((d.picture_id, d.spatial_id, d.end, h.marker))
    return out


@pytest.mark.usefixtures("vp9_offers")
def test_vp9_svc_viewer_capped_at_s0_gets_s0_with_the_marker_then_switches_up_at_the_right_picture() -> None:
    net = Net()
    viewer, vpeer = net.connect(PeerMode.WHEP)
    full, _ = net.connect(PeerMode.WHEP)
    vpeer.set_max_spatial(net.now, 0)
    pub = SvcPublisher(net)
    pub.pictures(40, keyframe_at=0)  # > 1 s: layer rates measured
    seen = svc_seen(viewer)
    assert len(seen) == 80 and {s[1] for s in seen} == {0}
    assert [s[3] for s in seen] == [s[2] for s in seen] == [False, True] * 40  # marker on SID 0's E
    assert len(svc_seen(full)) == 240 and [s[3] for s in svc_seen(full)] == ([False] * 5 + [True]) * 40
    seqs = [h.sequence_number for h, _ in viewer.media(viewer.local_ssrc("1"))]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    out = vpeer.outbound["1"]
    rates = out.layer_rates
    assert rates[2] > rates[1] > rates[0] > 0  # cumulative: a layer needs those below
    assert out.spatial_layer == 0

    # Cap lifted: inter pictures (upper layers predicted from earlier pictures) cannot start
    # layer 1 or 2; a key frame is asked for; a picture whose upper layers are predicted only
    # from the layer below switches up.
    pub.client.rtcp.clear()
    vpeer.set_max_spatial(net.now, None)
    net.after_input()
    net.flush()
    net.advance(0.35)
    assert {p.media_ssrc for p in pub.client.rtcp_of(Pli)} == {V_SSRC}
    before = len(svc_seen(viewer))
    pub.pictures(3)
    assert {s[1] for s in svc_seen(viewer)[before:]} == {0}
    pub.pictures(3, switch_at=1)
    new = svc_seen(viewer)[before:]
    assert [s[1] for s in new] == [0, 0] * 4 + [0, 0, 1, 1, 2, 2] * 2
    # The switch is seen at SID 1's first packet, after SID 0's last one got the marker.
    assert [s[3] for s in new] == [False, True] * 4 + [False, True] + [False] * 3 + [True] + [False] * 5 + [True]
    assert out.spatial_layer == 2
    # Down again: from the next picture.
    vpeer.set_max_spatial(net.now, 1)
    net.after_input()
    before = len(svc_seen(viewer))
    pub.pictures(2)
    assert [(s[1], s[3]) for s in svc_seen(viewer)[before:]] == [(0, False), (0, False), (1, False), (1, True)] * 2
    seqs = [h.sequence_number for h, _ in viewer.media(viewer.local_ssrc("1"))]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]


@pytest.fixture
def h264_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    from . import peer_client

    make = peer_client.make_offer

    def h264(*args: Any, **kw: Any) -> str:
        return make(*args, **kw).replace(
            "a=rtpmap:96 VP8/90000\r\n",
            "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n",
        )

    monkeypatch.setattr(peer_client, "make_offer", h264)


@pytest.mark.usefixtures("h264_offers")
def test_h264_simulcast_switches_layers_at_idr_like_vp8() -> None:
    """H.264 has no payload descriptor: only the key-frame check (IDR) differs from VP8."""
    net = Net()
    viewer, vpeer = net.connect(PeerMode.WHEP)
    vpeer.set_max_spatial(net.now, 0)
    pub = Publisher(net)

    def frames(count: int, keyframe_at: int | None = None) -> None:
        for i in range(count):
            for layer, (rid, ssrc, size) in enumerate(LAYERS):
                nal = b"\x65" if keyframe_at == i else b"\x41"  # IDR slice / non-IDR slice
                body = nal + bytes([layer]) * size
                pub.client.send_rtp(96, pub.seq[layer], 3000 * pub.frame, ssrc, body, mid="1", rid=rid, marker=True)
                pub.seq[layer] += 1
            pub.frame += 1
            net.flush()
            net.advance(1 / FPS)

    frames(40, keyframe_at=0)
    seen = [p[1] for p in viewer.payloads(viewer.local_ssrc("1"))]
    assert set(seen) == {0} and len(seen) == 40
    vpeer.set_max_spatial(net.now, 2)
    net.after_input()
    frames(2)
    frames(2, keyframe_at=0)
    seen = [p[1] for p in viewer.payloads(viewer.local_ssrc("1"))]
    assert seen[-5:] == [0, 0, 0, 2, 2]  # layer 0 of the IDR picture goes out first, then layer 2
    out = vpeer.outbound["1"]
    assert out.current == 2 and out.temporal_layer == 0
    seqs = [h.sequence_number for h, _ in viewer.media(viewer.local_ssrc("1"))]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]


def test_a_late_packet_of_a_dropped_layer_does_not_shift_later_sequence_numbers() -> None:
    net = Net()
    viewer, vpeer = net.connect(PeerMode.WHEP)
    vpeer.set_max_temporal(net.now, 0)
    pub = Vp8Publisher(net)
    pub.frames(4, keyframe_at=0)  # TIDs 0 2 1 2, two packets each: the first 2 forwarded
    send = pub.client.send_rtp
    body = vp8_packet(1, 2, 0, sync=False, key=False, start=True, body=b"\x00")
    # seq 108 (TL0) then 110 (TL0), then 109 (TL2) late.
    send(96, 108, 3000 * 4, V_SSRC, body, mid="1", marker=True)
    send(96, 110, 3000 * 6, V_SSRC, body, mid="1", marker=True)
    send(96, 109, 3000 * 5, V_SSRC, vp8_packet(2, 2, 2, sync=False, key=False, start=True, body=b"\x02"), mid="1")
    send(96, 111, 3000 * 7, V_SSRC, body, mid="1", marker=True)
    net.flush()
    seqs = [h.sequence_number for h, _ in viewer.media(viewer.local_ssrc("1"))]
    # 109's slot stays a hole (as if lost: later numbers were already out), no duplicates.
    assert seqs[2:] == [seqs[1] + 1, seqs[1] + 3, seqs[1] + 4]
    assert len(set(seqs)) == len(seqs)


@pytest.mark.usefixtures("vp9_offers")
def test_vp9_svc_viewer_on_transport_cc_probes_its_way_up_the_spatial_layers() -> None:
    """As for simulcast: a transport-cc viewer's estimate stays near what it gets, so once the
    spatial cap is lifted it probes for the next layer and moves up at a key picture, one layer
    at a time, and picture ids stay consecutive all along."""
    net = Net()
    viewer, vpeer = net.connect(PeerMode.WHEP)
    vpeer.set_max_spatial(net.now, 0)
    pub = SvcPublisher(net)
    recorder = TwccRecorder(7, interval=0.05)
    out = vpeer.outbound["1"]
    layers: list[int] = []

    def run(seconds: float) -> None:
        for _ in range(round(seconds * FPS)):
            n = len(viewer.rtp)
            pub.pictures(1, keyframe_at=0 if pub.frame % 15 == 0 else None)  # a key picture every 0.5 s
            for h, p in viewer.rtp[n:]:
                loc = find_extension(p, h, 3)
                assert loc is not None
                recorder.record(int.from_bytes(p[loc[0] : loc[0] + 2], "big"), net.now + 0.02)
            for fb in recorder.handle_timeout(net.now):
                viewer.send_rtcp(fb)
            net.flush()
            layers.append(out.spatial_layer)

    run(4.0)
    assert out.spatial_layer == 0 and vpeer.ctx.own_estimate
    assert vpeer.ctx.estimate is not None and vpeer.ctx.estimate < out.layer_rates[1] * 1.15
    assert vpeer.ctx.bwe.probes == 0
    vpeer.set_max_spatial(net.now, None)
    net.after_input()
    run(2.0)
    assert out.spatial_layer == 1 and vpeer.ctx.bwe.probes == 1
    run(4.0)
    assert out.spatial_layer == 2 and vpeer.ctx.bwe.probes == 2 and vpeer.ctx.bwe.probes_failed == 0
    assert layers == sorted(layers)
    pids = [s[0] for s in svc_seen(viewer)]
    assert all(((b - a) & 0x7FFF) in (0, 1) for a, b in itertools.pairwise(pids))
