"""RoomMetrics: opt-in per-room series (``--metrics-room-labels N``), at most N rooms labelled.

Off by default: a ``room`` label makes the series count grow with the number of rooms, which is
what the bounded-cardinality rule forbids (docs/observability.md). With ``N`` > 0 a node labels its
N busiest rooms (most live sessions; ties: most forwarded packets, then the name) and counts the
rest in ``trackmesh_room_labels_omitted``, so the series count stays under ``5 * N + 1`` however
many rooms there are.

Nothing here runs per packet: at scrape time (:meth:`RoomMetrics.snapshot`) the worker's live
WebRTC sessions are grouped by room from the totals :class:`~.media_metrics.MediaMetrics` reads
anyway. A room's totals (RTP packets received from its publishers, packets and bytes forwarded to
its viewers) include its closed sessions' (folded in at their close, :meth:`on_closed`) for as long
as the room has a live session, so they only grow while the room lives; when its last session
closes the room is forgotten (its series go stale, and a room of the same name later starts again
from 0, which ``rate()`` reads as a counter reset). A room is whatever the media core calls it
(``Endpoint.room``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ROOM_TOTALS", "RoomMetrics", "top_rooms"]

#: The per-session totals (media_metrics.TOTALS) summed per room.
ROOM_TOTALS = ("rtp_packets_received", "forwarded_packets", "forwarded_bytes")
#: The most rooms one node may label (--metrics-room-labels).
MAX_ROOM_LABELS = 1000
#: Rooms whose closed sessions' totals a worker keeps between two scrapes, at most (never scraped:
#: the oldest go first).
RETIRED_LIMIT = 10_000


def top_rooms(rows: dict[str, list[int]], limit: int) -> tuple[list[list[Any]], int]:
    """The ``limit`` busiest rooms as ``[room, sessions, *ROOM_TOTALS]`` rows, and how many were left out.
    ``rows``: room -> ``[sessions, *ROOM_TOTALS]``. (The node merges its workers' rows the same way:
    http/metrics.py ``merge_rooms``.)"""
    order = sorted(rows.items(), key=lambda item: (-item[1][0], -item[1][2], item[0]))
    kept = [[room, *values] for room, values in order[:limit]]
    return kept, max(0, len(order) - limit)


class RoomMetrics:
    """One worker's per-room totals (``MediaMetrics.rooms`` when the flag is on)."""

    __slots__ = ("limit", "retired")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.retired: dict[str, list[int]] = {}  # room -> ROOM_TOTALS of its closed sessions

    def on_closed(self, room: str | None, totals: Mapping[str, int]) -> None:
        if room is None:  # closed before it joined a room
            return
        have = self.retired.get(room)
        if have is None:
            if len(self.retired) >= RETIRED_LIMIT:
                del self.retired[next(iter(self.retired))]
            have = self.retired[room] = [0] * len(ROOM_TOTALS)
        for i, name in enumerate(ROOM_TOTALS):
            have[i] += totals.get(name, 0)

    def snapshot(self, live: Iterable[tuple[str | None, Mapping[str, int]]]) -> dict[str, Any]:
        """``live``: (room, totals) of each live session. Rooms without one are forgotten here."""
        rows: dict[str, list[int]] = {}
        for room, totals in live:
            if room is None:
                continue
            row = rows.get(room)
            if row is None:
                row = rows[room] = [0, *self.retired.get(room, [0] * len(ROOM_TOTALS))]
            row[0] += 1
            for i, name in enumerate(ROOM_TOTALS, 1):
                row[i] += totals.get(name, 0)
        for gone in [room for room in self.retired if room not in rows]:
            del self.retired[gone]
        kept, omitted = top_rooms(rows, self.limit)
        return {"rooms": kept, "omitted": omitted}
