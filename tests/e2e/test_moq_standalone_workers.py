"""Rooms as MoQ on ``trackmesh standalone --workers 2`` (docs/moq.md "Several workers"): the MoQ
listener runs beside worker 0 in the node's process, and a room whose name hashes to worker 1 (a
child process) is bridged both ways over that worker's pipe (runtime/moq_workers.py):

- a GStreamer WHIP publisher in a room on worker 1 is watched by MoQ subscribers: catalog, video
  from a group's key frame, a key-frame request per SUBSCRIBE, PUBLISH_DONE when it leaves;
- a MoQ LOC publisher into a room on worker 1 is decoded by a GStreamer WHEP viewer there."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.test_moq_interop import free_udp_port, moq_metrics
from tests.e2e.test_moq_rooms import is_vp8_key, moq_token, publish_into_room, vp8_frames, watch
from tests.e2e.test_whip_whep import Background
from tests.e2e.test_workers import worker_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def node(netns_guard: None) -> Iterator[tuple[TrackmeshNode, int]]:
    port = free_udp_port()
    node = TrackmeshNode("--workers", "2", "--moq-port", str(port))
    try:
        yield node, port
    finally:
        rc = node.stop()
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def room_on_worker_1(prefix: str) -> str:
    return next(r for r in (f"{prefix}-{i}" for i in range(100)) if worker_of(r, 2) == 1)


def rooms_per_worker(node: TrackmeshNode) -> list[int]:
    return [int(w.get("rooms", 0)) for w in node.info()["workers"]]


def test_a_whip_publisher_on_worker_1_is_watched_over_moq(node: tuple[TrackmeshNode, int], gst_client: Any) -> None:
    trackmesh, port = node
    room = room_on_worker_1("moqsw")
    publisher = Background(
        gst_client, "whip", trackmesh.url("/whip/endpoint"), "--token", trackmesh.token("whip", room, "pub"),
        "--codec", "vp8", "--duration", "8",
    )  # fmt: skip
    before = moq_metrics(trackmesh)
    try:
        got = asyncio.run(watch(port, moq_token(trackmesh, room), room))
        after = moq_metrics(trackmesh)
    finally:
        rc, summary, err = publisher.join()
    assert rc == 0, (summary, err[-1500:])
    video = got["video"]
    groups: dict[int, list[tuple[int, bytes]]] = {}
    for g, o, p, _ in video:
        groups.setdefault(g, []).append((o, p))
    print("room on worker 1 over moq: objects per group", {g: len(x) for g, x in groups.items()})
    assert len(groups) >= 2, groups.keys()
    for g, objs in groups.items():
        assert [o for o, _ in objs] == list(range(len(objs))), g  # every object of the group, in order
        assert is_vp8_key(objs[0][1]), g  # a group opens on a key frame
    # The second subscriber's SUBSCRIBE asked the publisher on worker 1 for a key frame: it started
    # on a fresh group's key frame.
    assert got["second"] and got["second"][0][1] == 0 and is_vp8_key(got["second"][0][2]), got["second"][:1]
    assert b'"pub/video_main"' in got["catalogs"][-1] and b'"width":640' in got["catalogs"][-1], got["catalogs"][-1]
    assert len(got["done"]) == 1 and got["done"][0].status_code == 0x2, got["done"]  # TRACK_ENDED
    # The media crossed worker 1's pipe, a batch per loop turn.
    crossed = after["workers_packets_in_total"] - before.get("workers_packets_in_total", 0)
    assert crossed >= len(video), (before, after)
    assert after["rooms_keyframe_requests_total"] - before.get("rooms_keyframe_requests_total", 0) >= 2


def test_a_moq_publisher_into_a_room_on_worker_1_is_watched_over_whep(
    node: tuple[TrackmeshNode, int], gst_client: Any
) -> None:
    trackmesh, port = node
    room = room_on_worker_1("moqswin")
    frames = vp8_frames(6 * 30, 30)  # before the clock starts: encoding is slow on a busy machine
    viewer = Background(
        gst_client, "whep", trackmesh.url("/whep/endpoint"), "--token", trackmesh.token("whep", room, "viewer"),
        "--codec", "vp8", "--duration", "6", "--min-frames", "30",
    )  # fmt: skip
    before = moq_metrics(trackmesh)
    try:
        started = threading.Event()
        token = moq_token(trackmesh, room, "cam")
        publisher = Background(lambda: asyncio.run(publish_into_room(port, token, room, frames, started)))
        assert started.wait(30), f"the relay never subscribed to the track\n{trackmesh.log_tail()}"
        during = rooms_per_worker(trackmesh)
        published = publisher.join(30)
    finally:
        rc, summary, err = viewer.join()
    print("moq publisher into a room on worker 1, whep viewer:", summary, "publisher:", published)
    assert rc == 0, (summary, err[-1500:], trackmesh.log_tail())
    assert summary["frames"] >= 30 and (summary["width"], summary["height"]) == (320, 240), summary
    assert during == [0, 1], during  # the MoQ publisher's peer joined the room on worker 1 itself
    after = moq_metrics(trackmesh)
    assert after["ingest_publishers_total"] - before.get("ingest_publishers_total", 0) >= 1, after
    assert after.get("ingest_elsewhere_total", 0) == 0, after
    sent = after["workers_packets_out_total"] - before.get("workers_packets_out_total", 0)
    assert sent >= summary["frames"], (before, after)
