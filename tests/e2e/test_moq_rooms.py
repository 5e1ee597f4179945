"""Rooms as MoQ with real clients: GStreamer publishes over WHIP into a room; MoQ subscribers (a
draft-16 client over aioquic, written here from our codecs, with a room's ``moq`` token) receive
``pub/video_main`` as LOC objects group by group, each group opening on a VP8 key frame, and the
room's MSF catalog, until the publisher leaves (PUBLISH_DONE, an empty catalog). The reverse: a
MoQ publisher (the same client, with libvpx frames from PyAV) announces a room's namespace with a
catalog and a LOC track, and a GStreamer WHEP viewer decodes it. Loopback only, in the private
namespace."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.test_moq_interop import free_udp_port, moq_metrics
from tests.e2e.test_whip_whep import Background
from trackmesh.codecs.h264 import split_annexb
from trackmesh.transports.moq import codec16
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.catalog import CatalogTrack, decode_catalog, encode_catalog
from trackmesh.transports.moq.loc import LocProperties, decode_loc_properties, encode_loc_properties
from trackmesh.transports.moq.objects import SubgroupHeader, SubgroupStreamParser, encode_object, encode_subgroup_header
from trackmesh.transports.moq.varint import Reader

pytestmark = pytest.mark.e2e


class Subscriber(QuicConnectionProtocol):
    """A draft-16 MoQ subscriber: SETUP on the control stream, SUBSCRIBEs, then every object of
    every subgroup stream by (track alias, group) with its LOC properties."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.control = bytearray()
        self.messages: list[m.ControlMessage] = []
        self.streams: dict[int, tuple[bytearray, SubgroupStreamParser | None]] = {}
        self.objects: list[tuple[int, int, int, bytes, int | None]] = []  # alias, group, object, payload, timestamp
        self.arrived = asyncio.Event()

    def send(self, msg: m.ControlMessage) -> None:
        self._quic.send_stream_data(0, codec16.encode_message(msg))
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        if event.stream_id == 0:
            self.control += event.data
            while (split := codec16.split_message(self.control)) is not None:
                kind, payload, used = split
                self.messages.append(codec16.decode_message(kind, payload))
                del self.control[:used]
        else:
            buf, parser = self.streams.setdefault(event.stream_id, (bytearray(), None))
            data = event.data
            if parser is None:
                buf += data
                r = Reader(bytes(buf))
                parser = SubgroupStreamParser(r.varint())
                self.streams[event.stream_id] = (buf, parser)
                data = bytes(buf[r.pos :])
            for o in parser.feed(data):
                assert parser.header is not None
                ts = decode_loc_properties(o.extensions).timestamp_us if o.has_extensions else None
                self.objects.append((parser.header.track_alias, parser.header.group_id, o.object_id, o.payload, ts))
        self.arrived.set()

    async def wait_for(self, predicate: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                return

    def reply(self, request_id: int) -> m.ControlMessage | None:
        for msg in self.messages:
            if getattr(msg, "request_id", None) == request_id and isinstance(msg, m.SubscribeOk | m.RequestError):
                return msg
        return None


def is_vp8_key(frame: bytes) -> bool:
    return len(frame) >= 10 and not frame[0] & 1 and frame[3:6] == b"\x9d\x01\x2a"


def is_h264_key(frame: bytes) -> bool:
    """An IDR access unit that WebCodecs can start on: IDR slices with their SPS and PPS in band."""
    kinds = {u[0] & 0x1F for u in split_annexb(frame)}
    return {5, 7, 8} <= kinds


IS_KEY = {"vp8": is_vp8_key, "h264": is_h264_key}


@pytest.fixture(scope="module")
def node(netns_guard: None) -> Iterator[tuple[TrackmeshNode, int]]:
    port = free_udp_port()
    node = TrackmeshNode("--moq-port", str(port))
    try:
        yield node, port
    finally:
        rc = node.stop()
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def moq_token(node: TrackmeshNode, room: str, peer: str = "watcher") -> str:
    body = {"room": room, "peer": peer, "ttl": 60}
    status, resp = node.proc.json("POST", "/token/moq", body, token=node.secret)
    assert status == 200, resp
    return str(resp["data"]["token"])


async def watch(port: int, token: str, room: str) -> dict[str, Any]:
    config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], verify_mode=ssl.CERT_NONE)
    ns = (b"trackmesh", room.encode())
    setup: dict[int, int | bytes] = {m.SETUP_PATH: f"/?jwt={token}".encode(), m.SETUP_MAX_REQUEST_ID: 10}
    async with connect("127.0.0.1", port, configuration=config, create_protocol=Subscriber) as client:
        first: Subscriber = client  # type: ignore[assignment]
        first.send(m.ClientSetup(setup))
        await first.wait_for(lambda: first.messages, 5)
        assert isinstance(first.messages[0], m.ServerSetup), first.messages
        first.send(m.Subscribe(0, ns, b"catalog", {m.PARAM_FORWARD: 1}))
        await first.wait_for(lambda: first.reply(0), 5)
        catalog_ok = first.reply(0)
        assert isinstance(catalog_ok, m.SubscribeOk), first.messages

        def catalogs() -> list[bytes]:
            return [p for a, _, _, p, _ in first.objects if a == catalog_ok.track_alias]

        # As a player would: the catalog says when the track exists (the WHIP session may still be
        # connecting).
        await first.wait_for(lambda: bool(catalogs()) and b'"pub/video_main"' in catalogs()[-1], 20)
        first.send(m.Subscribe(2, ns, b"pub/video_main", {m.PARAM_FORWARD: 1}))
        first.send(m.Subscribe(4, ns, b"pub/nothing", {m.PARAM_FORWARD: 1}))
        await first.wait_for(lambda: all(first.reply(r) for r in (2, 4)), 5)
        video_ok, missing = first.reply(2), first.reply(4)
        assert isinstance(video_ok, m.SubscribeOk), (first.messages, catalogs())
        assert isinstance(missing, m.RequestError) and missing.error_code == 0x10, missing  # DOES_NOT_EXIST

        def video() -> list[tuple[int, int, bytes, int | None]]:
            return [(g, o, p, ts) for a, g, o, p, ts in first.objects if a == video_ok.track_alias]

        await first.wait_for(lambda: len(video()) >= 30, 10)
        # A second session subscribes: its SUBSCRIBE asks the publisher for a key frame, so a new
        # group starts at once (the publisher's own key frames are 60 frames apart).
        groups_before = {g for g, _, _, _ in video()}
        async with connect("127.0.0.1", port, configuration=config, create_protocol=Subscriber) as client2:
            second: Subscriber = client2  # type: ignore[assignment]
            second.send(m.ClientSetup(setup))
            await second.wait_for(lambda: second.messages, 5)
            second.send(m.Subscribe(0, ns, b"pub/video_main", {m.PARAM_FORWARD: 1}))

            def new_group() -> bool:
                return len({g for g, _, _, _ in video()} - groups_before) >= 1

            await first.wait_for(lambda: new_group() and len(video()) > 60, 10)
            second_ok = second.reply(0)
            assert isinstance(second_ok, m.SubscribeOk), second.messages
            second_objects = [(g, o, p) for a, g, o, p, _ in second.objects if a == second_ok.track_alias]

        live_catalogs = catalogs()
        # The publisher leaves (its WHIP session ends): the video track is done, the catalog empties.
        await first.wait_for(
            lambda: (
                any(isinstance(x, m.PublishDone) and x.request_id == 2 for x in first.messages)
                and b'"tracks":[]' in catalogs()[-1]
            ),
            15,
        )
        done = [x for x in first.messages if isinstance(x, m.PublishDone) and x.request_id == 2]
        return {
            "video": video(),
            "second": second_objects,
            "catalogs": live_catalogs,
            "last_catalog": catalogs()[-1],
            "done": done,
            "groups_before": groups_before,
        }


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_a_whip_publisher_is_watched_over_moq(node: tuple[TrackmeshNode, int], gst_client: Any, codec: str) -> None:
    trackmesh, port = node
    room = f"moqroom-{codec}"
    is_key = IS_KEY[codec]
    publisher = Background(
        gst_client,
        "whip",
        trackmesh.url("/whip/endpoint"),
        "--token",
        trackmesh.token("whip", room, "pub"),
        "--codec",
        codec,
        "--duration",
        "8",
    )
    before = moq_metrics(trackmesh)
    try:
        got = asyncio.run(watch(port, moq_token(trackmesh, room), room))
        after = moq_metrics(trackmesh)
    finally:
        rc, summary, err = publisher.join()
    assert rc == 0, (summary, err[-1500:])
    video = got["video"]
    groups: dict[int, list[tuple[int, bytes, int | None]]] = {}
    for g, o, p, ts in video:
        groups.setdefault(g, []).append((o, p, ts))
    print("objects per group:", {g: len(objs) for g, objs in groups.items()}, "first groups:", got["groups_before"])
    assert len(groups) >= 2, groups.keys()
    for g, objs in groups.items():
        ids = [o for o, _, _ in objs]
        assert ids == list(range(len(ids))), (g, ids)  # every object of the group, in order
        assert is_key(objs[0][1]), g  # a group opens on a key frame
        assert not any(is_key(p) for _, p, _ in objs[1:]), g
    # Each group is its own QUIC stream, and QUIC orders bytes within a stream only (RFC 9000
    # section 2.2): a short group may finish arriving after the next one began. Timestamps rise
    # in group order.
    stamps = [ts for g in sorted(groups) for _, _, ts in groups[g]]
    assert all(ts is not None for ts in stamps) and stamps == sorted(t for t in stamps if t is not None)  # LOC
    # The second subscriber started at a group boundary: on a key frame.
    assert got["second"] and got["second"][0][1] == 0 and is_key(got["second"][0][2]), got["second"][:1]
    # The catalog: the latest one lists both tracks with their codecs and the video size.
    assert got["catalogs"]
    tracks = {t.name: t for t in decode_catalog(got["catalogs"][-1])}
    assert set(tracks) == {"pub/video_main", "pub/audio_main"}, tracks
    v, a = tracks["pub/video_main"], tracks["pub/audio_main"]
    assert v.video and (v.width, v.height) == (640, 480), v
    assert v.codec == "vp8" if codec == "vp8" else v.codec.startswith("avc1.42"), v  # H.264: from its SPS
    assert not a.video and a.codec == "opus" and a.samplerate == 48000 and a.channels in (1, 2), a
    print("catalog:", json.loads(got["catalogs"][-1]))
    # The publisher left: PUBLISH_DONE (TRACK_ENDED) for the video, and a catalog without its tracks.
    assert len(got["done"]) == 1 and got["done"][0].status_code == 0x2, got["done"]
    assert decode_catalog(got["last_catalog"]) == []
    # Each SUBSCRIBE of the video track asked the publisher for a key frame (a PLI on its feedback).
    asked = after["rooms_keyframe_requests_total"] - before.get("rooms_keyframe_requests_total", 0)
    assert asked >= 2, (before, after)
    assert after["rooms_refused_total"] - before.get("rooms_refused_total", 0) == 1  # pub/nothing
    assert after["rooms_catalog_updates_total"] >= len(got["catalogs"])


