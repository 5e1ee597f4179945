"""Loss recovery by retransmission: the sender-side packet ring and the receiver-side NACK
generator (generic NACK, RFC 4585 s6.2.1; retransmission as in RFC 4588 s1 motivation).

The SFU terminates NACK loops on both legs: it answers viewers' NACKs from its own
:class:`RetransmitBuffer` (the header rewritten for that viewer, the payload shared with the source) and it NACKs the
publisher itself with :class:`NackGenerator`, so loss on one viewer's link never reaches the
publisher and loss on the publisher's link is repaired once for everybody.
"""

from __future__ import annotations

from array import array

from trackmesh.rtp.rewrite import SeqUnwrapper, extend_seq

__all__ = ["NackGenerator", "RetransmitBuffer"]


class RetransmitBuffer:
    """The last ``size`` packets of one outgoing stream, indexed by ``seq & mask``, for at most
    ``max_age`` seconds.

    A packet is kept as two references: the header written for this viewer (a small bytes
    object of its own) and the payload, which is the source packet's buffer shared by every
    viewer of that source (never copied per viewer). So a video viewer costs a few tens of
    kilobytes of ring instead of a private copy of the last ``size`` packets, and a source's
    payloads stay alive only as long as some viewer may still be asked for them.

    Each slot remembers the extended sequence number it holds, so a lookup for a number the
    slot no longer holds (overwritten by a newer lap of the ring), one too old to be in the
    window, one not sent yet, or one sent more than ``max_age`` ago (a NACK that late cannot
    help a real-time receiver, RFC 4588 s1) returns None instead of a wrong or useless packet.
    The slot lists are allocated on the first packet, so a stream that never sends costs none.

    The ring is sized by the stream's rate: it starts with ``initial`` slots and doubles, up to
    ``size``, whenever a packet would overwrite one sent less than ``max_age`` ago, so it holds about
    ``max_age`` of packets (128 slots for 1 Mbps video at about 115 packets/s, instead of ``size``
    for every stream). A slot costs 32 bytes (two references, an int64, a double): in a meeting,
    where every participant receives several streams, the rings were a large part of a session.
    """

    __slots__ = (
        "_headers", "_highest", "_mask", "_max_mask", "_payloads", "_seqs", "_tail", "_times", "grown", "hits",
        "max_age", "misses",
    )  # fmt: skip

    def __init__(self, size: int = 512, max_age: float = 1.0, initial: int = 64) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("size must be a power of two")
        if initial <= 0 or initial & (initial - 1):
            raise ValueError("initial must be a power of two")
        self._max_mask = size - 1
        self._mask = min(initial, size) - 1
        self.grown = 0
        self.max_age = max_age
        self._headers: list[bytes] = []
        self._payloads: list[bytes | memoryview] = []
        self._seqs = array("q")
        self._times = array("d")
        self._highest = -1
        self._tail = 0  # extended seq below which expired slots have been released
        self.hits = 0
        self.misses = 0

    def put(self, seq: int, header: bytes, payload: bytes | memoryview, now: float) -> None:
        """Store the packet sent at ``now`` with (outgoing) sequence number ``seq``: ``header``
        is its RTP header as sent, ``payload`` what follows it (kept by reference)."""
        hi = self._highest
        if hi < 0:
            size = self._mask + 1
            self._headers = [b""] * size
            self._payloads = [b""] * size
            # Typed arrays: no int/float object per slot (a list would add 28 bytes per
            # extended sequence number).
            self._seqs = array("q", [-1]) * size
            self._times = array("d", bytes(8 * size))
            ext = self._highest = self._tail = seq + 0x10000
        else:
            delta = (seq - hi) & 0xFFFF  # extend_seq inlined: once per packet per viewer
            if delta >= 0x8000:
                delta -= 0x10000
            ext = hi + delta
            if ext > hi:
                self._highest = ext
            elif hi - ext > self._mask:
                return  # too old for the window: storing it would evict a newer packet
        idx = ext & self._mask
        if self._mask < self._max_mask and self._seqs[idx] >= 0 and now - self._times[idx] < self.max_age:
            self._grow()  # the slot still holds a packet young enough to be asked for: hold more
            idx = ext & self._mask
        self._headers[idx] = header
        self._payloads[idx] = payload
        self._seqs[idx] = ext
        self._times[idx] = now
        if not ext & 7:
            self._release_expired(ext, now)

    def _grow(self) -> None:
        """Double the slots; every entry keeps its extended sequence number, now at ``ext & new mask``."""
        old_mask = self._mask
        size = 2 * (old_mask + 1)
        headers: list[bytes] = [b""] * size
        payloads: list[bytes | memoryview] = [b""] * size
        seqs = array("q", [-1]) * size
        times = array("d", bytes(8 * size))
        mask = size - 1
        for i in range(old_mask + 1):
            ext = self._seqs[i]
            if ext >= 0:
                j = ext & mask
                headers[j] = self._headers[i]
                payloads[j] = self._payloads[i]
                seqs[j] = ext
                times[j] = self._times[i]
        self._headers, self._payloads, self._seqs, self._times = headers, payloads, seqs, times
        self._mask = mask
        self.grown += 1

    def _release_expired(self, ext: int, now: float) -> None:
        """Drop the references of packets older than ``max_age`` (every 8th packet; the walk from the tail costs the
        same per packet whatever the cadence). Without it a source's payloads would stay alive for ``size`` packets
        (5 s of 1 Mbps video at 512) although ``get`` refuses them after ``max_age``: in a meeting every received stream
        holds its source's last 512 packets. Every 32nd packet, as before, kept them about 0.28 s longer at 115
        packets/s (a source's payload lives as long as its latest-releasing viewer holds it): 15 KB more per meeting
        participant (bench/meeting_peer_memory.py, issue 19)."""
        horizon = now - self.max_age
        mask = self._mask
        seqs, times, headers, payloads = self._seqs, self._times, self._headers, self._payloads
        tail = max(self._tail, ext - mask)
        while tail < ext:
            idx = tail & mask
            if seqs[idx] == tail:
                if times[idx] >= horizon:
                    break
                headers[idx] = b""
                payloads[idx] = b""
            tail += 1
        self._tail = tail

    def get(self, seq: int, now: float) -> tuple[bytes, bytes | memoryview] | None:
        """(header, payload) stored for ``seq``, or None if it is not (or no longer) here."""
        if self._highest < 0:
            self.misses += 1
            return None
        ext = extend_seq(self._highest, seq)
        idx = ext & self._mask
        if (
            ext > self._highest
            or self._highest - ext > self._mask
            or self._seqs[idx] != ext
            or now - self._times[idx] > self.max_age
        ):
            self.misses += 1
            return None
        self.hits += 1
        return self._headers[idx], self._payloads[idx]


