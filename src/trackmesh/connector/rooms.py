"""Room events derived from peer events, as atm0s's connector derives them (sans-IO).

A room is ``Started`` by its first Join, gets ``PeerJoined``/``PeerLeaved`` per Join/Leave,
``AllPeersLeaved`` when its last session leaves, and ``Stopped`` once it stayed empty for
``destroy_after`` seconds (``--destroy-room-after``, 2 minutes by default as in atm0s). A Join
in the meantime keeps it alive. Membership is by (peer, session), so a repeated or unknown Leave
(at-least-once delivery from the nodes) derives nothing.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .events import AllPeersLeaved, PeerJoined, PeerLeaved, RoomEventBody, Started, Stopped


@dataclass(frozen=True, slots=True)
class RoomChange:
    app: str
    room: str
    event: RoomEventBody


@dataclass(slots=True)
class _Room:
    members: set[tuple[str, int]] = field(default_factory=set)
    empty_since: float | None = None


class RoomTracker:
    def __init__(self, destroy_after: float) -> None:
        self.destroy_after = destroy_after
        self._rooms: dict[tuple[str, str], _Room] = {}
        self._stops: list[tuple[float, str, str]] = []  # (due, app, room); stale rows skipped
        self._out: deque[RoomChange] = deque()

    def restore(self, app: str, room: str, members: Iterable[tuple[str, int]], empty_since: float | None) -> None:
        """Rebuild a live room after a restart from the log (open peer sessions)."""
        r = self._rooms[(app, room)] = _Room(set(members))
        if not r.members:
            r.empty_since = empty_since if empty_since is not None else 0.0
            heapq.heappush(self._stops, (r.empty_since + self.destroy_after, app, room))

    def on_join(self, app: str, room: str, peer: str, session: int, now: float) -> None:
        r = self._rooms.get((app, room))
        if r is None:
            r = self._rooms[(app, room)] = _Room()
            self._out.append(RoomChange(app, room, Started()))
        if (peer, session) in r.members:
            return
        r.members.add((peer, session))
        r.empty_since = None
        self._out.append(RoomChange(app, room, PeerJoined(peer)))

    def on_leave(self, app: str, room: str, peer: str, session: int, now: float) -> None:
        r = self._rooms.get((app, room))
        if r is None or (peer, session) not in r.members:
            return
        r.members.discard((peer, session))
        self._out.append(RoomChange(app, room, PeerLeaved(peer)))
        if not r.members:
            r.empty_since = now
            self._out.append(RoomChange(app, room, AllPeersLeaved()))
            heapq.heappush(self._stops, (now + self.destroy_after, app, room))

    def next_deadline(self) -> float | None:
        while self._stops:
            due, app, room = self._stops[0]
            r = self._rooms.get((app, room))
            if r is not None and r.empty_since is not None and r.empty_since + self.destroy_after == due:
                return due
            heapq.heappop(self._stops)
        return None

    def handle_timeout(self, now: float) -> None:
        while (due := self.next_deadline()) is not None and due <= now:
            _, app, room = heapq.heappop(self._stops)
            del self._rooms[(app, room)]
            self._out.append(RoomChange(app, room, Stopped()))

    def poll_event(self) -> RoomChange | None:
        return self._out.popleft() if self._out else None

    def members(self, app: str, room: str) -> frozenset[tuple[str, int]]:
        r = self._rooms.get((app, room))
        return frozenset(r.members) if r else frozenset()

    @property
    def live_rooms(self) -> int:
        return len(self._rooms)
