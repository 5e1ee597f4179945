"""Rooms as MoQ inside a worker runtime, in memory: a room peer's track watched by an in-memory MoQ
session (catalog, LOC groups, the key-frame request, the end of the track, refusals, the room let
go), and a MoQ publisher's LOC track becoming a room track (runtime/moq_rooms.py,
runtime/moq_room_ingest.py). No sockets: the relay is driven by the harness client, the worker
by its core."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.transports.moq.harness import Client, Clock
from tests.transports.moq.test_rtp_to_loc import vp8_frame
from trackmesh.codecs.registry import depacketizer
from trackmesh.codecs.vp8 import Vp8Packetizer
from trackmesh.config import resolve
from trackmesh.core.controls import Join, Publish, Unpublish
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.events import KeyframeRequested
from trackmesh.core.ids import channel_id
from trackmesh.core.model import JoinOptions, MediaCodec, MediaPacket, TrackKind
from trackmesh.runtime.console_rpc import KICK_REASON, ConsoleRpc
from trackmesh.runtime.moq_auth import TokenAuthorizer
from trackmesh.runtime.moq_room_ingest import MoqRoomIngest
from trackmesh.runtime.moq_rooms import MoqRooms
from trackmesh.runtime.recording import RecordingService
from trackmesh.runtime.worker import WorkerRuntime
from trackmesh.security.tokens import SessionToken, issue
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.catalog import CatalogTrack, decode_catalog, encode_catalog
from trackmesh.transports.moq.errors import PublishDoneCode, RequestErrorCode
from trackmesh.transports.moq.relay import Relay

NS = (b"trackmesh", b"r1")


def run(test: Callable[[WorkerRuntime, Relay, Clock], Awaitable[None]]) -> None:
    async def main() -> None:
        runtime = WorkerRuntime(resolve("standalone", {"secret": "test-secret-12345"}, {}), 0)
        await test(runtime, Relay(), Clock())

    asyncio.run(main())


def subscribe(client: Client, name: bytes, ns: tuple[bytes, ...] = NS) -> int:
    rid = client.rid()
    client.send(m.Subscribe(rid, ns, name, {m.PARAM_FORWARD: 1}))
    return rid


def replies(client: Client) -> dict[int, m.ControlMessage]:
    return {msg.request_id: msg for msg in client.messages() if hasattr(msg, "request_id")}


def test_a_room_track_over_moq() -> None:
    async def test(runtime: WorkerRuntime, relay: Relay, clock: Clock) -> None:
        rooms = MoqRooms(runtime, relay, lambda room: room != "elsewhere")
        now = runtime.now()
        alice = runtime.core.create_endpoint()
        assert alice.control(now, Join("r1", "alice", JoinOptions())) is None
        assert alice.control(now, Publish("video_main", TrackKind.VIDEO)) is None
        remote = alice.remote_track("video_main")
        assert remote is not None
        events: list[object] = []

        def drain(now: float) -> None:
            while (event := alice.poll_event()) is not None:
                events.append(event)

        runtime.listen(alice.session, drain)

        viewer = Client(relay, clock)
        viewer.setup()
        catalog_rid, video_rid = subscribe(viewer, b"catalog"), subscribe(viewer, b"alice/video_main")
        missing = subscribe(viewer, b"alice/nothing")
        elsewhere = subscribe(viewer, b"x/y", (b"trackmesh", b"elsewhere"))
        short = subscribe(viewer, b"x/y", (b"trackmesh",))
        got = replies(viewer)
        assert isinstance(got[catalog_rid], m.SubscribeOk) and isinstance(got[video_rid], m.SubscribeOk), got
        for rid, why in ((missing, b"no track"), (elsewhere, b"another worker"), (short, b"namespace")):
            err = got[rid]
            assert isinstance(err, m.RequestError) and err.error_code == RequestErrorCode.DOES_NOT_EXIST, err
            assert why in err.reason, err.reason
        await asyncio.sleep(0)  # the key-frame request goes out on the next loop turn (and the worker flushes)
        assert KeyframeRequested("video_main") in events, events
        assert rooms.counters["keyframe_requests"] == 1

        pack, seq = Vp8Packetizer(), 0
        for i, key in enumerate([False, True, False, False, True, False]):
            payloads = pack.packetize(vp8_frame(key, 320, 240), 1200)
            for j, payload in enumerate(payloads):
                last = j == len(payloads) - 1
                remote.on_packet(MediaPacket(MediaCodec.VP8, 96, seq, i * 3000, last, key, payload, arrival=now))
                seq += 1
        await asyncio.sleep(0)  # the catalog update (codec and size now known)
        streams = viewer.received()
        video_alias = got[video_rid].track_alias  # type: ignore[union-attr]
        video = [(h.group_id, [o for o, _ in objs]) for _, h, objs, _ in streams if h.track_alias == video_alias]
        assert video == [(0, [0, 1, 2]), (1, [0, 1])], video
        catalogs = [objs[0][1] for _, _, objs, _ in streams if objs and objs[0][1].startswith(b"{")]
        (entry,) = decode_catalog(catalogs[-1])
        assert entry == CatalogTrack("alice/video_main", True, 1, "alice", "vp8", 320, 240)

        # A second viewer: its SUBSCRIBE asks for a key frame too, at once.
        second = Client(relay, clock)
        second.setup()
        subscribe(second, b"alice/video_main")
        await asyncio.sleep(0)
        assert rooms.counters["keyframe_requests"] == 2  # (the publisher's track paces what reaches it)
        second.send(m.Unsubscribe(0))

        # The track is unpublished: PUBLISH_DONE (TRACK_ENDED), and an empty catalog.
        assert alice.control(now, Unpublish("video_main")) is None
        await asyncio.sleep(0)
        done = [msg for msg in viewer.messages() if isinstance(msg, m.PublishDone)]
        assert [(d.request_id, d.status_code) for d in done] == [(video_rid, PublishDoneCode.TRACK_ENDED)]
        last_catalog = [objs[0][1] for _, _, objs, _ in viewer.received() if objs and objs[0][1].startswith(b"{")][-1]
        assert decode_catalog(last_catalog) == []
        # The catalog subscriber leaves: the room is let go.
        viewer.send(m.Unsubscribe(catalog_rid))
        assert rooms.rooms == {} and rooms.metrics()["rooms"] == 0
        rooms.close(now)
        assert relay.providers == {}

    run(test)


def test_a_moq_publisher_becomes_a_room_peer() -> None:
    async def test(runtime: WorkerRuntime, relay: Relay, clock: Clock) -> None:
        ingest = MoqRoomIngest(runtime, relay, lambda room: True)
        pub = Client(relay, clock)
        pub.setup()
        ns_rid = pub.rid()
        pub.send(m.PublishNamespace(ns_rid, (b"trackmesh", b"r2")))
        (catalog_sub,) = [x for x in pub.messages() if isinstance(x, m.Subscribe)]
        assert catalog_sub.name == b"catalog"
        pub.send(m.SubscribeOk(catalog_sub.request_id, 1, {m.PARAM_EXPIRES: 0}))
        entries = [CatalogTrack("bob/cam", True, codec="vp8"), CatalogTrack("bob/aac", False, codec="mp4a.40.2")]
        pub.subgroup(1, 0, [(0, encode_catalog(entries))])
        (video_sub,) = [x for x in pub.messages() if isinstance(x, m.Subscribe)]
        assert video_sub.name == b"bob/cam" and ingest.counters["not_carried"] == 1
        pub.send(m.SubscribeOk(video_sub.request_id, 2, {m.PARAM_EXPIRES: 0}))
        # bob is in the room with the track cam; a viewer's channel gets its RTP.
        received: list[MediaPacket] = []

        class Viewer:
            def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None:
                received.append(pkt)

            def on_channel_source(self, now: float, channel: int, live: bool) -> None:
                pass

        runtime.core.hub.subscribe(runtime.now(), channel_id("r2", "bob", "cam"), Viewer())
        frames = [vp8_frame(True, size=2500), vp8_frame(False), vp8_frame(False)]
        pub.subgroup(2, 0, list(enumerate(frames)))
        depack = depacketizer("vp8")
        for pkt in received:
            depack.push(pkt.payload, pkt.seq, pkt.ts, pkt.marker)
        out = []
        while (f := depack.poll_frame()) is not None:
            out.append(f.data)
        assert out == frames and received[0].keyframe and received[0].codec is MediaCodec.VP8
        assert ingest.metrics()["ingest_packets_total"] == len(received)
        assert any("/bob/" in key for key in runtime.core.registry._data), runtime.core.registry._data  # type: ignore[attr-defined]
        # The console lists bob in room r2 over MoQ (an anonymous namespace: the default app only).
        console = ConsoleRpc.of(runtime)
        [row] = console.rooms(runtime.now(), {"app": ""})
        assert (row["room"], row["peer"], row["transport"], row["connected"]) == ("r2", "bob", "moq", True), row
        assert [(t["name"], t["kind"], t["direction"]) for t in row["tracks"]] == [("cam", "video", "publish")], row
        assert console.rooms(runtime.now(), {"app": "acme"}) == []
        # The publisher withdraws its namespace: bob leaves the room.
        pub.send(m.PublishNamespaceDone(ns_rid))
        assert not any("/bob/" in key for key in runtime.core.registry._data)  # type: ignore[attr-defined]
        assert ingest.rooms == {}
        ingest.close()

    run(test)


def test_the_console_mutes_and_kicks_a_moq_publisher() -> None:
    """Kick: the peer leaves the room and the MoQ session publishing its namespace is closed, with the reason."""

    async def test(runtime: WorkerRuntime, relay: Relay, clock: Clock) -> None:
        ingest = MoqRoomIngest(runtime, relay, lambda room: True)
        console = ConsoleRpc.of(runtime)
        pub = Client(relay, clock)
        pub.setup()
        pub.send(m.PublishNamespace(pub.rid(), (b"trackmesh", b"r3")))
        (catalog_sub,) = [x for x in pub.messages() if isinstance(x, m.Subscribe)]
        pub.send(m.SubscribeOk(catalog_sub.request_id, 1, {m.PARAM_EXPIRES: 0}))
        pub.subgroup(1, 0, [(0, encode_catalog([CatalogTrack("eve/cam", True, codec="vp8")]))])
        [row] = console.rooms(runtime.now(), {"app": ""})
        params = {"app": "", "session": row["session"], "track": "cam"}
        assert console.mute(runtime.now(), params) == {"muted": True, "changed": True}
        [endpoint] = ingest.rooms[(b"trackmesh", b"r3")].peers.values()
        assert isinstance(endpoint, Endpoint)
        remote = endpoint.remote_track("cam")
        assert remote is not None and remote.muted
        assert console.unmute(runtime.now(), params) == {"muted": False, "changed": True}
        assert console.kick(runtime.now(), {"app": "", "session": row["session"]}) == {"kicked": 1}
        assert pub.session.closed and endpoint.closed
        pub.pump()
        assert pub.closed is not None and (pub.closed.code, pub.closed.reason) == (0, KICK_REASON), pub.closed
        assert console.rooms(runtime.now(), {"app": ""}) == [] and ingest.rooms == {}
        ingest.close()
        assert console.others == []

    run(test)


def test_a_token_publisher_may_only_join_as_its_own_peer() -> None:
    async def test(runtime: WorkerRuntime, relay: Relay, clock: Clock) -> None:
        ingest = MoqRoomIngest(runtime, relay, lambda room: True)
        authorizer = TokenAuthorizer(runtime.config.token_key)
        claims = SessionToken("moq", "r3", "cam", publish=("trackmesh/r3",))
        token = issue(runtime.config.token_key, claims, 60, int(time.time()))
        pub = Client(relay, clock, authorizer=authorizer)
        pub.session.path = f"/?jwt={token}"
        pub.setup()
        pub.send(m.PublishNamespace(pub.rid(), (b"trackmesh", b"r3")))
        (catalog_sub,) = [x for x in pub.messages() if isinstance(x, m.Subscribe)]
        pub.send(m.SubscribeOk(catalog_sub.request_id, 1, {m.PARAM_EXPIRES: 0}))
        entries = [CatalogTrack("alice/video_main", True, codec="vp8"), CatalogTrack("screen", True, codec="vp8")]
        pub.subgroup(1, 0, [(0, encode_catalog(entries))])
        (sub,) = [x for x in pub.messages() if isinstance(x, m.Subscribe)]
        assert sub.name == b"screen"  # as the token's peer, cam; alice is not the token's
        assert ingest.counters["refused_peers"] == 1
        assert any("/t/cam/screen/" in key for key in runtime.core.registry._data)  # type: ignore[attr-defined]
        assert not any("/alice/" in key for key in runtime.core.registry._data)  # type: ignore[attr-defined]
        ingest.close()

    run(test)


def test_a_record_token_publishers_tracks_are_recorded(tmp_path: Path) -> None:
    """A MoQ publisher whose token says ``record: true``: its peer's tracks get a recording tap,
    and the frames it sends end up in a playable file (runtime/recording.py)."""

    async def main() -> None:
        config = resolve("standalone", {"secret": "test-secret-12345", "record_dir": str(tmp_path)}, {})
        runtime = WorkerRuntime(config, 0)
        recording = RecordingService(runtime)
        relay, clock = Relay(), Clock()
        ingest = MoqRoomIngest(runtime, relay, lambda room: True)
        claims = SessionToken("moq", "r5", "cam", record=True, publish=("trackmesh/r5",))
        token = issue(runtime.config.token_key, claims, 60, int(time.time()))
        pub = Client(relay, clock, authorizer=TokenAuthorizer(runtime.config.token_key))
        pub.session.path = f"/?jwt={token}"
        pub.setup()
        pub.send(m.PublishNamespace(pub.rid(), (b"trackmesh", b"r5")))
        (catalog_sub,) = [x for x in pub.messages() if isinstance(x, m.Subscribe)]
        pub.send(m.SubscribeOk(catalog_sub.request_id, 1, {m.PARAM_EXPIRES: 0}))
        pub.subgroup(1, 0, [(0, encode_catalog([CatalogTrack("video_main", True, codec="vp8")]))])
        (video_sub,) = [x for x in pub.messages() if isinstance(x, m.Subscribe)]
        pub.send(m.SubscribeOk(video_sub.request_id, 2, {m.PARAM_EXPIRES: 0}))
        (rec,) = recording.rooms.values()
        assert rec.room == "r5" and rec.peers == {"cam"} and not rec.all_peers
        assert [k.split("/")[3:5] for k in rec.taps] == [["cam", "video_main"]], rec.taps
        pub.subgroup(2, 0, list(enumerate([vp8_frame(True, size=2500), vp8_frame(False), vp8_frame(False)])))
        ingest.close()
        recording.shutdown(runtime.now())
        assert runtime.counters["recording_files"] == 1 and runtime.counters["recording_failures"] == 0
        (side,) = tmp_path.rglob("*.webm.json")
        assert side.parent.name == "cam" and side.with_suffix("").stat().st_size > 0

    asyncio.run(main())
