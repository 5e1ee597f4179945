"""Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-extensions-01).

Receiver side, :class:`TwccRecorder` records (transport-wide sequence number, arrival time)
for every packet from a publisher and periodically turns them into feedback packets (s3.1).

Sender side (towards viewers), :class:`TwccSendHistory` remembers when each transport-wide
sequence number was sent and resolves incoming feedback into per-packet results, and
:class:`BandwidthEstimator` turns those into a target bitrate with a deliberately small,
deterministic AIMD controller (documented on the class) rather than full GCC.
"""

from __future__ import annotations

from array import array
from collections import deque
from typing import Final, NamedTuple

from trackmesh.rtp.rewrite import SeqUnwrapper, extend_seq
from trackmesh.rtp.rtcp import (
    STATUS_LARGE_DELTA,
    STATUS_NOT_RECEIVED,
    STATUS_SMALL_DELTA,
    TransportCcFeedback,
    build_transport_cc,
)

__all__ = ["BandwidthEstimator", "PacketResult", "TwccRecorder", "TwccSendHistory"]

_TICK: Final = 0.00025  # receive deltas are multiples of 250 us (s3.1.5)
_TICKS_PER_REF: Final = 256  # reference time is in multiples of 64 ms = 256 ticks (s3.1)


class TwccRecorder:
    """Collects arrivals of one transport-wide sequence space and builds feedback.

    Each feedback covers every sequence number from the end of the previous feedback up to
    the highest received, so losses in between are reported as "not received". A packet
    arriving after its sequence number was already reported is counted in :attr:`late` and
    dropped (the draft has no way to amend a sent report).
    """

    __slots__ = (
        "_arrivals",
        "_fb_count",
        "_next_base",
        "_next_due",
        "_unwrapper",
        "feedbacks",
        "interval",
        "late",
        "max_statuses",
        "media_ssrc",
        "recorded",
        "reported_lost",
        "reported_received",
        "sender_ssrc",
    )

    def __init__(
        self,
        sender_ssrc: int,
        media_ssrc: int = 0,
        *,
        interval: float = 0.05,
        max_statuses: int = 500,
    ) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.interval = interval
        # Bounds a feedback packet to about 1 KB of chunks and deltas so it fits one datagram.
        self.max_statuses = max_statuses
        self._unwrapper = SeqUnwrapper()
        self._arrivals: dict[int, float] = {}
        self._next_base = -1
        self._next_due: float | None = None
        self._fb_count = 0
        self.late = 0
        # Counters (what the sender's estimator will conclude from us): packets recorded,
        # statuses sent as received / not received, feedback packets built.
        self.recorded = 0
        self.reported_received = 0
        self.reported_lost = 0
        self.feedbacks = 0

    def record(self, seq: int, now: float, ssrc: int = 0) -> None:
        """Record the arrival at ``now`` of the packet with transport-wide ``seq`` (sent on
        RTP stream ``ssrc``).

        The feedback's media source SSRC is the SSRC of the latest packet recorded. The draft
        leaves the field unused, but libwebrtc (Chrome) hands a transport-cc feedback to its
        estimator only when that SSRC is one it sends on: with 0 all our feedback is dropped,
        and its estimate collapses for lack of acknowledgements.
        """
        if ssrc:
            self.media_ssrc = ssrc
        ext = self._unwrapper.unwrap(seq)
        if ext < self._next_base:
            self.late += 1
            return
        if ext not in self._arrivals:
            self._arrivals[ext] = now
            self.recorded += 1
        if self._next_due is None:
            self._next_due = now + self.interval

    def next_timeout(self) -> float | None:
        return self._next_due

    def handle_timeout(self, now: float) -> list[bytes]:
        """Serialized RTCP feedback packets due at ``now`` (usually zero or one)."""
        if self._next_due is None or now < self._next_due:
            return []
        self._next_due = None
        if not self._arrivals:
            return []
        arrivals = self._arrivals
        highest = max(arrivals)
        base = self._next_base
        first_received = min(arrivals)
        if base < 0 or first_received - base > self.max_statuses:
            # Start (or restart after a long outage) at the first packet actually received
            # rather than reporting thousands of losses nobody can act on any more.
            base = first_received
        out: list[bytes] = []
        while base <= highest:
            base = self._build_one(base, highest, out)
        self._arrivals = {}
        self._next_base = highest + 1
        return out

    def _build_one(self, base: int, highest: int, out: list[bytes]) -> int:
        arrivals = self._arrivals
        statuses: list[int] = []
        deltas: list[int] = []
        ref_full = -1
        last_ticks = 0
        seq = base
        while seq <= highest and len(statuses) < self.max_statuses:
            t = arrivals.get(seq)
            if t is None:
                statuses.append(STATUS_NOT_RECEIVED)
                seq += 1
                continue
            ticks = round(t / _TICK)
            if ref_full < 0:
                ref_full = ticks // _TICKS_PER_REF
                last_ticks = ref_full * _TICKS_PER_REF
            delta = ticks - last_ticks
            if 0 <= delta <= 255:
                statuses.append(STATUS_SMALL_DELTA)
            elif -32768 <= delta <= 32767:
                statuses.append(STATUS_LARGE_DELTA)
            else:
                break  # not expressible: this packet starts the next feedback (new reference)
            deltas.append(delta)
            last_ticks = ticks
            seq += 1
        # Trailing losses carry no information the next feedback will not also carry.
        while statuses and statuses[-1] == STATUS_NOT_RECEIVED:
            statuses.pop()
        if statuses:
            lost = statuses.count(STATUS_NOT_RECEIVED)
            self.reported_lost += lost
            self.reported_received += len(statuses) - lost
            self.feedbacks += 1
            out.append(
                build_transport_cc(
                    self.sender_ssrc,
                    self.media_ssrc,
                    base & 0xFFFF,
                    ref_full & 0xFFFFFF,
                    self._fb_count,
                    statuses,
                    deltas,
                )
            )
            self._fb_count = (self._fb_count + 1) & 0xFF
        return base + len(statuses) if statuses else seq


