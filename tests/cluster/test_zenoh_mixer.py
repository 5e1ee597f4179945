"""The bounded audio mixer across two real zenoh nodes (private netns only): six speakers on A,
a listener with 3 slots on B; B imports at most 3+1 of A's audio channels, and the 3 loudest."""

from __future__ import annotations

import time

from trackmesh.cluster.zenoh_channels import ZenohChannelHub
from trackmesh.cluster.zenoh_registry import ZenohRegistry
from trackmesh.core.controls import CreateLocalTrack, Join, MixerConfig, MixerMode, Publish
from trackmesh.core.ids import channel_id
from trackmesh.core.model import MediaCodec, MediaPacket, TrackKind, TrackSource
from trackmesh.core.worker import MediaWorker
from trackmesh.runtime.worker_cluster import mixer_imports

from .conftest import Pump, wait_for

A = TrackKind.AUDIO
OUTS = ("audio_0", "audio_1", "audio_2")


class Node:
    def __init__(self, zn, node_id: int) -> None:  # type: ignore[no-untyped-def]
        self.pump = Pump()
        self.registry = ZenohRegistry(zn.session, self.pump, time.monotonic)
        self.hub = ZenohChannelHub(zn.session, self.pump, time.monotonic)
        self.worker = MediaWorker(node_id, 0, "secret", self.registry, self.hub, mixer_bound=True)

    def step(self) -> None:
        self.pump.drain()
        self.worker.take_ready()
        self.worker.handle_timeout(time.monotonic())


def test_node_b_imports_at_most_n_of_six_remote_speakers(nodes) -> None:  # type: ignore[no-untyped-def]
    za = nodes()
    zb = nodes(seeds=za.config.listen)
    wait_for(lambda: za.peers() and zb.peers())
    a, b = Node(za, 1), Node(zb, 2)
    now = time.monotonic
    levels = {f"s{i}": 10 * i for i in range(1, 7)}  # -dBov: s1 loudest
    speakers = {}
    for peer in levels:
        ep = a.worker.create_endpoint()
        assert ep.control(now(), Join("r", peer)) is None
        assert ep.control(now(), Publish("mic", A)) is None
        speakers[peer] = ep
    bob = b.worker.create_endpoint()
    assert bob.control(now(), Join("r", "bob")) is None
    for name in OUTS:
        assert bob.control(now(), CreateLocalTrack(name, A)) is None
    assert bob.control(now(), MixerConfig(MixerMode.AUTO, OUTS, ())) is None
    audio = {channel_id("r", p, "mic"): p for p in levels}

    def run(seconds: float, lv: dict[str, int]) -> list[set[str]]:
        seen = []
        end = now() + seconds
        seq = 0
        while now() < end:
            seq += 1
            for peer, level in lv.items():
                track = speakers[peer].remote_track("mic")
                if track is not None:
                    track.on_packet(MediaPacket(MediaCodec.OPUS, 111, seq, seq * 960, False, False, b"op", 0, 0, level))
            a.step()
            b.step()
            seen.append({audio[c] for c in b.hub.imported() if c in audio})
            time.sleep(0.02)
        return seen

    def slots() -> set[TrackSource | None]:
        return {t.source for t in (bob.local_track(n) for n in OUTS) if t is not None}

    seen = run(3.0, levels)
    assert max(len(s) for s in seen) <= 3
    assert seen[-1] == {"s1", "s2", "s3"}
    assert slots() == {TrackSource(p, "mic") for p in ("s1", "s2", "s3")}
    # The loudness turns around (the old voices drop below -60 dBov): B's imports follow.
    flipped = {"s1": 100, "s2": 95, "s3": 90, "s4": 30, "s5": 20, "s6": 10}
    seen = run(4.0, flipped)
    assert max(len(s) for s in seen) <= 3
    assert seen[-1] == {"s4", "s5", "s6"}
    assert slots() == {TrackSource(p, "mic") for p in ("s4", "s5", "s6")}
    # The hub counts the levels channels apart from media: A exports six mics and one summary,
    # B imports three mics and that summary; the per-room metric says three.
    sa, sb = a.hub.stats(), b.hub.stats()
    assert (sa["channels_exported"], sa["levels_channels_exported"]) == (6, 1), sa
    assert (sb["channels_imported"], sb["levels_channels_imported"]) == (3, 1), sb
    assert mixer_imports(b.worker) == {"r": 3} and mixer_imports(a.worker) == {}
    # The speakers leave: A stops its summary, B drops every import and the summary.
    for ep in speakers.values():
        ep.close(now(), "bye")

    def cleaned() -> bool:
        a.step()
        b.step()
        sa, sb = a.hub.stats(), b.hub.stats()
        return sa["levels_channels_exported"] == 0 and sb["levels_channels_imported"] == 0 and not b.hub.imported()

    wait_for(cleaned)
    assert a.hub.exported() == [] and "r" not in a.worker.rooms.rooms
    a.hub.close()
    b.hub.close()
    a.registry.close()
    b.registry.close()
