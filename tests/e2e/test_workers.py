"""``--workers 2``: rooms live on different worker processes, each with its own UDP port."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .conftest import CLIENTS_DIR, TrackmeshNode


def worker_of(room: str, workers: int) -> int:
    # The node's routing rule (runtime/node.py worker_for_room).
    return int.from_bytes(hashlib.blake2b(room.encode(), digest_size=8).digest(), "big") % workers


@pytest.fixture(scope="module")
def two_worker_node(netns_guard: None) -> Iterator[TrackmeshNode]:
    node = TrackmeshNode("--workers", "2")
    try:
        yield node
    finally:
        assert node.stop() == 0, node.log_tail()
        assert "Traceback" not in "\n".join(node.lines)


def test_rooms_on_two_worker_processes_stream_independently(two_worker_node: TrackmeshNode) -> None:
    node = two_worker_node
    rooms: dict[int, str] = {}
    i = 0
    while len(rooms) < 2:
        room = f"wroom-{i}"
        rooms.setdefault(worker_of(room, 2), room)
        i += 1
    client = str(CLIENTS_DIR / "aiortc_client.py")
    procs = []
    for room in rooms.values():
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    client,
                    "whip",
                    node.url("/whip/endpoint"),
                    "--token",
                    node.token("whip", room, "p"),
                    "--duration",
                    "8",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    viewers = []
    for room in rooms.values():
        viewers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    client,
                    "whep",
                    node.url("/whep/endpoint"),
                    "--token",
                    node.token("whep", room),
                    "--duration",
                    "6",
                    "--frames",
                    "45",
                    "--min-frames",
                    "45",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    import time

    # Poll (no fixed wait: on a loaded box the sessions can take seconds to join) until each
    # worker reports its room, or 20 s pass; the assertions below then say what was seen.
    deadline = time.monotonic() + 20
    while True:
        during = {w["worker"]: w for w in node.info()["workers"]}
        if all(w.get("rooms") == 1 for w in during.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    results = []
    for v in viewers:
        out, err = v.communicate(timeout=60)
        assert v.returncode == 0, err[-2000:]
        results.append(json.loads([line for line in out.splitlines() if line.startswith("{")][-1]))
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err[-2000:]
    assert all(r["frames"] >= 45 and r["width"] == 640 for r in results), results
    # Each worker process carried one room: one publisher and one viewer session each.
    after = {w["worker"]: w for w in node.info()["workers"]}
    assert sorted(during) == [0, 1]
    assert during[0]["rooms"] == 1 and during[1]["rooms"] == 1, during
    assert during[0]["udp_port"] != during[1]["udp_port"]
    for w in (0, 1):
        assert after[w]["counters"]["webrtc_sessions_created"] == 2, after
        assert after[w]["counters"]["udp_rx"] > 300, after