# -- the reverse: a MoQ LOC publisher into a room, watched over WHEP -------------------------------


def vp8_frames(count: int, gop: int) -> list[tuple[bytes, bool]]:
    """``count`` VP8 frames of a changing picture from libvpx (PyAV), a key frame every ``gop``."""
    import fractions

    import av

    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "g": str(gop), "lag-in-frames": "0"}
    out: list[tuple[bytes, bool]] = []
    for i in range(count):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for n, plane in enumerate(frame.planes):
            plane.update(bytes([(i * 7 + n * 50) % 256]) * plane.buffer_size)
        frame.pts = i
        out += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(frame)]
    out += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(None)]
    return out


class Publisher(Subscriber):
    """A draft-16 MoQ publisher: answers the relay's SUBSCRIBEs and writes subgroup streams."""

    def next_uni(self) -> int:
        return self._quic.get_next_available_stream_id(is_unidirectional=True)

    def send_group(self, alias: int, group: int, objects: list[tuple[bytes, bytes | None]]) -> None:
        stream = self.next_uni()
        has_ext = any(ext is not None for _, ext in objects)
        data = encode_subgroup_header(SubgroupHeader(alias, group, 0, 128, has_ext), False)
        previous = None
        for object_id, (payload, ext) in enumerate(objects):
            data += encode_object(object_id, previous, payload, extensions=(ext or b"") if has_ext else None)
            previous = object_id
        self._quic.send_stream_data(stream, data, end_stream=False)
        self.transmit()
        self.open_stream = stream

    def send_object(self, object_id: int, payload: bytes, ext: bytes) -> None:
        data = encode_object(object_id, object_id - 1, payload, extensions=ext)
        self._quic.send_stream_data(self.open_stream, data, end_stream=False)
        self.transmit()

    def end_stream(self) -> None:
        self._quic.send_stream_data(self.open_stream, b"", end_stream=True)
        self.transmit()


