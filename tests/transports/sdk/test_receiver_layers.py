"""Receiver config min/max spatial and temporal against the viewer's bandwidth (sdk/temporal.py,
sdk/allocation.py, the forwarder's floor), alone and through an SdkSession on the virtual clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.transports.sdk.protocol import session_pb2, shared_pb2
from trackmesh.transports.sdk.temporal import probe_target, temporal_cap

from .test_session import World, _test_srtp, attach_cfg, err, join, request, world

__all__ = ["world"]  # the fixture, shared with test_session

RATES = [200_000.0, 300_000.0, 400_000.0]  # cumulative: TL0, TL0+TL1, all three


def test_cap_is_the_config_while_everything_fits() -> None:
    assert temporal_cap(1, 2, 1_000_000, RATES) == 2
    assert temporal_cap(None, None, 1_000_000, RATES) is None
    assert temporal_cap(0, 2, None, RATES) == 2  # no estimate yet
    assert temporal_cap(0, 2, 100_000, []) == 2  # no temporal layers measured


def test_cap_lowers_to_what_fits_but_never_below_min_temporal() -> None:
    assert temporal_cap(0, 2, 400_000, RATES) == 1  # 460k does not fit, 345k does
    assert temporal_cap(0, None, 300_000, RATES) == 0
    assert temporal_cap(0, 2, 100_000, RATES) == 0  # nothing fits: the floor
    assert temporal_cap(1, 2, 100_000, RATES) == 1  # the floor is min_temporal
    assert temporal_cap(2, 2, 100_000, RATES) == 2
    assert temporal_cap(1, 1, 100_000, RATES) == 1


@given(
    st.integers(0, 3),
    st.integers(0, 3),
    st.floats(0, 2e6),
    st.lists(st.floats(1, 1e6), min_size=1, max_size=4),
)
def test_cap_stays_within_the_config(lo: int, hi: int, share: float, steps: list[float]) -> None:
    rates = [sum(steps[: i + 1]) for i in range(len(steps))]
    lo = min(lo, hi)
    cap = temporal_cap(lo, hi, share, rates)
    assert cap is not None and min(lo, len(rates) - 1) <= cap <= hi


def test_probe_target_is_the_next_layer_up() -> None:
    assert probe_target(0, 2, RATES) == pytest.approx(300_000 * 1.15)
    assert probe_target(2, 2, RATES) is None
    assert probe_target(1, 1, RATES) is None
    assert probe_target(None, None, RATES) is None


def vp8_tl(pid: int, tid: int) -> bytes:
    """A VP8 payload descriptor with a 15-bit picture id and TID (RFC 7741 s4.2), then a byte."""
    return bytes([0x90, 0xA0, 0x80 | (pid >> 8), pid & 0xFF, (tid << 6) | 0x20, 0x00])


def test_session_honours_min_temporal_when_the_estimate_falls(world: World) -> None:
    """A VP8 camera with three temporal layers (200k/100k/100k); a viewer configured with
    min_temporal 1: as its estimate falls the temporal cap goes 2 -> 1 and stays at 1 (not 0)."""
    alice, _ = world.session([("camera", "video", True)], [])
    bob, _ = world.session([], ["video"])
    for s, p in ((alice, "alice"), (bob, "bob")):
        join(s, "r1", p)
    cfg = {"priority": 1, "max_spatial": 0, "max_temporal": 2, "min_temporal": 1}
    assert err(attach_cfg(bob, "video_0", "alice", "camera", **cfg)) is None
    world.drain(alice, bob)
    bob.peer.ctx.srtp = _test_srtp()
    bob.peer.ctx.addr = ("127.0.0.1", 9)
    sizes = {0: 1000, 1: 500, 2: 250}  # bytes per packet; 100 packets/s cycling TIDs 0,2,1,2
    track = alice.endpoint.remote_track("camera")
    assert track is not None
    for i in range(220):
        world.now += 0.01
        tid = (0, 2, 1, 2)[i % 4]
        body = vp8_tl(i, tid) + b"\0" * (sizes[tid] - 6)
        track.on_packet(MediaPacket(MediaCodec.VP8, 96, i, i * 900, True, i == 0, body, arrival=world.now))
    out = bob.peer.outbound[bob.receivers["video_0"].mid or ""]
    assert out.temporal_rates == pytest.approx(RATES, rel=0.05)

    bob.peer.ctx.estimate = 1_000_000.0
    bob.allocate_bitrate(world.now)
    assert out.vp8.target == 2
    bob.peer.ctx.estimate = 400_000.0  # carries TL0+TL1 (345k), not all three (460k)
    bob.allocate_bitrate(world.now)
    assert out.vp8.target == 1
    bob.peer.ctx.estimate = 100_000.0  # not even TL0: min_temporal is the floor
    bob.allocate_bitrate(world.now)
    assert out.vp8.target == 1
    # Without min_temporal the same estimate gets TL0 only.
    config = shared_pb2.Receiver.Config(priority=1, max_spatial=0, max_temporal=2)
    assert err(request(bob, receiver=session_pb2.Request.Receiver(name="video_0", config=config))) is None
    assert out.vp8.target == 0
    bob.peer.ctx.estimate = 1_000_000.0
    bob.allocate_bitrate(world.now)
    assert out.vp8.target == 2


def test_forwarder_never_goes_below_min_spatial_when_the_estimate_collapses(world: World) -> None:
    """Simulcast 150k/500k/1.5M, a receiver with min_spatial 1: at 100 kbps nothing fits, and both
    the allocation's cap and the forwarder's own choice stay at layer 1 (not 0)."""
    alice, _ = world.session([("camera", "video", True)], [])
    bob, _ = world.session([], ["video"])
    for s, p in ((alice, "alice"), (bob, "bob")):
        join(s, "r1", p)
    cfg = {"priority": 1, "max_spatial": 2, "max_temporal": 2, "min_spatial": 1}
    assert err(attach_cfg(bob, "video_0", "alice", "camera", **cfg)) is None
    world.drain(alice, bob)
    bob.peer.ctx.srtp = _test_srtp()
    bob.peer.ctx.addr = ("127.0.0.1", 9)
    track = alice.endpoint.remote_track("camera")
    assert track is not None
    out = bob.peer.outbound[bob.receivers["video_0"].mid or ""]

    def send(ticks: int, first: int, key_layer: int | None = None) -> None:
        for i in range(first, first + ticks):
            world.now += 0.01
            for layer, bps in enumerate((150_000, 500_000, 1_500_000)):
                key = i == 0 or (key_layer == layer and i == first)
                body = b"\0" * (bps // 8 // 100)
                track.on_packet(
                    MediaPacket(MediaCodec.VP8, 96, i, i * 900, True, key, body, spatial=layer, arrival=world.now)
                )

    send(220, 0)
    assert out.layer_rates[:3] == pytest.approx([150_000, 500_000, 1_500_000], rel=0.05)
    bob.peer.ctx.estimate = 100_000.0
    bob.allocate_bitrate(world.now)
    assert out.max_spatial == 1 and out.min_spatial == 1
    out.reselect(world.now)
    assert out.pending in (-1, 1) and (out.current == 1 or out.pending == 1)
    send(5, 220, key_layer=1)
    assert out.current == 1 and out.spatial_layer == 1
    # Without the floor the same estimate gets layer 0.
    config = shared_pb2.Receiver.Config(priority=1, max_spatial=2, max_temporal=2)
    assert err(request(bob, receiver=session_pb2.Request.Receiver(name="video_0", config=config))) is None
    assert out.min_spatial is None and out.max_spatial == 0
    send(5, 225, key_layer=0)
    assert out.current == 0
