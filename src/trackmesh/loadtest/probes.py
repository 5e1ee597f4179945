"""What the soak and chaos runs sample besides media: HTTP probes, /metrics, the generator's own loop lag.

Everything goes to 127.0.0.1 only (:func:`trackmesh.loadtest.signalling.http_request` refuses anything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

from trackmesh.loadtest.signalling import http_request

__all__ = ["HealthProber", "LoopLagMonitor", "get_json", "parse_metrics", "percentile", "scrape_metrics"]

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of unsorted ``values`` (None when empty)."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text exposition -> {metric name: [(labels, value), ...]} (comments skipped)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        if m is None:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        out.setdefault(m.group(1), []).append((labels, value))
    return out


async def scrape_metrics(port: int, timeout: float = 5.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, _, raw = await http_request("127.0.0.1", port, "GET", "/metrics", timeout=timeout)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return parse_metrics(raw.decode())


async def get_json(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    status, _, raw = await http_request("127.0.0.1", port, "GET", path, timeout=timeout)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


class HealthProber:
    """GET /api/node/health every ``every`` s: the latency includes the server loop's lag (HTTP and worker 0
    share that loop in a one-worker node); failures are counted, not raised."""

    def __init__(self, port: int, every: float = 0.5) -> None:
        self.port = port
        self.every = every
        self.latencies: list[float] = []  # seconds, since the last take()
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            try:
                status, _, _ = await http_request("127.0.0.1", self.port, "GET", "/api/node/health", timeout=5.0)
                if status == 200:
                    self.latencies.append(time.monotonic() - t0)
                else:
                    self.failures += 1
            except (TimeoutError, OSError, ValueError, IndexError):
                self.failures += 1
            await asyncio.sleep(max(0.0, self.every - (time.monotonic() - t0)))

    def take(self) -> list[float]:
        out, self.latencies = self.latencies, []
        return out

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class LoopLagMonitor:
    """The generator's own loop lag (a 50 ms sleep that wakes late): tells the server's lag from ours."""

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.period)
            self.lags.append(max(0.0, time.monotonic() - t0 - self.period))

    def take(self) -> list[float]:
        out, self.lags = self.lags, []
        return out

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
