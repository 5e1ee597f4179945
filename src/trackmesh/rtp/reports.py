"""What a viewer reports about one of our outgoing streams: loss, jitter and round-trip time.

Sans-IO. The owner of an outgoing stream tells :class:`ReceptionReport` when it sends a
sender report (:meth:`ReceptionReport.on_sr_sent`) and hands it each report block the viewer
sends about that stream's SSRC (:meth:`ReceptionReport.on_block`, from an RR or from the
viewer's own SR, RFC 3550 s6.4.1-6.4.2):

- loss: the block's fraction lost (8-bit fixed point, of the packets expected since the
  viewer's previous report) and cumulative number lost (signed 24 bits);
- jitter: the interarrival jitter in RTP timestamp units (s6.4.1, computed as in A.8),
  converted to seconds by the stream's clock rate;
- round-trip time: the block's LSR is the middle 32 bits of the NTP timestamp of the last SR
  the viewer got from us and DLSR the delay since, in 1/65536 s; RTT = A - LSR - DLSR
  (s6.4.1, figure 2) where A is the block's arrival. A is taken as the arrival ``now`` minus
  the ``now`` at which we sent the SR whose NTP timestamp was LSR, both on our monotonic
  clock, so a wall-clock step between the two cannot skew it. A block whose LSR is 0 (no SR
  received yet) or names no SR we remember carries no RTT.
"""

from __future__ import annotations

from array import array
from typing import Final

from trackmesh.rtp.rtcp import ReportBlock

__all__ = ["ReceptionReport"]

#: SRs remembered to match LSRs against: at one SR a second, a viewer's report may name one
#: sent several seconds ago when reports are lost.
_SR_HISTORY: Final = 16
#: DLSR and LSR are in units of 1/65536 s (RFC 3550 s6.4.1).
_UNIT: Final = 1.0 / 65536.0


class ReceptionReport:
    """The latest reception report about one outgoing SSRC, with the RTT derived from it."""

    __slots__ = (
        "_sent_at",
        "_sent_mid",
        "_sent_next",
        "blocks",
        "clock_rate",
        "fraction_lost",
        "jitter",
        "packets_lost",
        "rtt",
        "sampled",
        "updated_at",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate if clock_rate > 0 else 90000
        # The last _SR_HISTORY SRs sent, a ring of (NTP middle 32 bits, now) in two typed arrays, next slot at
        # _sent_next: a deque of tuples was about 2.5 KB per outgoing stream once full, ten times this, and a
        # meeting participant receives ten streams (issue 19).
        self._sent_mid = array("I", bytes(4 * _SR_HISTORY))
        self._sent_at = array("d", bytes(8 * _SR_HISTORY))
        self._sent_next = 0
        self.blocks = 0  # report blocks taken
        self.fraction_lost = 0.0  # 0..1, over the viewer's last report interval
        self.packets_lost = 0  # cumulative, as reported (may be negative with duplicates)
        self.jitter = 0.0  # seconds
        self.rtt: float | None = None  # seconds; None until a block names one of our SRs
        self.updated_at: float | None = None
        self.sampled = 0  # ``blocks`` when the node's metrics last sampled this report

    def on_sr_sent(self, ntp: int, now: float) -> None:
        """We sent an SR with 64-bit NTP timestamp ``ntp`` at ``now``."""
        i = self._sent_next
        self._sent_mid[i % _SR_HISTORY] = (ntp >> 16) & 0xFFFFFFFF
        self._sent_at[i % _SR_HISTORY] = now
        self._sent_next = i + 1

    def on_block(self, block: ReportBlock, now: float) -> None:
        """A report block about our SSRC arrived at ``now``."""
        self.blocks += 1
        self.updated_at = now
        self.fraction_lost = block.fraction_lost / 256.0
        self.packets_lost = block.packets_lost
        self.jitter = block.jitter / self.clock_rate
        lsr = block.lsr
        if not lsr:
            return
        sent = self._sent_next
        for i in range(sent - 1, max(sent - _SR_HISTORY, 0) - 1, -1):  # newest first
            if self._sent_mid[i % _SR_HISTORY] == lsr:
                rtt = now - self._sent_at[i % _SR_HISTORY] - block.dlsr * _UNIT
                # DLSR is truncated to 1/65536 s by the viewer: a loopback RTT can come out a
                # hair below zero.
                self.rtt = max(rtt, 0.0)
                return

    @property
    def rtt_ms(self) -> float:
        return 0.0 if self.rtt is None else self.rtt * 1000.0

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0