async def publish_into_room(
    port: int, token: str, room: str, frames: list[tuple[bytes, bool]], started: Any
) -> dict[str, Any]:
    config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], verify_mode=ssl.CERT_NONE)
    ns = (b"trackmesh", room.encode())
    setup: dict[int, int | bytes] = {m.SETUP_PATH: f"/?jwt={token}".encode(), m.SETUP_MAX_REQUEST_ID: 10}
    async with connect("127.0.0.1", port, configuration=config, create_protocol=Publisher) as client:
        pub: Publisher = client  # type: ignore[assignment]
        pub.send(m.ClientSetup(setup))
        await pub.wait_for(lambda: pub.messages, 5)
        pub.send(m.PublishNamespace(0, ns))

        def subscribes() -> dict[bytes, m.Subscribe]:
            return {x.name: x for x in pub.messages if isinstance(x, m.Subscribe)}

        await pub.wait_for(lambda: b"catalog" in subscribes(), 5)
        catalog_sub = subscribes()[b"catalog"]
        pub.send(m.SubscribeOk(catalog_sub.request_id, 1, {m.PARAM_EXPIRES: 0}))
        entry = CatalogTrack("cam/video_main", True, 1, "cam", "vp8", 320, 240)
        pub.send_group(1, 0, [(encode_catalog([entry]), None)])
        pub.end_stream()
        await pub.wait_for(lambda: b"cam/video_main" in subscribes(), 5)
        video_sub = subscribes()[b"cam/video_main"]
        pub.send(m.SubscribeOk(video_sub.request_id, 2, {m.PARAM_EXPIRES: 0}))
        started.set()
        group, object_id = -1, 0
        t0 = time.monotonic()
        for i, (frame, key) in enumerate(frames):
            ext = encode_loc_properties(LocProperties(i * 33_333))
            if key:
                if group >= 0:
                    pub.end_stream()
                group, object_id = group + 1, 0
                pub.send_group(2, group, [(frame, ext)])
            elif group >= 0:
                object_id += 1
                pub.send_object(object_id, frame, ext)
            await asyncio.sleep(max(0.0, t0 + (i + 1) / 30 - time.monotonic()))
        pub.end_stream()
        return {"groups": group + 1, "frames": len(frames)}


