"""The connector in a real standalone node: WHIP clients (aiortc) make the events, a real receiver
verifies every webhook with ``standardwebhooks``; the log API shows the funnel; kill -9 of the
node with deliveries pending loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.connector.receiver import HookReceiver
from tests.e2e.conftest import TrackmeshNode

pytestmark = pytest.mark.e2e


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def tags(rx: HookReceiver) -> list[str]:
    out = []
    seen = set()
    for msg_id, body in rx.accepted_bodies():
        if msg_id in seen:
            continue
        seen.add(msg_id)
        inner = next(iter(body["event"].values()))
        out.append(next(iter(inner["event"])))
    return out


def hook_secret(node: TrackmeshNode) -> str:
    status, resp = node.proc.json("GET", "/api/connector/hook-secret", token=node.secret)
    assert status == 200, resp
    return str(resp["data"]["secret"])


def queued(node: TrackmeshNode) -> float:
    status, resp = node.proc.json("GET", "/api/connector/metrics", token=node.secret)
    assert status == 200, resp
    return float(resp["data"]["queued"])


def rooms(node: TrackmeshNode) -> list[str]:
    status, resp = node.proc.json("GET", "/api/connector/log/rooms?limit=100", token=node.secret)
    assert status == 200, resp
    return [str(r["room"]) for r in resp["data"]]


def publish(node: TrackmeshNode, aiortc_client: Any, room: str, peer: str) -> None:
    rc, s, err = aiortc_client("whip", node.url("/whip/endpoint"), "--token", node.token("whip", room, peer),
                               "--duration", "2")
    assert rc == 0, (s, err[-2000:], node.log_tail())
    assert s["status"] == 201 and s["delete_status"] == 200


def test_whip_session_events_are_delivered_signed_and_logged(tmp_path: Path, aiortc_client: Any,
                                                            netns_guard: None) -> None:
    rx = HookReceiver("whsec_" + "A" * 44, answer=lambda n, msg_id: 500 if n <= 3 else 200).start()
    node = TrackmeshNode("--hook-url", rx.url, "--connector-db", f"sqlite:///{tmp_path / 'c.db'}",
                         "--destroy-room-after", "1")
    try:
        rx.secret = hook_secret(node)
        publish(node, aiortc_client, "hooks-room", "alice")
        wait_until(lambda: "Stopped" in tags(rx) and queued(node) == 0, 90, "every webhook, the last Stopped")
        got = tags(rx)
        for name in ("RouteBegin", "RouteSuccess", "Connecting", "Join", "Started", "PeerJoined",
                     "RemoteTrackStarted", "RemoteTrackEnded",
                     "Leave", "PeerLeaved", "AllPeersLeaved", "Disconnected", "Stopped"):
            assert name in got, got
        # Per room, in order (the route events and Connecting are keyed by the session, before its Join).
        room_tags = [t for t in got if t not in ("RouteBegin", "RouteSuccess", "Connecting", "Connected")]
        assert room_tags.index("Join") < room_tags.index("RemoteTrackStarted") < room_tags.index("Leave")
        assert room_tags.index("Leave") < room_tags.index("Disconnected") and room_tags[-1] == "Stopped"
        assert rx.unverified == 0
        # The log API: the funnel of that session.
        status, resp = node.proc.json("GET", "/api/connector/log/sessions", token=node.secret)
        assert status == 200 and len(resp["data"]) == 1, resp
        session = resp["data"][0]
        assert session["peers"][0]["peer"] == "alice" and session["leaved_at"] is not None
        status, resp = node.proc.json("GET", f"/api/connector/log/events?session={session['id']}&limit=100",
                                      token=node.secret)
        events = [e["event"] for e in resp["data"]]
        assert events[:3] == ["RouteBegin", "RouteSuccess", "Connecting"] and events[-1] == "Disconnected", events
        meta = json.loads(resp["data"][-1]["meta"])
        assert meta["reason"] == 0  # UserAction: the client's DELETE
        status, resp = node.proc.json("GET", "/api/connector/log/rooms?limit=5000", token=node.secret)
        assert status == 400
        status, resp = node.proc.json("GET", "/api/connector/log/rooms", token="wrong-secret")
        assert status == 401
    finally:
        rx.stop()
        assert node.stop() == 0, node.log_tail()


def test_kill_9_with_deliveries_pending_loses_nothing(tmp_path: Path, aiortc_client: Any, netns_guard: None) -> None:
    """The receiver is down while a session ends and another is live; the node is killed with
    -9; after a restart every stored webhook is delivered, and the live session, which died with
    the node, is closed (Leave, then Disconnected with reason 4, NodeFailure)."""
    from tests.e2e.test_whip_whep import Background

    up = False
    rx = HookReceiver("whsec_" + "A" * 44, answer=lambda n, msg_id: 200 if up else 503).start()
    db = f"sqlite:///{tmp_path / 'c.db'}"
    node = TrackmeshNode("--hook-url", rx.url, "--connector-db", db)
    try:
        rx.secret = hook_secret(node)
        publish(node, aiortc_client, "kill-room", "bob")
        live = Background(aiortc_client, "whip", node.url("/whip/endpoint"), "--token",
                          node.token("whip", "kill-room-2", "dave"), "--duration", "20", timeout=40)
        # bob's whole session and dave's start in the log (dave's room is there once his Join is stored).
        wait_until(lambda: queued(node) >= 16 and "kill-room-2" in rooms(node), 30, "the events in the outbox")
        expected = int(queued(node))
        os.kill(node.proc.proc.pid, signal.SIGKILL)
        node.proc.proc.wait(10)
    except BaseException:
        rx.stop()
        node.stop()
        raise
    up = True
    again = TrackmeshNode("--hook-url", rx.url, "--connector-db", db)
    try:
        wait_until(lambda: len({m for m, _ in rx.accepted_bodies()}) >= expected + 2 and queued(again) == 0, 120,
                   "every pending webhook and the closing of the dead session")
        got = tags(rx)
        assert got.count("Join") == 2 and got.count("Disconnected") == 2 and rx.unverified == 0, got
        reasons = [b["event"]["Peer"]["event"]["Disconnected"]["reason"] for _, b in rx.accepted_bodies()
                   if "Disconnected" in b["event"].get("Peer", {}).get("event", {})]
        assert sorted(set(reasons)) == [0, 4], reasons
    finally:
        rx.stop()
        assert again.stop() == 0, again.log_tail()
        with contextlib.suppress(Exception):
            live.join(60)


def test_child_process_workers_report_too(tmp_path: Path, aiortc_client: Any, netns_guard: None) -> None:
    """With --workers 2, a room on the child worker is logged like one on worker 0."""
    import hashlib

    def worker_of(room: str) -> int:  # as Node.worker_for_room
        return int.from_bytes(hashlib.blake2b(room.encode(), digest_size=8).digest(), "big") % 2

    rooms = {worker_of(f"w-room-{i}"): f"w-room-{i}" for i in range(20)}
    assert set(rooms) == {0, 1}
    rx = HookReceiver("whsec_" + "A" * 44).start()
    node = TrackmeshNode("--workers", "2", "--hook-url", rx.url, "--connector-db", f"sqlite:///{tmp_path / 'c.db'}")
    try:
        rx.secret = hook_secret(node)
        for room in rooms.values():
            publish(node, aiortc_client, room, "carol")
        wait_until(lambda: tags(rx).count("Disconnected") == 2 and queued(node) == 0, 60, "both sessions' webhooks")
        status, resp = node.proc.json("GET", "/api/connector/log/rooms", token=node.secret)
        assert status == 200, resp
        assert sorted(r["room"] for r in resp["data"]) == sorted(rooms.values())
        assert rx.unverified == 0
    finally:
        rx.stop()
        assert node.stop() == 0, node.log_tail()


def test_a_receiver_down_for_2_minutes_gets_everything_in_order_per_room(
    tmp_path: Path, aiortc_client: Any, netns_guard: None
) -> None:
    """The receiver's process is gone (connections refused) for 2 minutes while sessions come and go
    in three rooms; it comes back on the same port: every webhook arrives, in order per room,
    within the probe interval (30 s) of its return, and matches the log. Takes ~2.5 minutes."""
    rx = HookReceiver("whsec_" + "A" * 44).start()
    port = int(rx.server.server_address[1])
    node = TrackmeshNode("--hook-url", rx.url, "--connector-db", f"sqlite:///{tmp_path / 'c.db'}",
                         "--destroy-room-after", "1")
    back: HookReceiver | None = None
    try:
        rx.secret = secret = hook_secret(node)
        rx.stop()
        down_at = time.monotonic()
        rooms = [f"outage-{i}" for i in range(3)]
        for room in rooms:
            publish(node, aiortc_client, room, "erin")
        time.sleep(3.0)  # the rooms' Stopped, 1 s after they emptied
        expected = int(queued(node))
        assert expected >= 3 * 14, expected  # per room: 7 of the session, 2 tracks x 2, Started ... Stopped
        time.sleep(max(0.0, down_at + 120 - time.monotonic()))
        back = HookReceiver(secret).start(port)
        back_at = time.monotonic()
        wait_until(lambda: queued(node) == 0, 60, "the backlog delivered after the receiver came back")
        took = time.monotonic() - back_at
        bodies = back.accepted_bodies()
        ids = [m for m, _ in bodies]
        assert len(set(ids)) == expected == len(ids) and back.unverified == 0, (expected, len(ids))
        # In order per room: the session's events from its Join, then the room's Stopped last.
        room_of_session = {b["event"]["Peer"]["session_id"]: b["event"]["Peer"]["event"]["Join"]["room"]
                           for _, b in bodies if "Join" in b["event"].get("Peer", {}).get("event", {})}
        per_room: dict[str, list[str]] = {r: [] for r in rooms}
        for _, body in bodies:
            event = body["event"]
            if "Room" in event:
                per_room[event["Room"]["room"]].append(next(iter(event["Room"]["event"])))
            else:
                sid = event["Peer"]["session_id"]
                name = next(iter(event["Peer"]["event"]))
                # The route events and Connecting/Connected are keyed by the session, before its Join.
                if name not in ("RouteBegin", "RouteSuccess", "Connecting", "Connected"):
                    per_room[room_of_session[sid]].append(name)
        for room, names in per_room.items():
            assert names[0] == "Join" and names[-1] == "Stopped", (room, names)
            assert names.index("Join") < names.index("Started") < names.index("Leave") < names.index(
                "Disconnected"), (room, names)
            assert names.index("Leave") < names.index("AllPeersLeaved") < names.index("Stopped"), (room, names)
        # Every logged event was delivered once.
        status, resp = node.proc.json("GET", "/api/connector/log/events?limit=1000", token=node.secret)
        assert status == 200, resp
        peer_hooks = [b for _, b in bodies if "Peer" in b["event"]]
        assert len(resp["data"]) == len(peer_hooks), (len(resp["data"]), len(peer_hooks))
        print(f"\nreceiver down {back_at - down_at:.0f} s: {expected} webhooks delivered {took:.1f} s after it came "
              f"back, in order per room")  # fmt: skip
    finally:
        if back is not None:
            back.stop()
        assert node.stop() == 0, node.log_tail()
