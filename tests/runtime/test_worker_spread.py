"""The links between a standalone node's workers (runtime/worker_spread.py) on real pipes: two worker
runtimes on one event loop, each with its SpreadLinks. A viewer on worker 1 gets worker 0's track
over the pipe, once per packet, with the driver's counters; when worker 0's end closes, worker 1
sees its peers and tracks go."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from trackmesh.config import resolve
from trackmesh.core.controls import CreateLocalTrack, Join, Publish, Subscribe
from trackmesh.core.events import EndpointEvent, PeerLeft, TrackStarted, TrackStopped
from trackmesh.core.model import MediaCodec, MediaPacket, TrackInfo, TrackKind, TrackSource
from trackmesh.runtime.worker_spread import SpreadLinks, spread_pipes, spreads

V = TrackKind.VIDEO
CONFIG = resolve("standalone", {"secret": "test-secret-12345", "workers": "2", "room_spread": "1"}, {})


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_viewer_on_worker_1_gets_worker_0s_track_over_the_pipe_and_sees_it_go_with_the_link() -> None:
    assert spreads(CONFIG) and CONFIG.room_spread == 1

    async def run() -> None:
        loop = asyncio.get_running_loop()
        pipes = spread_pipes(2)
        links = [SpreadLinks(i, 2, pipes[i]) for i in range(2)]
        runtimes = [link.new_runtime(CONFIG) for link in links]
        for link, runtime in zip(links, runtimes, strict=True):
            link.attach(runtime, loop)
        events: list[EndpointEvent] = []
        got: list[int] = []
        w0, w1 = runtimes
        pub = w0.core.create_endpoint()
        assert pub.control(w0.now(), Join("r", "alice")) is None
        assert pub.control(w0.now(), Publish("cam", V)) is None
        viewer = w1.core.create_endpoint()
        w1.listen(viewer.session, lambda now: events.extend(iter(viewer.poll_event, None)))
        assert viewer.control(w1.now(), Join("r", "bob")) is None
        w1.flush(w1.now())
        await _until(lambda: TrackStarted(TrackInfo("alice", "cam", V)) in events)
        assert viewer.control(w1.now(), CreateLocalTrack("video0", V)) is None
        local = viewer.local_track("video0")
        assert local is not None
        local.sink = lambda p: got.append(p.seq)
        assert viewer.control(w1.now(), Subscribe("video0", TrackSource("alice", "cam"))) is None
        remote = pub.remote_track("cam")
        assert remote is not None
        await _until(lambda: links[0].stats()["channels_exported"] == 1 and links[1].stats()["channels_imported"] == 1)
        for seq in range(20):
            remote.on_packet(MediaPacket(MediaCodec.VP8, 96, seq, seq * 3000, False, seq == 0, b"x" * 1000))
            if seq % 5 == 4:
                await asyncio.sleep(0)  # a few loop turns: a batch each
        await _until(lambda: len(got) == 20)
        assert got == list(range(20))
        s0, s1 = links[0].stats(), links[1].stats()
        assert s0["packets_out"] == 20 and s1["packets_in"] == 20, (s0, s1)
        assert s0["link_messages_out"] < 20 + 10, s0  # batched: a pipe message per loop turn, not per packet
        assert s1["feedback_out"] >= 1 and s0["feedback_in"] >= 1, (s0, s1)  # the key-frame request crossed
        assert w1.stats()["spread"]["packets_in"] == 20
        assert w0.call("spread.rooms", {}) == {"r": 1} and w1.call("spread.rooms", {}) == {"r": 1}
        # Worker 0's end closes (its process died): worker 1 drops alice and her track.
        links[0].close()
        await _until(lambda: PeerLeft("alice") in events)
        assert TrackStopped("alice", "cam", V) in events
        assert links[1].stats()["peers_lost"] == 1 and links[1].stats()["channels_imported"] == 0
        links[1].close()

    asyncio.run(run())