def test_a_moq_publisher_is_watched_over_whep(node: tuple[TrackmeshNode, int], gst_client: Any) -> None:
    trackmesh, port = node
    room = "moqin"
    status, resp = trackmesh.proc.json(
        "POST", "/token/moq", {"room": room, "peer": "cam", "ttl": 60}, token=trackmesh.secret
    )
    assert status == 200, resp
    token = str(resp["data"]["token"])
    frames = vp8_frames(6 * 30, 30)  # before the clock starts: encoding is slow on a busy machine
    started = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result.update(asyncio.run(publish_into_room(port, token, room, frames, started)))
        except BaseException as exc:  # reported by the assertions below
            result["error"] = repr(exc)

    publisher = threading.Thread(target=run, daemon=True)
    publisher.start()
    assert started.wait(30), f"the relay never subscribed to the track: {result}\n{trackmesh.log_tail()}"
    rc, summary, err = gst_client(
        "whep",
        trackmesh.url("/whep/endpoint"),
        "--token",
        trackmesh.token("whep", room, "viewer"),
        "--codec",
        "vp8",
        "--duration",
        "4",
        "--min-frames",
        "30",
    )
    publisher.join(15)
    assert "error" not in result, result
    print("whep viewer:", summary, "publisher:", result)
    assert rc == 0, (summary, err[-1500:], trackmesh.log_tail())
    assert summary["frames"] >= 30 and (summary["width"], summary["height"]) == (320, 240), summary
    after = moq_metrics(trackmesh)
    assert after["ingest_publishers_total"] >= 1 and after["ingest_tracks_total"] >= 1, after
    assert after["ingest_packets_total"] > 0, after


