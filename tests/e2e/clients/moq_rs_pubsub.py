"""moq-rs (the Rust moq-dev stack through moq-ffi) as publisher and subscriber through a relay.

Runs in the Python 3.12 ``.venv-moq`` (tests/moq_fixtures.py). Usage:
``moq_rs_pubsub.py URL SHA256 [PREFIX]``: the publisher announces broadcast ``PREFIX/<n>``
(default prefix ``moqrs``) with track
``video`` and writes one frame per group every 50 ms; the subscriber, on its own connection,
waits for the announcement, subscribes and reads three frames. Prints one JSON line:
``{"frames": [...]}`` or ``{"error": "..."}`` (exit code 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import moq


async def run(url: str, fingerprint: str, prefix: str) -> list[str]:
    options = {"tls_fingerprints": [fingerprint], "websocket_enabled": False, "reconnect": False}
    path = f"{prefix}/{os.getpid()}"
    async with moq.Client(url, **options) as pub, moq.Client(url, **options) as sub:
        broadcast = pub.create_broadcast(path)
        track = broadcast.publish_track("video")
        broadcast.announce()

        async def write() -> None:
            for i in range(200):
                track.write_frame(f"frame-{i}".encode())
                await asyncio.sleep(0.05)

        writer = asyncio.create_task(write())
        try:
            consumer = await asyncio.wait_for(sub.announced_broadcast(path).available(), 5)
            frames: list[str] = []
            async for group in await asyncio.wait_for(consumer.subscribe_track("video"), 5):
                frame = await group.read_frame()
                if frame is not None:
                    frames.append(bytes(frame.payload).decode())
                if len(frames) >= 3:
                    return frames
            return frames
        finally:
            writer.cancel()


def main() -> int:
    url, fingerprint = sys.argv[1], sys.argv[2]
    prefix = sys.argv[3] if len(sys.argv) > 3 else "moqrs"
    try:
        frames = asyncio.run(asyncio.wait_for(run(url, fingerprint, prefix), 15))
    except Exception as exc:  # the test prints it: which step failed and how
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"frames": frames}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
