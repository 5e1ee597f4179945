"""Throttling failed secret checks per source: a token bucket per client address.

Every failed check (a wrong app secret on ``POST /token/*``) takes one token from the client's
bucket; the bucket refills at ``refill_per_s`` up to ``burst``. A client whose bucket is empty is
refused with 429 and ``Retry-After`` before its secret is even compared, so an online guesser
gets ``burst`` tries and then one every ``1 / refill_per_s`` seconds (the defaults: 10, then one
per 2 s, about 43,000 a day instead of thousands a second). Successful checks cost nothing.

Sans-IO: ``now`` (monotonic seconds) is an argument. Memory is bounded: at most ``max_sources``
buckets; a full table drops the least recently failed. An IPv6 client is one /64 (``source_key``):
a host usually owns a whole /64 and could otherwise rotate addresses to reset its bucket.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

DEFAULT_BURST = 10
DEFAULT_REFILL_PER_S = 0.5
DEFAULT_MAX_SOURCES = 10_000


def source_key(address: str) -> str:
    """The bucket of a client address: the address itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class FailureThrottle:
    __slots__ = ("_buckets", "burst", "failures", "max_sources", "refill_per_s", "throttled")

    def __init__(
        self,
        burst: int = DEFAULT_BURST,
        refill_per_s: float = DEFAULT_REFILL_PER_S,
        max_sources: int = DEFAULT_MAX_SOURCES,
    ) -> None:
        if burst < 1 or refill_per_s <= 0 or max_sources < 1:
            raise ValueError("burst and max_sources must be >= 1 and refill_per_s > 0")
        self.burst = burst
        self.refill_per_s = refill_per_s
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.failures = 0  # failed checks recorded
        self.throttled = 0  # requests refused with 429

    def _refilled(self, source: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(source)
        if bucket is None:
            return None
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.refill_per_s)
        bucket.updated = now
        return bucket

    def retry_after(self, source: str, now: float) -> int:
        """0 when ``source`` may try now; else the whole seconds until it may (for Retry-After).
        A refusal is counted in ``throttled``."""
        bucket = self._refilled(source, now)
        if bucket is None or bucket.tokens >= 1.0:
            return 0
        self.throttled += 1
        return max(1, math.ceil((1.0 - bucket.tokens) / self.refill_per_s))

    def failed(self, source: str, now: float) -> None:
        """Record one failed check by ``source``."""
        self.failures += 1
        bucket = self._refilled(source, now)
        if bucket is None:
            self._make_room()
            bucket = self._buckets[source] = _Bucket(float(self.burst), now)
        else:
            self._buckets.move_to_end(source)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)

    def _make_room(self) -> None:
        # Least recently failed first: the most refilled, so dropping it forgets the least.
        while len(self._buckets) >= self.max_sources:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
