"""What a gateway knows of the cluster: media nodes of its zone (load reports) and other zones
(gateways' zone summaries). Plain data, no I/O; times are ``time.monotonic()`` values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

STALE_AFTER = 5.0  # a node or zone silent this long is dropped


class BadReport(ValueError):
    pass


@dataclass
class NodeEntry:
    zone: int
    node: int
    node_id: int
    http: str
    sessions: int
    capacity: int
    cpu: float
    mem_mb: float
    ready: bool
    draining: bool
    seen: float
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """May get new sessions."""
        return self.ready and not self.draining and self.sessions < self.capacity

    @property
    def score(self) -> float:
        """Lower is better: session fill, with CPU as a tie-breaker that can outweigh it when hot."""
        return self.sessions / max(self.capacity, 1) + 0.5 * min(self.cpu, 400.0) / 100.0

    def summary(self, now: float) -> dict[str, Any]:
        return {**self.raw, "age_s": round(now - self.seen, 2), "healthy": self.healthy, "score": round(self.score, 4)}


def parse_report(data: bytes, now: float) -> NodeEntry:
    try:
        r = json.loads(data)
        return NodeEntry(
            zone=int(r["zone"]),
            node=int(r["node"]),
            node_id=int(r["node_id"]),
            http=str(r["http"]),
            sessions=int(r["sessions"]),
            capacity=int(r["capacity"]),
            cpu=float(r.get("cpu", 0.0)),
            mem_mb=float(r.get("mem_mb", 0.0)),
            ready=bool(r.get("ready", True)),
            draining=bool(r.get("draining", False)),
            seen=now,
            raw=r,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BadReport(str(exc)) from None


class NodeDirectory:
    """Media nodes of one zone, by node index."""

    def __init__(self, zone: int, stale_after: float = STALE_AFTER) -> None:
        self.zone = zone
        self.stale_after = stale_after
        self.nodes: dict[int, NodeEntry] = {}
        self.bad_reports = 0

    def update(self, entry: NodeEntry) -> None:
        if entry.zone != self.zone or entry.node_id != (entry.zone << 8 | entry.node):
            self.bad_reports += 1
            return
        self.nodes[entry.node] = entry

    def remove(self, node: int) -> None:
        self.nodes.pop(node, None)

    def expire(self, now: float) -> None:
        for idx in [i for i, e in self.nodes.items() if now - e.seen > self.stale_after]:
            del self.nodes[idx]

    def get(self, node: int, now: float) -> NodeEntry | None:
        self.expire(now)
        return self.nodes.get(node)

    def candidates(self, now: float, exclude: set[int] | frozenset[int] = frozenset()) -> list[NodeEntry]:
        """Healthy nodes, best first."""
        self.expire(now)
        found = [e for e in self.nodes.values() if e.healthy and e.node not in exclude]
        return sorted(found, key=lambda e: (e.score, e.node))

    def free(self, now: float) -> int:
        return sum(max(e.capacity - e.sessions, 0) for e in self.candidates(now))


@dataclass
class ZoneEntry:
    zone: int
    gateway: int
    url: str
    nodes: int
    free: int
    score: float
    seen: float


class ZoneDirectory:
    """Other zones' gateways and how much room their zones have."""

    def __init__(self, own_zone: int, stale_after: float = STALE_AFTER) -> None:
        self.own_zone = own_zone
        self.stale_after = stale_after
        self.gateways: dict[tuple[int, int], ZoneEntry] = {}

    def update(self, data: bytes, now: float) -> None:
        try:
            r = json.loads(data)
            e = ZoneEntry(int(r["zone"]), int(r["gateway"]), str(r["url"]), int(r["nodes"]), int(r["free"]),
                          float(r["score"]), now)  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return
        if e.zone != self.own_zone:
            self.gateways[(e.zone, e.gateway)] = e

    def remove(self, zone: int, gateway: int) -> None:
        self.gateways.pop((zone, gateway), None)

    def expire(self, now: float) -> None:
        for key in [k for k, e in self.gateways.items() if now - e.seen > self.stale_after]:
            del self.gateways[key]

    def gateway_of(self, zone: int, now: float) -> ZoneEntry | None:
        """A live gateway of ``zone`` (the freshest report)."""
        self.expire(now)
        found = [e for e in self.gateways.values() if e.zone == zone]
        return max(found, key=lambda e: e.seen) if found else None

    def best_other(self, now: float) -> ZoneEntry | None:
        """The other zone with the most free capacity (then the lowest load)."""
        self.expire(now)
        found = [e for e in self.gateways.values() if e.nodes > 0 and e.free > 0]
        return min(found, key=lambda e: (-e.free, e.score, e.zone)) if found else None

    def summary(self, now: float) -> list[dict[str, Any]]:
        self.expire(now)
        return [
            {"zone": e.zone, "gateway": e.gateway, "url": e.url, "nodes": e.nodes, "free": e.free,
             "age_s": round(now - e.seen, 2)}
            for e in sorted(self.gateways.values(), key=lambda e: (e.zone, e.gateway))
        ]  # fmt: skip
