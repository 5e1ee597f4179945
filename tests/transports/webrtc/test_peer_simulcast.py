"""Simulcast through WebRtcPeer: three rid layers learned from header extensions, per-viewer
layer choice from the viewer's bandwidth estimate, switches only at key frames."""

from __future__ import annotations

import pytest

from trackmesh.transports.webrtc.peer import WebRtcPeer
from trackmesh.transports.webrtc.peer_events import PeerMode
from trackmesh.transports.webrtc.rtcp import Pli, build_remb
from trackmesh.transports.webrtc.rtp import find_extension
from trackmesh.transports.webrtc.twcc import TwccRecorder

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
