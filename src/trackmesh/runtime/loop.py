"""Event loop set-up: uvloop when importable (anchors A3.2: same drain cost, cheaper wakeups)."""

from __future__ import annotations

import asyncio
import contextlib


def new_event_loop() -> asyncio.AbstractEventLoop:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


class LoopLag:
    """How late the worker's one timer fires: the time a due callback waited behind other work on the loop.

    The worker's single timer is armed for the next component deadline, so its lateness when it fires is the
    event loop's lag, measured without a timer of its own. ``recent_max`` is the worst lateness over the last
    one to two ``window`` s (two buckets); ``fires`` and ``total`` accumulate for a mean. uvloop schedules in
    1 ms steps, so lags under about 1 ms are the clock's quantization, not work.
    """

    __slots__ = ("_bucket_start", "_cur", "_prev", "fires", "total", "window")

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._bucket_start = 0.0
        self._cur = 0.0
        self._prev = 0.0
        self.fires = 0
        self.total = 0.0

    def _roll(self, now: float) -> None:
        age = now - self._bucket_start
        if age >= self.window:
            self._prev = self._cur if age < 2 * self.window else 0.0
            self._cur = 0.0
            self._bucket_start = now

    def record(self, now: float, late: float) -> None:
        self._roll(now)
        late = max(0.0, late)
        if late > self._cur:
            self._cur = late
        self.fires += 1
        self.total += late

    def recent_max(self, now: float) -> float:
        self._roll(now)
        return max(self._cur, self._prev)

    def stats(self, now: float) -> dict[str, float | int]:
        return {
            "recent_max_s": round(self.recent_max(now), 6),
            "timer_fires": self.fires,
            "late_total_s": round(self.total, 6),
        }
