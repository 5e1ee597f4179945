"""Rooms as MoQ on a media node with ``--workers 2`` (docs/moq.md "Across the cluster"): the MoQ
listener runs beside worker 0, and a room whose sessions the node routes to worker 1 is still
bridged both ways over the tracks' cluster channels, as with a room of another node:

- a WHIP publisher's room on worker 1 is watched by a MoQ subscriber (worker 0's room bridge taps
  the track's channel);
- a MoQ publisher into a room on worker 1 (its peer joins on worker 0) is decoded by a WHEP viewer
  on worker 1."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.test_roles import Cluster, Member, running_cluster
from tests.e2e.test_moq_cluster import moq_metrics, watch_room
from tests.e2e.test_moq_interop import free_udp_port
from tests.e2e.test_moq_rooms import is_vp8_key, publish_into_room, vp8_frames
from tests.e2e.test_whip_whep import Background
from tests.e2e.test_workers import worker_of

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_workers(netns_guard: None) -> Iterator[tuple[Cluster, Member, int]]:
    """A fresh node per test: it routes a new room by its hash only while no worker has sessions
    (then the worker with the fewest wins, as the load reports say, a second late)."""
    with running_cluster() as c:
        port = free_udp_port()
        node = c.media(1, 10, "--moq-port", str(port), "--moq-anonymous", workers=2)
        yield c, node, port


def room_on_worker_1(prefix: str) -> str:
    """A room a fresh node routes to worker 1: by its hash (runtime/cluster_node.py worker_for_room, as
    standalone), or to the worker that already hosts it."""
    return next(r for r in (f"{prefix}-{i}" for i in range(100)) if worker_of(r, 2) == 1)


def wait_room_on(node: Member, worker: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The node's workers once ``worker`` hosts a room (the WHIP publisher joined)."""
    deadline = time.monotonic() + timeout
    while True:
        workers: list[dict[str, Any]] = node.info()["workers"]
        if workers[worker].get("rooms", 0) >= 1 or time.monotonic() > deadline:
            return workers
        time.sleep(0.1)


def test_a_room_on_worker_1_is_watched_over_moq(two_workers: tuple[Cluster, Member, int], gst_client: Any) -> None:
    c, node, port = two_workers
    room = room_on_worker_1("moqw")
    publisher = Background(
        gst_client, "whip", node.base + "/whip/endpoint", "--token", c.token(node.base, "whip", room, "pub"),
        "--codec", "vp8", "--duration", "5",
    )  # fmt: skip
    try:
        workers = wait_room_on(node, 1)
        got = asyncio.run(watch_room(port, room, 20, node))
    finally:
        rc, summary, err = publisher.join()
    assert rc == 0, (summary, err[-1500:])
    assert [w.get("rooms") for w in workers] == [0, 1], (workers, node.log())  # the room is on worker 1 only
    video = got["video"]
    print("room on worker 1 over moq:", len(video), "objects, groups", sorted({g for g, _, _ in video}))
    assert len(video) >= 20, (len(video), node.log())
    assert video[0][1] == 0 and is_vp8_key(video[0][2]), video[0][:2]  # starts on a group's key frame
    assert got["cluster"]["channels_imported"] >= 1, got["cluster"]  # worker 0 imported the track's channel


def test_a_moq_publisher_into_a_room_on_worker_1_is_watched_over_whep(
    two_workers: tuple[Cluster, Member, int], gst_client: Any
) -> None:
    c, node, port = two_workers
    room = room_on_worker_1("moqin")
    frames = vp8_frames(6 * 30, 30)  # before the clock starts: encoding is slow on a busy machine
    # The viewer comes first and waits for a track (WHEP auto-follow): the room is on worker 1.
    viewer = Background(
        gst_client, "whep", node.base + "/whep/endpoint", "--token", c.token(node.base, "whep", room, "viewer"),
        "--codec", "vp8", "--duration", "6", "--min-frames", "30",
    )  # fmt: skip
    try:
        before = wait_room_on(node, 1)
        assert [w.get("rooms") for w in before] == [0, 1], (before, node.log(200))
        started = threading.Event()
        token = c.token(node.base, "moq", room, "cam")
        publisher = Background(lambda: asyncio.run(publish_into_room(port, token, room, frames, started)))
        assert started.wait(30), f"the relay never subscribed to the track\n{node.log()}"
        during = wait_room_on(node, 0)  # the publisher's peer joined the room on worker 0
        published = publisher.join(30)
    finally:
        rc, summary, err = viewer.join()
    print("moq publisher into a room on worker 1, whep viewer:", summary, "publisher:", published)
    assert rc == 0, (summary, err[-1500:], node.log())
    assert summary["frames"] >= 30 and (summary["width"], summary["height"]) == (320, 240), summary
    # The publisher's peer joined on worker 0, the viewer stayed on worker 1: the track crossed workers.
    assert [w.get("rooms") for w in during] == [1, 1], during
    after = moq_metrics(node)
    assert after["ingest_publishers_total"] >= 1 and after.get("ingest_elsewhere_total", 0) == 0, after
