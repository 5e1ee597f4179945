"""RTMP ingest in a worker (runtime/rtmp_worker.py) over real TCP on 127.0.0.1: an in-process
WorkerRuntime with only the RTMP transport, publishers driven by the in-memory test client
(tests/transports/rtmp/client.py) on asyncio streams. Covers the refusals (app, key, another key
for a published peer), a takeover, B-frames refused with ``--rtmp-bframes reject``, the operator's
``rtmp.delete`` and the linger after a broken connection."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.runtime.node_process import free_port
from tests.transports.rtmp.client import TestClient, commands
from trackmesh.codecs.h264 import build_avcc_config
from trackmesh.config import resolve
from trackmesh.http.console.routes import group_rooms
from trackmesh.rpc import RpcError
from trackmesh.runtime import rtmp_worker
from trackmesh.runtime.console_rpc import KICK_REASON, ROOM_ENDED_REASON, ConsoleRpc
from trackmesh.runtime.rtmp_worker import RtmpTransport
from trackmesh.runtime.worker import WorkerRuntime
from trackmesh.security.tokens import SessionToken, issue
from trackmesh.transports.rtmp.chunk import Message
from trackmesh.transports.rtmp.values import AmfValue

SECRET = "a-secret-of-16-chars"
AVC_CONFIG = b"\x17\x00\x00\x00\x00" + build_avcc_config([b"\x67\x42\xc0\x1f\xac\xd9\x40\x50"], [b"\x68\xeb\xe3\xcb"])


def key_frame(cts: int = 0) -> bytes:
    nal = b"\x65" + b"\x88" * 200
    return b"\x17\x01" + cts.to_bytes(3, "big") + struct.pack("!I", len(nal)) + nal


class Publisher:
    """One RTMP publishing connection: handshake, connect, createStream, publish; what came back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.client = TestClient(chunk_size=4096)
        self.received: list[Message] = []

    async def read_until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; got {self.statuses()}")
            data = await asyncio.wait_for(self.reader.read(65536), left)
            if not data:
                return
            self.received += self.client.receive(data)

    def statuses(self) -> list[tuple[str, str]]:
        out = []
        for cmd in commands(self.received):
            if cmd and cmd[0] in ("onStatus", "_error") and isinstance(cmd[-1], dict):
                info: dict[str, AmfValue] = cmd[-1]
                out.append((str(info.get("code")), str(info.get("description"))))
        return out

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
                self.received += self.client.receive(data)
        except TimeoutError:
            return False


async def publish(port: int, key: str, app: str = "live") -> Publisher:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pub = Publisher(reader, writer)
    c = pub.client
    pub.send(c.hello())
    await pub.read_until(lambda: c.handshake_done)
    pub.send(c.c2() + c.set_chunk_size() + c.connect(app))
    await pub.read_until(lambda: any(cmd[0] in ("_result", "_error") for cmd in commands(pub.received)))
    if any(cmd[0] == "_error" for cmd in commands(pub.received)):
        return pub
    pub.send(c.command("createStream", 2, None) + c.command("publish", 3, None, key, "live", stream_id=1))
    await pub.read_until(lambda: bool(pub.statuses()))
    return pub


def token(room: str, peer: str, config: Any) -> str:
    return issue(config.token_key, SessionToken("rtmp", room, peer), 600, int(time.time()))


def run(test: Callable[[WorkerRuntime, RtmpTransport, int], Awaitable[None]], **flags: str) -> None:
    async def main() -> None:
        port = free_port()
        config = resolve("standalone", {"secret": SECRET, "rtmp_port": str(port), **flags}, {})
        runtime = WorkerRuntime(config, 0)
        rtmp_worker.install(runtime)
        runtime.start(asyncio.get_running_loop())
        transport = runtime.services.get(RtmpTransport)
        assert isinstance(transport, RtmpTransport)
        await asyncio.sleep(0.05)  # the listener's server task
        try:
            await test(runtime, transport, port)
        finally:
            runtime.shutdown("test over")

    asyncio.run(main())


def test_refusals_name_their_reason_and_close() -> None:
    async def test(runtime: WorkerRuntime, transport: RtmpTransport, port: int) -> None:
        wrong_app = await publish(port, "x", app="other")
        assert any(cmd[0] == "_error" for cmd in commands(wrong_app.received))
        assert await wrong_app.closed()
        bad = await publish(port, "not-a-token")
        assert bad.statuses()[0][0] == "NetStream.Publish.BadName" and "stream key refused" in bad.statuses()[0][1]
        assert await bad.closed()
        key = token("r", "cam", runtime.config)
        good = await publish(port, key)
        assert good.statuses() == [("NetStream.Publish.Start", f"{key} is now published.")]
        # A fresh token for the same (room, peer) is another stream key: refused while cam publishes.
        fresh = issue(runtime.config.token_key, SessionToken("rtmp", "r", "cam", extra_data="x"), 600, int(time.time()))
        second = await publish(port, fresh)
        assert "another stream key" in second.statuses()[0][1], second.statuses()
        assert await second.closed()
        assert runtime.counters["rtmp_refused"] >= 3
        good.writer.close()

    run(test)


