from __future__ import annotations

from trackmesh.runtime.scheduler import Scheduler


class Item:
    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.fired: list[float] = []

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timeout(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.fired.append(now)
            self.deadline = None


def test_fires_in_deadline_order_and_rearms() -> None:
    s = Scheduler()
    a, b, c = Item(3.0), Item(1.0), Item(None)
    for it in (a, b, c):
        s.update(it)
    assert s.next_deadline() == 1.0
    assert s.run_due(0.5) == 0
    assert s.run_due(2.0) == 1 and b.fired == [2.0]
    assert s.next_deadline() == 3.0
    a.deadline = 2.5  # moved earlier: a new entry wins over the stale one
    s.update(a)
    assert s.next_deadline() == 2.5
    assert s.run_due(10.0) == 1 and a.fired == [10.0]
    assert s.next_deadline() is None and len(s) == 0


def test_deadline_moved_later_wakes_early_once_harmlessly() -> None:
    s = Scheduler()
    it = Item(1.0)
    s.update(it)
    it.deadline = 5.0
    s.update(it)  # later: not re-pushed
    assert s.run_due(1.0) == 1
    assert it.fired == []  # it checked its own deadline
    assert s.next_deadline() == 5.0
    s.remove(it)
    assert s.next_deadline() is None


def test_update_at_only_brings_a_deadline_forward() -> None:
    s = Scheduler()
    it = Item(5.0)
    s.update(it)
    s.update_at(it, 7.0)  # a later part: what is queued stays
    s.update_at(it, None)
    assert s.next_deadline() == 5.0
    s.update_at(it, 2.0)  # a part came forward (a NACK gap after a media packet)
    assert s.next_deadline() == 2.0
    it.deadline = 2.0
    assert s.run_due(2.0) == 1 and it.fired == [2.0]
    assert s.next_deadline() is None  # re-asked in full after firing: nothing left
    s.update_at(it, 3.0)  # an unqueued item is queued by a part's deadline
    assert s.next_deadline() == 3.0
