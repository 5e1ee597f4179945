"""One timer per worker: a heap of component deadlines with lazy invalidation (no I/O).

Components (the core worker, each transport peer) expose ``next_deadline()`` and
``handle_timeout(now)``. After an input touches a component, the driver calls ``update`` on
it; the driver arms a single loop timer for ``next_deadline()`` of the scheduler. A component
whose deadline moved later may be woken early once; it checks its own deadlines, so that is
harmless, and it is re-queued.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Protocol


class Timed(Protocol):
    def next_deadline(self) -> float | None: ...

    def handle_timeout(self, now: float) -> None: ...


class Scheduler:
    __slots__ = ("_counter", "_heap", "_scheduled")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._scheduled: dict[Timed, float] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._scheduled)

    def update(self, item: Timed) -> None:
        self.update_at(item, item.next_deadline())

    def update_at(self, item: Timed, deadline: float | None) -> None:
        """Queue ``item`` for ``deadline`` if that is earlier than what is queued for it (never later:
        :meth:`update` with the item's own ``next_deadline`` is the same call). A driver that knows which
        part of a component an input touched passes that part's deadline, without asking the component
        for all of them: only that part can have come forward, and whatever else moved later costs at
        most one early wake-up (see the module docstring)."""
        if deadline is None:
            return
        current = self._scheduled.get(item)
        if current is None or deadline < current:
            self._scheduled[item] = deadline
            heapq.heappush(self._heap, (deadline, next(self._counter), item))

    def remove(self, item: Timed) -> None:
        self._scheduled.pop(item, None)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, item = heap[0]
            if self._scheduled.get(item) == deadline:
                return deadline
            heapq.heappop(heap)  # stale entry
        return None

    def run_due(self, now: float) -> int:
        """Fire every component whose deadline has passed; returns how many fired."""
        fired = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, item = heapq.heappop(heap)
            if self._scheduled.get(item) != deadline:
                continue
            del self._scheduled[item]
            item.handle_timeout(now)
            fired += 1
            self.update(item)
        return fired
