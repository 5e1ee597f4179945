"""S2 (meeting) and S3 (audio only) against Janus 1.1.2 VideoRoom: the ``_join_*`` hooks of the shipped
``trackmesh.loadtest.multi.MultiRun`` with a publisher PeerConnection per publishing participant plus a
multistream subscriber PeerConnection per receiving participant (rooms.py). Everything measured is the
shipped scenario's, so both servers are judged by the same code.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from trackmesh.loadtest.multi import Member, MultiRun

__all__ = ["JanusMultiRun"]


class JanusMultiRun(MultiRun):
    """``self.sig`` is a ``bench.janus.rooms.JanusRooms``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feeds: dict[str, int] = {}  # member name -> Janus feed id
        self.s3_room = 0
        self.speaker_feeds: list[int] = []

    async def _janus_publish(self, m: Member, room: int) -> None:
        tr = self._transport(None)
        m.transports.append(tr)
        ssrcs = (random.getrandbits(31) | 1, random.getrandbits(31) | 2)
        self.feeds[m.name] = await self.sig.publish_in(room, tr, ssrcs, audio_only=self.audio_only)
        await self._connected(tr)
        self._start_publisher(m, tr, ssrcs, ("0", "1"))

    async def _janus_subscribe(self, m: Member, room: int, feeds: list[int]) -> None:
        tr = self._transport(m.sink)
        m.transports.append(tr)
        await self.sig.subscribe_in(room, tr, feeds)
        if m.sink is not None and tr.remote is not None:
            m.sink.pt_kind.update(tr.remote.pt_kind)

    def _feeds_of(self, ms: list[Member]) -> list[int]:
        return [self.feeds[m.name] for m in ms if m.name in self.feeds]

    async def _join_room(self, ms: list[Member], tag: str) -> None:
        first, last = ms[:-1], ms[-1]
        room = random.randrange(1 << 20, 1 << 30)
        await self.sig.create_room(room, self.cfg.room_size + 2)
        await self._storm([(m, self._janus_publish(m, room)) for m in first])
        feeds = self._feeds_of(first)

        async def last_join() -> None:
            last.started = time.time()
            await asyncio.gather(self._janus_publish(last, room), self._janus_subscribe(last, room, feeds))
            await self._wait_media(last, "idle")

        await self._guard(last, last_join())
        for m in first:
            m.started = time.time()
        await self._storm([(m, self._janus_subscribe(m, room, self._feeds_of([x for x in ms if x is not m])))
                           for m in first])

    async def _join_speakers(self, speakers: list[Member]) -> None:
        self.s3_room = random.randrange(1 << 20, 1 << 30)
        await self.sig.create_room(self.s3_room, self.cfg.speakers + 4)
        await self._storm([(m, self._janus_publish(m, self.s3_room)) for m in speakers])
        self.speaker_feeds = self._feeds_of(speakers)

    async def _join_listener(self, m: Member) -> None:
        m.started = time.time()
        await self._janus_subscribe(m, self.s3_room, self.speaker_feeds)
