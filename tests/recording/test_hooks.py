"""Recording hook events at their source, on the real worker core in process: Record.Started and
Record.PeerJoined from the recording service, Compose.* through its worker call, and a later SDK
``session.join`` with a ``record: true`` token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from trackmesh.config import resolve
from trackmesh.connector import events as ev
from trackmesh.connector.source import EventSource
from trackmesh.core.controls import Join, Publish
from trackmesh.core.model import JoinOptions, TrackKind
from trackmesh.rpc import RpcError
from trackmesh.runtime.recording import RecordingService
from trackmesh.runtime.sdk_worker import SdkTransport
from trackmesh.runtime.worker import WorkerRuntime
from trackmesh.transports.sdk.session import TokenClaims


def _events(source: EventSource) -> list[tuple[str, str, ev.HookEvent]]:
    return [(e.app, e.name, e.hook) for e in source.take(100)]


def test_a_recorded_room_and_its_peers_and_compose_jobs_are_hook_events(tmp_path: Path) -> None:
    async def main() -> None:
        config = resolve("standalone", {"secret": "test-secret-12345", "record_dir": str(tmp_path)}, {})
        runtime = WorkerRuntime(config, 0)
        source = EventSource(1, 7, 0.0)
        runtime.core.audit = source
        recording = RecordingService(runtime)
        try:
            now = runtime.now()
            # acme's peers (rooms are per app: an acme recording sees acme's room "r 1" only)
            alice = runtime.core.create_endpoint("acme")
            assert alice.control(now, Join("r 1", "alice", JoinOptions())) is None
            assert alice.control(now, Publish("audio_main", TrackKind.AUDIO)) is None
            assert alice.control(now, Publish("video_main", TrackKind.VIDEO)) is None
            bob = runtime.core.create_endpoint("acme")
            assert bob.control(now, Join("r 1", "bob", JoinOptions())) is None
            source.take(100)  # the endpoints' own Join/RemoteTrackStarted events
            recording.record_peer(now, "acme", "r 1", "alice")
            recording.record_peer(now, "acme", "r 1", "alice")  # again: nothing new
            (rec,) = recording.rooms.values()
            path = f"acme/r%201/{rec.session}"
            assert [(a, n, h.event) for a, n, h in _events(source)] == [
                ("acme", "Record.Started", ev.RecordEvent("r 1", ev.RecordStarted(path))),
                ("acme", "Record.PeerJoined", ev.RecordEvent("r 1", ev.RecordPeerJoined("alice", f"{path}/alice"))),
            ]
            # bob publishes nothing yet: no PeerJoined until a track of his is recorded.
            SdkTransport._joined(recording, "acme", now, "r 1", "bob", TokenClaims(record=False))
            assert rec.peers == {"alice"}
            SdkTransport._joined(recording, "acme", now, "r 1", "bob", TokenClaims(record=True))
            assert rec.peers == {"alice", "bob"} and _events(source) == []
            assert bob.control(now, Publish("audio_main", TrackKind.AUDIO)) is None
            await asyncio.sleep(0)
            assert [(n, h.event.event) for _, n, h in _events(source) if n.startswith("Record.")] == [
                ("Record.PeerJoined", ev.RecordPeerJoined("bob", f"{path}/bob"))
            ]
            # A compose job's events, as the HTTP layer sends them to the room's worker.
            job = {"app": "acme", "room": "r 1", "job": "j1", "path": path}
            runtime.call("record.compose_event", {**job, "kind": "started"})
            runtime.call("record.compose_event", {**job, "kind": "completed", "output": f"{path}/composite.mp4",
                                                  "duration": 62.0004})  # fmt: skip
            runtime.call("record.compose_event", {**job, "kind": "failed", "error": "no recorded files"})
            with pytest.raises(RpcError):
                runtime.call("record.compose_event", {**job, "kind": "exploded"})
            assert [(a, n, h.event) for a, n, h in _events(source)] == [
                ("acme", "Compose.Started", ev.ComposeEvent("r 1", "j1", ev.ComposeStarted(path))),
                ("acme", "Compose.Completed",
                 ev.ComposeEvent("r 1", "j1", ev.ComposeCompleted(path, f"{path}/composite.mp4", 62000))),
                ("acme", "Compose.Failed", ev.ComposeEvent("r 1", "j1", ev.ComposeFailed(path, "no recorded files"))),
            ]  # fmt: skip
        finally:
            recording.shutdown(runtime.now())

    asyncio.run(main())


def test_a_start_on_one_worker_records_the_tracks_another_worker_ingests(tmp_path: Path) -> None:
    """The cluster-wide decision on the real worker core: two workers (two "nodes") over one
    registry; a start on A taps the tracks published on B (also later ones), A sees B recording,
    a stop on B ends it everywhere and leaves no entry behind."""
    from trackmesh.cluster.local import LocalRegistry

    async def main() -> None:
        config = resolve("standalone", {"secret": "test-secret-12345", "record_dir": str(tmp_path)}, {})
        registry = LocalRegistry()
        runtimes = [WorkerRuntime(config, i) for i in (0, 1)]
        for runtime in runtimes:
            runtime.core.registry = registry
        a, b = (RecordingService(r) for r in runtimes)
        try:
            now = runtimes[1].now()
            bob = runtimes[1].core.create_endpoint()
            assert bob.control(now, Join("room", "bob", JoinOptions())) is None
            assert bob.control(now, Publish("audio_main", TrackKind.AUDIO)) is None
            started = runtimes[0].call("record.start", {"room": "room", "app": ""})
            assert started["nodes"] == [{"node": 1, "zone": 0, "worker": 1, "session": started["session"], "tracks": 1}]
            assert a.rooms["room"].taps == {} and len(b.rooms["room"].taps) == 1
            assert b.rooms["room"].session == started["session"]
            assert bob.control(now, Publish("video_main", TrackKind.VIDEO)) is None  # a later track
            assert len(b.rooms["room"].taps) == 2
            status = runtimes[0].call("record.status", {"room": "room"})
            assert status["recording"]["cluster_tracks"] == 2 and status["recording"]["tracks"] == 0
            stopped = runtimes[1].call("record.stop", {"room": "room"})
            assert stopped["session"] == started["session"]
            assert a.rooms == {} and b.rooms == {}
            assert [k for k in registry._data if k.startswith("rec/")] == []
            with pytest.raises(RpcError) as exc:
                runtimes[0].call("record.stop", {"room": "room"})
            assert exc.value.status == 404
        finally:
            for service, runtime in ((a, runtimes[0]), (b, runtimes[1])):
                service.shutdown(runtime.now())

    asyncio.run(main())


def test_a_recording_is_of_one_apps_room(tmp_path: Path) -> None:
    """Two apps' rooms named alike (multi-tenancy): a start by one app records its own room's
    tracks only, its status and stop are its own, and the other app sees no recording."""
    from trackmesh.core.registry import room_key

    async def main() -> None:
        config = resolve("standalone", {"secret": "test-secret-12345", "record_dir": str(tmp_path)}, {})
        runtime = WorkerRuntime(config, 0)
        recording = RecordingService(runtime)
        try:
            now = runtime.now()
            for app in ("acme", "globex", ""):
                ep = runtime.core.create_endpoint(app)
                assert ep.control(now, Join("r", "alice", JoinOptions())) is None
                assert ep.control(now, Publish("audio_main", TrackKind.AUDIO)) is None
            started = runtime.call("record.start", {"room": "r", "app": "acme"})
            assert started["room"] == "r" and started["app"] == "acme" and started["tracks"] == 1
            assert list(recording.rooms) == [room_key("acme", "r")]
            (tap_key,) = recording.rooms[room_key("acme", "r")].taps
            assert tap_key.startswith(f"r/{'acme%1Fr'}/")  # acme's own track entry
            assert runtime.call("record.status", {"room": "r", "app": "globex"}) == {"rooms": [], "recording": None}
            assert runtime.call("record.status", {"room": "r", "app": ""})["recording"] is None
            assert runtime.call("record.status", {"room": "r", "app": "acme"})["recording"]["tracks"] == 1
            with pytest.raises(RpcError) as exc:
                runtime.call("record.stop", {"room": "r", "app": "globex"})
            assert exc.value.status == 404
            assert runtime.call("record.stop", {"room": "r", "app": "acme"})["session"] == started["session"]
            assert recording.rooms == {}
        finally:
            recording.shutdown(runtime.now())

    asyncio.run(main())