class PacketResult(NamedTuple):
    """One sent packet as reported by feedback; ``arrival`` is in the remote clock."""

    seq: int  # extended transport-wide sequence number
    send_time: float
    arrival: float | None  # None: reported lost
    size: int


class TwccSendHistory:
    """Send times and sizes of the last ``size`` packets of one transport-wide sequence space.

    A ring indexed by extended sequence number; each feedback is matched against it and every
    packet is reported at most once (the first report wins). The ring is allocated on the
    first packet sent, so a connection that sends nothing costs none of it; 2048 packets are
    over a second of history even at 15 Mbps, while browsers send feedback every 50-100 ms.
    """

    __slots__ = ("_exts", "_mask", "_ref_full", "_reported", "_sizes", "_times", "_unwrapper", "unknown")

    def __init__(self, size: int = 2048) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("size must be a power of two")
        self._mask = size - 1
        self._times = array("d")
        self._sizes = array("q")
        self._exts = array("q")
        self._reported = bytearray()
        self._unwrapper = SeqUnwrapper()
        self._ref_full = -1
        self.unknown = 0  # feedback entries for packets not (or no longer) in the history

    def on_sent(self, seq: int, size: int, now: float) -> None:
        """Record that the packet with transport-wide ``seq`` and ``size`` bytes left at ``now``."""
        u = self._unwrapper
        hi = u.highest
        if hi < 0:
            # Typed arrays, not lists: a list would also hold one int object per slot for the
            # sequence number and size (28 bytes each), tripling an active peer's ring.
            n = self._mask + 1
            self._times = array("d", bytes(8 * n))
            self._sizes = array("q", bytes(8 * n))
            self._exts = array("q", [-1]) * n
            self._reported = bytearray(n)
            ext = u.unwrap(seq)
        else:
            # SeqUnwrapper.unwrap inlined: this runs once per packet sent.
            delta = (seq - hi) & 0xFFFF
            if delta >= 0x8000:
                delta -= 0x10000
            ext = hi + delta
            if ext > hi:
                u.highest = ext
        i = ext & self._mask
        self._times[i] = now
        self._sizes[i] = size
        self._exts[i] = ext
        self._reported[i] = 0

    def on_feedback(self, fb: TransportCcFeedback) -> list[PacketResult]:
        """Resolve a feedback packet into results for packets we sent, in sequence order."""
        if self._unwrapper.highest < 0:
            return []
        # The 24-bit reference time wraps every ~12 days; unwrap it against the previous one.
        ref = fb.reference_time
        if self._ref_full < 0:
            self._ref_full = ref
        else:
            delta = (ref - self._ref_full) & 0xFFFFFF
            if delta >= 0x800000:
                delta -= 0x1000000
            self._ref_full += delta
        ticks = self._ref_full * _TICKS_PER_REF
        ext = extend_seq(self._unwrapper.highest, fb.base_seq)
        results: list[PacketResult] = []
        deltas = iter(fb.deltas)
        for status in fb.statuses:
            arrival: float | None = None
            if status != STATUS_NOT_RECEIVED:
                ticks += next(deltas)
                arrival = ticks * _TICK
            i = ext & self._mask
            if self._exts[i] != ext:
                self.unknown += 1
            elif not self._reported[i]:
                self._reported[i] = 1
                results.append(PacketResult(ext, self._times[i], arrival, self._sizes[i]))
            ext += 1
        return results