class _Missing:
    __slots__ = ("detected", "last_sent", "retries")

    def __init__(self, detected: float) -> None:
        self.detected = detected
        self.last_sent = -1.0
        self.retries = 0


class NackGenerator:
    """Detects gaps in an incoming stream and decides which sequence numbers to NACK when.

    A gap is NACKed after ``reorder_delay`` (so mild reordering does not trigger requests)
    and re-NACKed every ``retry_interval`` (about one RTT; set :attr:`retry_interval` when the
    RTT estimate changes) until it arrives, ``max_retries`` requests were sent or it is older
    than ``max_age``. Gaps larger than ``max_gap`` are not NACKed at all: repairing them
    packet by packet would cost more than the keyframe the caller should request instead
    (:attr:`keyframe_needed` is set).
    """

    __slots__ = (
        "_max_age",
        "_max_retries",
        "_missing",
        "_next",
        "_reorder_delay",
        "_retry_interval",
        "_stale",
        "_unwrapper",
        "given_up",
        "keyframe_needed",
        "max_gap",
        "recovered",
    )

    def __init__(
        self,
        *,
        max_retries: int = 10,
        max_age: float = 1.0,
        retry_interval: float = 0.1,
        reorder_delay: float = 0.005,
        max_gap: int = 500,
    ) -> None:
        self._max_retries = max_retries
        self._max_age = max_age
        self._retry_interval = retry_interval
        self._reorder_delay = reorder_delay
        self.max_gap = max_gap
        self._unwrapper = SeqUnwrapper()
        self._missing: dict[int, _Missing] = {}
        # next_timeout() is asked after every packet of the stream (the worker reschedules the connection),
        # and walking ``_missing`` each time cost 14 % of a lossy meeting's CPU: it is cached, and recomputed
        # only after something it depends on changed (a gap opened or closed, a timeout, a parameter).
        self._next: float | None = None
        self._stale = False
        self.recovered = 0
        self.given_up = 0
        self.keyframe_needed = False

    @property
    def max_retries(self) -> int:
        return self._max_retries

    @max_retries.setter
    def max_retries(self, value: int) -> None:
        self._max_retries = value
        self._stale = True

    @property
    def max_age(self) -> float:
        return self._max_age

    @max_age.setter
    def max_age(self, value: float) -> None:
        self._max_age = value
        self._stale = True

    @property
    def retry_interval(self) -> float:
        return self._retry_interval

    @retry_interval.setter
    def retry_interval(self, value: float) -> None:
        self._retry_interval = value
        self._stale = True

    @property
    def reorder_delay(self) -> float:
        return self._reorder_delay

    @reorder_delay.setter
    def reorder_delay(self, value: float) -> None:
        self._reorder_delay = value
        self._stale = True

    @property
    def missing(self) -> list[int]:
        """Sequence numbers currently considered lost, oldest first."""
        return [ext & 0xFFFF for ext in sorted(self._missing)]

    def on_packet(self, seq: int, now: float) -> None:
        """Record the arrival of ``seq`` (original or retransmission)."""
        previous = self._unwrapper.highest
        ext = self._unwrapper.unwrap(seq)
        if previous < 0:
            return
        if ext > previous + 1:
            gap = ext - previous - 1
            self._stale = True
            if gap > self.max_gap:
                self._missing.clear()
                self.keyframe_needed = True
                return
            for lost in range(previous + 1, ext):
                self._missing[lost] = _Missing(now)
        elif ext <= previous and self._missing.pop(ext, None) is not None:
            self.recovered += 1
            self._stale = True

    def handle_timeout(self, now: float) -> list[int]:
        """Sequence numbers (16-bit) to put in a NACK now; empty when there is nothing to do."""
        due: list[int] = []
        expired: list[int] = []
        if not self._missing:
            return due
        self._stale = True
        for ext, m in self._missing.items():
            if m.retries >= self._max_retries or now >= m.detected + self._max_age:
                expired.append(ext)
            # Compare with the same sums next_timeout() returns, so firing exactly at a deadline
            # always makes progress (``now - t >= d`` can round below and spin the timer).
            elif now >= m.detected + self._reorder_delay and (
                m.retries == 0 or now >= m.last_sent + self._retry_interval
            ):
                m.retries += 1
                m.last_sent = now
                due.append(ext & 0xFFFF)
        for ext in expired:
            del self._missing[ext]
        self.given_up += len(expired)
        return due

    def next_timeout(self) -> float | None:
        """When :meth:`handle_timeout` next has work to do, or None when nothing is missing."""
        if not self._stale:
            return self._next
        self._stale = False
        best: float | None = None
        for m in self._missing.values():
            if m.retries >= self._max_retries:
                t = m.last_sent
            elif m.retries == 0:
                t = m.detected + self._reorder_delay
            else:
                t = min(m.last_sent + self._retry_interval, m.detected + self._max_age)
            if best is None or t < best:
                best = t
        self._next = best
        return best
