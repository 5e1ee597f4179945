"""The asyncio RTMP listener (runtime/rtmp_listener.py) with real TCP on 127.0.0.1 (pytest runs in
a loopback-only network namespace): a GStreamer publisher accepted and one refused by the
handler, the connection limit, the handshake timeout and garbage, none disturbing the listener."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from trackmesh.runtime.rtmp_listener import RtmpConnection, RtmpListener
from trackmesh.transports.rtmp.events import (
    Closed,
    ConnectRequested,
    Event,
    PublishRequested,
    Unpublished,
    VideoData,
)


class KeyHandler:
    """Accepts app "live" and the stream key "good"; records every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, conn: RtmpConnection, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, ConnectRequested):
            conn.accept_connect() if event.app == "live" else conn.reject_connect("unknown app")
        elif isinstance(event, PublishRequested):
            if event.stream_key == "good":
                conn.accept_publish(event.stream_id)
            else:
                conn.reject_publish(event.stream_id, "unknown or expired stream key")


def _have_gstreamer() -> bool:
    return shutil.which("gst-launch-1.0") is not None and all(
        subprocess.run(["gst-inspect-1.0", e], capture_output=True, check=False).returncode == 0
        for e in ("rtmp2sink", "flvmux", "x264enc")
    )


async def _gst_publish(port: int, key: str) -> tuple[int, str]:
    pipeline = (
        "videotestsrc num-buffers=30 ! video/x-raw,width=160,height=120,framerate=30/1 "
        "! x264enc tune=zerolatency speed-preset=ultrafast ! h264parse ! flvmux streamable=true "
        f"! rtmp2sink location=rtmp://127.0.0.1:{port}/live/{key}"
    )
    proc = await asyncio.create_subprocess_exec(
        "gst-launch-1.0", *pipeline.split(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=12)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode(errors="replace")


@pytest.mark.skipif(not _have_gstreamer(), reason="GStreamer rtmp2sink/flvmux/x264enc missing")
def test_publisher_accepted_and_one_refused() -> None:
    async def run() -> tuple[KeyHandler, RtmpListener, int, str]:
        handler = KeyHandler()
        listener = RtmpListener(handler)
        await listener.start("127.0.0.1", 0)
        try:
            rc_good, _ = await _gst_publish(listener.port, "good")
            assert rc_good == 0
            rc_bad, log_bad = await _gst_publish(listener.port, "bad")
        finally:
            await listener.close()
        return handler, listener, rc_bad, log_bad

    handler, listener, rc_bad, log_bad = asyncio.run(run())
    keys = [e.stream_key for e in handler.events if isinstance(e, PublishRequested)]
    assert keys == ["good", "bad"]
    assert sum(isinstance(e, VideoData) for e in handler.events) >= 30
    assert Unpublished(1, "good") in handler.events
    # The refused encoder fails and its log carries our reason.
    assert rc_bad != 0 and "unknown or expired stream key" in log_bad
    assert Closed("publish rejected: unknown or expired stream key", False) in handler.events
    assert listener.stats.connections == 2 and listener.stats.errors == {} and listener.stats.handler_errors == 0
    assert listener.connections == {}


def test_connection_limit_handshake_timeout_and_garbage() -> None:
    async def run() -> tuple[RtmpListener, KeyHandler, list[bytes]]:
        handler = KeyHandler()
        listener = RtmpListener(handler, max_connections=2, handshake_timeout=0.3, sweep_interval=0.05)
        await listener.start("127.0.0.1", 0)
        try:
            idle = await asyncio.open_connection("127.0.0.1", listener.port)
            garbage = await asyncio.open_connection("127.0.0.1", listener.port)
            await asyncio.sleep(0.05)
            refused = await asyncio.open_connection("127.0.0.1", listener.port)
            got = [await asyncio.wait_for(refused[0].read(10), 2)]  # closed at once: EOF
            garbage[1].write(b"\x07" + bytes(100))  # RTMPE-style version: refused
            got.append(await asyncio.wait_for(garbage[0].read(10), 2))
            got.append(await asyncio.wait_for(idle[0].read(10), 2))  # handshake timeout
            for _, writer in (idle, garbage, refused):
                writer.close()
            await asyncio.sleep(0.05)
        finally:
            await listener.close()
        return listener, handler, got

    listener, handler, got = asyncio.run(run())
    assert got == [b"", b"", b""]
    assert listener.stats.refused == 1 and listener.stats.connections == 2
    assert listener.stats.errors == {"C0 asks for RTMP version N, only N is supported": 1, "handshake timeout": 1}
    assert [e for e in handler.events if isinstance(e, Closed)] == [
        Closed("C0 asks for RTMP version 7, only 3 is supported", True),
        Closed("handshake timeout", True),
    ]
    assert listener.connections == {}


def test_a_thousand_idle_connections_fill_the_default_limit_then_new_ones_are_refused() -> None:
    """The default limit (1,000 per listener): a thousand idle connections are held, the next is
    closed at once and counted, a connection among them still gets its handshake answered, and a
    freed slot takes a new connection again."""
    from trackmesh.transports.rtmp.handshake import HANDSHAKE_SIZE, make_c1

    c0c1 = b"\x03" + make_c1(bytes(1528), digest=False)

    async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(c0c1)
        return await asyncio.wait_for(reader.readexactly(1 + 2 * HANDSHAKE_SIZE), 5)

    async def run() -> tuple[RtmpListener, int, bytes, bytes, bytes]:
        listener = RtmpListener(KeyHandler(), handshake_timeout=30, sweep_interval=0.5)
        assert listener.max_connections == 1000
        await listener.start("127.0.0.1", 0)
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            while len(conns) < 1000:  # in batches: the listen backlog is finite
                batch = min(100, 1000 - len(conns))
                conns += await asyncio.gather(
                    *(asyncio.open_connection("127.0.0.1", listener.port) for _ in range(batch))
                )
                await asyncio.sleep(0.02)
            while len(listener.connections) < 1000:
                await asyncio.sleep(0.01)
            held = len(listener.connections)
            refused = await asyncio.open_connection("127.0.0.1", listener.port)
            eof = await asyncio.wait_for(refused[0].read(10), 5)  # closed at once
            answer = await handshake(*conns[500])  # one of the thousand is still served
            conns.pop(0)[1].close()
            while len(listener.connections) >= 1000:
                await asyncio.sleep(0.01)
            again = await asyncio.open_connection("127.0.0.1", listener.port)
            conns.append(again)
            answer_again = await handshake(*again)
        finally:
            for _, writer in conns:
                writer.close()
            await listener.close()
        return listener, held, eof, answer, answer_again

    listener, held, eof, answer, answer_again = asyncio.run(run())
    assert held == 1000 and eof == b""
    assert listener.stats.refused == 1 and listener.stats.connections == 1001
    assert answer[0] == 3 and answer_again[0] == 3  # S0: RTMP version 3, then S1 and S2
    assert listener.stats.handler_errors == 0
