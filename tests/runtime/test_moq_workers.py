"""The MoQ room bridges' pipe to a worker (runtime/moq_workers.py, its batches: runtime/pipe_batch.py,
which the spread links between standalone workers use too): its batches never block the
loop. While the other side does not read, the packets queued are dropped and counted; the other
messages (registry entries, joins) wait and go once it reads again."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from trackmesh.runtime.pipe_batch import MAX_MESSAGE, writable
from trackmesh.runtime.pipe_batch import PipeBatch as _Batch

TURNS = 40


def test_a_batch_never_blocks_on_a_full_pipe_and_keeps_its_control_messages() -> None:
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sent: list[list[tuple[Any, ...]]] = []

    def send(items: list[tuple[Any, ...]]) -> None:
        left.sendall(b"x" * sum(len(i[-1]) if i[0] == "p" else 64 for i in items))  # what a message weighs
        sent.append(items)

    async def run() -> _Batch:
        batch = _Batch(send, lambda: writable(left.fileno()))
        packet = bytes(1200)
        for turn in range(TURNS):  # 240 KB per turn, and nobody reads: the socket fills up
            for _ in range(200):
                batch.add(("p", 7, packet))
            batch.add(("put", "room/", f"key{turn}", b""))
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # the retry while behind: what was queued since is dropped too
        assert batch.dropped > 0 and not writable(left.fileno())
        assert all(item[0] != "p" for item in batch.items), "only control messages wait"
        waiting = len(batch.items)
        assert waiting > 0
        right.setblocking(False)
        for _ in range(200):  # the other side reads again: the control messages go
            try:
                while right.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
            await asyncio.sleep(0.02)
            if not batch.items:
                break
        assert not batch.items, len(batch.items)
        return batch

    batch = asyncio.run(run())
    puts = [item[2] for items in sent for item in items if item[0] == "put"]
    assert puts == [f"key{turn}" for turn in range(TURNS)]  # every registry entry, in order
    packets = sum(1 for items in sent for item in items if item[0] == "p")
    assert packets + batch.dropped == TURNS * 200
    # No message carries much more than MAX_MESSAGE bytes of packets.
    assert max(sum(len(i[-1]) for i in items if i[0] == "p") for items in sent) < MAX_MESSAGE + 1200
    left.close()
    right.close()
