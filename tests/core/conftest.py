from __future__ import annotations

import pytest

from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.events import EndpointEvent
from trackmesh.core.worker import MediaWorker


class Harness:
    """Two workers of one node sharing the in-process registry and hub, on a virtual clock."""

    def __init__(self) -> None:
        self.registry = LocalRegistry()
        self.hub = LocalChannelHub()
        self.workers = [MediaWorker(7, i, "secret", self.registry, self.hub) for i in range(2)]
        self.now = 100.0

    def endpoint(self, worker: int = 0) -> Endpoint:
        return self.workers[worker].create_endpoint()

    def advance(self, seconds: float) -> None:
        """Move the virtual clock, firing every deadline on the way in order."""
        end = self.now + seconds
        for _ in range(100_000):
            deadlines = [d for w in self.workers if (d := w.next_deadline()) is not None and d <= end]
            if not deadlines:
                break
            self.now = max(self.now, min(deadlines))
            for w in self.workers:
                w.handle_timeout(self.now)
        else:
            raise AssertionError("a deadline never clears: the core would spin its worker")
        self.now = end


def drain(ep: Endpoint) -> list[EndpointEvent]:
    out = []
    while (ev := ep.poll_event()) is not None:
        out.append(ev)
    return out


@pytest.fixture
def h() -> Harness:
    return Harness()
