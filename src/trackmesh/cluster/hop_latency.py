"""HopLatency: the cluster hop histogram (``trackmesh_cluster_hop_seconds``), a sans-IO counter.

A media packet crossing between nodes carries a *send stamp* in its header (wire version 2,
``cluster/zenoh_channels.py``): the sender's wall clock in microseconds, modulo 2**32 (it wraps
every 71.6 minutes). The receiving node stamps the moment the packet reaches its event loop with
the same clock and observes the difference here. Both stamps come from the caller (``now``
arguments, never a clock read inside), so this module is tested on a virtual clock.

Why wall time: CLOCK_MONOTONIC starts at each host's boot, so two hosts' monotonic stamps do not
compare; CLOCK_REALTIME does. On one host every process reads the same clock, so the histogram is
the hop itself (serialization, zenoh, the TCP link, parsing and the hand-over to the loop).
Between hosts it is the hop *plus the offset between the two hosts' clocks*: with NTP (chrony,
systemd-timesyncd) the offset on a LAN is typically well under a millisecond, over the internet a
few milliseconds. A receiver whose clock reads earlier than the sender's stamp (offset larger than
the hop) gets a negative difference: it is not observed, only counted (``behind``), so a wrong
clock shows as a growing counter instead of a histogram of nonsense.

Per packet this costs one subtraction, a mask, a C ``bisect`` and two integer additions: no
allocation, no float. The exposition reads :meth:`HopLatency.to_dict` when the node is scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

__all__ = ["HOP_BUCKETS_US", "STAMP_MASK", "HopLatency", "stamp_of"]

#: The send stamp: microseconds modulo 2**32.
STAMP_MASK = 0xFFFF_FFFF
_HALF = 1 << 31
#: Upper bounds of the buckets, in microseconds (Prometheus ``le`` in seconds: 0.0001 .. 1).
HOP_BUCKETS_US = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000)


def stamp_of(seconds: float) -> int:
    """The 32-bit send stamp of a time in seconds (wall clock in production, virtual in tests)."""
    return round(seconds * 1_000_000) & STAMP_MASK


class HopLatency:
    """Per-bucket counts of (arrival stamp - send stamp), with the +Inf bucket last."""

    __slots__ = ("behind", "bounds", "counts", "sum_us")

    def __init__(self, bounds_us: Sequence[int] = HOP_BUCKETS_US) -> None:
        self.bounds = tuple(bounds_us)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum_us = 0
        self.behind = 0  # the receiver's clock read earlier than the send stamp: not observed

    def observe(self, send_stamp: int, now_stamp: int) -> None:
        """One packet sent at ``send_stamp`` that arrived at ``now_stamp`` (both :func:`stamp_of`)."""
        delta = (now_stamp - send_stamp) & STAMP_MASK
        if delta >= _HALF:  # a negative difference, modulo 2**32
            self.behind += 1
            return
        self.counts[bisect.bisect_left(self.bounds, delta)] += 1
        self.sum_us += delta

    @property
    def count(self) -> int:
        return sum(self.counts)

    def to_dict(self) -> dict[str, Any]:
        """The exposition's histogram form (seconds), plus the ``behind`` counter."""
        return {
            "bounds": [b / 1_000_000 for b in self.bounds],
            "counts": list(self.counts),
            "sum": self.sum_us / 1_000_000,
            "behind": self.behind,
        }
