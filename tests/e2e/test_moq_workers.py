"""Rooms as MoQ on a media node with ``--workers 2`` (docs/moq.md "Across the cluster"): the MoQ
listener runs beside worker 0, and a room whose sessions the node routes to worker 1 is still
watched over MoQ. Worker 0's room bridge taps the track's cluster channel, as a remote node would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.test_roles import Cluster, Member
from tests.e2e.test_moq_cluster import watch_room
from tests.e2e.test_moq_interop import free_udp_port
from tests.e2e.test_moq_rooms import is_vp8_key
from tests.e2e.test_whip_whep import Background
from tests.e2e.test_workers import worker_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_workers(netns_guard: None) -> Iterator[tuple[Cluster, Member, int]]:
    c = Cluster()
    try:
        port = free_udp_port()
        node = c.media(1, 10, "--moq-port", str(port), "--moq-anonymous", workers=2)
        yield c, node, port
    finally:
        problems = c.close()
        assert not problems, "\n".join(problems)


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
    # A fresh node routes a new room by its hash (runtime/cluster_node.py worker_for_room, as standalone).
    room = next(r for r in (f"moqw-{i}" for i in range(100)) if worker_of(r, 2) == 1)
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
