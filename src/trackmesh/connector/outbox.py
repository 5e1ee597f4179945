"""The webhook outbox: a sans-IO delivery state machine.

Fed deliveries (``enqueue``), attempt results (``handle_result``) and ``now`` (unix seconds,
always an argument: deliveries outlive the process, so their times are wall-clock times that the
database keeps); drained of attempts (``poll_transmit``) and outcomes (``poll_event``, which the
driver writes back to the database). ``next_deadline``/``handle_timeout`` drive its one timer.

Guarantees:
- **in order per key** (the key is the app and room): a key's next delivery waits until the one
  before is delivered or given up; other keys go on;
- the same ``webhook-id`` and body bytes on every attempt; each attempt is signed afresh with
  its own timestamp (Standard Webhooks receivers reject stale timestamps);
- retries with exponential backoff and jitter, ``base * factor**(n-1)`` capped at ``cap``, each
  delay scaled by a random factor in ``[1 - jitter, 1 + jitter]``: with the defaults (1 s, x4,
  +-20 %) the first four attempts fall within 26 s plus three request time-outs, i.e. within a
  minute. ``n`` counts the failures in a row *while the URL accepted nothing else*: a receiver
  that is down backs off exponentially, one that fails at random (and accepted other
  deliveries since this one last failed) is retried after ``base`` again, so one unlucky room
  does not wait minutes behind a receiver that works;
- a receiver that is down is still probed: while a URL's deliveries back off, one of them is
  tried at least every ``probe`` seconds (30 s by default), and the first 2xx after an outage
  brings every waiting delivery to that URL forward (spread over ``base``), so a receiver
  that comes back gets its backlog within about ``probe`` seconds, not after the longest
  backoff of its rooms (up to ``cap``);
- a delivery is given up only ``retry_for`` seconds after it was created (the last attempt is
  made at that deadline).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass

from .signing import headers, unsigned_headers


@dataclass(slots=True)
class Delivery:
    """One webhook to deliver. ``seq`` orders deliveries of one key (the outbox row id)."""

    id: str
    seq: int
    key: str
    app: str
    url: str
    body: bytes
    created_at: float
    attempts: int = 0
    next_at: float = 0.0
    # Failures in a row while its URL accepted nothing else (the backoff exponent), and when
    # the last one happened.
    streak: int = 0
    failed_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Attempt:
    id: str
    attempt: int
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Delivered:
    id: str
    seq: int
    attempts: int
    latency_s: float


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    id: str
    seq: int
    attempts: int
    next_at: float
    error: str


@dataclass(frozen=True, slots=True)
class GaveUp:
    id: str
    seq: int
    attempts: int
    error: str


Outcome = Delivered | RetryScheduled | GaveUp


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_for: float = 24 * 3600.0
    base: float = 1.0
    factor: float = 4.0
    cap: float = 600.0
    jitter: float = 0.2
    attempt_timeout: float = 10.0
    probe: float = 30.0

    def delay(self, failures: int, rng: random.Random) -> float:
        raw = min(self.cap, self.base * self.factor ** max(0, failures - 1))
        return raw * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)


class Outbox:
    def __init__(self, policy: RetryPolicy, rng: random.Random, max_in_flight: int = 32) -> None:
        self.policy = policy
        self._rng = rng
        self._max_in_flight = max_in_flight
        self._queues: dict[str, deque[Delivery]] = {}
        self._ready: list[tuple[float, int, str]] = []  # (next_at, seq, key) of heads; may hold stale rows
        self._in_flight: dict[str, tuple[Delivery, int, float]] = {}  # id -> (delivery, attempt, started)
        self._keys: dict[str, bytes] = {}
        self._outcomes: deque[Outcome] = deque()
        self._ids: set[str] = set()
        self._last_ok: dict[str, float] = {}  # url -> last 2xx
        self._probe_at: dict[str, float] = {}  # url in an outage -> when its probe delivery is next tried
        # Counters (metrics): attempts made, deliveries done, failed attempts retried, given up.
        self.attempts = 0
        self.delivered = 0
        self.retried = 0
        self.gave_up = 0

    # ---- inputs ---------------------------------------------------------------------------

    def set_signing_key(self, app: str, key: bytes) -> None:
        self._keys[app] = key

    def enqueue(self, delivery: Delivery) -> bool:
        """Queue ``delivery`` behind the others of its key (callers enqueue in ``seq`` order).
        Its ``next_at`` says when it may first be attempted. False if its id is queued already."""
        if delivery.id in self._ids:
            return False
        self._ids.add(delivery.id)
        queue = self._queues.get(delivery.key)
        if queue is None:
            queue = self._queues[delivery.key] = deque()
        queue.append(delivery)
        if len(queue) == 1:
            heapq.heappush(self._ready, (delivery.next_at, delivery.seq, delivery.key))
        return True

    def handle_result(self, msg_id: str, attempt: int, now: float, status: int | None, error: str = "") -> None:
        """The answer to an attempt: an HTTP status, or None and ``error`` when the request
        failed (refused, timed out...). Answers to an attempt no longer in flight are ignored."""
        entry = self._in_flight.get(msg_id)
        if entry is None or entry[1] != attempt:
            return
        del self._in_flight[msg_id]
        delivery = entry[0]
        if status is not None and 200 <= status < 300:
            self._last_ok[delivery.url] = now
            self.delivered += 1
            self._outcomes.append(Delivered(delivery.id, delivery.seq, delivery.attempts, now - delivery.created_at))
            self._pop_head(delivery, now)
            if self._probe_at.pop(delivery.url, None) is not None:
                self._recovered(delivery.url, now)
            return
        self._failed(delivery, now, error or f"HTTP {status}")

    def handle_timeout(self, now: float) -> None:
        """Attempts without an answer after ``attempt_timeout`` count as failed."""
        limit = now - self.policy.attempt_timeout
        for msg_id, (delivery, _attempt, started) in list(self._in_flight.items()):
            if started <= limit:
                del self._in_flight[msg_id]
                self._failed(delivery, now, "timed out")

    # ---- outputs --------------------------------------------------------------------------

    def poll_transmit(self, now: float) -> Attempt | None:
        """The next attempt due at ``now``, signed; None when nothing is due (or too many are in
        flight)."""
        if len(self._in_flight) >= self._max_in_flight:
            return None
        while self._ready and self._ready[0][0] <= now:
            due, seq, key = heapq.heappop(self._ready)
            queue = self._queues.get(key)
            if not queue or queue[0].seq != seq or queue[0].id in self._in_flight or queue[0].next_at != due:
                continue  # stale heap row
            delivery = queue[0]
            delivery.attempts += 1
            self.attempts += 1
            self._in_flight[delivery.id] = (delivery, delivery.attempts, now)
            key_bytes = self._keys.get(delivery.app)
            hdrs = (
                headers(key_bytes, delivery.id, int(now), delivery.body)
                if key_bytes is not None
                else unsigned_headers(delivery.id, int(now), delivery.body)
            )
            return Attempt(delivery.id, delivery.attempts, delivery.url, delivery.body, hdrs)
        return None

    def poll_event(self) -> Outcome | None:
        return self._outcomes.popleft() if self._outcomes else None

    def next_deadline(self) -> float | None:
        """When ``poll_transmit`` or ``handle_timeout`` next has work (None: nothing pending).
        A past deadline while ``max_in_flight`` attempts are out means: wait for a result."""
        while self._ready:
            due, seq, key = self._ready[0]
            queue = self._queues.get(key)
            if queue and queue[0].seq == seq and queue[0].id not in self._in_flight and queue[0].next_at == due:
                break
            heapq.heappop(self._ready)
        candidates = [self._ready[0][0]] if self._ready and len(self._in_flight) < self._max_in_flight else []
        if self._in_flight:
            candidates.append(min(s for _, _, s in self._in_flight.values()) + self.policy.attempt_timeout)
        return min(candidates) if candidates else None

    # ---- metrics --------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._ids)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def oldest_age(self, now: float) -> float:
        """Age of the oldest undelivered delivery (0 when none): the alerting metric."""
        oldest = min((q[0].created_at for q in self._queues.values() if q), default=None)
        return 0.0 if oldest is None else max(0.0, now - oldest)

    # ---- internals ------------------------------------------------------------------------

    def _failed(self, delivery: Delivery, now: float, error: str) -> None:
        deadline = delivery.created_at + self.policy.retry_for
        if now >= deadline:
            self.gave_up += 1
            self._outcomes.append(GaveUp(delivery.id, delivery.seq, delivery.attempts, error))
            self._pop_head(delivery, now)
            return
        self.retried += 1
        if self._last_ok.get(delivery.url, -1.0) >= delivery.failed_at:
            delivery.streak = 0  # the receiver works: this failure is not an outage
        delivery.streak += 1
        delivery.failed_at = now
        delivery.next_at = min(now + self.policy.delay(delivery.streak, self._rng), deadline)
        probe_at = self._probe_at.get(delivery.url)
        if delivery.next_at > now + self.policy.probe and (probe_at is None or probe_at <= now):
            # No other delivery will try this URL within ``probe``: this one does.
            delivery.next_at = self._probe_at[delivery.url] = min(now + self.policy.probe, deadline)
        heapq.heappush(self._ready, (delivery.next_at, delivery.seq, delivery.key))
        self._outcomes.append(RetryScheduled(delivery.id, delivery.seq, delivery.attempts, delivery.next_at, error))

    def _recovered(self, url: str, now: float) -> None:
        """``url`` answered 2xx after an outage: its deliveries waiting in backoff go now,
        spread over ``base`` (order per key is kept: only heads move)."""
        for key, queue in self._queues.items():
            head = queue[0]
            if head.url == url and head.attempts and head.next_at > now and head.id not in self._in_flight:
                head.next_at = now + self._rng.uniform(0.0, self.policy.base)
                heapq.heappush(self._ready, (head.next_at, head.seq, key))

    def _pop_head(self, delivery: Delivery, now: float) -> None:
        queue = self._queues[delivery.key]
        queue.popleft()
        self._ids.discard(delivery.id)
        if queue:
            nxt = queue[0]
            nxt.next_at = max(nxt.next_at, now) if nxt.attempts else now
            heapq.heappush(self._ready, (nxt.next_at, nxt.seq, nxt.key))
        else:
            del self._queues[delivery.key]
