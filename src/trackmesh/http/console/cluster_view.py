"""What the console role knows of the cluster: every member's last report, by role, zone and index.

Plain data, no I/O; ``now`` is a ``time.monotonic()`` value given by the caller. Media nodes send
load reports (``tm/load/<zone>/<node>``), gateways and connectors status reports
(``tm/status/<role>/<zone>/<index>``), each every second. A member whose report is older than
``STALE_AFTER`` shows as stale (with its report age), one whose liveliness went as gone; both are
dropped after ``FORGET_AFTER``. Nothing is trusted: a malformed report is counted and ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["ROLES", "ClusterView"]

ROLES = ("gateway", "media", "connector")
STALE_AFTER = 3.0
FORGET_AFTER = 60.0
MAX_MEMBERS = 4096
_FIELDS = ("http", "sessions", "capacity", "cpu", "mem_mb", "ready", "draining", "reason", "workers", "nodes",
           "free", "routed", "no_capacity", "inbox", "batches")  # fmt: skip


@dataclass
class Member:
    role: str
    zone: int
    index: int
    report: dict[str, Any]
    seen: float
    gone: float | None = None  # when its liveliness went


def _clean(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _FIELDS:
        value = report.get(key)
        if isinstance(value, bool) or value is None:
            out[key] = value
        elif isinstance(value, (int, float)):
            out[key] = value if abs(value) < 1e12 else None
        else:
            out[key] = str(value)[:200]
    return out


class ClusterView:
    def __init__(self) -> None:
        self.members: dict[tuple[str, int, int], Member] = {}
        self.bad_reports = 0

    def report(self, role: str, data: bytes, now: float) -> None:
        """A load or status report of a ``role`` member."""
        try:
            obj = json.loads(data)
            zone, index = int(obj["zone"]), int(obj["node"])
            if role not in ROLES or not (0 <= zone < 1 << 24 and 0 <= index < 256) or not isinstance(obj, dict):
                raise ValueError("out of range")
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):  # int(Infinity): OverflowError
            self.bad_reports += 1
            return
        key = (role, zone, index)
        if key not in self.members and len(self.members) >= MAX_MEMBERS:
            self.bad_reports += 1
            return
        self.members[key] = Member(role, zone, index, _clean(obj), now)

    def gone(self, role: str, zone: int, index: int, now: float) -> None:
        """Its liveliness token went: the process died or lost the cluster."""
        member = self.members.get((role, zone, index))
        if member is not None and member.gone is None:
            member.gone = now

    def removed(self, role: str, zone: int, index: int) -> None:
        """It deleted its report (a clean stop)."""
        self.members.pop((role, zone, index), None)

    def expire(self, now: float) -> None:
        for key in [k for k, m in self.members.items() if now - m.seen > FORGET_AFTER]:
            del self.members[key]

    def http_of(self, role: str, now: float) -> list[tuple[int, str]]:
        """(zone, HTTP base URL) of the live, fresh members of ``role``."""
        return sorted((m.zone, str(m.report["http"])) for m in self.members.values()
                      if m.role == role and m.gone is None and now - m.seen <= STALE_AFTER
                      and str(m.report.get("http", "")).startswith("http"))  # fmt: skip

    def zones(self, now: float) -> list[dict[str, Any]]:
        """Zones -> gateways, media nodes and connectors, each with its report, age and state."""
        self.expire(now)
        zones: dict[int, dict[str, Any]] = {}
        for (role, zone, index), m in sorted(self.members.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
            z = zones.setdefault(zone, {"zone": zone, "gateway": [], "media": [], "connector": []})
            age = now - m.seen
            state = "gone" if m.gone is not None else "stale" if age > STALE_AFTER else "up"
            z[role].append({**m.report, "node": index, "age_s": round(age, 1), "state": state})
        return list(zones.values())
