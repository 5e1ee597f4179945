"""What a gateway knows of the cluster: media nodes of its zone (load reports) and other zones
(gateways' zone summaries). Plain data, no I/O; times are ``time.monotonic()`` values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

STALE_AFTER = 5.0  # a node or zone silent this long is dropped
# Sanity bounds of what members report: a value outside is nonsense (a bug or a forgery by a
# holder of the secret), and the report is ignored and counted rather than routed on.
MAX_CAPACITY = 1_000_000  # sessions per media node, as --capacity accepts
MAX_NODES = 65_536  # media nodes per zone


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
        entry = NodeEntry(
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
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadReport(str(exc)) from None
    if not (1 <= entry.capacity <= MAX_CAPACITY and 0 <= entry.sessions <= 10 * MAX_CAPACITY):
        raise BadReport(f"nonsense capacity {entry.capacity} / sessions {entry.sessions}")
    if not 0.0 <= entry.cpu <= 100_000.0:
        raise BadReport(f"nonsense cpu {entry.cpu}")
    return entry


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
    location: tuple[float, float] | None = None  # the zone gateway's --location (lat, lon)


def parse_zone_summary(data: bytes, now: float) -> ZoneEntry:
    """A gateway's zone summary (``tm/zone/<zone>/<gateway>``); BadReport when malformed or nonsense."""
    try:
        r = json.loads(data)
        e = ZoneEntry(int(r["zone"]), int(r["gateway"]), str(r["url"]), int(r["nodes"]), int(r["free"]),
                      float(r["score"]), now)  # fmt: skip
        loc = r.get("location")
        if loc is not None:
            lat, lon = (float(x) for x in loc)
            if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
                raise BadReport(f"nonsense location {loc!r}")
            e.location = (lat, lon)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadReport(str(exc)) from None
    if not (0 <= e.nodes <= MAX_NODES and 0 <= e.free <= e.nodes * MAX_CAPACITY):
        raise BadReport(f"nonsense capacity: {e.nodes} nodes, {e.free} free")
    if not (0.0 <= e.score <= 1000.0) or not 0 <= e.zone < 1 << 24 or not e.url.startswith(("http://", "https://")):
        raise BadReport("nonsense zone, score or url")
    return e


class ZoneDirectory:
    """Other zones' gateways and how much room their zones have."""

    def __init__(self, own_zone: int, stale_after: float = STALE_AFTER) -> None:
        self.own_zone = own_zone  # -1 for a global gateway: it follows every zone
        self.stale_after = stale_after
        self.gateways: dict[tuple[int, int], ZoneEntry] = {}
        self.bad_summaries = 0

    def update(self, data: bytes, now: float) -> None:
        try:
            e = parse_zone_summary(data, now)
        except BadReport:
            self.bad_summaries += 1
            return
        if e.zone != self.own_zone:
            self.gateways[(e.zone, e.gateway)] = e

    def zones(self, now: float) -> dict[int, ZoneEntry]:
        """Each zone with a live gateway, by its freshest summary."""
        self.expire(now)
        out: dict[int, ZoneEntry] = {}
        for e in self.gateways.values():
            if e.zone not in out or e.seen > out[e.zone].seen:
                out[e.zone] = e
        return out

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
             "score": e.score, "location": e.location, "age_s": round(now - e.seen, 2)}
            for e in sorted(self.gateways.values(), key=lambda e: (e.zone, e.gateway))
        ]  # fmt: skip
