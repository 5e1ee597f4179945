"""Where a standalone node sends a room's new viewer with ``--room-spread K`` (docs/cluster.md
"One room on every core"): the rule of a media node (runtime/cluster_node.py ``worker_for_viewer``)
on a standalone node's counts.

Below K sessions of the room on the node, a viewer joins the room's worker (its *home*, where its
publishers are); from K on, the worker with the fewest sessions, the home worker on ties. The counts
are the workers' last reports (``spread.rooms``, every :data:`REPORT_INTERVAL` seconds) plus the
sessions routed since, so viewers arriving together between two reports spread too. No clock and no
I/O here: the node's task feeds the reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["REPORT_INTERVAL", "SpreadRouting"]

REPORT_INTERVAL = 1.0  # seconds between the workers' room reports


class SpreadRouting:
    __slots__ = ("_room", "_worker", "k", "spread_viewers", "workers")

    def __init__(self, k: int, workers: int) -> None:
        self.k = k
        self.workers = workers
        self._worker = [0] * workers  # sessions per worker: reported + routed since
        self._room: dict[str, int] = {}  # sessions per room on the node: reported + routed since
        self.spread_viewers = 0  # viewers placed on another worker than their room's home

    def reported(self, rooms: Sequence[Mapping[str, int] | None]) -> None:
        """Each worker's ``{room: sessions}`` (None: it did not answer; its count stays)."""
        room: dict[str, int] = {}
        for index, listed in enumerate(rooms[: self.workers]):
            if listed is None:
                continue
            self._worker[index] = sum(listed.values())
            for name, n in listed.items():
                room[name] = room.get(name, 0) + n
        self._room = room

    def routed(self, room: str, index: int) -> None:
        """A session of ``room`` routed to worker ``index`` (a publisher, or a viewer by :meth:`viewer`)."""
        self._worker[index] += 1
        self._room[room] = self._room.get(room, 0) + 1

    def sessions(self, room: str) -> int:
        return self._room.get(room, 0)

    def viewer(self, room: str, home: int) -> int:
        """The worker for a new viewer of ``room`` whose home worker is ``home`` (counted as routed)."""
        index = home
        if self.sessions(room) >= self.k:
            index = min(range(self.workers), key=lambda i: (self._worker[i], i != home, i))
        self.routed(room, index)
        self.spread_viewers += index != home
        return index