class KickedPublisher(Publisher):
    """A :class:`Publisher` that notes how its connection ended (the server's CONNECTION_CLOSE)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.terminated: ConnectionTerminated | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
            self.arrived.set()
            return
        super().quic_event_received(event)


async def publish_until_closed(port: int, token: str, room: str, frames: list[tuple[bytes, bool]],
                               started: threading.Event, seconds: float) -> dict[str, Any]:  # fmt: skip
    """Publish ``frames`` into ``room`` in a loop until the server closes the connection: its code and reason."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], verify_mode=ssl.CERT_NONE)
    setup: dict[int, int | bytes] = {m.SETUP_PATH: f"/?jwt={token}".encode(), m.SETUP_MAX_REQUEST_ID: 10}
    async with connect("127.0.0.1", port, configuration=config, create_protocol=KickedPublisher) as client:
        pub: KickedPublisher = client  # type: ignore[assignment]
        pub.send(m.ClientSetup(setup))
        await pub.wait_for(lambda: pub.messages, 5)
        pub.send(m.PublishNamespace(0, (b"trackmesh", room.encode())))

        def subscribes() -> dict[bytes, m.Subscribe]:
            return {x.name: x for x in pub.messages if isinstance(x, m.Subscribe)}

        await pub.wait_for(lambda: b"catalog" in subscribes(), 5)
        pub.send(m.SubscribeOk(subscribes()[b"catalog"].request_id, 1, {m.PARAM_EXPIRES: 0}))
        pub.send_group(1, 0, [(encode_catalog([CatalogTrack("cam/video_main", True, 1, "cam", "vp8", 320, 240)]),
                               None)])  # fmt: skip
        pub.end_stream()
        await pub.wait_for(lambda: b"cam/video_main" in subscribes(), 5)
        pub.send(m.SubscribeOk(subscribes()[b"cam/video_main"].request_id, 2, {m.PARAM_EXPIRES: 0}))
        started.set()
        t0, i, group = time.monotonic(), 0, -1
        while pub.terminated is None and time.monotonic() - t0 < seconds:
            frame, key = frames[i % len(frames)]
            ext = encode_loc_properties(LocProperties(i * 33_333))
            if key:
                if group >= 0:
                    pub.end_stream()
                group += 1
                pub.send_group(2, group, [(frame, ext)])
                object_id = 0
            elif group >= 0:
                object_id += 1
                pub.send_object(object_id, frame, ext)
            i += 1
            await asyncio.sleep(max(0.0, t0 + i / 30 - time.monotonic()))
        ended = pub.terminated
        return {"code": ended.error_code, "reason": ended.reason_phrase} if ended is not None else {"code": None}


def test_the_console_mutes_and_kicks_a_moq_publisher(node: tuple[TrackmeshNode, int]) -> None:
    """The console (docs/console.md) lists a MoQ publisher's peer with its track, mutes the track and
    kicks the peer: the server closes the MoQ session (NO_ERROR, with the reason) and the peer leaves."""
    from tests.e2e.test_console import Console

    trackmesh, port = node
    room = "moqkick"
    frames = vp8_frames(30, 30)
    started = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result.update(asyncio.run(publish_until_closed(port, moq_token(trackmesh, room, "cam"), room, frames,
                                                           started, 20)))  # fmt: skip
        except BaseException as exc:  # reported by the assertions below
            result["error"] = repr(exc)

    publisher = threading.Thread(target=run, daemon=True)
    publisher.start()
    assert started.wait(30), f"the relay never subscribed to the track: {result}\n{trackmesh.log_tail()}"
    console = Console(trackmesh)
    deadline = time.monotonic() + 10
    while not (peers := [p for p in console.peers(room) if p["tracks"]]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert peers, console.get("/api/console/rooms")
    [peer] = peers
    assert (peer["peer"], peer["transport"]) == ("cam", "moq"), peer
    assert [(t["name"], t["kind"]) for t in peer["tracks"]] == [("video_main", "video")], peer
    status, body = console.post(f"/api/console/sessions/{peer['session']}/tracks/video_main/mute")
    assert (status, body["data"]) == (200, {"muted": True, "changed": True}), body
    status, body = console.post(f"/api/console/sessions/{peer['session']}/kick")
    assert (status, body["data"]) == (200, {"kicked": 1}), body
    publisher.join(15)
    assert "error" not in result, result
    assert result == {"code": 0, "reason": "kicked by the operator (console)"}, result
    assert console.peers(room) == []
