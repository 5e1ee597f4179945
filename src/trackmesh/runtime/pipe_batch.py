"""Batched messages over a worker pipe that never block the loop: the MoQ room bridges
(runtime/moq_workers.py) and the spread room links between a standalone node's workers
(runtime/worker_spread.py) use it.

What crosses is batched: one pipe message per loop turn, whatever the number of items (at most
:data:`MAX_MESSAGE` bytes of packets each). A pipe write never blocks a loop: while the other side
is behind (the socket is not writable), the media packets queued are dropped and counted (the track
recovers at its next key frame) and the rest waits for the next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_MESSAGE", "RETRY", "PipeBatch", "writable"]

#: Bytes of packets in one pipe message. A Unix stream socket is writable while at most a quarter
#: of its send buffer (212,992 bytes by default on Linux) is in use, so a message this size fits
#: in what is left and its write does not block.
MAX_MESSAGE = 64 * 1024
RETRY = 0.01  # seconds before trying again when the other side is behind


def writable(fd: int) -> bool:
    return bool(select.select([], [fd], [], 0)[1])


class PipeBatch:
    """Messages for the other side of the pipe, sent once per loop turn in the order queued;
    ``ready()`` says whether the pipe takes a message now (see the module's docstring).
    Items are tuples; a media packet's starts with ``"p"`` and ends with its bytes."""

    def __init__(self, send: Callable[[list[tuple[Any, ...]]], None], ready: Callable[[], bool]) -> None:
        self._send = send
        self._ready = ready
        self.items: list[tuple[Any, ...]] = []
        self._scheduled = False
        self.messages = 0  # pipe messages sent
        self.items_sent = 0
        self.dropped = 0  # packets dropped while the other side was behind

    def add(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        while self.items:
            if not self._ready():
                kept = [item for item in self.items if item[0] != "p"]
                self.dropped += len(self.items) - len(kept)
                self.items = kept
                if kept:
                    self._scheduled = True
                    asyncio.get_running_loop().call_later(RETRY, self.flush)
                return
            size = count = 0
            for item in self.items:
                count += 1
                size += len(item[-1]) if item[0] == "p" else 64
                if size >= MAX_MESSAGE:
                    break
            items, self.items = self.items[:count], self.items[count:]
            self.messages += 1
            self.items_sent += len(items)
            with contextlib.suppress(OSError, ValueError):
                self._send(items)
