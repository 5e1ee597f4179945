"""Datagram packetization layer path MTU discovery (DPLPMTUD, RFC 8899) for a QUIC connection, sans-IO.

One :class:`PmtuSearch` per connection. The driver (runtime/moq_listener.py) feeds it events with the
time, and does what the returned :class:`Step` says: send a probe of ``probe`` bytes, use ``plpmtu`` bytes
as the packet size from now on, and call :meth:`PmtuSearch.timer` at ``deadline``. A probe is a QUIC
packet of exactly the probe size carrying PING and PADDING (RFC 9000 s14.4); its loss is no congestion
signal (RFC 9000 s14.4, RFC 8899 s3 item 7), which is the driver's concern.

Choices (RFC 8899 leaves the probe sequence to the PL, s5.3):

- BASE_PLPMTU is QUIC's 1200 (RFC 9000 s14.1); the handshake has already confirmed it (RFC 9000 s14.4:
  the QUIC handshake is the BASE state's confirmation), so :meth:`PmtuSearch.start` enters SEARCHING.
- MAX_PLPMTU is the smaller of the peer's max_udp_payload_size (RFC 9000 s18.2) and a configured
  maximum; the driver's default is Ethernet's 1500 less the IP and UDP headers: 1472 (IPv4), 1452 (IPv6).
  Larger paths (jumbo frames end to end) are rare on the Internet and would cost a lost probe on most.
- The first probe is MAX_PLPMTU: most paths carry a full Ethernet frame, so one round trip finds it.
  If it fails MAX_PROBES times, the search climbs :data:`COMMON_LINK_MTUS` (tunnels: PPPoE, cloud
  overlays, WireGuard, IPsec) from the smallest up and stops at the first size that fails MAX_PROBES
  times. So at most two sizes fail, and every size the search settles on was acknowledged.
- No size is probed less than about 10 % above BASE (the smallest candidate is a 1350-byte link): a
  smaller gain saves too few packets per object to be worth lost probes. On a path between 1228 and
  about 1330 bytes the packet size stays 1200.
- MAX_PROBES = 3 per size (s5.1.2). PROBE_TIMER (s5.1.1: at least 1 s, should be more than 15 s) is a
  backstop: QUIC's loss detection declares a lost probe lost much sooner when data flows (RFC 9000 s14.4),
  and a probe the sender's kernel refuses (EMSGSIZE) is lost at once.
- In SEARCH_COMPLETE one timer of 600 s (s5.1.1 PMTU_RAISE_TIMER and CONFIRMATION_TIMER, both 600 s):
  below MAX_PLPMTU it searches again above the current size; at MAX_PLPMTU it sends a confirmation
  probe of the current size.
- Black hole (s4.3): the driver reports a suspected one (its packets of the current size keep being lost:
  repeated probe timeouts with nothing acknowledged), or a confirmation probe of the current size is lost
  MAX_PROBES times. Then the size drops to BASE at once (BASE state, s5.2) and a BASE probe confirms
  that smaller packets still get through; once it is acknowledged the search resumes below the size that
  black-holed (that size is tried again only after the raise timer). If the BASE probe fails MAX_PROBES
  times: ERROR (s5.2); QUIC cannot go below 1200, so the size stays BASE and the BASE probe is retried
  after the raise timer.
- The size is only ever raised to a size whose probe was acknowledged, and only for the probe in
  progress: an acknowledgement of an earlier probe (one declared lost by the timer, or one from before a
  black hole) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "BASE_PLPMTU",
    "COMMON_LINK_MTUS",
    "MAX_PROBES",
    "PMTU_RAISE_TIMER",
    "PROBE_TIMER",
    "PmtuSearch",
    "PmtuState",
    "Step",
    "default_max_plpmtu",
]

#: QUIC's smallest maximum datagram size (RFC 9000 s14.1), confirmed by the handshake.
BASE_PLPMTU = 1200
#: Probes of one size before it is deemed unsupported (RFC 8899 s5.1.2).
MAX_PROBES = 3
#: Seconds before an unanswered probe counts as lost (RFC 8899 s5.1.1: >= 1 s, SHOULD be > 15 s).
PROBE_TIMER = 15.0
#: Seconds in SEARCH_COMPLETE (or ERROR) before searching again or confirming (RFC 8899 s5.1.1: 600 s).
PMTU_RAISE_TIMER = 600.0
#: Link MTUs below Ethernet's that paths commonly have (PPPoE 1492, cloud VMs 1460, VXLAN/GENEVE overlays
#: 1450, WireGuard 1420, IPsec and other tunnels 1400/1380/1350), from which the probe sizes below
#: MAX_PLPMTU are made (less the IP and UDP headers).
COMMON_LINK_MTUS = (1350, 1380, 1400, 1420, 1450, 1460, 1492)
#: IPv4 + UDP headers, IPv6 + UDP headers.
IPV4_OVERHEAD = 28
IPV6_OVERHEAD = 48


def default_max_plpmtu(ipv6: bool) -> int:
    """The configured MAX_PLPMTU by default: an Ethernet path (1500) less the headers."""
    return 1500 - (IPV6_OVERHEAD if ipv6 else IPV4_OVERHEAD)


class PmtuState(Enum):
    """RFC 8899 s5.2 (DISABLED is the driver not making a search at all)."""

    BASE = "base"
    SEARCHING = "searching"
    SEARCH_COMPLETE = "search_complete"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Step:
    """What the driver does after an event: send a probe of ``probe`` bytes now (None: none), use
    ``plpmtu`` bytes as the packet size (None: unchanged), call :meth:`PmtuSearch.timer` at ``deadline``."""

    probe: int | None
    plpmtu: int | None
    deadline: float


class PmtuSearch:
    """The search for one path (RFC 8899 s5). Sizes are UDP payload sizes (QUIC's datagram size)."""

    __slots__ = (
        "_ceiling",
        "_deadline",
        "_lost",
        "_outstanding",
        "black_holes",
        "max_plpmtu",
        "overhead",
        "plpmtu",
        "probe_size",
        "probe_timer",
        "probes_acked",
        "probes_lost",
        "probes_sent",
        "raise_timer",
        "state",
    )

    def __init__(
        self,
        max_plpmtu: int,
        *,
        overhead: int = IPV4_OVERHEAD,
        probe_timer: float = PROBE_TIMER,
        raise_timer: float = PMTU_RAISE_TIMER,
    ) -> None:
        self.max_plpmtu = max(BASE_PLPMTU, max_plpmtu)
        self.overhead = overhead
        self.probe_timer = probe_timer
        self.raise_timer = raise_timer
        self.state = PmtuState.BASE
        self.plpmtu = BASE_PLPMTU
        #: The size being probed (None: no probe in progress).
        self.probe_size: int | None = None
        self._lost = 0  # probes of probe_size lost so far
        self._outstanding = False  # a probe of probe_size is in the network (probe_sent, not yet answered)
        #: The smallest size known not to get through (above max_plpmtu: none known).
        self._ceiling = self.max_plpmtu + 1
        self._deadline = float("inf")
        self.probes_sent = 0
        self.probes_acked = 0
        self.probes_lost = 0
        self.black_holes = 0

    @property
    def deadline(self) -> float:
        return self._deadline

    def candidates(self) -> list[int]:
        """The probe sizes between the current size and the ceiling, smallest first (MAX_PLPMTU aside)."""
        sizes = {mtu - self.overhead for mtu in COMMON_LINK_MTUS}
        return sorted(s for s in sizes if self.plpmtu < s < min(self._ceiling, self.max_plpmtu))

    # -- events --------------------------------------------------------------------------------

    def start(self, now: float) -> Step:
        """The handshake is done: BASE is confirmed (RFC 9000 s14.4), search."""
        self.state = PmtuState.SEARCHING
        return self._search(now)

    def probe_sent(self, size: int, now: float) -> Step:
        """The driver sent the probe it was asked for: PROBE_TIMER runs from now."""
        if size == self.probe_size:
            self.probes_sent += 1
            self._outstanding = True
            self._deadline = now + self.probe_timer
        return self._step(None, None)

    def probe_acked(self, size: int, now: float) -> Step:
        """The peer acknowledged a probe of ``size`` bytes."""
        if size != self.probe_size or not self._outstanding:
            return self._step(None, None)  # an earlier probe: no evidence for the search in progress
        self.probes_acked += 1
        self._outstanding = False
        self.probe_size = None
        self._lost = 0
        raised = size if size > self.plpmtu else None
        self.plpmtu = max(self.plpmtu, size)
        if self.state is PmtuState.SEARCH_COMPLETE:  # a confirmation probe
            self._deadline = now + self.raise_timer
            return self._step(None, raised)
        if self.state is PmtuState.BASE:  # smaller packets get through: search again below the black hole
            self.state = PmtuState.SEARCHING
        step = self._search(now)
        return Step(step.probe, raised, step.deadline)

    def probe_lost(self, size: int, now: float) -> Step:
        """A probe of ``size`` bytes was declared lost (by QUIC's loss detection, or its send failed)."""
        if size != self.probe_size or not self._outstanding:
            return self._step(None, None)
        self.probes_lost += 1
        self._outstanding = False
        self._lost += 1
        if self._lost < MAX_PROBES:
            return self._probe(size, now)  # s5.1.2: again, up to MAX_PROBES
        self._lost = 0
        self.probe_size = None
        if self.state is PmtuState.SEARCHING:
            self._ceiling = min(self._ceiling, size)
            return self._search(now)
        if self.state is PmtuState.BASE:  # even BASE does not get through (s5.2)
            self.state = PmtuState.ERROR
            self._deadline = now + self.raise_timer
            return self._step(None, None)
        if self.state is PmtuState.SEARCH_COMPLETE:  # the confirmation of the current size failed
            return self._black_hole(now)
        return self._step(None, None)

    def black_hole_suspected(self, now: float) -> Step:
        """The driver sees packets of the current size being lost while the connection lives (s4.3)."""
        if self.plpmtu <= BASE_PLPMTU or self.state is PmtuState.BASE:
            return self._step(None, None)
        return self._black_hole(now)

    def timer(self, now: float) -> Step:
        """Call at :attr:`deadline` (earlier or later is harmless)."""
        if now < self._deadline:
            return self._step(None, None)
        if self.probe_size is not None:
            if self._outstanding:  # PROBE_TIMER: the probe counts as lost
                return self.probe_lost(self.probe_size, now)
            return self._probe(self.probe_size, now)  # asked for but never sent: ask again
        if self.state is PmtuState.SEARCH_COMPLETE:
            if self.plpmtu < self.max_plpmtu:  # PMTU_RAISE_TIMER: maybe the path grew
                self.state = PmtuState.SEARCHING
                self._ceiling = self.max_plpmtu + 1
                return self._search(now)
            return self._probe(self.plpmtu, now)  # CONFIRMATION_TIMER
        if self.state is PmtuState.ERROR:
            self.state = PmtuState.BASE
            return self._probe(BASE_PLPMTU, now)
        self._deadline = float("inf")
        return self._step(None, None)

    # -- internals -----------------------------------------------------------------------------

    def _step(self, probe: int | None, plpmtu: int | None) -> Step:
        return Step(probe, plpmtu, self._deadline)

    def _probe(self, size: int, now: float) -> Step:
        self.probe_size = size
        self._outstanding = False
        self._deadline = now + self.probe_timer  # retried if the driver could not send it
        return self._step(size, None)

    def _search(self, now: float) -> Step:
        """The next size to probe in SEARCHING, or SEARCH_COMPLETE."""
        if self._ceiling > self.max_plpmtu and self.plpmtu < self.max_plpmtu:
            return self._probe(self.max_plpmtu, now)
        above = self.candidates()
        if above:
            return self._probe(above[0], now)
        self.state = PmtuState.SEARCH_COMPLETE
        self.probe_size = None
        self._deadline = now + self.raise_timer
        return self._step(None, None)

    def _black_hole(self, now: float) -> Step:
        self.black_holes += 1
        self._ceiling = self.plpmtu  # not again before the raise timer
        self.plpmtu = BASE_PLPMTU
        self.state = PmtuState.BASE
        self._lost = 0
        step = self._probe(BASE_PLPMTU, now)
        return Step(step.probe, BASE_PLPMTU, step.deadline)