class BandwidthEstimator:
    """A small delay- and loss-based AIMD estimator fed with :class:`PacketResult` lists.

    Signals, computed on every feedback:

    * loss: fraction of packets reported lost over the last ``loss_window`` seconds;
    * acknowledged rate: bytes received over the last ``rate_window`` seconds of remote
      arrival time (what the path actually delivered);
    * queuing delay: mean one-way delay of this feedback's packets minus the minimum one-way
      delay seen in the last ``base_window`` seconds (clock offsets cancel out), smoothed, and
      its gradient in seconds of queue per second.

    Control, in this order:

    * decrease to ``0.85 x acknowledged rate`` when loss > 10%, or the queue exceeds 100 ms
      and is still growing, or it is above 10 ms and growing faster than 50 ms/s; at most
      once per ``decrease_holdoff`` so packets sent before a cut cannot trigger another one
      (a queue that is already draining after a cut is left to drain, not cut again);
    * increase by 8% per second when loss < 2%, the queue is below 50 ms and not growing
      (gradient under 10 ms/s), and to at least the acknowledged rate; capped at 1.5 x the
      acknowledged rate so an application-limited sender does not inflate the estimate
      beyond what was ever tested;
    * otherwise hold (moderate loss, or a queue that is draining after a decrease).

    Probing for headroom: the acknowledged-rate cap means a sender that only needs a little
    (a viewer on a low simulcast layer) never learns the path could carry more. The caller
    (the layer choice) may call :meth:`probe` with the rate it would like to try; once the
    signals have been clean for ``stable_before_probe`` seconds the estimate jumps to it and
    the cap is held at least that high for ``probe_duration`` seconds, long enough for the
    higher layer to start and be measured. A decrease during the probe ends it (the usual
    0.85 x acknowledged rate cut is the fall-back) and doubles the wait before the next one,
    from ``probe_backoff_min`` up to ``probe_backoff_max``; a probe that ends without one
    resets the wait. Everything depends on ``now`` only, so it is deterministic.
    """

    __slots__ = (
        "_base_delays",
        "_last_decrease",
        "_last_update",
        "_losses",
        "_next_probe",
        "_prev_queue",
        "_probe_backoff",
        "_probe_target",
        "_probe_until",
        "_queue",
        "_received",
        "_stable_since",
        "acked_rate",
        "decreases_delay",
        "decreases_loss",
        "estimate",
        "loss",
        "max_bitrate",
        "min_bitrate",
        "probes",
        "probes_failed",
    )

    INCREASE_PER_SECOND: Final = 1.08
    DECREASE_FACTOR: Final = 0.85
    LOSS_HIGH: Final = 0.10
    LOSS_LOW: Final = 0.02
    QUEUE_HIGH: Final = 0.100
    QUEUE_INCREASE_MAX: Final = 0.050
    QUEUE_MIN_FOR_TREND: Final = 0.010
    GRADIENT_OVERUSE: Final = 0.05
    GRADIENT_STABLE: Final = 0.01
    base_window: Final = 10.0
    loss_window: Final = 0.5
    rate_window: Final = 0.5
    decrease_holdoff: Final = 0.3
    stable_before_probe: Final = 2.0
    probe_duration: Final = 4.0
    probe_backoff_min: Final = 4.0
    probe_backoff_max: Final = 60.0

    def __init__(
        self, initial_bitrate: float = 300_000.0, *, min_bitrate: float = 50_000.0, max_bitrate: float = 20e6
    ) -> None:
        self.estimate = float(initial_bitrate)
        self.min_bitrate = min_bitrate
        self.max_bitrate = max_bitrate
        self.acked_rate: float | None = None
        self.loss = 0.0
        self._base_delays: deque[tuple[float, float]] = deque()  # (now, min delay) per feedback
        self._losses: deque[tuple[float, int, int]] = deque()  # (now, lost, total)
        self._received: deque[tuple[float, int]] = deque()  # (arrival, size)
        self._queue = 0.0
        self._prev_queue = 0.0
        self._last_update: float | None = None
        self._last_decrease = float("-inf")
        self._stable_since: float | None = None
        self._probe_target = 0.0  # while probing: the cap is held at least this high
        self._probe_until: float | None = None
        self._probe_backoff = self.probe_backoff_min
        self._next_probe = float("-inf")
        self.probes = 0
        self.probes_failed = 0
        self.decreases_loss = 0
        self.decreases_delay = 0

    @property
    def probing(self) -> bool:
        return self._probe_until is not None

    def probe(self, target: float, now: float) -> bool:
        """Try ``target`` bits per second if the path has been clean long enough and no probe
        is running or backing off; returns whether the estimate was raised."""
        self._end_probe(now)
        if (
            self._probe_until is not None
            or target <= self.estimate
            or now < self._next_probe
            or self._stable_since is None
            or now - self._stable_since < self.stable_before_probe
        ):
            return False
        self._probe_target = min(float(target), self.max_bitrate)
        self._probe_until = now + self.probe_duration
        self.estimate = max(self.estimate, self._probe_target)
        self.probes += 1
        return True

    def _end_probe(self, now: float) -> None:
        if self._probe_until is not None and now >= self._probe_until:
            # Survived without a decrease: the next step up may be tried right away.
            self._probe_until = None
            self._probe_target = 0.0
            self._probe_backoff = self.probe_backoff_min
            self._next_probe = now

    def _fail_probe(self, now: float) -> None:
        if self._probe_until is not None:
            self._probe_until = None
            self._probe_target = 0.0
            self.probes_failed += 1
            self._next_probe = now + self._probe_backoff
            self._probe_backoff = min(2 * self._probe_backoff, self.probe_backoff_max)

    @property
    def queue_delay(self) -> float:
        """The smoothed queuing delay estimate, in seconds."""
        return self._queue

    def on_feedback(self, results: list[PacketResult], now: float) -> float:
        """Update from one feedback's results; returns the new estimate in bits per second."""
        if not results:
            return self.estimate
        self._end_probe(now)
        self._update_loss(results, now)
        delays = [r.arrival - r.send_time for r in results if r.arrival is not None]
        for r in results:
            if r.arrival is not None:
                self._received.append((r.arrival, r.size))
        self._update_rate()
        gradient = 0.0
        if delays:
            gradient = self._update_queue(delays, now)
        dt = 0.0 if self._last_update is None else max(0.0, now - self._last_update)
        self._last_update = now

        overuse = (
            self.loss > self.LOSS_HIGH
            or (self._queue > self.QUEUE_HIGH and gradient > 0.0)
            or (self._queue > self.QUEUE_MIN_FOR_TREND and gradient > self.GRADIENT_OVERUSE)
        )
        if overuse:
            self._fail_probe(now)
            if now - self._last_decrease >= self.decrease_holdoff:
                basis = self.acked_rate if self.acked_rate is not None else self.estimate
                self.estimate = self.DECREASE_FACTOR * min(basis, self.estimate)
                self._last_decrease = now
                if self.loss > self.LOSS_HIGH:
                    self.decreases_loss += 1
                else:
                    self.decreases_delay += 1
        elif self.loss < self.LOSS_LOW and self._queue < self.QUEUE_INCREASE_MAX and gradient < self.GRADIENT_STABLE:
            self.estimate *= self.INCREASE_PER_SECOND**dt
            if self.acked_rate is not None:
                # What the path just delivered with no loss and no queue is a floor: climbing
                # back to it at 8%/s after a start (or a layer) below it would take many seconds.
                self.estimate = max(self.estimate, self.acked_rate)
                cap = max(1.5 * self.acked_rate, self.min_bitrate, self._probe_target)
                self.estimate = min(self.estimate, cap)
        # Clean enough to probe from: no cut, little loss, a short queue. The gradient is left
        # out: on a real path it swings past GRADIENT_STABLE with every burst of jitter, which
        # would hold the estimate (fine) but also reset this clock (and never probe).
        if overuse or self.loss >= self.LOSS_LOW or self._queue >= self.QUEUE_INCREASE_MAX:
            self._stable_since = None
        elif self._stable_since is None:
            self._stable_since = now
        self.estimate = min(max(self.estimate, self.min_bitrate), self.max_bitrate)
        return self.estimate

    def _update_loss(self, results: list[PacketResult], now: float) -> None:
        lost = sum(1 for r in results if r.arrival is None)
        self._losses.append((now, lost, len(results)))
        while self._losses and self._losses[0][0] < now - self.loss_window:
            self._losses.popleft()
        total = sum(t for _, _, t in self._losses)
        self.loss = sum(lo for _, lo, _ in self._losses) / total if total else 0.0

    def _update_rate(self) -> None:
        received = self._received
        latest = max(a for a, _ in received)
        while received and received[0][0] < latest - self.rate_window:
            received.popleft()
        span = latest - min(a for a, _ in received)
        if span >= 0.1 and len(received) >= 2:
            # N packets span N-1 inter-arrival gaps: leave one packet's bytes out.
            total = sum(s for _, s in received) - received[0][1]
            self.acked_rate = total * 8 / span

    def _update_queue(self, delays: list[float], now: float) -> float:
        self._base_delays.append((now, min(delays)))
        while self._base_delays[0][0] < now - self.base_window:
            self._base_delays.popleft()
        base = min(d for _, d in self._base_delays)
        sample = sum(delays) / len(delays) - base
        self._prev_queue = self._queue
        # A light EWMA: one feedback's mean over a handful of packets is noisy.
        self._queue = sample if self._last_update is None else 0.7 * self._queue + 0.3 * sample
        if self._last_update is None or now <= self._last_update:
            return 0.0
        return (self._queue - self._prev_queue) / (now - self._last_update)