def test_takeover_delete_and_linger() -> None:
    async def test(runtime: WorkerRuntime, transport: RtmpTransport, port: int) -> None:
        key = token("r", "cam", runtime.config)
        first = await publish(port, key)
        first.send(first.client.video(1, 0, AVC_CONFIG) + first.client.video(1, 0, key_frame()))
        await asyncio.sleep(0.1)
        [listed] = transport.list_conns(0, {})
        assert listed["connected"] and listed["counters"]["video_frames"] == 1
        # The console's rooms view (console.rooms) lists the publisher in its room, to its token's app only.
        console = ConsoleRpc.of(runtime)
        [room] = group_rooms(console.rooms(runtime.now(), {"app": ""}))
        [row] = room["peers"]
        assert room["room"] == "r" and (row["peer"], row["transport"], row["connected"]) == ("cam", "rtmp", True), row
        assert row["session"] == listed["session"] and row["worker"] == 0, row
        assert console.rooms(runtime.now(), {"app": "acme"}) == []
        # The same key again: the first connection is closed, the peer (conn id) stays.
        second = await publish(port, key)
        assert second.statuses()[0][0] == "NetStream.Publish.Start"
        assert await first.closed()
        [again] = transport.list_conns(0, {})
        assert again["conn_id"] == listed["conn_id"] and runtime.counters["rtmp_takeovers"] == 1
        # A broken connection (no unpublish): the publisher waits for its encoder.
        second.writer.transport.abort()
        await asyncio.sleep(0.1)
        [waiting] = transport.list_conns(0, {})
        assert not waiting["connected"]
        assert transport.entries  # lingering
        # The operator ends it.
        runtime.call("rtmp.delete", {"conn_id": waiting["conn_id"]})
        assert transport.list_conns(0, {}) == [] and runtime.counters["rtmp_publishers_finished"] == 1
        # A reconnect that never comes: the linger ends on the worker's timer.
        third = await publish(port, token("r", "cam2", runtime.config))
        third.writer.transport.abort()
        await asyncio.sleep(0.1)
        entry = next(iter(transport.entries.values()))
        deadline = entry.publisher.next_deadline()
        assert deadline is not None and 4.5 < deadline - runtime.now() <= 5.0
        assert entry.timer is not None
        entry.timer.handle_timeout(deadline)  # what the worker's timer does then (not waiting 5 s here)
        assert entry.publisher.finished and transport.entries == {}

    run(test)


def test_the_console_mutes_kicks_and_ends_the_room_of_rtmp_publishers() -> None:
    async def test(runtime: WorkerRuntime, transport: RtmpTransport, port: int) -> None:
        console = ConsoleRpc.of(runtime)
        pub = await publish(port, token("r", "cam", runtime.config))
        pub.send(pub.client.video(1, 0, AVC_CONFIG) + pub.client.video(1, 0, key_frame()))
        await asyncio.sleep(0.1)
        [row] = console.rooms(runtime.now(), {"app": ""})
        tracks = {t["name"]: t for t in row["tracks"]}
        assert "video_main" in tracks and tracks["video_main"]["direction"] == "publish", row
        assert tracks["video_main"]["muted"] is False and tracks["video_main"]["kind"] == "video", row
        # Mute: the core's RemoteTrack stops reaching viewers; another app's console cannot.
        mute = {"app": "", "session": row["session"], "track": "video_main"}
        assert console.mute(runtime.now(), mute) == {"muted": True, "changed": True}
        [listed] = console.rooms(runtime.now(), {"app": ""})
        assert [t["muted"] for t in listed["tracks"] if t["name"] == "video_main"] == [True]
        for params in ({**mute, "app": "acme"}, {**mute, "track": "nope"}, {**mute, "session": "12x"}):
            with pytest.raises(RpcError) as err:
                console.mute(runtime.now(), params)
            assert err.value.status == 404, params
        with pytest.raises(RpcError):
            console.kick(runtime.now(), {"app": "acme", "session": row["session"]})
        # Kick: the publisher is told (Unpublish) and its connection closes; no linger.
        assert console.kick(runtime.now(), {"app": "", "session": row["session"]}) == {"kicked": 1}
        assert await pub.closed()
        assert pub.statuses()[-1][0] == "NetStream.Publish.Unpublish", pub.statuses()
        assert transport.entries == {} and console.rooms(runtime.now(), {"app": ""}) == []
        # End room: every RTMP publisher of the room, not another room's.
        pubs = [await publish(port, token(room, peer, runtime.config)) for room, peer in (("a", "x"), ("a", "y"),
                                                                                          ("b", "z"))]  # fmt: skip
        assert console.end_room(runtime.now(), {"app": "", "room": "a"}) == {"kicked": 2}
        assert await pubs[0].closed() and await pubs[1].closed()
        assert [r["peer"] for r in console.rooms(runtime.now(), {"app": ""})] == ["z"]
        assert KICK_REASON != ROOM_ENDED_REASON

    run(test)


def test_b_frames_refused_with_the_fix_when_asked() -> None:
    async def test(runtime: WorkerRuntime, transport: RtmpTransport, port: int) -> None:
        pub = await publish(port, token("r", "cam", runtime.config))
        pub.send(pub.client.video(1, 0, AVC_CONFIG) + pub.client.video(1, 0, key_frame(cts=66)))
        assert await pub.closed()
        code, why = pub.statuses()[-1]
        assert code == "NetStream.Publish.BadName" and "bframes=0" in why
        assert transport.list_conns(0, {}) == []  # ended by the server: no linger

    run(test, rtmp_bframes="reject")
